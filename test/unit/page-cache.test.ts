import { describe, expect, it } from 'vitest';
import { constants as C } from 'node:fs';
import type { BigIntStats } from 'node:fs';
import { CACHE_RECORD_LIMIT, CacheRecord, OPEN_DIRECT_IO, OPEN_KEEP_CACHE, openReplyFlags } from '../../src/fs/page-cache.js';

/** A stat with only the fields the record compares. */
const st = (ino: number, size = 10, mtime = 1, ctime = 1, dev = 5): BigIntStats =>
  ({ dev: BigInt(dev), ino: BigInt(ino), size: BigInt(size), mtimeNs: BigInt(mtime), ctimeNs: BigInt(ctime) }) as BigIntStats;

describe('openReplyFlags', () => {
  it('O_DIRECT, or --direct-io: direct_io and never keep_cache; otherwise page cache, kept only when asked', () => {
    expect(openReplyFlags(false, C.O_RDWR | C.O_DIRECT, true)).toBe(OPEN_DIRECT_IO);
    expect(openReplyFlags(true, C.O_RDONLY, true)).toBe(OPEN_DIRECT_IO);
    expect(openReplyFlags(false, C.O_RDONLY, false)).toBe(0);
    expect(openReplyFlags(false, C.O_RDWR, true)).toBe(OPEN_KEEP_CACHE);
  });
});

describe('CacheRecord', () => {
  it('matches only the identity recorded at that path: any of size, mtime, ctime, inode or device differing voids it', () => {
    const r = new CacheRecord();
    r.record('/a', st(1));
    expect(r.matches('/a', st(1))).toBe(true);
    expect(r.matches('/b', st(1))).toBe(false);
    for (const other of [st(2), st(1, 11), st(1, 10, 2), st(1, 10, 1, 2), st(1, 10, 1, 1, 6)]) expect(r.matches('/a', other)).toBe(false);
  });

  it('a switchover carries a current record to the new inode, and leaves a stale one stale', () => {
    const r = new CacheRecord();
    r.record('/vm/disk', st(1));
    r.record('/vm/old', st(2, 10, 1, 1));
    r.record('/other', st(3));
    expect([...r.inodesOn(5n)].sort()).toEqual([1n, 2n, 3n]);
    r.moved(5n, new Map([
      [1n, { from: st(1), to: st(100, 10, 1, 7, 9) }],
      [2n, { from: st(2, 10, 1, 3), to: st(200, 10, 1, 7, 9) }],
    ]));
    expect(r.matches('/vm/disk', st(100, 10, 1, 7, 9))).toBe(true);
    expect(r.matches('/vm/old', st(200, 10, 1, 7, 9))).toBe(false);
    expect(r.matches('/other', st(3))).toBe(true);
  });

  it(`holds at most ${CACHE_RECORD_LIMIT} paths, forgetting the least recently recorded`, () => {
    const r = new CacheRecord();
    for (let i = 0; i <= CACHE_RECORD_LIMIT; i++) r.record(`/f${i}`, st(i));
    r.record('/f1', st(1));
    r.record('/x', st(-1));
    expect(r.size).toBe(CACHE_RECORD_LIMIT);
    expect(r.matches('/f0', st(0))).toBe(false);
    expect(r.matches('/f2', st(2))).toBe(false);
    expect(r.matches('/f1', st(1))).toBe(true);
    expect(r.matches('/x', st(-1))).toBe(true);
  });
});
