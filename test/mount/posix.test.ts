// POSIX calls a VM's storage stack makes through the mount (issue 15): fallocate(2) in every mode QEMU uses for
// preallocation, discard and write-zeroes, timestamps to the nanosecond, and what other users may do (setuid and
// setgid, sticky directories, chown), checked against the backing ext4.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { makeRoot, mountFerry, type TestMount } from '../helpers/mounts.js';
import { run } from '../helpers/cli.js';
import { fallocate, seekDataHole } from '../helpers/sparse.js';

const KiB = 1024;
let m: TestMount;
const inMount = (p: string) => join(m.mountpoint, p);
const inStore = (p: string) => join(m.datastore, p);

/** 512-byte blocks the backing file has allocated. */
const blocks = (p: string) => fs.statSync(inStore(p)).blocks;

/** The bytes as the mount serves them, which must equal the backing file's. */
async function bytes(p: string): Promise<Buffer> {
  const [viaMount, viaStore] = await Promise.all([fsp.readFile(inMount(p)), fsp.readFile(inStore(p))]);
  expect(viaMount.equals(viaStore)).toBe(true);
  return viaMount;
}

const zeros = (n: number) => Buffer.alloc(n);
const asNobody = (...cmd: string[]) => run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', ...cmd]);

beforeAll(async () => {
  m = await mountFerry({ args: ['--block-size', '4K', '--allow-other'] });
  await fsp.chmod(m.root, 0o755);
});
afterAll(async () => {
  await m?.stop();
});

