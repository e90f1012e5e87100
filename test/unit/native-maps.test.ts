import { describe, expect, it } from 'vitest';
import { createRequire } from 'node:module';
import type FuseClass from 'fuse-native';
import { NativeMaps } from '../../src/track/native-maps.js';
import { TrackedFile } from '../../src/track/tracked-file.js';
import { IntentLog } from '../../src/track/intent-log.js';

// The addon's map functions work without a mount: these drive them from JS as the JS write path does.
const Fuse = createRequire(import.meta.url)('fuse-native') as typeof FuseClass;
const BS = 65536;
Fuse.data.enable(BS);

describe('native maps', () => {
  it('mark, take and grow keep every bit', () => {
    const file = new TrackedFile('/f', BS, new NativeMaps(Fuse.data, BS));
    file.written(0, 1);
    file.written(5 * BS, BS + 1);
    // Far past the initial capacity (1 GiB of data): the map grows and keeps what it had.
    file.written(3 * 2 ** 30, 4096);
    expect(file.dirty.extents(4 * 2 ** 30)).toEqual([
      [0, BS],
      [5 * BS, 2 * BS],
      [3 * 2 ** 30, BS],
    ]);
    const taken = file.takeDirty();
    expect(taken.dirtyBytes(Infinity)).toBe(4 * BS);
    expect(file.dirty.isEmpty()).toBe(true);
    file.written(7 * BS, 10);
    expect(taken.dirtyBytes(Infinity)).toBe(4 * BS); // a taken map is no longer marked
    expect(file.dirty.extents(Infinity)).toEqual([[7 * BS, BS]]);
    expect(file.bytesWritten).toBe(1 + BS + 1 + 4096 + 10);
  });

  it('a truncate forgets the dirty map past the end but not the session map', () => {
    const file = new TrackedFile('/f', BS, new NativeMaps(Fuse.data, BS));
    const session = { prefix: '/' };
    file.takeFor(session);
    file.written(0, 10 * BS);
    file.resize(10 * BS, 3 * BS + 5);
    expect(file.dirty.extents(Infinity)).toEqual([[0, 4 * BS]]);
    expect(file.peekFor(session)!.extents(Infinity)).toEqual([[0, 10 * BS]]);
    file.detach(session);
    expect(file.peekFor(session)).toBeUndefined();
  });

  it('vouches for intent regions only once they are durable, and forgets them at a new epoch', async () => {
    const maps = new NativeMaps(Fuse.data, BS);
    const file = new TrackedFile('/f', BS, maps);
    file.ino = 7n;
    const persisted: number[] = [];
    const intent = new IntentLog(4 << 20, async (regions) => void persisted.push(regions.get(7n)?.size ?? 0));
    file.takeFor({ prefix: '/' }, undefined, intent);
    const vouched = () => new Uint8Array((maps as unknown as { intent: { bits: Uint8Array } }).intent.bits)[0];
    await file.beforeWrite(0, 4096); // first write to region 0: waits for the log, vouches for nothing yet
    expect(vouched()).toBe(0);
    expect(file.beforeWrite(4096, 4096)).toBeUndefined(); // durable now: vouched
    expect(vouched()).toBe(0x80);
    intent.beginEpoch();
    file.newIntentEpoch();
    expect(vouched()).toBe(0);
    expect(persisted.length).toBeGreaterThan(0);
  });

  it('hands out at most MAX_SLOTS live maps per file', () => {
    const file = new TrackedFile('/f', BS, new NativeMaps(Fuse.data, BS));
    for (let i = 1; i < Fuse.data.MAX_SLOTS; i++) file.takeFor({ prefix: `/${i}` });
    expect(() => file.takeFor({ prefix: '/x' })).toThrow(/more than 8 dirty maps/);
  });
});
