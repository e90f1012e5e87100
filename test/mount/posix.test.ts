// POSIX calls a VM's storage stack makes through the mount (issue 15): fallocate(2) in every mode QEMU uses for
// preallocation, discard and write-zeroes, and timestamps to the nanosecond.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
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
