import { afterEach, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { mountFerry, mountsUnder, type TestMount } from '../helpers/mounts.js';
import { migrate, waitFor, type MigrationRun } from '../helpers/migration.js';
import { hasExited } from '../helpers/cli.js';
import { burst, bytes, expectBytes, prng } from '../helpers/model.js';

// Every data check here compares with the test's own model of the bytes: the disk's initial bytes and every write
// the test made through the mount, kept in this process's memory. Never the mount with what it serves.
const MiB = 1 << 20;
const DISK = 8 * MiB;
let mount: TestMount | undefined;
afterEach(async () => {
  await mount?.stop();
  mount = undefined;
});

interface Home {
  m: TestMount;
  home: string;
  dest: string;
  disk: string;
  /** The disk's bytes as the test wrote them: the authority every copy is checked against. */
  model: Buffer;
}

/** vm1/disk.img of seeded bytes (the model starts as a copy of them) and vm1/vm.cfg, in the datastore. */
async function makeHome(m: TestMount, seed: number): Promise<Home> {
  const home = join(m.datastore, 'vm1');
  await fsp.mkdir(home);
  const model = bytes(prng(seed), DISK);
  await fsp.writeFile(join(home, 'disk.img'), model);
  await fsp.writeFile(join(home, 'vm.cfg'), 'cfg');
  await fsp.mkdir(join(m.root, 'dest'));
  return { m, home, dest: join(m.root, 'dest', 'vm1'), disk: join(m.mountpoint, 'vm1/disk.img'), model };
}

function migrationsDir(m: TestMount): string {
  return join(m.stateDir, 'datastores', fs.readdirSync(join(m.stateDir, 'datastores'))[0], 'migrations');
}

const journals = (m: TestMount) => fsp.readdir(migrationsDir(m));

/**
 * When the test's writes during the migration happen (each then races nothing: its crash point comes later):
 * - preflight: the preflight is held (preflight=pause), before anything is written;
 * - bulk-done: the bulk copy is over and held at its last file (bulk=pause@2: disk.img and vm.cfg), so every write
 *   dirties copied blocks, and the next pass must copy them (with --rate-limit 8M they make an estimate over 50 ms:
 *   an iterate pass is certain);
 * - checkpointed: a timer checkpoint (every 2 s) of a bulk copy throttled to ~4 s exists;
 * - cancelled: as checkpointed, then `ferry cancel` (the crash points of the abort come after the writes).
 */
type When = 'before' | 'preflight' | 'bulk-done' | 'checkpointed' | 'cancelled';
/** What a remount must find: no migration at all, one undone (no checkpoint), one interrupted (checkpoint), one committed. */
type Outcome = 'none' | 'undone' | 'interrupted' | 'committed';
const HOLD_BULK = 'bulk=pause:2000@2';

const cases: [point: string, faults: string, args: string[], when: When, outcome: Outcome][] = [
  ['preflight', 'preflight=crash', [], 'before', 'none'],
  ['prepare', 'preflight=pause:1500,prepare=crash', [], 'preflight', 'undone'],
  ['bulk', 'bulk=crash@2', ['--rate-limit', '2M'], 'checkpointed', 'interrupted'],
  ['iterate', `${HOLD_BULK},iterate=crash`, ['--rate-limit', '8M'], 'bulk-done', 'interrupted'],
  ['switchover', `${HOLD_BULK},switchover=crash`, ['--rate-limit', '8M'], 'bulk-done', 'interrupted'],
  ['before-commit', `${HOLD_BULK},before-commit=crash`, ['--rate-limit', '8M'], 'bulk-done', 'interrupted'],
  ['commit', `${HOLD_BULK},commit=crash`, ['--rate-limit', '8M'], 'bulk-done', 'interrupted'],
  ['after-commit', `${HOLD_BULK},after-commit=crash`, ['--rate-limit', '8M'], 'bulk-done', 'committed'],
  ['cleanup', `${HOLD_BULK},cleanup=crash`, ['--rate-limit', '8M'], 'bulk-done', 'committed'],
  // The abort's undo (src/migrate/undo.ts): before the checkpoint goes, the copy stays resumable; after, it is undone.
  ['aborting', 'aborting=crash', ['--rate-limit', '2M'], 'cancelled', 'interrupted'],
  ['undo-barred', 'undo-barred=crash', ['--rate-limit', '2M'], 'cancelled', 'undone'],
  ['undo-removed', 'undo-removed=crash', ['--rate-limit', '2M'], 'cancelled', 'undone'],
];
/** The migration's files in the state dir at the crash: none before the prepare, then its journal, checkpoint and
 * intent log, of which the undo removes the checkpoint first. */
const filesAt = (point: string) => ({ preflight: 0, prepare: 1, 'undo-barred': 2, 'undo-removed': 2 })[point] ?? 3;

/**
 * Starts a migration on a daemon that kills itself at a fault point, makes the test's writes at `when`, and
 * returns once the daemon is dead, its mount cleared and a fresh daemon mounted (without faults).
 */
async function crashDuringMigration(faults: string, args: string[], when: When, seed: number, extraFiles: Record<string, Buffer> = {}): Promise<Home & { first: MigrationRun }> {
  mount = await mountFerry({ env: { FERRY_FAULTS: faults } });
  const m = mount;
  const h = await makeHome(m, seed);
  for (const [name, content] of Object.entries(extraFiles)) await fsp.writeFile(join(h.home, name), content);
  const { pid } = await m.status();
  if (when === 'before') await burst(h.disk, h.model, seed + 1, 48);
  let trigger!: () => void;
  let missed!: (err: Error) => void;
  const triggered = new Promise<void>((resolve, reject) => ((trigger = resolve), (missed = reject)));
  const running = migrate(m, join(m.mountpoint, 'vm1'), h.dest, args, (e) => {
    if (when === 'bulk-done' && e.type === 'progress' && e.pass === 0 && e.copiedBytes >= DISK) trigger();
    if ((when === 'checkpointed' || when === 'cancelled') && e.type === 'phase' && e.phase === 'bulk') trigger();
    // A window missed fails at once instead of waiting for the test's timeout.
    if (e.type === 'pass' && e.pass === 0) missed(new Error(`the bulk pass ended before the test's writes (${when})`));
  });
  void running.done.then(() => missed(new Error(`the migration ended before the test's writes (${when})`)));
  // No phase event comes before the preflight's verdict (issue 28): the writes start with the migration, within
  // the preflight's pause.
  if (when === 'preflight') trigger();
  triggered.catch(() => undefined); // observed through `writes` below (or not awaited at all: 'before')
  const writes =
    when === 'before'
      ? Promise.resolve()
      : triggered.then(async () => {
          if (when === 'checkpointed' || when === 'cancelled') await waitFor(() => fs.readdirSync(migrationsDir(m)).some((n) => n.endsWith('.checkpoint.json')), 10_000, 'a checkpoint');
          await burst(h.disk, h.model, seed + 1, 48);
        });
  // The cancel's own connection is cut by the crash too.
  const cancel = when === 'cancelled' ? writes.then(() => m.cli(['cancel', join(m.mountpoint, 'vm1')])) : undefined;
  // A burst cut off by the crash rejects here: the test then fails, it never guesses.
  await writes;
  const first = await running.done;
  if (cancel) expect((await cancel).code).toBe(1);
  expect(first.code).toBe(1);
  expect(first.stderr).toMatch(/closed the connection|cannot reach the daemon/);
  await waitFor(() => hasExited(pid), 10_000, 'the daemon to die');

  const dead = await m.cli(['status', '--json']);
  expect(JSON.parse(dead.stdout)[0].state).toBe('dead');
  expect((await m.cli(['unmount', m.mountpoint, '--force'])).code).toBe(0);
  expect(await mountsUnder(m.mountpoint)).toEqual([]);
  return { ...h, first };
}

async function remount(m: TestMount): Promise<void> {
  const again = await m.cli(['mount', m.datastore, m.mountpoint]);
  expect(again.code, again.stderr).toBe(0);
}

/** The source is authoritative and whole, nothing is left of the migration, and a new one copies the model exactly. */
async function expectUndoneThenMigrates(h: Home): Promise<void> {
  const { m } = h;
  const status = await m.status();
  expect(status.mappings).toEqual([{ virtual: '/', backing: m.datastore }]);
  expect(status.migrations.filter((x: { interrupted: boolean }) => x.interrupted)).toEqual([]);
  expect(fs.existsSync(h.dest)).toBe(false);
  expect(await journals(m)).toEqual([]);
  await expectBytes(join(h.home, 'disk.img'), h.model, 'source');
  await expectBytes(h.disk, h.model, 'served');
  const again = await migrate(m, join(m.mountpoint, 'vm1'), h.dest).done;
  expect(again.code, again.stderr).toBe(0);
  await expectBytes(join(h.dest, 'disk.img'), h.model, 'destination of the new migration');
  expect(await fsp.readFile(join(h.dest, 'vm.cfg'), 'utf8')).toBe('cfg');
  expect(fs.existsSync(h.home)).toBe(false);
}

/** kill -9 of the daemon at a named point (FERRY_FAULTS), then a fresh `ferry mount` must finish, undo or resume the migration. */
describe.each(cases)('daemon killed at %s', (point, faults, args, when, outcome) => {
  const title = {
    none: 'remounts with nothing to undo; the source holds the model and migrates again',
    undone: 'remounts on the source, the partial copy removed; the source holds the model and migrates again',
    interrupted: 'remounts on the source with the migration interrupted; --resume commits a copy equal to the model',
    committed: 'remounts on the destination, which holds the model, and finishes deleting the source',
  }[outcome];
  it(title, async () => {
    const h = await crashDuringMigration(faults, args, when, 10 + cases.findIndex((c) => c[0] === point));
    const { m } = h;
    // The journal (prepare) exists from the prepare step on; the preflight writes nothing.
    expect((await journals(m)).length).toBe(filesAt(point));
    await remount(m);

    if (outcome === 'none' || outcome === 'undone') {
      await expectUndoneThenMigrates(h);
      return;
    }
    if (outcome === 'committed') {
      expect(await journals(m)).toEqual([]);
      expect(fs.existsSync(h.home)).toBe(false);
      expect((await m.status()).mappings).toContainEqual({ virtual: '/vm1', backing: h.dest });
      await expectBytes(join(h.dest, 'disk.img'), h.model, 'destination');
      await expectBytes(h.disk, h.model, 'served');
      expect(await fsp.readFile(join(h.dest, 'vm.cfg'), 'utf8')).toBe('cfg');
      // The committed home can simply be migrated on.
      const again = await migrate(m, join(m.mountpoint, 'vm1'), join(m.root, 'dest', 'again')).done;
      expect(again.code, again.stderr).toBe(0);
      await expectBytes(join(m.root, 'dest', 'again', 'disk.img'), h.model, 'destination of the next migration');
      return;
    }
    // Interrupted: the source is authoritative and holds every acknowledged write; the partial copy waits.
    const status = await m.status();
    expect(status.mappings).toEqual([{ virtual: '/', backing: m.datastore }]);
    expect(status.migrations).toEqual([expect.objectContaining({ path: '/vm1', phase: 'interrupted', interrupted: true })]);
    expect(fs.existsSync(join(h.dest, 'disk.img'))).toBe(true);
    await expectBytes(join(h.home, 'disk.img'), h.model, 'source');
    // The guest runs on the source between the remount and the resume: the resumed copy must hold these writes too.
    await burst(h.disk, h.model, 100, 24);
    const resumed = await m.cli(['migrate', join(m.mountpoint, 'vm1'), '--resume', '--json']);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stdout.trim().split('\n').map((l) => JSON.parse(l)).at(-1)).toMatchObject({ type: 'done', destination: h.dest });
    await expectBytes(join(h.dest, 'disk.img'), h.model, 'destination');
    await expectBytes(h.disk, h.model, 'served');
    expect(await fsp.readFile(join(h.dest, 'vm.cfg'), 'utf8')).toBe('cfg');
    expect(fs.existsSync(h.home)).toBe(false);
    expect(await journals(m)).toEqual([]);
  });
});

