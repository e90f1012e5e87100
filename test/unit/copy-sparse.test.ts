import { afterAll, describe, expect, it } from 'vitest';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import type FuseClass from 'fuse-native';

// Fuse.io.copySparse is the bulk copy of a fresh file (patch 010): real files on the test machine's disk.
const Fuse = createRequire(import.meta.url)('fuse-native') as typeof FuseClass;
const io = Fuse.io;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-copy-sparse-'));
const KiB = 1024;
const MiB = 1024 * KiB;

/** Dirty and under-writeback page cache of the whole machine (test files run one at a time). */
function unwrittenBytes(): number {
  const meminfo = fs.readFileSync('/proc/meminfo', 'utf8');
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(meminfo)![1]);
  return (kib('Dirty') + kib('Writeback')) * KiB;
}

afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** `directFd`: the source's O_DIRECT twin, or -1 for plain reads only. */
function copySparse(fdIn: number, offIn: number, fdOut: number, offOut: number, length: number, directFd = -1): Promise<number> {
  return new Promise((resolve, reject) =>
    io.copySparse(fdIn, directFd, offIn, fdOut, offOut, length, (err, copied) => (err ? reject(Object.assign(new Error(`errno ${-err}`), { errno: err })) : resolve(copied!))),
  );
}

/** Bytes of `file` in the page cache (fincore). */
function resident(file: string): number {
  return Number(execFileSync('fincore', ['--bytes', '--raw', '--noheadings', '--output', 'RES', file], { encoding: 'utf8' }).trim());
}

/** A directory on a disk filesystem (not tmpfs: its pages are never written back, and it may refuse O_DIRECT). */
function diskDir(prefix: string): string {
  return fs.mkdtempSync(path.join('/var/tmp', prefix));
}

/** [offset, end) of each data segment, as SEEK_DATA/SEEK_HOLE report them. */
function dataSegments(file: string): Promise<[number, number][]> {
  const fd = fs.openSync(file, 'r');
  const size = fs.fstatSync(fd).size;
  const seek = (at: number, whence: number) =>
    new Promise<number | undefined>((resolve, reject) => io.seek(fd, at, whence, (err, to) => (err === -6 ? resolve(undefined) : err ? reject(new Error(`seek ${err}`)) : resolve(to))));
  return (async () => {
    const segments: [number, number][] = [];
    for (let at = 0; at < size; ) {
      const start = await seek(at, io.SEEK_DATA);
      if (start === undefined) break;
      const end = (await seek(start, io.SEEK_HOLE))!;
      segments.push([start, end]);
      at = end;
    }
    fs.closeSync(fd);
    return segments;
  })();
}