describe('fallocate through the mount', () => {
  it('mode 0 allocates, extends the size, reads back zeros past the old end, and is dirty', async () => {
    const data = randomBytes(16 * KiB);
    await fsp.writeFile(inStore('alloc.img'), data);
    await fallocate(inMount('alloc.img'), [], 8 * KiB, 64 * KiB);
    expect(fs.statSync(inMount('alloc.img')).size).toBe(72 * KiB);
    expect(fs.statSync(inStore('alloc.img')).size).toBe(72 * KiB);
    expect(blocks('alloc.img') * 512).toBeGreaterThanOrEqual(72 * KiB);
    expect((await bytes('alloc.img')).equals(Buffer.concat([data, zeros(56 * KiB)]))).toBe(true);
    expect((await m.dirty('alloc.img')).extents).toEqual([[8 * KiB, 64 * KiB]]);
    expect((await m.status()).ops.fallocate).toBeGreaterThanOrEqual(1);
  });

  it('FALLOC_FL_KEEP_SIZE allocates inside and past the end without changing the size', async () => {
    await fsp.writeFile(inStore('keep.img'), '');
    await fsp.truncate(inStore('keep.img'), 1024 * KiB);
    expect(blocks('keep.img')).toBe(0);
    await fallocate(inMount('keep.img'), ['-n'], 256 * KiB, 128 * KiB);
    expect(fs.statSync(inStore('keep.img')).size).toBe(1024 * KiB);
    expect(blocks('keep.img') * 512).toBeGreaterThanOrEqual(128 * KiB);
    expect((await bytes('keep.img')).equals(zeros(1024 * KiB))).toBe(true);
    expect((await m.dirty('keep.img')).extents).toEqual([[256 * KiB, 128 * KiB]]);
    // Past the end: blocks are reserved, nothing visible changes.
    await fallocate(inMount('keep.img'), ['-n'], 1024 * KiB, 64 * KiB);
    expect(fs.statSync(inMount('keep.img')).size).toBe(1024 * KiB);
    expect(fs.statSync(inStore('keep.img')).size).toBe(1024 * KiB);
    expect(blocks('keep.img') * 512).toBeGreaterThanOrEqual(192 * KiB);
    expect((await m.dirty('keep.img')).extents).toEqual([[256 * KiB, 128 * KiB]]);
  });

  it('PUNCH_HOLE|KEEP_SIZE frees whole blocks, zeroes partial ones, keeps the size, and is dirty', async () => {
    const data = randomBytes(256 * KiB);
    await fsp.writeFile(inStore('punch.img'), data);
    const before = blocks('punch.img');
    await fallocate(inMount('punch.img'), ['-p'], 64 * KiB, 64 * KiB);
    expect(fs.statSync(inStore('punch.img')).size).toBe(256 * KiB);
    expect(blocks('punch.img')).toBe(before - (64 * KiB) / 512);
    const expected = Buffer.from(data);
    expected.fill(0, 64 * KiB, 128 * KiB);
    expect((await bytes('punch.img')).equals(expected)).toBe(true);
    expect(await seekDataHole(inStore('punch.img'), 0)).toEqual({ data: 0, hole: 64 * KiB });
    expect(await seekDataHole(inStore('punch.img'), 64 * KiB)).toEqual({ data: 128 * KiB, hole: 64 * KiB });
    expect((await m.dirty('punch.img')).extents).toEqual([[64 * KiB, 64 * KiB]]);
    // Not block-aligned: the bytes are zeroed, the blocks they touch are dirty.
    await fallocate(inMount('punch.img'), ['-p'], 1000, 10_000);
    expected.fill(0, 1000, 11_000);
    expect((await bytes('punch.img')).equals(expected)).toBe(true);
    expect((await m.dirty('punch.img')).extents).toEqual([[0, 12 * KiB], [64 * KiB, 64 * KiB]]);
  });

  it('ZERO_RANGE zeroes in place with KEEP_SIZE, and extends the file without it', async () => {
    const data = randomBytes(256 * KiB);
    await fsp.writeFile(inStore('zero.img'), data);
    await fallocate(inMount('zero.img'), ['-z', '-n'], 4 * KiB, 8 * KiB);
    const expected = Buffer.from(data);
    expected.fill(0, 4 * KiB, 12 * KiB);
    expect(fs.statSync(inStore('zero.img')).size).toBe(256 * KiB);
    // Zeroed, not punched: the blocks stay allocated.
    expect(blocks('zero.img') * 512).toBeGreaterThanOrEqual(256 * KiB);
    expect((await bytes('zero.img')).equals(expected)).toBe(true);
    expect((await m.dirty('zero.img')).extents).toEqual([[4 * KiB, 8 * KiB]]);
    await fallocate(inMount('zero.img'), ['-z'], 200 * KiB, 100 * KiB);
    expect(fs.statSync(inMount('zero.img')).size).toBe(300 * KiB);
    expect(fs.statSync(inStore('zero.img')).size).toBe(300 * KiB);
    expected.fill(0, 200 * KiB);
    expect((await bytes('zero.img')).equals(Buffer.concat([expected, zeros(44 * KiB)]))).toBe(true);
    expect((await m.dirty('zero.img')).extents).toEqual([[4 * KiB, 8 * KiB], [200 * KiB, 100 * KiB]]);
    await fallocate(inMount('zero.img'), ['-z', '-n'], 300 * KiB, 4 * KiB);
    expect(fs.statSync(inStore('zero.img')).size).toBe(300 * KiB);
  });

  it('drops setuid and setgid when another user punches or allocates, as a write does; root keeps them', async () => {
    for (const flags of [['-p'], ['-z', '-n'], []]) {
      await fsp.writeFile(inMount('suid'), randomBytes(8 * KiB));
      await fsp.chmod(inMount('suid'), 0o6777);
      const r = await asNobody('fallocate', ...flags, '-o', '0', '-l', '4096', inMount('suid'));
      expect(r.stderr).toBe('');
      expect([flags.join(' '), fs.statSync(inStore('suid')).mode & 0o7777]).toEqual([flags.join(' '), 0o777]);
      await fsp.unlink(inMount('suid'));
    }
    await fsp.writeFile(inMount('suid'), randomBytes(8 * KiB));
    await fsp.chmod(inMount('suid'), 0o6755);
    await fallocate(inMount('suid'), ['-p'], 0, 4 * KiB);
    expect(fs.statSync(inStore('suid')).mode & 0o7777).toBe(0o6755);
  });

  it("passes the backing filesystem's errno through (tmpfs: no ZERO_RANGE, ENOSPC), and a failed call dirties nothing", async () => {
    const root = await makeRoot();
    const store = join(root, 'store');
    await fsp.mkdir(store);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', store]);
    let t: TestMount | undefined;
    try {
      t = await mountFerry({ root, datastore: store, args: ['--block-size', '4K'] });
      await fsp.writeFile(join(store, 'f.img'), randomBytes(64 * KiB));
      const zero = await run('fallocate', ['-z', '-n', '-o', '0', '-l', '4096', join(t.mountpoint, 'f.img')]);
      expect(zero.code).not.toBe(0);
      expect(zero.stderr).toContain('unsupported'); // util-linux's words for EOPNOTSUPP with -n
      const big = await run('fallocate', ['-l', String(8 << 20), join(t.mountpoint, 'f.img')]);
      expect(big.code).not.toBe(0);
      expect(big.stderr).toContain('No space left on device');
      expect(fs.statSync(join(store, 'f.img')).size).toBe(64 * KiB);
      expect((await t.dirty('f.img')).extents).toEqual([]);
      // A mode tmpfs has still works: the connection did not give up on fallocate.
      await fallocate(join(t.mountpoint, 'f.img'), ['-p'], 0, 4 * KiB);
      expect((await t.dirty('f.img')).extents).toEqual([[0, 4 * KiB]]);
    } finally {
      await t?.cli(['unmount', t.mountpoint, '--force']);
      execFileSync('umount', ['-l', store]);
      await (t ? t.stop() : fsp.rm(root, { recursive: true, force: true }));
    }
  });
});