/**
 * A checkpoint or intent log damaged while the daemon is down (a torn or foreign write, a bad disk) must never be
 * resumed from: the remount undoes the migration (partial copy removed, source whole), and it can run again.
 */
describe.each([
  ['checkpoint', 'torn in the middle', (text: string) => text.slice(0, Math.floor(text.length / 2))],
  ['checkpoint', 'well-formed JSON of another shape', () => '{"at":"2026-01-01T00:00:00.000Z"}\n'],
  ['intent', 'torn in the middle', (text: string) => text.slice(0, Math.floor(text.length / 2))],
  ['intent', 'well-formed JSON of another shape', () => '{"regions":3}\n'],
] as const)('a %s file %s after a crash', (kind, _how, damage) => {
  it('the remount undoes the migration: partial copy removed, source equal to the model, and it migrates again', async () => {
    const h = await crashDuringMigration(`${HOLD_BULK},before-commit=crash`, ['--rate-limit', '8M'], 'bulk-done', 40);
    const dir = migrationsDir(h.m);
    const name = fs.readdirSync(dir).find((n) => n.endsWith(`.${kind}.json`));
    expect(name, `the ${kind} file the crash left`).toBeDefined();
    const file = join(dir, name!);
    await fsp.writeFile(file, damage(await fsp.readFile(file, 'utf8')));
    await remount(h.m);
    await expectUndoneThenMigrates(h);
  });
});

