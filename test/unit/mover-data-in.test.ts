import { afterAll, describe, expect, it } from 'vitest';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type FuseClass from 'fuse-native';
import { Mover } from '../../src/migrate/mover.js';
import type { Extent } from '../../src/track/dirty-map.js';

// Mover.dataIn decides which bytes a fresh copy reads and how much a pass will copy (pendingDirtyBytes, asked
// before every decision). Real files, real SEEK_DATA/SEEK_HOLE; the io is Fuse.io with its seeks counted.
const io = (createRequire(import.meta.url)('fuse-native') as typeof FuseClass).io;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-data-in-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const KiB = 1024;
const MiB = 1024 * KiB;

function seeded(seed: number): () => number {
  return () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
}

/** Intersections of sorted `ranges` with sorted `segments`, merged where they touch (what dataIn must return). */
function intersect(ranges: Extent[], segments: Extent[]): Extent[] {
  const out: Extent[] = [];
  for (const [offset, length] of ranges) {
    for (const [start, len] of segments) {
      const from = Math.max(offset, start);
      const to = Math.min(offset + length, start + len);
      if (from < to) out.push([from, to - from]);
    }
  }
  return out;
}

describe('Mover.dataIn', () => {
  for (const seed of [1, 2, 3]) {
    it(`finds the data of many dirty ranges with two seeks per data segment, not per range (seed ${seed})`, async () => {
      const random = seeded(seed);
      const file = path.join(dir, `sparse-${seed}`);
      const fd = fs.openSync(file, 'w+');
      const size = 64 * MiB;
      fs.ftruncateSync(fd, size);
      // Eight data segments of 1-4 MiB at 4 MiB-aligned places, holes between.
      const segments: Extent[] = [];
      for (let at = 0; at < size; at += 8 * MiB) {
        const length = (1 + Math.floor(random() * 4)) * MiB;
        fs.writeSync(fd, Buffer.alloc(length, 0x5a), 0, length, at);
        segments.push([at, length]);
      }
      fs.fsyncSync(fd);
      // About 2000 dirty ranges of 4 KiB, sorted and apart, as a dirty map of random guest writes gives them.
      const ranges: Extent[] = [];
      for (let at = 0; at < size; at += 16 * KiB) if (random() < 0.5) ranges.push([at, 4 * KiB]);
      let seeks = 0;
      const counted = { ...io, seek: (...args: Parameters<typeof io.seek>) => ((seeks += 1), io.seek(...args)) } as typeof io;
      const mover = new Mover(new AbortController().signal, counted);
      const found = await mover.dataIn(fd, ranges);
      fs.closeSync(fd);
      expect(found).toEqual(intersect(ranges, segments));
      expect(found.length).toBeGreaterThan(100);
      expect(seeks).toBeLessThanOrEqual(2 * segments.length + 2);
    });
  }
});
