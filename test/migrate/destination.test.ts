import { afterEach, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { forceUnmount, listTree, mountFerry, mountsUnder, type TestMount } from '../helpers/mounts.js';
import { migrate, waitFor } from '../helpers/migration.js';
import { hasExited, run } from '../helpers/cli.js';

// Issue 28, item 1: `--to` reads as mv's target (an existing directory holds the subtree under its own name; a missing
// path is the new name), and cleanup removes only what the migration made, never a mount point.
const MiB = 1 << 20;

let mount: TestMount | undefined;
/** Filesystems a test mounted: unmounted once the ferry mount is gone. */
const mounted: string[] = [];

afterEach(async () => {
  const m = mount;
  mount = undefined;
  if (m) {
    await m.cli(['unmount', m.mountpoint, '--force']).catch(() => undefined);
    if ((await mountsUnder(m.mountpoint)).length > 0) await forceUnmount(m.mountpoint);
  }
  for (const path of mounted.splice(0).reverse()) {
    if ((await run('umount', [path])).code !== 0) await run('umount', ['-l', path]);
  }
  await m?.stop();
});

async function tmpfs(dir: string): Promise<void> {
  await fsp.mkdir(dir, { recursive: true });
  const r = await run('mount', ['-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', dir]);
  if (r.code !== 0) throw new Error(`mount tmpfs ${dir}: ${r.stderr}`);
  mounted.push(dir);
}

async function isMountPoint(dir: string): Promise<boolean> {
  return (await fsp.readFile('/proc/self/mountinfo', 'utf8')).split('\n').some((line) => line.split(' ')[4] === dir);
}

/** A VM home vm1 (disk.img, vm.cfg) on a fresh mount; returns its files' bytes. */
async function vm1(env: NodeJS.ProcessEnv = {}): Promise<{ m: TestMount; files: Record<string, Buffer> }> {
  const m = (mount = await mountFerry({ env }));
  const files = { 'disk.img': randomBytes(4 * MiB), 'vm.cfg': Buffer.from('memory=1G\n') };
  await fsp.mkdir(join(m.datastore, 'vm1'));
  for (const [name, bytes] of Object.entries(files)) await fsp.writeFile(join(m.datastore, 'vm1', name), bytes);
  return { m, files };
}

async function expectFiles(dir: string, files: Record<string, Buffer>, what: string): Promise<void> {
  expect((await fsp.readdir(dir)).sort(), what).toEqual(Object.keys(files).sort());
  for (const [name, bytes] of Object.entries(files)) expect((await fsp.readFile(join(dir, name))).equals(bytes), `${what}: ${name}`).toBe(true);
}

async function backing(m: TestMount, virtual: string): Promise<string | undefined> {
  return ((await m.status()).mappings as { virtual: string; backing: string }[]).find((x) => x.virtual === virtual)?.backing;
}

describe('--to reads as mv', () => {
  it('an existing directory holds the subtree under its name: ds2/vm1, named by the plan event and the result', async () => {
    const { m, files } = await vm1();
    const ds2 = join(m.root, 'ds2');
    await fsp.mkdir(ds2);
    const r = await migrate(m, join(m.mountpoint, 'vm1'), ds2).done;
    expect(r.code, r.stderr).toBe(0);
    expect(r.events.find((e) => e.type === 'plan')).toMatchObject({ source: join(m.datastore, 'vm1'), destination: join(ds2, 'vm1') });
    expect(r.final).toMatchObject({ type: 'done', destination: join(ds2, 'vm1') });
    expect(await fsp.readdir(ds2)).toEqual(['vm1']);
    await expectFiles(join(ds2, 'vm1'), files, 'destination');
    await expectFiles(join(m.mountpoint, 'vm1'), files, 'mount');
    expect(await backing(m, '/vm1')).toBe(join(ds2, 'vm1'));
    expect(fs.existsSync(join(m.datastore, 'vm1'))).toBe(false);
  });

  it('a missing path is the new name, for a directory and for a file (no directory made for the file)', async () => {
    const { m, files } = await vm1();
    const ds2 = join(m.root, 'ds2');
    await fsp.mkdir(ds2);
    const dir = await migrate(m, join(m.mountpoint, 'vm1'), join(ds2, 'renamed')).done;
    expect(dir.code, dir.stderr).toBe(0);
    expect(dir.final).toMatchObject({ type: 'done', destination: join(ds2, 'renamed') });
    await expectFiles(join(ds2, 'renamed'), files, 'destination');

    const file = await migrate(m, join(m.mountpoint, 'vm1/disk.img'), join(ds2, 'disk-only')).done;
    expect(file.code, file.stderr).toBe(0);
    expect(file.final).toMatchObject({ type: 'done', destination: join(ds2, 'disk-only') });
    const st = await fsp.lstat(join(ds2, 'disk-only'));
    expect(st.isFile()).toBe(true);
    expect((await fsp.readFile(join(ds2, 'disk-only'))).equals(files['disk.img'])).toBe(true);
    expect((await fsp.readFile(join(m.mountpoint, 'vm1/disk.img'))).equals(files['disk.img'])).toBe(true);
    expect((await fsp.readdir(ds2)).sort()).toEqual(['disk-only', 'renamed']);
    expect(await fsp.readdir(join(ds2, 'renamed'))).toEqual(['vm.cfg']);
  });

  it('a file into an existing directory keeps its name, and the CLI names the final path', async () => {
    const { m, files } = await vm1();
    const ds2 = join(m.root, 'ds2');
    await fsp.mkdir(ds2);
    await fsp.writeFile(join(ds2, 'other'), 'not ours');
    const r = await m.cli(['migrate', join(m.mountpoint, 'vm1/disk.img'), '--to', ds2]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`moving /vm1/disk.img to ${join(ds2, 'disk.img')}\n`);
    expect((await fsp.readdir(ds2)).sort()).toEqual(['disk.img', 'other']);
    expect((await fsp.readFile(join(ds2, 'disk.img'))).equals(files['disk.img'])).toBe(true);
    expect(await backing(m, '/vm1/disk.img')).toBe(join(ds2, 'disk.img'));
  });

  it('refuses a destination that exists, an existing file, a trailing slash on a missing directory, a missing parent', async () => {
    const { m, files } = await vm1();
    const ds2 = join(m.root, 'ds2');
    await fsp.mkdir(join(ds2, 'vm1'), { recursive: true });
    await fsp.writeFile(join(ds2, 'disk.img'), 'x');
    await fsp.writeFile(join(m.root, 'afile'), 'x');
    const cases: [string, string, RegExp][] = [
      ['vm1', ds2, new RegExp(`destination ${join(ds2, 'vm1')} already exists`)],
      ['vm1/disk.img', join(ds2, 'disk.img'), /disk.img exists and is not a directory/],
      ['vm1/disk.img', ds2, new RegExp(`destination ${join(ds2, 'disk.img')} already exists`)],
      ['vm1', join(m.root, 'afile'), /afile exists and is not a directory/],
      ['vm1/disk.img', join(m.root, 'afile'), /afile exists and is not a directory/],
      ['vm1', join(m.root, 'nodir') + '/', /nodir\/ does not exist: a trailing slash names a directory to move into/],
      ['vm1', join(m.root, 'no/such/parent'), /parent directory .* does not exist/],
    ];
    for (const [path, dest, error] of cases) {
      const r = await m.cli(['migrate', join(m.mountpoint, path), '--to', dest]);
      expect(r.code, `${path} → ${dest}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(error);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
    expect(await listTree(ds2)).toEqual(['disk.img', 'vm1']);
    expect(fs.existsSync(join(m.root, 'nodir'))).toBe(false);
    await expectFiles(join(m.datastore, 'vm1'), files, 'source');
  });

  it('a trailing slash on an existing directory moves into it', async () => {
    const { m, files } = await vm1();
    const ds2 = join(m.root, 'ds2');
    await fsp.mkdir(ds2);
    const r = await migrate(m, join(m.mountpoint, 'vm1'), ds2 + '/').done;
    expect(r.code, r.stderr).toBe(0);
    await expectFiles(join(ds2, 'vm1'), files, 'destination');
  });
});

describe('cleanup removes only what the migration made', () => {
  it('vm1 → ds2/vm1 → back into the datastore: nothing left at ds2, ds2 itself kept', async () => {
    const { m, files } = await vm1();
    const ds2 = join(m.root, 'ds2');
    await fsp.mkdir(ds2);
    const there = await migrate(m, join(m.mountpoint, 'vm1'), ds2).done;
    expect(there.code, there.stderr).toBe(0);
    const back = await migrate(m, join(m.mountpoint, 'vm1'), m.datastore).done;
    expect(back.code, back.stderr).toBe(0);
    expect(back.final).toMatchObject({ type: 'done', destination: join(m.datastore, 'vm1') });
    expect(fs.statSync(ds2).isDirectory()).toBe(true);
    expect(await fsp.readdir(ds2)).toEqual([]);
    await expectFiles(join(m.datastore, 'vm1'), files, 'back in the datastore');
    await expectFiles(join(m.mountpoint, 'vm1'), files, 'mount');
    expect(await backing(m, '/vm1')).toBeUndefined();
  });

  it("a destination whose parent is a mount point, then a move back: the mount point stays, mounted", async () => {
    const { m, files } = await vm1();
    const ds3 = join(m.root, 'ds3');
    await tmpfs(ds3);
    const there = await migrate(m, join(m.mountpoint, 'vm1'), ds3).done;
    expect(there.code, there.stderr).toBe(0);
    await expectFiles(join(ds3, 'vm1'), files, 'on the tmpfs');
    const back = await migrate(m, join(m.mountpoint, 'vm1'), m.datastore).done;
    expect(back.code, back.stderr).toBe(0);
    expect(await isMountPoint(ds3)).toBe(true);
    expect(await fsp.readdir(ds3)).toEqual([]);
    await expectFiles(join(m.datastore, 'vm1'), files, 'back in the datastore');
  });

  it('an aborted migration into an existing directory removes only the directory it made', async () => {
    const { m, files } = await vm1({ FERRY_FAULTS: 'before-commit=fail' });
    const ds2 = join(m.root, 'ds2');
    await fsp.mkdir(ds2);
    await fsp.writeFile(join(ds2, 'keep'), 'not ours');
    const r = await migrate(m, join(m.mountpoint, 'vm1'), ds2).done;
    expect(r.code).toBe(1);
    expect(r.final).toMatchObject({ type: 'error', code: 'EIO', sourceIntact: true });
    expect(await fsp.readdir(ds2)).toEqual(['keep']);
    expect(await fsp.readFile(join(ds2, 'keep'), 'utf8')).toBe('not ours');
    await expectFiles(join(m.mountpoint, 'vm1'), files, 'mount');
  });

  it('a one-file migration to a new name, cancelled, then done and moved back: nothing left at ds2', async () => {
    const { m, files } = await vm1({ FERRY_FAULTS: 'bulk=pause:3000@1' });
    const ds2 = join(m.root, 'ds2');
    await fsp.mkdir(ds2);
    const disk = join(m.mountpoint, 'vm1/disk.img');
    const cancelled = migrate(m, disk, join(ds2, 'disk-only'));
    await waitFor(async () => ((await m.status()).migrations?.[0]?.phase ?? '') === 'bulk', 20_000, 'the bulk pass');
    expect((await m.cli(['cancel', disk])).code).toBe(0);
    expect((await cancelled.done).code).toBe(1);
    expect(await fsp.readdir(ds2)).toEqual([]);

    const there = await migrate(m, disk, join(ds2, 'disk-only')).done;
    expect(there.code, there.stderr).toBe(0);
    expect((await fsp.lstat(join(ds2, 'disk-only'))).isFile()).toBe(true);
    const back = await migrate(m, disk, join(m.datastore, 'vm1')).done;
    expect(back.code, back.stderr).toBe(0);
    expect(back.final).toMatchObject({ type: 'done', destination: join(m.datastore, 'vm1/disk.img') });
    expect(await fsp.readdir(ds2)).toEqual([]);
    expect(fs.statSync(ds2).mode & 0o777).toBe(0o755);
    await expectFiles(join(m.datastore, 'vm1'), files, 'back in the datastore');
    await expectFiles(join(m.mountpoint, 'vm1'), files, 'mount');
  });

  it.each([
    ['directory', 'vm1', 'vm1'],
    ['file', 'vm1/disk.img', 'disk.img'],
  ])('a %s destination that appears after the preflight is not ours: the migration fails and leaves it', async (_kind, path, name) => {
    const { m, files } = await vm1({ FERRY_FAULTS: 'journaled=pause:1500' });
    const ds2 = join(m.root, 'ds2');
    await fsp.mkdir(ds2);
    let journaled = false;
    const running = migrate(m, join(m.mountpoint, path), ds2, [], (e) => {
      if (e.type === 'phase' && e.phase === 'prepare') journaled = true;
    });
    await waitFor(() => journaled, 20_000, 'the prepare');
    const theirs = join(ds2, name);
    if (name === 'vm1') {
      await fsp.mkdir(theirs);
      await fsp.writeFile(join(theirs, 'theirs'), 'not ours');
    } else {
      await fsp.writeFile(theirs, 'not ours');
    }
    const r = await running.done;
    expect(r.code).toBe(1);
    expect(r.final).toMatchObject({ type: 'error', code: 'EEXIST', sourceIntact: true });
    expect(await fsp.readdir(ds2)).toEqual([name]);
    expect(await fsp.readFile(name === 'vm1' ? join(theirs, 'theirs') : theirs, 'utf8')).toBe('not ours');
    await expectFiles(join(m.mountpoint, 'vm1'), files, 'mount');
  });

  it('a subtree mapped onto a mount point (an old-style migration) moved away: its files go, the mount point stays', async () => {
    const { m, files } = await vm1();
    // The path map an old ferry wrote for `--to <mount point>`: /vm1 served from the root of a filesystem.
    const old = join(m.root, 'oldds');
    await tmpfs(old);
    for (const [name, bytes] of Object.entries(files)) await fsp.writeFile(join(old, name), bytes);
    expect((await m.cli(['unmount', m.mountpoint])).code).toBe(0);
    await fsp.rm(join(m.datastore, 'vm1'), { recursive: true });
    const stateDs = join(m.stateDir, 'datastores', fs.readdirSync(join(m.stateDir, 'datastores'))[0]);
    await fsp.writeFile(join(stateDs, 'mappings.json'), JSON.stringify([{ virtual: '/vm1', backing: old }]));
    expect((await m.remount()).code).toBe(0);
    await expectFiles(join(m.mountpoint, 'vm1'), files, 'served from the old mapping');

    const away = join(m.root, 'away');
    const r = await migrate(m, join(m.mountpoint, 'vm1'), away).done;
    expect(r.code, r.stderr).toBe(0);
    expect(r.final).toMatchObject({ type: 'done', destination: away, keptMountPoint: old });
    await expectFiles(away, files, 'destination');
    expect(await isMountPoint(old)).toBe(true);
    expect(await fsp.readdir(old)).toEqual([]);
    expect(dirname(old)).toBe(m.root);
    const log = await m.evidence();
    expect(log).toMatch(/mount point/);
  });

  it("journals of an older ferry (--to an existing directory; a file's directory it made) are undone as they meant", async () => {
    const { m, files } = await vm1();
    await fsp.mkdir(join(m.datastore, 'vm2'));
    await fsp.writeFile(join(m.datastore, 'vm2/disk.img'), files['disk.img']);
    expect((await m.cli(['unmount', m.mountpoint])).code).toBe(0);
    // The partial copies a crash before the commit (and before any checkpoint) left, as the old layout had them.
    const ds2 = join(m.root, 'ds2');
    await fsp.mkdir(join(ds2, '.ferry-staging-olddir'), { recursive: true });
    await fsp.writeFile(join(ds2, 'disk.img'), 'partial');
    const ds3 = join(m.root, 'ds3');
    await fsp.mkdir(join(ds3, 'disk-only/.ferry-staging-oldfile'), { recursive: true });
    await fsp.writeFile(join(ds3, 'disk-only/disk.img'), 'partial');
    const common = { keepSource: false, startedAt: new Date().toISOString(), mode: 'auto', maxDowntimeMs: 5000, maxIterations: 30, rateLimit: 0 };
    const journals = join(m.stateDir, 'datastores', fs.readdirSync(join(m.stateDir, 'datastores'))[0], 'migrations');
    await fsp.writeFile(join(journals, 'olddir.json'), JSON.stringify({ id: 'olddir', virtual: '/vm1', source: join(m.datastore, 'vm1'), dest: ds2, destDir: ds2, destDirExisted: true, isFile: false, ...common }));
    await fsp.writeFile(
      join(journals, 'oldfile.json'),
      JSON.stringify({ id: 'oldfile', virtual: '/vm2/disk.img', source: join(m.datastore, 'vm2/disk.img'), dest: join(ds3, 'disk-only/disk.img'), destDir: join(ds3, 'disk-only'), destDirExisted: false, isFile: true, ...common }),
    );
    expect((await m.remount()).code).toBe(0);
    expect(await fsp.readdir(journals)).toEqual([]);
    expect(await fsp.readdir(ds2), 'the existing directory emptied and kept').toEqual([]);
    expect(await fsp.readdir(ds3), 'the directory the old ferry made for the file removed').toEqual([]);
    await expectFiles(join(m.mountpoint, 'vm1'), files, 'vm1');
    expect((await fsp.readFile(join(m.mountpoint, 'vm2/disk.img'))).equals(files['disk.img'])).toBe(true);
  });
});

describe('a crash while the destination root is made: the remount removes it only if the journal proves it ferry\'s', () => {
  /** A migration of `path` into the existing ds2 killed at `point`; the dead mount is cleared before the return. */
  async function crashAt(point: string, path: string) {
    const { m, files } = await vm1({ FERRY_FAULTS: `${point}=crash` });
    const ds2 = join(m.root, 'ds2');
    await fsp.mkdir(ds2);
    const { pid } = await m.status();
    const r = await migrate(m, join(m.mountpoint, path), ds2).done;
    expect(r.code).toBe(1);
    await waitFor(() => hasExited(pid), 10_000, 'the daemon to die');
    return { m, files, ds2 };
  }
  async function remount(m: TestMount): Promise<void> {
    expect((await m.cli(['unmount', m.mountpoint, '--force'])).code).toBe(0);
    const again = await m.cli(['mount', m.datastore, m.mountpoint]);
    expect(again.code, again.stderr).toBe(0);
  }

  it.each([
    ['directory', 'vm1', 'vm1'],
    ['file', 'vm1/disk.img', 'disk.img'],
  ])('killed after the journal, before the %s root is made: a name made there while the daemon was down is theirs and stays', async (_kind, path, name) => {
    const { m, files, ds2 } = await crashAt('journaled', path);
    const theirs = join(ds2, name);
    if (name === 'vm1') {
      await fsp.mkdir(theirs);
      await fsp.writeFile(join(theirs, 'theirs'), 'not ours');
    } else {
      await fsp.writeFile(theirs, 'not ours');
    }
    await remount(m);
    expect(await fsp.readFile(name === 'vm1' ? join(theirs, 'theirs') : theirs, 'utf8')).toBe('not ours');
    expect((await m.status()).migrations).toEqual([]);
    await expectFiles(join(m.mountpoint, 'vm1'), files, 'served from the source');
  });

  it('killed after the root is made, before the journal names it: the remount leaves it, says so, and serves the source', async () => {
    const { m, files, ds2 } = await crashAt('root-made', 'vm1');
    await remount(m);
    expect(await fsp.readdir(join(ds2, 'vm1'))).toEqual([]);
    const status = await m.status();
    expect(status.migrations).toEqual([]);
    expect(await fsp.readFile(status.logFile as string, 'utf8')).toContain(`left ${join(ds2, 'vm1')}`);
    await expectFiles(join(m.mountpoint, 'vm1'), files, 'served from the source');
  });

  it('killed once the journal names the root: the remount removes it', async () => {
    const { m, files, ds2 } = await crashAt('prepare', 'vm1');
    await remount(m);
    expect(await fsp.readdir(ds2)).toEqual([]);
    await expectFiles(join(m.mountpoint, 'vm1'), files, 'served from the source');
  });
});