/**
 * After a crash, a placed file deleted and another created with the same inode number while ferry is down: the
 * checkpoint's dirty bits describe the old file, so the resume must copy the new one whole (birth time tells them
 * apart: src/migrate/engine.ts, forgetReusedInodes). The heartbeat is set to "now" after the swap, as if the swap
 * fell in the crashed daemon's last beat period: then the ctime check (recovery.ts) cannot see it, and only the
 * birth time can.
 */
describe('an inode number reused while the daemon is down', () => {
  it('is recognised by its birth time: --resume copies the new file whole, and only what the checkpoint cannot vouch for', async () => {
    const random = prng(77);
    const oldB = bytes(random, 4 * MiB);
    const h = await crashDuringMigration(`${HOLD_BULK},before-commit=crash`, ['--rate-limit', '8M'], 'bulk-done', 50, { 'b.img': oldB });
    const { m } = h;
    const placed = join(h.home, 'b.img');
    const before = await fsp.stat(placed, { bigint: true });
    await fsp.unlink(placed);
    // ext4 hands a freed inode number to the next create in the same group: look for it outside the home.
    const scratch = join(m.datastore, 'scratch');
    await fsp.mkdir(scratch);
    let reused: string | undefined;
    for (let i = 0; i < 1000 && !reused; i++) {
      const candidate = join(scratch, `f${i}`);
      await fsp.writeFile(candidate, '');
      if ((await fsp.stat(candidate, { bigint: true })).ino === before.ino) reused = candidate;
    }
    expect(reused, `no create reused inode ${before.ino}`).toBeDefined();
    const newB = bytes(random, 4 * MiB);
    await fsp.writeFile(reused!, newB);
    await fsp.rename(reused!, placed);
    await fsp.rm(scratch, { recursive: true });
    const after = await fsp.stat(placed, { bigint: true });
    expect(after.ino).toBe(before.ino);
    expect(after.birthtimeNs).not.toBe(before.birthtimeNs);
    // As if the crashed daemon beat once more after the swap (see above).
    await fsp.writeFile(join(dirname(migrationsDir(m)), 'alive'), `${String(Date.now() + 5000).padStart(16, '0')}\n`);

    await remount(m);
    expect((await m.status()).migrations).toEqual([expect.objectContaining({ path: '/vm1', interrupted: true })]);
    const resumed = await m.cli(['migrate', join(m.mountpoint, 'vm1'), '--resume', '--json']);
    expect(resumed.code, resumed.stderr).toBe(0);
    const done = resumed.stdout.trim().split('\n').map((l) => JSON.parse(l)).at(-1);
    expect(done).toMatchObject({ type: 'done', destination: h.dest });
    await expectBytes(join(h.dest, 'b.img'), newB, 'destination of the new file');
    await expectBytes(join(h.dest, 'disk.img'), h.model, 'destination of disk.img');
    // The new file whole, and not disk.img again: its checkpoint still vouches for it.
    expect(done.bytesCopied).toBeGreaterThanOrEqual(4 * MiB);
    expect(done.bytesCopied).toBeLessThan(4 * MiB + DISK / 2);
    expect(fs.existsSync(h.home)).toBe(false);
  });
});