describe('timestamps to the nanosecond', () => {
  /** atime and mtime of a backing entry (not following a symlink), as stat(1) prints them. */
  async function times(p: string): Promise<{ atime: string; mtime: string }> {
    const r = await run('stat', ['-c', '%x|%y', inStore(p)]);
    expect(r.code).toBe(0);
    const [atime, mtime] = r.stdout.trim().split('|');
    return { atime, mtime };
  }
  const touch = async (...args: string[]) => expect((await run('touch', args)).stderr).toBe('');

  it('sets atime and mtime separately (the other is UTIME_OMIT) with all nine digits, and UTIME_NOW leaves the other alone', async () => {
    await fsp.writeFile(inMount('ts'), 'x');
    await touch('-a', '-d', '2001-02-03 04:05:06.987654321', inMount('ts'));
    await touch('-m', '-d', '2002-03-04 05:06:07.123456789', inMount('ts'));
    let t = await times('ts');
    expect(t.atime).toContain('2001-02-03 04:05:06.987654321');
    expect(t.mtime).toContain('2002-03-04 05:06:07.123456789');
    // The mount reports the same nanoseconds.
    expect(fs.statSync(inMount('ts'), { bigint: true }).mtimeNs % 1_000_000_000n).toBe(123456789n);
    await touch('-a', inMount('ts'));
    t = await times('ts');
    expect(t.mtime).toContain('2002-03-04 05:06:07.123456789');
    expect(Math.abs(fs.statSync(inStore('ts')).atimeMs - Date.now())).toBeLessThan(10_000);
    const atime = t.atime;
    await touch('-m', inMount('ts'));
    t = await times('ts');
    expect(t.atime).toBe(atime);
    expect(Math.abs(fs.statSync(inStore('ts')).mtimeMs - Date.now())).toBeLessThan(10_000);
  });

  it('sets the times of a symlink itself (touch -h), not of its target', async () => {
    await fsp.writeFile(inMount('target'), 'x');
    await touch('-d', '2003-01-01 00:00:00.5', inMount('target'));
    await fsp.symlink('target', inMount('link'));
    await touch('-h', '-m', '-d', '2004-05-06 07:08:09.000000001', inMount('link'));
    await touch('-h', '-a', '-d', '2005-06-07 08:09:10.999999999', inMount('link'));
    const link = await times('link');
    expect(link.mtime).toContain('2004-05-06 07:08:09.000000001');
    expect(link.atime).toContain('2005-06-07 08:09:10.999999999');
    const target = await times('target');
    expect(target.mtime).toContain('2003-01-01 00:00:00.500000000');
    expect(target.atime).toContain('2003-01-01 00:00:00.500000000');
  });
});

