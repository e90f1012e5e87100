import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { TokenBucket } from '../../src/migrate/token-bucket.js';

describe('TokenBucket (the rate limit, issue 28)', () => {
  beforeEach(() => vi.useFakeTimers({ now: 1_000_000 }));
  afterEach(() => vi.useRealTimers());

  it('lets one burst go at once, then the rate: no second of credit at the start', () => {
    const bucket = new TokenBucket(1000, 100);
    expect(bucket.take(100)).toBe(0);
    expect(bucket.take(100)).toBe(100);
    vi.advanceTimersByTime(100);
    expect(bucket.take(100)).toBe(0);
  });

  it('saves up at most the burst, however long it idles', () => {
    const bucket = new TokenBucket(1000, 100);
    bucket.take(100);
    vi.advanceTimersByTime(60_000);
    expect(bucket.take(100)).toBe(0);
    expect(bucket.take(50)).toBe(50);
  });

  it('a request over the burst waits for a full bucket and leaves a debt: the average holds', () => {
    const bucket = new TokenBucket(1000, 100);
    expect(bucket.take(400)).toBe(0);
    // 300 owed, then 100 to fill: 400 ms.
    expect(bucket.take(100)).toBe(400);
    vi.advanceTimersByTime(400);
    expect(bucket.take(100)).toBe(0);
  });

  it('gives back what was not used (holes), up to the burst; a new rate keeps what was saved', () => {
    const bucket = new TokenBucket(1000, 100);
    bucket.take(100);
    bucket.giveBack(500);
    expect(bucket.take(100)).toBe(0);
    bucket.giveBack(100);
    bucket.reset(10, 50);
    expect(bucket.currentRate).toBe(10);
    expect(bucket.take(50)).toBe(0);
    expect(bucket.take(10)).toBe(1000);
  });
});