describe('Fuse.io.copySparse', () => {
  for (const twin of [false, true]) {
  it(`copies the bytes and leaves every all-zero 4 KiB block a hole (${twin ? 'through the O_DIRECT twin' : 'plain reads'})`, async () => {
    // Data, a zero block, data straddling two pieces of 128 KiB, 200 KiB of zeros, and an unaligned tail.
    const source = Buffer.alloc(1024 * KiB + 1234);
    randomBytes(4 * KiB).copy(source, 0);
    randomBytes(8 * KiB).copy(source, 124 * KiB);
    randomBytes(10).copy(source, 512 * KiB + 4000);
    randomBytes(1234).copy(source, 1024 * KiB);
    const disk = diskDir('ferry-copy-sparse-');
    const src = path.join(disk, 'src');
    const dst = path.join(disk, 'dst');
    fs.writeFileSync(src, source);
    const fdIn = fs.openSync(src, 'r');
    const direct = twin ? fs.openSync(src, fs.constants.O_RDONLY | fs.constants.O_DIRECT) : -1;
    const fdOut = fs.openSync(dst, 'w');
    fs.ftruncateSync(fdOut, source.length);
    expect(await copySparse(fdIn, 0, fdOut, 0, source.length, direct)).toBe(source.length);
    fs.closeSync(fdIn);
    if (twin) fs.closeSync(direct);
    fs.closeSync(fdOut);
    expect(fs.readFileSync(dst).equals(source)).toBe(true);
    // The 10 bytes at 512 KiB + 4000 make one block of data; the partial last block is data to the end.
    expect(await dataSegments(dst)).toEqual([
      [0, 4 * KiB],
      [124 * KiB, 132 * KiB],
      [512 * KiB, 516 * KiB],
      [1024 * KiB, source.length],
    ]);
    fs.rmSync(disk, { recursive: true, force: true });
  });
  }

  it('reads through the O_DIRECT twin where nothing is cached: the source stays out of the page cache, its dirty pages are read', async () => {
    const disk = diskDir('ferry-copy-direct-');
    try {
      const size = 8 * MiB + 1234;
      const source = randomBytes(size);
      const src = path.join(disk, 'src');
      const dst = path.join(disk, 'dst');
      fs.writeFileSync(src, source);
      const fdIn = fs.openSync(src, 'r+');
      fs.fsyncSync(fdIn);
      execFileSync('python3', ['-c', 'import os,sys\nfd=os.open(sys.argv[1],os.O_RDONLY)\nos.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED)', src]);
      expect(resident(src)).toBe(0);
      // A guest's write not yet written back: a direct read must see it (the kernel writes the range back first).
      const late = randomBytes(64 * KiB);
      fs.writeSync(fdIn, late, 0, late.length, 3 * MiB);
      late.copy(source, 3 * MiB);
      const direct = fs.openSync(src, fs.constants.O_RDONLY | fs.constants.O_DIRECT);
      const fdOut = fs.openSync(dst, 'w');
      fs.ftruncateSync(fdOut, size);
      for (let at = 0; at < size; at += 4 * MiB) await copySparse(fdIn, at, fdOut, at, Math.min(4 * MiB, size - at), direct);
      fs.closeSync(direct);
      fs.closeSync(fdOut);
      expect(fs.readFileSync(dst).equals(source)).toBe(true);
      // Only what was read plain stays: the 128 KiB piece holding the late write (a direct read would have had to
      // wait for its writeback) and the unaligned tail's page.
      expect(resident(src)).toBeLessThanOrEqual(128 * KiB + 4 * KiB);
      fs.closeSync(fdIn);
    } finally {
      fs.rmSync(disk, { recursive: true, force: true });
    }
  });

  it('copies at explicit offsets and stops at the end of the source', async () => {
    const source = randomBytes(300 * KiB);
    const src = path.join(dir, 'short');
    const dst = path.join(dir, 'short-dst');
    fs.writeFileSync(src, source);
    const fdIn = fs.openSync(src, 'r');
    const fdOut = fs.openSync(dst, 'w');
    // Asks for 1 MiB from 100 KiB: only the 200 KiB the source has are copied, 64 KiB further on.
    expect(await copySparse(fdIn, 100 * KiB, fdOut, 164 * KiB, 1024 * KiB)).toBe(200 * KiB);
    fs.closeSync(fdIn);
    fs.closeSync(fdOut);
    const copy = fs.readFileSync(dst);
    expect(copy.length).toBe(364 * KiB);
    expect(copy.subarray(164 * KiB).equals(source.subarray(100 * KiB))).toBe(true);
  });

  it('writes behind: a copy leaves no more than the last few MiB unwritten, nor cached', async () => {
    // On a disk filesystem (not tmpfs, whose pages are never written back).
    const disk = fs.mkdtempSync('/var/tmp/ferry-write-behind-');
    try {
      const size = 256 * MiB;
      const src = path.join(disk, 'src');
      const dst = path.join(disk, 'dst');
      const fdSrc = fs.openSync(src, 'w');
      for (let at = 0; at < size; at += 16 * MiB) fs.writeSync(fdSrc, randomBytes(16 * MiB), 0, 16 * MiB, at);
      fs.closeSync(fdSrc);
      execFileSync('sync');
      const before = unwrittenBytes();
      const fdIn = fs.openSync(src, 'r');
      const fdOut = fs.openSync(dst, 'w');
      fs.ftruncateSync(fdOut, size);
      // As the mover copies a fresh file: 4 MiB chunks, one after the other.
      for (let at = 0; at < size; at += 4 * MiB) expect(await copySparse(fdIn, at, fdOut, at, 4 * MiB)).toBe(4 * MiB);
      const after = unwrittenBytes();
      fs.closeSync(fdIn);
      fs.closeSync(fdOut);
      // Without write-behind all 256 MiB would still be dirty (far below the kernel's own writeback threshold).
      expect(after - before).toBeLessThan(64 * MiB);
      // What was written back is dropped: the copy keeps its write-behind's lag (8 MiB) and a step or two cached.
      expect(resident(dst)).toBeLessThanOrEqual(10 * MiB);
    } finally {
      fs.rmSync(disk, { recursive: true, force: true });
    }
  });

  it('reports the errno of a failed write', async () => {
    const src = path.join(dir, 'err');
    fs.writeFileSync(src, randomBytes(8 * KiB));
    const fdIn = fs.openSync(src, 'r');
    const readOnly = fs.openSync(src, 'r');
    await expect(copySparse(fdIn, 0, readOnly, 0, 8 * KiB)).rejects.toMatchObject({ errno: -9 }); // EBADF
    fs.closeSync(fdIn);
    fs.closeSync(readOnly);
  });
});