// Another user's view, checked against the kernel's own rules: every case runs the same steps (test/helpers/
// posix-steps.mjs: root's setup, then the user's calls, in one process) in a directory on the backing ext4 and
// in the mount, and both must end alike: each call's result, then every entry's type, mode and owner.
describe('as another user, the mount behaves as ext4 (issue 15)', () => {
  const STEPS = fileURLToPath(new URL('../helpers/posix-steps.mjs', import.meta.url));
  const OWNER = 4321;
  const USER = 4322;
  const GROUP = 4323;
  const GROUP2 = 4324;
  type Step = [string, ...unknown[]];
  interface Outcome {
    results: string[];
    entries: Record<string, string>;
  }

  const kind = (st: fs.Stats) =>
    st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isFIFO() ? 'fifo' : st.isSymbolicLink() ? 'symlink' : st.isCharacterDevice() ? 'device' : 'other';

  /** Every entry under `dir` as `type mode uid:gid`; libfuse's hidden names of open unlinked files left out. */
  function entries(dir: string): Record<string, string> {
    const all: Record<string, string> = {};
    for (const name of fs.readdirSync(dir, { recursive: true }) as string[]) {
      if (name.split('/').some((part) => part.startsWith('.fuse_hidden'))) continue;
      const st = fs.lstatSync(join(dir, name));
      all[name] = `${kind(st)} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid}`;
    }
    return all;
  }

  /** Runs `steps` in a fresh directory `name` on ext4 and in the mount; the mount must end as ext4 does. */
  async function onBoth(name: string, steps: Step[]): Promise<Outcome> {
    const outcomes: Outcome[] = [];
    for (const base of [join(m.root, 'ext4'), m.mountpoint]) {
      const dir = join(base, name);
      await fsp.mkdir(dir, { recursive: true });
      const r = await run(process.execPath, [STEPS, dir, JSON.stringify(steps)]);
      expect(r.stderr).toBe('');
      outcomes.push({ results: JSON.parse(r.stdout), entries: entries(dir) });
    }
    const [ext4, mount] = outcomes;
    expect(mount).toEqual(ext4);
    return ext4;
  }

  const become = (uid: number, groups: number[] = []): Step => ['become', uid, uid, groups];
  /** The results of the calls made after `become`. */
  const calls = (outcome: Outcome, setup: Step[]) => outcome.results.slice(setup.length + 1);

  /** Steps that make an entry of each type. */
  const TYPES = {
    file: (p: string): Step => ['file', p],
    dir: (p: string): Step => ['mkdir', p],
    fifo: (p: string): Step => ['mkfifo', p],
    symlink: (p: string): Step => ['symlink', 'target', p],
    device: (p: string): Step => ['mknod', p],
  };
  type Type = keyof typeof TYPES;
  const remove = (type: Type, p: string): Step => [type === 'dir' ? 'rmdir' : 'unlink', p];

  beforeAll(async () => {
    await fsp.mkdir(join(m.root, 'ext4'), { mode: 0o755 });
  });

  describe('setuid and setgid', () => {
    const CALLERS: [string, number, number[]][] = [
      ['another user', USER, []],
      ["a member of the file's group", USER, [GROUP]],
      ["the owner, not in the file's group", OWNER, []],
      ["the owner, in the file's group", OWNER, [GROUP]],
      ['root', 0, []],
    ];

    it.each(CALLERS)('a truncate (path, fd, O_TRUNC), write or fallocate by %s drops them as ext4 does', async (who, uid, groups) => {
      const setup: Step[] = [];
      const made: Step[] = [];
      for (const op of ['truncate', 'ftruncate', 'otrunc', 'write', 'fallocate']) {
        for (const mode of [0o6777, 0o4777, 0o2777, 0o6767, 0o2767]) {
          const f = `${op}-${mode.toString(8)}`;
          setup.push(['file', f], ['chown', f, OWNER, GROUP], ['chmod', f, mode]);
          made.push(op.endsWith('truncate') ? [op, f, 100] : [op, f]);
        }
      }
      const ext4 = await onBoth(`drop by ${who}`, [...setup, become(uid, groups), ...made]);
      // Not vacuous: every call was made, and dropped what the kernel drops.
      expect(calls(ext4, setup).every((r) => /^(ok|[0-7]+)$/.test(r))).toBe(true);
      expect(ext4.entries['truncate-6777']).toBe(`file ${uid === 0 ? '6777' : '777'} ${OWNER}:${GROUP}`);
    });

    it.each(CALLERS.slice(2, 4))('a write by %s through a handle opened before setuid/setgid were set drops them, as ext4 does', async (who, uid, groups) => {
      const modes = [0o6777, 0o4755, 0o2767, 0o2777];
      const setup: Step[] = modes.flatMap((mode): Step[] => [['file', `f${mode.toString(8)}`], ['chown', `f${mode.toString(8)}`, OWNER, GROUP]]);
      const made: Step[] = [
        ...modes.map((mode): Step => ['holdForWriting', `f${mode.toString(8)}`]),
        ...modes.map((mode): Step => ['chmod', `f${mode.toString(8)}`, mode]),
        ...modes.map((_, i): Step => ['writeHeld', i]),
      ];
      const ext4 = await onBoth(`late bits, ${who}`, [...setup, become(uid, groups), ...made]);
      expect(calls(ext4, setup).every((r) => /^(ok|[0-7]+)$/.test(r))).toBe(true);
      expect(ext4.entries.f6777).toBe(`file 777 ${OWNER}:${GROUP}`);
    });

    it.each(CALLERS.slice(0, 2))('a file, FIFO or directory that %s creates with setuid/setgid keeps them, as on ext4', async (who, uid, groups) => {
      const setup: Step[] = [['chmod', '.', 0o777], ['mkdir', 'setgid-dir'], ['chown', 'setgid-dir', 0, GROUP], ['chmod', 'setgid-dir', 0o2777]];
      const made: Step[] = [];
      for (const dir of ['.', 'setgid-dir']) {
        made.push(['create', `${dir}/f`, 0o6755], ['create', `${dir}/g`, 0o2745], ['mkfifo', `${dir}/p`, 0o6755], ['mkdir', `${dir}/d`, 0o7755]);
      }
      const ext4 = await onBoth(`create by ${who}`, [...setup, become(uid, groups), ...made]);
      expect(ext4.entries.p).toBe(`fifo 6755 ${USER}:${USER}`);
    });

    it('a chown by root clears them on every type but directories, as ext4 does', async () => {
      const steps: Step[] = [];
      for (const type of ['file', 'fifo', 'device', 'dir'] as const) {
        for (const mode of [0o6777, 0o2767]) {
          for (const [i, [uid, gid]] of [[USER, -1], [-1, GROUP2], [USER, GROUP2], [OWNER, GROUP], [-1, -1]].entries()) {
            const p = `${type}-${mode.toString(8)}-${i}`;
            steps.push(TYPES[type](p), ['chown', p, OWNER, GROUP], ['chmod', p, mode], ['chown', p, uid, gid]);
          }
        }
      }
      const ext4 = await onBoth('chown by root', steps);
      expect([ext4.entries['file-6777-0'], ext4.entries['dir-6777-0']]).toEqual([`file 777 ${USER}:${GROUP}`, `dir 6777 ${USER}:${GROUP}`]);
    });
  });

  describe('sticky directories', () => {
    it.each(Object.keys(TYPES) as Type[])("a user may rename or remove their own %s, not another user's (unless the directory is theirs), as on ext4", async (type) => {
      const make = TYPES[type];
      const setup: Step[] = [['mkdir', 's', 0o1777], ['mkdir', 'open', 0o777], ['mkdir', 'theirs-dir', 0o1777], ['chown', 'theirs-dir', USER, USER]];
      const own = (p: string, uid: number) => setup.push(make(p), ['chown', p, uid, uid]);
      for (let i = 1; i <= 4; i++) own(`s/theirs-${i}`, OWNER);
      for (let i = 1; i <= 6; i++) own(`s/mine-${i}`, USER);
      own('theirs-dir/theirs-1', OWNER);
      own('theirs-dir/theirs-2', OWNER);
      if (type === 'file') setup.push(['hold', 's/mine-6']); // replaced while open: libfuse hides it first
      if (type !== 'dir') {
        // The kernel checks the sticky bit against the owner it holds for that name. libfuse 2.9 gives each name
        // of a hard link its own kernel inode, and a chown through one name updates that one only.
        for (const [p, before, after] of [['s/h-theirs', USER, OWNER], ['s/h-mine', OWNER, USER]] as const) {
          setup.push(make(p), ['chown', p, before, before], ['link', p, `${p}-2`], ['lstat', `${p}-2`], ['chown', p, after, after]);
        }
      }
      const made: Step[] = [
        remove(type, 's/theirs-1'),
        ['rename', 's/theirs-2', 's/x'],
        ['rename', 's/theirs-3', 'open/x'],
        ['rename', 's/mine-1', 's/y'],
        ['rename', 's/mine-2', 's/theirs-4'],
        ['rename', 's/mine-3', 'open/mine-3'],
        ['rename', 'open/mine-3', 's/mine-3b'],
        remove(type, 's/mine-4'),
        ['rename', 's/mine-5', 's/mine-6'],
        remove(type, 'theirs-dir/theirs-1'),
        ['rename', 'theirs-dir/theirs-2', 'theirs-dir/z'],
      ];
      if (type !== 'dir') made.push(remove(type, 's/h-theirs-2'), ['rename', 's/h-mine-2', 's/h-mine-3']);
      const ext4 = await onBoth(`sticky ${type}`, [...setup, become(USER), ...made]);
      const expected = ['EPERM', 'EPERM', 'EPERM', 'ok', 'EPERM', 'ok', 'ok', 'ok', 'ok', 'ok', 'ok'];
      expect(calls(ext4, setup)).toEqual(type === 'dir' ? expected : [...expected, 'EPERM', 'ok']);
    });
  });

  describe('chown by the owner', () => {
    it.each(['file', 'dir', 'fifo', 'symlink'] as Type[])('of a %s: to a group they are in (primary or supplementary), not to another, as on ext4', async (type) => {
      for (const groups of [[], [GROUP], [GROUP2, GROUP], [GROUP2]]) {
        const setup: Step[] = [];
        const made: Step[] = [];
        for (const [i, [uid, gid]] of [[-1, GROUP], [-1, GROUP2], [USER, GROUP], [OWNER, -1], [-1, -1], [-1, USER]].entries()) {
          setup.push(TYPES[type](`f${i}`), ['chown', `f${i}`, USER, USER]);
          if (type !== 'symlink') setup.push(['chmod', `f${i}`, 0o6755]);
          made.push(['chown', `f${i}`, uid, gid]);
        }
        if (type !== 'dir') {
          // Through the other name of a hard link, after root gave the file to the user through the first.
          setup.push(TYPES[type]('h'), ['link', 'h', 'h2'], ['lstat', 'h2'], ['chown', 'h', USER, USER]);
          made.push(['chown', 'h2', -1, USER]);
        }
        const ext4 = await onBoth(`chown ${type} in ${groups.join(',') || 'no groups'}`, [...setup, become(USER, groups), ...made]);
        expect(calls(ext4, setup).slice(0, 2)).toEqual([groups.includes(GROUP) ? 'ok' : 'EPERM', groups.includes(GROUP2) ? 'ok' : 'EPERM']);
      }
    });
  });
});

