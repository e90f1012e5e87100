import fsp from 'node:fs/promises';
import { expect } from 'vitest';

// The test's own model of a file's bytes: its initial bytes and every write the test made, kept in the test
// process. Data checks compare with it, never the mount with what the mount itself serves.

/** A seeded generator, so a failing run can be replayed write for write. */
export function prng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

export function bytes(random: () => number, length: number): Buffer {
  const data = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) data[i] = (random() * 256) | 0;
  return data;
}

/**
 * `count` writes of 1 B to 64 KiB at seeded offsets through the mount, each awaited, then a datasync; the model
 * takes each write once it is acknowledged. Rejects on any error: a write the crash cut off would make the model
 * a guess, so a test makes every burst end before its crash point.
 */
export async function burst(file: string, model: Buffer, seed: number, count: number): Promise<{ writes: number; bytes: number }> {
  const random = prng(seed);
  const handle = await fsp.open(file, 'r+');
  let total = 0;
  try {
    for (let i = 0; i < count; i++) {
      const length = 1 + Math.floor(random() * 65536);
      const offset = Math.floor(random() * (model.length - length));
      const data = bytes(random, length);
      const { bytesWritten } = await handle.write(data, 0, length, offset);
      if (bytesWritten !== length) throw new Error(`short write ${bytesWritten}/${length} at ${offset}`);
      data.copy(model, offset);
      total += length;
    }
    await handle.datasync();
  } finally {
    await handle.close();
  }
  return { writes: count, bytes: total };
}

/** 4 KiB blocks where two buffers differ (a readable failure instead of two digests). */
export function differingBlocks(actual: Buffer, expected: Buffer): number[] {
  const blocks: number[] = [];
  for (let off = 0; off < Math.max(actual.length, expected.length); off += 4096) {
    if (!actual.subarray(off, off + 4096).equals(expected.subarray(off, off + 4096))) blocks.push(off / 4096);
    if (blocks.length >= 16) break;
  }
  return blocks;
}

export async function expectBytes(path: string, model: Buffer, what: string): Promise<void> {
  const actual = await fsp.readFile(path);
  expect(actual.length, `${what}: length`).toBe(model.length);
  expect(differingBlocks(actual, model), `${what}: blocks that differ from the model`).toEqual([]);
}
