import { afterEach, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { makeRoot, forceUnmount, mountsUnder, mountFerry, type TestMount } from '../helpers/mounts.js';
import { migrate, waitFor, writeThrough, type MigrationRun } from '../helpers/migration.js';
import { hasExited, run } from '../helpers/cli.js';

// Issue 27's windows read in the code: a real daemon serving a real mount, the test process as the guest, every
// data check against a model of the bytes written (kept here, outside the mount), on both data paths.
const MiB = 1 << 20;
const KiB = 1 << 10;
const PATHS: [string, NodeJS.ProcessEnv][] = [
  ['native', {}],
  ['js', { FERRY_NATIVE: '0' }],
];

let mount: TestMount | undefined;
/** Immutable flags set by a test: cleared before anything is removed. */
const immutable: string[] = [];
/** Filesystems a test mounted (tmpfs, loop ext4): unmounted once the ferry mount is gone. */
const mounted: string[] = [];

afterEach(async () => {
  const m = mount;
  mount = undefined;
  if (m) {
    await m.cli(['unmount', m.mountpoint, '--force']).catch(() => undefined);
    if ((await mountsUnder(m.mountpoint)).length > 0) await forceUnmount(m.mountpoint);
  }
  for (const path of immutable.splice(0).reverse()) await run('chattr', ['-i', path]);
  for (const path of mounted.splice(0).reverse()) {
    if ((await run('umount', [path])).code !== 0) await run('umount', ['-l', path]);
  }
  await m?.stop();
});

async function chattr(flag: '+i' | '-i', path: string): Promise<void> {
  const r = await run('chattr', [flag, path]);
  if (r.code !== 0) throw new Error(`chattr ${flag} ${path}: ${r.stderr}`);
  if (flag === '+i') immutable.push(path);
}

async function sh(cmd: string, args: string[]): Promise<void> {
  const r = await run(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
}

async function tmpfs(dir: string, size: string): Promise<void> {
  await fsp.mkdir(dir, { recursive: true });
  await sh('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
  mounted.push(dir);
}

/** Fills the filesystem of `dir` but for `leave` bytes (a file outside the mount, not part of any model). */
async function fill(dir: string, leave: number): Promise<string> {
  const st = await fsp.statfs(dir);
  const free = st.bavail * st.bsize;
  const filler = join(dir, 'filler');
  await sh('fallocate', ['-l', String(Math.max(st.bsize, free - leave)), filler]);
  return filler;
}

function migrationsDir(m: TestMount): string {
  return join(m.stateDir, 'datastores', fs.readdirSync(join(m.stateDir, 'datastores'))[0], 'migrations');
}

type Checkpoint = { placed: [string, string][]; complete: [string, string][]; partial?: { ino: string; copiedUpTo: number } };

async function checkpoint(m: TestMount): Promise<Checkpoint | undefined> {
  const file = fs.readdirSync(migrationsDir(m)).find((n) => n.endsWith('.checkpoint.json'));
  if (!file) return undefined;
  return JSON.parse(await fsp.readFile(join(migrationsDir(m), file), 'utf8').catch(() => 'null')) ?? undefined;
}

/** d1, d2 (1 MiB) and d3 (24 MiB) migrated to `<dir>/vm1` at 4 MiB/s, once a checkpoint lists a file as complete. */
async function checkpointedMigration(m: TestMount, dir = join(m.root, 'd')) {
  const models = await makeHome(m, { d1: MiB, d2: MiB, d3: 24 * MiB });
  await fsp.mkdir(dir, { recursive: true });
  const dest = join(dir, 'vm1');
  const running = migrate(m, join(m.mountpoint, 'vm1'), dest, ['--rate-limit', '4M']);
  let cp: Checkpoint | undefined;
  await waitFor(async () => ((cp = await checkpoint(m))?.complete?.length ?? 0) >= 1, 30_000, 'a checkpoint');
  return { models, dest, running, checkpoint: cp! };
}

/** vm1 in the datastore (behind the mount: before the mount serves it) with random files of the given sizes. */
async function makeHome(m: TestMount, sizes: Record<string, number>): Promise<Record<string, Buffer>> {
  const home = join(m.datastore, 'vm1');
  await fsp.mkdir(home);
  const models: Record<string, Buffer> = {};
  for (const [name, size] of Object.entries(sizes)) {
    models[name] = randomBytes(size);
    await fsp.writeFile(join(home, name), models[name]);
  }
  return models;
}

/** `dir` holds exactly the files of `models`, byte for byte. */
async function expectTree(dir: string, models: Record<string, Buffer>, what: string): Promise<void> {
  expect((await fsp.readdir(dir)).filter((n) => !n.startsWith('.fuse_hidden')).sort(), `${what}: names`).toEqual(Object.keys(models).sort());
  for (const [name, model] of Object.entries(models)) {
    const got = await fsp.readFile(join(dir, name));
    expect(got.length, `${what}/${name}: size`).toBe(model.length);
    expect(differingBlocks(got, model), `${what}/${name}: 4 KiB blocks that differ from the model`).toEqual([]);
  }
}

function differingBlocks(a: Buffer, b: Buffer): number[] {
  const out: number[] = [];
  for (let off = 0; off < Math.max(a.length, b.length); off += 4096) {
    if (!a.subarray(off, off + 4096).equals(b.subarray(off, off + 4096))) out.push(off / 4096);
  }
  return out;
}

async function daemonLog(m: TestMount): Promise<string> {
  const dir = join(m.stateDir, 'logs');
  const logs = fs.readdirSync(dir).filter((n) => n.endsWith('.log'));
  return (await Promise.all(logs.map((n) => fsp.readFile(join(dir, n), 'utf8')))).join('\n');
}

async function killDaemon(m: TestMount): Promise<void> {
  const { pid } = await m.status();
  process.kill(pid, 'SIGKILL');
  await waitFor(() => hasExited(pid), 10_000, 'the daemon to die');
  expect((await m.cli(['unmount', m.mountpoint, '--force'])).code).toBe(0);
}

/**
 * After a remount: whatever the daemon offers for vm1 (a resume of an interrupted migration, else a new migration
 * to the same destination) run to its commit. Returns what status showed right after the remount.
 */
async function finishMigration(m: TestMount, dest: string, env: NodeJS.ProcessEnv): Promise<Record<string, any>[]> {
  const again = await m.cli(['mount', m.datastore, m.mountpoint, ...m.args], env);
  expect(again.code, again.stderr).toBe(0);
  const offered = (await m.status()).migrations as Record<string, any>[];
  const interrupted = offered.find((x) => x.path === '/vm1' && x.interrupted);
  if (interrupted) {
    const r = await m.cli(['migrate', join(m.mountpoint, 'vm1'), '--resume', '--json']);
    expect(r.code, r.stderr).toBe(0);
  } else {
    const r = await migrate(m, join(m.mountpoint, 'vm1'), dest).done;
    expect(r.code, r.stderr).toBe(0);
  }
  return offered;
}

/** A guest writing 4 KiB blocks at random places of `file` through one handle until stopped; the model follows the acks. */
function startWriter(path: string, model: Buffer, region: [number, number], pauseMs = 0, straddle = false) {
  let stop = false;
  const log: { at: number; done: number }[] = [];
  const done = (async () => {
    const handle = await fsp.open(path, 'r+');
    try {
      while (!stop) {
        // straddle: 8 KiB across a 64 KiB boundary (part in a chunk the copier has not reached, part not).
        const offset = straddle
          ? region[0] + (1 + Math.floor(Math.random() * ((region[1] - region[0]) / (64 * KiB) - 1))) * 64 * KiB - 4096
          : region[0] + Math.floor(Math.random() * ((region[1] - region[0]) / 4096)) * 4096;
        const bytes = randomBytes(straddle ? 8192 : 4096);
        const at = Date.now();
        await handle.write(bytes, 0, bytes.length, offset);
        bytes.copy(model, offset);
        log.push({ at, done: Date.now() });
        if (pauseMs) await new Promise((r) => setTimeout(r, pauseMs));
      }
    } finally {
      await handle.close();
    }
  })();
  return {
    log,
    async stop() {
      stop = true;
      await done;
    },
  };
}

describe.each(PATHS)('issue 27 edges (%s data path)', (_name, env) => {
  it('case 2: a cancel whose cleanup fails (EPERM, immutable destination) loses no write made after it', async () => {
    const m = (mount = await mountFerry({ env }));
    const { models, dest, running } = await checkpointedMigration(m);
    // No entry of the destination's root can be removed now: the undo of the partial copy fails with EPERM.
    await chattr('+i', dest);
    const cancelled = await m.cli(['cancel', join(m.mountpoint, 'vm1')]);
    const r: MigrationRun = await running.done;
    expect(r.code, r.stderr).toBe(1);
    expect(r.final).toMatchObject({ type: 'error', sourceIntact: true });
    expect(r.final!.message).toMatch(/EPERM/);
    expect(r.final!.message).not.toMatch(/ENOTDIR/);
    expect(cancelled.stdout + cancelled.stderr).not.toMatch(/ENOTDIR/);
    // Status tells the truth: not running, not silently gone, and says the copy was left behind.
    const stuck = ((await m.status()).migrations as Record<string, any>[]).find((x) => x.path === '/vm1');
    expect(stuck, 'status still lists the migration whose undo failed').toBeDefined();
    expect(stuck!.running).toBe(false);
    expect(stuck!.phase).toBe('aborted');
    expect(JSON.stringify(stuck!.result), "status names the errno").toMatch(/could not be removed.*EPERM/);
    // The guest goes on writing after the failed cleanup.
    for (const name of ['d1', 'd2', 'd3']) for (const offset of [0, 512 * KiB]) await writeThrough(join(m.mountpoint, 'vm1', name), models[name], offset, randomBytes(4096));
    await expectTree(join(m.datastore, 'vm1'), models, 'source after the failed cancel');
    await run('chattr', ['-i', dest]);
    expect((await m.cli(['unmount', m.mountpoint])).code).toBe(0);
    await finishMigration(m, dest, env);
    await expectTree(dest, models, 'destination');
    await expectTree(join(m.mountpoint, 'vm1'), models, 'mount');
  });

  it('an abort that cannot remove its checkpoint stays aborting, tracking and logging; a later cancel finishes the undo', async () => {
    const m = (mount = await mountFerry({ env }));
    const { models, dest, running } = await checkpointedMigration(m);
    const file = join(migrationsDir(m), fs.readdirSync(migrationsDir(m)).find((n) => n.endsWith('.checkpoint.json'))!);
    // Neither replaced by the next checkpoint nor removed by the undo.
    await chattr('+i', file);
    const cancelled = await m.cli(['cancel', join(m.mountpoint, 'vm1')]);
    expect(cancelled.code).toBe(1);
    expect(cancelled.stderr).toMatch(/cancel could not finish: .*checkpoint could not be removed \(EPERM/);
    const r = await running.done;
    expect(r.code).toBe(1);
    expect(r.final).toMatchObject({ type: 'error', sourceIntact: true });
    expect(r.final!.message).toMatch(/checkpoint could not be removed \(EPERM.*tracking and intent logging stay on/);
    const stuck = ((await m.status()).migrations as Record<string, any>[]).find((x) => x.path === '/vm1');
    expect(stuck).toMatchObject({ phase: 'aborting', running: true });
    expect(stuck!.stuck.message).toMatch(/checkpoint could not be removed/);
    expect((await m.cli(['status', m.mountpoint])).stdout).toMatch(/ABORT STUCK, still tracking: .*checkpoint could not be removed/);
    // The guest goes on writing: still tracked, still intent-logged.
    for (const name of ['d1', 'd2', 'd3']) for (const offset of [0, 512 * KiB]) await writeThrough(join(m.mountpoint, 'vm1', name), models[name], offset, randomBytes(4096));
    expect(fs.existsSync(dest), 'the partial copy stays while the checkpoint does').toBe(true);
    await chattr('-i', file);
    const again = await m.cli(['cancel', join(m.mountpoint, 'vm1')]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/source is intact/);
    expect(fs.existsSync(dest), 'the partial copy removed by the second cancel').toBe(false);
    expect(fs.readdirSync(migrationsDir(m))).toEqual([]);
    const ended = ((await m.status()).migrations as Record<string, any>[]).find((x) => x.path === '/vm1');
    expect(ended).toMatchObject({ phase: 'aborted', running: false });
    await expectTree(join(m.datastore, 'vm1'), models, 'source');
    await expectTree(join(m.mountpoint, 'vm1'), models, 'mount');
  });

  it('case 2, ENOSPC: a destination that fills mid-copy, then an undo that fails too: no write lost', async () => {
    const m = (mount = await mountFerry({ env }));
    const d = join(m.root, 'd');
    await tmpfs(d, '48M');
    const { models, dest, running } = await checkpointedMigration(m, d);
    const filler = await fill(d, 512 * KiB);
    await chattr('+i', dest);
    const r = await running.done;
    expect(r.code, r.stderr).toBe(1);
    expect(r.final).toMatchObject({ type: 'error', code: 'ENOSPC', sourceIntact: true });
    expect(r.final!.message).toMatch(/ran out of space/);
    expect(r.final!.message, 'the cause named by its errno').toMatch(/ENOSPC/);
    expect(r.final!.message).toMatch(/EPERM/);
    expect(r.final!.message).not.toMatch(/ENOTDIR/);
    const stuck = ((await m.status()).migrations as Record<string, any>[]).find((x) => x.path === '/vm1');
    expect(stuck?.running).toBe(false);
    expect(stuck?.phase).toBe('aborted');
    for (const name of ['d1', 'd2', 'd3']) for (const offset of [4096, 768 * KiB]) await writeThrough(join(m.mountpoint, 'vm1', name), models[name], offset, randomBytes(4096));
    await run('chattr', ['-i', dest]);
    await fsp.rm(filler);
    expect((await m.cli(['unmount', m.mountpoint])).code).toBe(0);
    await finishMigration(m, dest, env);
    await expectTree(dest, models, 'destination');
    await expectTree(join(m.mountpoint, 'vm1'), models, 'mount');
  });

  it('a failed intent-log flush whose checkpoint cannot be removed either: no acknowledged write is lost across kill -9 and --resume', async () => {
    const m = (mount = await mountFerry({ env }));
    const { models, dest, running, checkpoint: cp } = await checkpointedMigration(m);
    // The intent log (and any checkpoint) can no longer be written, nor the checkpoint removed: EPERM, for real.
    await chattr('+i', migrationsDir(m));
    const placed = new Map(cp!.placed);
    const complete = cp!.complete.map(([ino]) => placed.get(ino)!).filter((n) => n === 'd1' || n === 'd2');
    expect(complete.length).toBeGreaterThan(0);
    // Writes to files the checkpoint calls complete (their regions are out of the trimmed log): each needs a flush.
    const before = Object.fromEntries(Object.entries(models).map(([n, b]) => [n, Buffer.from(b)]));
    const writes = complete.flatMap((name) =>
      [0, 256 * KiB, MiB - 4096].map((offset) => {
        const bytes = randomBytes(4096);
        const w = { name, offset, bytes, acked: false, failed: false };
        const p = fsp.open(join(m.mountpoint, 'vm1', name), 'r+').then(async (h) => {
          try {
            await h.write(bytes, 0, bytes.length, offset);
            await h.sync();
          } finally {
            await h.close();
          }
        });
        return { w, p: p.then(() => void (w.acked = true), () => void (w.failed = true)) };
      }),
    );
    await Promise.race([running.done, new Promise((r) => setTimeout(r, 4000))]);
    await new Promise((r) => setTimeout(r, 1000));
    const ackedBeforeKill = writes.filter(({ w }) => w.acked).length;
    await run('chattr', ['-i', migrationsDir(m)]);
    await killDaemon(m);
    await Promise.all(writes.map(({ p }) => p));
    await running.done;
    for (const { w } of writes) if (w.acked) w.bytes.copy(models[w.name], w.offset);
    await finishMigration(m, dest, env);
    for (const [name, model] of Object.entries(models)) {
      const got = await fsp.readFile(join(dest, name));
      // A write that failed (never acknowledged) may be there or not; an acknowledged one must be.
      for (const { w } of writes.filter((x) => x.w.name === name && !x.w.acked)) {
        const at = got.subarray(w.offset, w.offset + 4096);
        expect(at.equals(w.bytes) || at.equals(before[name].subarray(w.offset, w.offset + 4096))).toBe(true);
        at.copy(model, w.offset);
      }
      expect(differingBlocks(got, model), `${name} at the destination (${ackedBeforeKill} writes acknowledged before the kill)`).toEqual([]);
    }
    await expectTree(join(m.mountpoint, 'vm1'), models, 'mount');
  });

  it('mirror mode: a file created on a freed inode number never mirrors into the unlinked file copy', async () => {
    // The datastore on its own small ext4: nothing else (state files, the copy) takes the freed inode number.
    const root = await makeRoot();
    const datastore = join(root, 'datastore');
    await fsp.mkdir(datastore);
    await sh('truncate', ['-s', '64M', join(root, 'ds.img')]);
    await sh('mkfs.ext4', ['-q', '-F', join(root, 'ds.img')]);
    await sh('mount', ['-o', 'loop', join(root, 'ds.img'), datastore]);
    mounted.push(datastore);
    await fsp.rmdir(join(datastore, 'lost+found'));
    const m = (mount = await mountFerry({ root, datastore, env: { ...env, FERRY_FAULTS: 'iterate=pause:300' } }));
    const models = await makeHome(m, { A: 256 * KiB, X: 8 * MiB });
    const inoA = fs.statSync(join(datastore, 'vm1/A')).ino;
    const home = join(m.mountpoint, 'vm1');
    await fsp.mkdir(join(m.root, 'd'));
    const dest = join(m.root, 'd/vm1');
    // The guest keeps X busy: some of its writes land while a pass plans its copy, so every pass leaves X dirty
    // and the migration keeps passing (mirror mode, up to its last pass) instead of switching over at once.
    const writers = [startWriter(join(home, 'X'), models.X, [0, 4 * MiB], 1, true), startWriter(join(home, 'X'), models.X, [4 * MiB, 8 * MiB], 1, true)];
    const done: string[] = [];
    let chain: Promise<void> = Promise.resolve();
    const onPass = async (pass: number) => {
      if (pass === 1) {
        await fsp.unlink(join(home, 'A'));
        delete models.A;
        done.push('unlinked A');
      } else if (pass === 2) {
        const extras: string[] = [];
        for (let i = 0; i < 32 && !done.includes('B reuses A'); i++) {
          const name = `B${i}`;
          await fsp.writeFile(join(home, name), '');
          if (fs.statSync(join(datastore, 'vm1', name)).ino === inoA) {
            await fsp.rename(join(home, name), join(home, 'B'));
            done.push('B reuses A');
          } else extras.push(name);
        }
        for (const name of extras) await fsp.unlink(join(home, name));
        if (done.includes('B reuses A')) {
          models.B = randomBytes(128 * KiB);
          await fsp.writeFile(join(home, 'B'), models.B);
        }
      } else if (pass === 3 && done.includes('B reuses A')) {
        // B's copy is made (a fresh file in pass 3): these writes are mirrored.
        for (const offset of [0, 64 * KiB, 124 * KiB]) await writeThrough(join(home, 'B'), models.B, offset, randomBytes(4096));
        done.push('wrote B');
      }
    };
    let switchoverAfter: string[] | undefined;
    const running = migrate(m, home, dest, ['--mode', 'mirror', '--rate-limit', '2M', '--max-downtime', '100ms'], (e) => {
      if (e.type === 'pass') chain = chain.then(() => onPass(e.pass));
      if (e.type === 'phase' && e.phase === 'switchover' && !switchoverAfter) switchoverAfter = [...done];
    });
    const r = await running.done;
    await chain;
    await Promise.all(writers.map((w) => w.stop()));
    expect(r.code, r.stderr).toBe(0);
    // The window was really exercised: A gone in one pass, B on its inode number in a later one, written before the freeze.
    expect(switchoverAfter, `passes: ${r.events.filter((e) => e.type === 'pass').length}`).toEqual(['unlinked A', 'B reuses A', 'wrote B']);
    await expectTree(dest, models, 'destination');
    await expectTree(home, models, 'mount');
  });

  it('a double fault at the commit (the new map saved, then an error, and the old one not restored): the map on disk decides, and the commit stands', async () => {
    // commit-saved: the new map is on disk, then an error (as a failed directory fsync after the rename would give);
    // commit-restore: putting the old one back fails too. The map read back names the destination: the commit stands.
    const m = (mount = await mountFerry({ env: { ...env, FERRY_FAULTS: 'commit-saved=fail,commit-restore=fail' } }));
    const models = await makeHome(m, { 'disk.img': 4 * MiB, 'vm.cfg': 4 * KiB });
    await fsp.mkdir(join(m.root, 'd'));
    const dest = join(m.root, 'd/vm1');
    const home = join(m.mountpoint, 'vm1');
    const writer = startWriter(join(home, 'disk.img'), models['disk.img'], [0, 4 * MiB], 5);
    const r = await migrate(m, home, dest).done;
    await new Promise((res) => setTimeout(res, 300));
    await writer.stop();
    expect(await daemonLog(m)).toMatch(/injected failure at commit-saved/);
    expect(await daemonLog(m)).toMatch(/the commit stands/);
    expect(r.code, r.stderr).toBe(0);
    expect(r.final).toMatchObject({ type: 'done', destination: dest });
    const stateDs = join(m.stateDir, 'datastores', fs.readdirSync(join(m.stateDir, 'datastores'))[0]);
    const map = JSON.parse(await fsp.readFile(join(stateDs, 'mappings.json'), 'utf8')) as { virtual: string; backing: string }[];
    expect(map).toEqual([{ virtual: '/vm1', backing: dest }]);
    await expectTree(dest, models, 'destination');
    for (const offset of [0, 2 * MiB]) await writeThrough(join(home, 'disk.img'), models['disk.img'], offset, randomBytes(4096));
    expect((await m.cli(['unmount', m.mountpoint, '--force'])).code).toBe(0);
    const again = await m.remount();
    expect(again.code, again.stderr).toBe(0);
    await expectTree(home, models, 'mount after the remount');
    await expectTree(dest, models, 'destination after the remount');
  });

  it('a real double fault at the commit (the state dir immutable: save and restore fail with EPERM): served data equals the model after a remount', async () => {
    const m = (mount = await mountFerry({ env: { ...env, FERRY_FAULTS: 'before-commit=pause:1500' } }));
    const models = await makeHome(m, { 'disk.img': 4 * MiB, 'vm.cfg': 4 * KiB });
    await fsp.mkdir(join(m.root, 'd'));
    const dest = join(m.root, 'd/vm1');
    const home = join(m.mountpoint, 'vm1');
    const stateDs = join(m.stateDir, 'datastores', fs.readdirSync(join(m.stateDir, 'datastores'))[0]);
    const writer = startWriter(join(home, 'disk.img'), models['disk.img'], [0, 4 * MiB], 5);
    let frozen: Promise<void> | undefined;
    const r = await migrate(m, home, dest, [], (e) => {
      if (e.type === 'phase' && e.phase === 'switchover') frozen ??= chattr('+i', stateDs);
    }).done;
    await frozen;
    await new Promise((res) => setTimeout(res, 300));
    await writer.stop();
    expect(r.code, r.stderr).toBe(1);
    expect(r.final).toMatchObject({ type: 'error', code: 'EPERM', sourceIntact: true });
    expect(await daemonLog(m)).toMatch(/could not restore the path map/);
    for (const offset of [0, 2 * MiB]) await writeThrough(join(home, 'disk.img'), models['disk.img'], offset, randomBytes(4096));
    await run('chattr', ['-i', stateDs]);
    expect((await m.cli(['unmount', m.mountpoint])).code).toBe(0);
    const map = JSON.parse(await fsp.readFile(join(stateDs, 'mappings.json'), 'utf8').catch(() => '[]')) as { virtual: string }[];
    if (map.some((x) => x.virtual === '/vm1')) expect(fs.existsSync(dest)).toBe(true);
    expect((await m.remount()).code).toBe(0);
    await expectTree(home, models, 'mount after the remount');
    await expectTree(join(m.datastore, 'vm1'), models, 'source');
  });

  it('an error after the commit: the migration completed, and its done event keeps the real downtime', async () => {
    const m = (mount = await mountFerry({ env: { ...env, FERRY_FAULTS: 'after-commit=fail' } }));
    const models = await makeHome(m, { 'disk.img': 4 * MiB, 'vm.cfg': 4 * KiB });
    await fsp.mkdir(join(m.root, 'd'));
    const dest = join(m.root, 'd/vm1');
    const r = await migrate(m, join(m.mountpoint, 'vm1'), dest).done;
    expect(r.code, r.stderr).toBe(0);
    expect(r.final).toMatchObject({ type: 'done', destination: dest });
    const freeze = (await daemonLog(m)).split('\n').filter((l) => l.includes('"switchover freeze"')).map((l) => JSON.parse(l) as { frozenMs: number });
    expect(freeze).toHaveLength(1);
    // Was 0: the downtime was only recorded when the switchover returned normally.
    expect(r.final!.downtimeMs).toBeGreaterThan(0);
    expect(r.final!.downtimeMs).toBeLessThanOrEqual(freeze[0].frozenMs);
    await expectTree(dest, models, 'destination');
    await expectTree(join(m.mountpoint, 'vm1'), models, 'mount');
  });

  it('an abandoned switchover with a writer running through it: every write, during the freeze and after, is in the committed copy', async () => {
    const m = (mount = await mountFerry({ env: { ...env, FERRY_FAULTS: 'switchover=pause:600@1' } }));
    const models = await makeHome(m, { 'disk.img': 4 * MiB, 'vm.cfg': 4 * KiB });
    await fsp.mkdir(join(m.root, 'd'));
    const dest = join(m.root, 'd/vm1');
    const home = join(m.mountpoint, 'vm1');
    const writer = startWriter(join(home, 'disk.img'), models['disk.img'], [0, 4 * MiB], 2);
    let frozeAt = 0;
    let abandonedAt = 0;
    const r = await migrate(m, home, dest, ['--max-downtime', '300ms'], (e) => {
      if (e.type === 'phase' && e.phase === 'switchover' && !frozeAt) frozeAt = e.at;
      if (e.type === 'switchover' && !abandonedAt) abandonedAt = e.at;
    }).done;
    const after = writer.log.length;
    await new Promise((res) => setTimeout(res, 300));
    await writer.stop();
    expect(r.code, r.stderr).toBe(0);
    expect(r.events.filter((e) => e.type === 'switchover')).toEqual([expect.objectContaining({ attempt: 1, outcome: 'abandoned' })]);
    // In flight while I/O was frozen (a write issued then waits for the thaw).
    const duringFreeze = writer.log.filter((w) => w.at <= abandonedAt && w.done >= frozeAt + 100).length;
    expect(duringFreeze, 'writes issued during the abandoned freeze').toBeGreaterThan(0);
    expect(writer.log.length - after, 'writes after the commit').toBeGreaterThan(0);
    await expectTree(dest, models, 'destination');
    await expectTree(home, models, 'mount');
    expect(fs.existsSync(join(m.datastore, 'vm1'))).toBe(false);
  });

  it('mirror mode, destination full: the guest write that could not be mirrored still succeeds, the migration fails, source intact', async () => {
    // README (mirror-write.ts): a failed destination write does not fail the guest; the migration aborts, source intact.
    const m = (mount = await mountFerry({ env: { ...env, FERRY_FAULTS: 'bulk=pause:3000@1' } }));
    const disk = Buffer.concat([randomBytes(4 * MiB), Buffer.alloc(4 * MiB)]);
    const home = join(m.datastore, 'vm1');
    await fsp.mkdir(home);
    const fd = fs.openSync(join(home, 'disk.img'), 'w');
    fs.writeSync(fd, disk, 0, 4 * MiB, 0);
    fs.ftruncateSync(fd, 8 * MiB); // the second half a hole: a mirrored write there needs new space at the copy
    fs.closeSync(fd);
    const models: Record<string, Buffer> = { 'disk.img': disk };
    const d = join(m.root, 'd');
    await tmpfs(d, '24M');
    const dest = join(d, 'vm1');
    const running = migrate(m, join(m.mountpoint, 'vm1'), dest, ['--mode', 'mirror']);
    // The copy of disk.img is done (the bulk pass pauses after it): from now on its writes are mirrored.
    await waitFor(() => fs.existsSync(join(dest, 'disk.img')) && fs.statSync(join(dest, 'disk.img')).blocks * 512 >= 4 * MiB, 20_000, 'the copy');
    await fill(d, 0);
    for (let offset = 4 * MiB; offset < 8 * MiB; offset += 256 * KiB) await writeThrough(join(m.mountpoint, 'vm1/disk.img'), models['disk.img'], offset, randomBytes(64 * KiB));
    const r = await running.done;
    expect(r.code, r.stderr).toBe(1);
    expect(r.final).toMatchObject({ type: 'error', code: 'ENOSPC', sourceIntact: true });
    await expectTree(home, models, 'source');
    await expectTree(join(m.mountpoint, 'vm1'), models, 'mount');
    expect(fs.existsSync(dest)).toBe(false);
  });
});
