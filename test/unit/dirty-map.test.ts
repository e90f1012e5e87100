import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { DirtyMap, type Extent } from '../../src/track/dirty-map.js';

/** The obvious model: a set of block numbers, turned into merged, clipped extents. */
function modelExtents(blocks: Set<number>, blockSize: number, size: number): Extent[] {
  const sorted = [...blocks].sort((a, b) => a - b);
  const extents: Extent[] = [];
  for (const block of sorted) {
    const start = block * blockSize;
    const end = Math.min(start + blockSize, size);
    if (start >= end) continue;
    const last = extents.at(-1);
    if (last && last[0] + last[1] === start) last[1] += end - start;
    else extents.push([start, end - start]);
  }
  return extents;
}

describe('DirtyMap', () => {
  it('marks every block a write touches, merged and clipped to the file size', () => {
    const map = new DirtyMap(4096);
    map.mark(100, 10);
    map.mark(4095, 2);
    map.mark(5 * 4096, 4096);
    expect(map.extents(100_000)).toEqual([[0, 8192], [20480, 4096]]);
    expect(map.extents(21_000)).toEqual([[0, 8192], [20480, 520]]);
    expect(map.dirtyBytes(21_000)).toBe(8192 + 520);
  });

  it('marks huge ranges by whole bytes (a 1 TiB extend at 64 KiB costs 2 MiB of bitmap)', () => {
    const map = new DirtyMap(65536);
    map.mark(3 * 65536 + 5, 2 ** 40);
    const extents = map.extents(2 ** 41);
    expect(extents).toEqual([[3 * 65536, Math.ceil((2 ** 40 + 5) / 65536) * 65536]]);
  });

  it('forgets blocks beyond a truncation', () => {
    const map = new DirtyMap(4096);
    map.mark(0, 100 * 4096);
    map.clearFrom(10 * 4096 + 1);
    expect(map.extents(1e9)).toEqual([[0, 11 * 4096]]);
    map.clearFrom(0);
    expect(map.isEmpty()).toBe(true);
  });

  it('agrees with a set-of-blocks model for any sequence of writes and truncations', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(4096, 65536, 1 << 20),
        fc.array(
          fc.oneof(
            fc.record({ kind: fc.constant('write' as const), offset: fc.nat(64 << 20), length: fc.integer({ min: 1, max: 8 << 20 }) }),
            fc.record({ kind: fc.constant('truncate' as const), size: fc.nat(80 << 20) }),
          ),
          { maxLength: 40 },
        ),
        (blockSize, ops) => {
          const map = new DirtyMap(blockSize);
          const blocks = new Set<number>();
          for (const op of ops) {
            if (op.kind === 'write') {
              map.mark(op.offset, op.length);
              for (let b = Math.floor(op.offset / blockSize); b <= Math.floor((op.offset + op.length - 1) / blockSize); b++) blocks.add(b);
            } else {
              map.clearFrom(op.size);
              for (const b of [...blocks]) if (b * blockSize >= op.size) blocks.delete(b);
            }
          }
          const size = 200 << 20;
          expect(map.extents(size)).toEqual(modelExtents(blocks, blockSize, size));
        },
      ),
      { numRuns: 300, seed: 42 },
    );
  });
});