describe('a create racing a file made in the datastore behind the mount (issue 15)', () => {
  it('is refused with EEXIST, and that file is not opened, given to the caller, nor removed', async () => {
    // Each create waits 1.5 s between the kernel's LOOKUP (no such name) and the backing open.
    const racy = await mountFerry({ args: ['--allow-other'], env: { FERRY_FAULTS: 'create=pause:1500' } });
    try {
      await fsp.chmod(racy.root, 0o755);
      await fsp.mkdir(join(racy.datastore, 'vm1'));
      await fsp.chmod(join(racy.datastore, 'vm1'), 0o777);
      const target = join(racy.mountpoint, 'vm1/new.cfg');
      const creating = asNobody(process.execPath, '-e', `require('fs').writeFileSync(${JSON.stringify(target)}, 'mine')`);
      await new Promise((r) => setTimeout(r, 500));
      const backing = join(racy.datastore, 'vm1/new.cfg');
      fs.writeFileSync(backing, 'theirs', { mode: 0o600 });
      const r = await creating;
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/EEXIST/);
      const st = fs.statSync(backing);
      expect([st.uid, st.mode & 0o777]).toEqual([0, 0o600]);
      expect(fs.readFileSync(backing, 'utf8')).toBe('theirs');
    } finally {
      await racy.stop();
    }
  });
});
