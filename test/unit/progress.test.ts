// What a checkpoint records of a migration's copy (src/migrate/progress.ts): the file being copied for the first
// time and how far, a recopy's ranges as still dirty until it is done, and each copied file's identity.
import { describe, expect, it } from 'vitest';
import type { BigIntStats } from 'node:fs';
import { Progress } from '../../src/migrate/progress.js';
import { DirtyMap } from '../../src/track/dirty-map.js';
import { decodeMap } from '../../src/migrate/checkpoint.js';

const BS = 64 << 10;
const REGION = 4 << 20;
const stat = (size: number, ctimeNs: bigint) => ({ size: BigInt(size), mtimeNs: ctimeNs - 1n, ctimeNs, birthtimeNs: 42n }) as unknown as BigIntStats;

describe('Progress', () => {
  it('a first copy is partial with its offset; once done it is complete; a recopy counts its ranges dirty until done', () => {
    const p = new Progress(BS, REGION);
    p.begin(7n, stat(8 * BS, 1000n), [[0, 8 * BS]]);
    p.advanced(7n, 3 * BS);
    let c = p.snapshot([], [[7n, 'disk']]);
    expect(c.partial).toMatchObject({ ino: '7', copiedUpTo: 3 * BS });
    expect(c.complete).toEqual([]);
    expect(c.identity).toEqual([['7', String(8 * BS), '999', '1000', '42']]);
    p.done(7n);
    c = p.snapshot([], [[7n, 'disk']]);
    expect(c.partial).toBeUndefined();
    expect(c.complete.map(([ino]) => ino)).toEqual(['7']);
    p.begin(7n, stat(8 * BS, 2000n), [[2 * BS, BS]]);
    const live = new DirtyMap(BS);
    live.mark(5 * BS, 1);
    c = p.snapshot([[7n, live]], [[7n, 'disk']]);
    expect(decodeMap(BS, c.complete[0][1]).extents(8 * BS)).toEqual([[2 * BS, BS], [5 * BS, BS]]);
    expect(c.identity![0][3]).toBe('2000');
    p.done(7n);
    expect(decodeMap(BS, p.snapshot([], [[7n, 'disk']]).complete[0][1]).extents(8 * BS)).toEqual([]);
  });

  it('after a crash, a file changed while down is copied whole; an unchanged complete one only for its dirty bits', () => {
    const p = new Progress(BS, REGION);
    const dirty = new DirtyMap(BS);
    dirty.mark(BS, 1);
    const checkpoint = { at: '', placed: [], born: [], complete: [['1', Buffer.from(dirty.toBytes()).toString('base64')], ['2', '']] as [string, string][], partial: undefined };
    p.restore(checkpoint, new Map(), new Set([2n]));
    expect(p.resumesFor(1n)).toBe(true);
    expect(p.resumedRanges(1n, 4 * BS, [])).toEqual([[BS, BS]]);
    expect(p.resumedRanges(2n, 4 * BS, [])).toEqual([[0, 4 * BS]]);
    expect(p.resumedRanges(3n, 4 * BS, []), 'a file the checkpoint does not know').toEqual([[0, 4 * BS]]);
    // Each inode's first copy since the resume ends its checkpoint ranges, whichever pass it comes in.
    p.begin(1n, stat(4 * BS, 5n), [[BS, BS]]);
    p.done(1n);
    expect([p.resumesFor(1n), p.resumesFor(2n), p.resumesFor(3n)]).toEqual([false, true, true]);
  });
});
