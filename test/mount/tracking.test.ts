import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { mountFerry, type TestMount } from '../helpers/mounts.js';

type Extent = [number, number];

function expectedExtents(writes: { offset: number; length: number }[], blockSize: number, size: number): Extent[] {
  const blocks = new Set<number>();
  for (const w of writes) {
    for (let b = Math.floor(w.offset / blockSize); b <= Math.floor((w.offset + w.length - 1) / blockSize); b++) blocks.add(b);
  }
  const extents: Extent[] = [];
  for (const b of [...blocks].sort((x, y) => x - y)) {
    const start = b * blockSize;
    const end = Math.min(start + blockSize, size);
    const last = extents.at(-1);
    if (last && last[0] + last[1] === start) last[1] += end - start;
    else extents.push([start, end - start]);
  }
  return extents;
}

describe.each([4096, 65536, 1 << 20])('dirty extents at block size %i', (blockSize) => {
  let m: TestMount;
  beforeAll(async () => {
    m = await mountFerry({ args: ['--block-size', String(blockSize)] });
  });
  afterAll(async () => {
    await m?.stop();
  });

  it('equal exactly the blocks written, for random writes (property)', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ offset: fc.nat(24 << 20), length: fc.integer({ min: 1, max: 600_000 }) }), { minLength: 1, maxLength: 25 }),
        async (writes) => {
          const name = `p${run++}.img`;
          await fsp.writeFile(join(m.datastore, name), Buffer.alloc(0));
          const fd = fs.openSync(join(m.mountpoint, name), 'r+');
          for (const w of writes) fs.writeSync(fd, Buffer.alloc(w.length, 0xab), 0, w.length, w.offset);
          fs.closeSync(fd);
          const size = Math.max(...writes.map((w) => w.offset + w.length));
          const report = await m.dirty(name);
          expect(report.blockSize).toBe(blockSize);
          expect(report.size).toBe(size);
          expect(report.extents).toEqual(expectedExtents(writes, blockSize, size));
          expect(report.dirtyBytes).toBe(report.extents.reduce((s, [, l]) => s + l, 0));
        },
      ),
      { numRuns: 12, seed: blockSize },
    );
  });
});

describe('tracking follows the file', () => {
  let m: TestMount;
  beforeAll(async () => {
    m = await mountFerry({ args: ['--block-size', '4K'] });
  });
  afterAll(async () => {
    await m?.stop();
  });

  it('reports nothing for a file that was never written through the mount', async () => {
    await fsp.writeFile(join(m.datastore, 'untouched.img'), Buffer.alloc(10000, 1));
    const report = await m.dirty('untouched.img');
    expect(report).toMatchObject({ size: 10000, dirtyBytes: 0, extents: [] });
  });

  it('records truncation as dirty bytes between the old and the new size', async () => {
    await fsp.writeFile(join(m.datastore, 't.img'), Buffer.alloc(10 * 4096, 1));
    await fsp.truncate(join(m.mountpoint, 't.img'), 5 * 4096 + 10);
    expect((await m.dirty('t.img')).extents).toEqual([[5 * 4096, 10]]);
    await fsp.truncate(join(m.mountpoint, 't.img'), 8 * 4096);
    expect((await m.dirty('t.img')).extents).toEqual([[5 * 4096, 3 * 4096]]);
  });

  it('moves with a rename of the file or of its directory, and is dropped by unlink', async () => {
    await fsp.mkdir(join(m.mountpoint, 'vm'));
    await fsp.writeFile(join(m.mountpoint, 'vm/disk.img'), Buffer.alloc(4096, 2));
    await fsp.rename(join(m.mountpoint, 'vm/disk.img'), join(m.mountpoint, 'vm/renamed.img'));
    await fsp.rename(join(m.mountpoint, 'vm'), join(m.mountpoint, 'vm2'));
    expect((await m.dirty('vm2/renamed.img')).extents).toEqual([[0, 4096]]);
    await fsp.unlink(join(m.mountpoint, 'vm2/renamed.img'));
    await fsp.writeFile(join(m.datastore, 'vm2/renamed.img'), Buffer.alloc(4096));
    expect((await m.dirty('vm2/renamed.img')).extents).toEqual([]);
  });

  it('--clear reports the dirty set and resets it in one step', async () => {
    await fsp.writeFile(join(m.mountpoint, 'c.img'), Buffer.alloc(8192, 3));
    const cleared = await m.cli(['dirty', join(m.mountpoint, 'c.img'), '--clear', '--json']);
    expect(cleared.code).toBe(0);
    expect(JSON.parse(cleared.stdout)).toMatchObject({ extents: [[0, 8192]], cleared: true });
    expect((await m.dirty('c.img')).extents).toEqual([]);
    const fd = fs.openSync(join(m.mountpoint, 'c.img'), 'r+');
    fs.writeSync(fd, Buffer.alloc(1), 0, 1, 4096);
    fs.closeSync(fd);
    expect((await m.dirty('c.img')).extents).toEqual([[4096, 4096]]);
  });

  it('shows the files with dirty blocks in status', async () => {
    const status = await m.status();
    expect(status.state).toBe('running');
    expect(status.blockSize).toBe(4096);
    expect(status.trackedFiles.map((f: { path: string }) => f.path)).toContain('/c.img');
    expect(status.ops.write).toBeGreaterThan(0);
  });
});

describe('tracking off', () => {
  it('serves the same bytes and records nothing', async () => {
    const m = await mountFerry({ args: ['--no-track'] });
    try {
      await fsp.writeFile(join(m.mountpoint, 'x.img'), Buffer.alloc(100_000, 9));
      expect((await fsp.readFile(join(m.datastore, 'x.img'))).equals(Buffer.alloc(100_000, 9))).toBe(true);
      expect((await m.dirty('x.img')).extents).toEqual([]);
      expect((await m.status()).tracking).toBe(false);
    } finally {
      await m.stop();
    }
  });
});
