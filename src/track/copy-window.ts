import type { Extent } from './dirty-map.js';

/** What the write path must do with a guest write while a migration mirrors the file. */
export type WriteFate = 'ahead' | 'mark' | 'mirror';

/**
 * Where the copier stands in one file, for mirror mode: the chunks of its current copy, in ascending
 * order, each not yet dispatched, in flight, or done. A guest write (after it reached the source) is
 *  - 'ahead' when it lies entirely in chunks not yet dispatched: the copier will read it, nothing to do;
 *  - 'mark' when it overlaps such chunks only in part, or while the copy is being planned: copy it again later;
 *  - 'mirror' otherwise: write it to the destination too, once the in-flight chunks it overlaps are done
 *    (so it lands after the copier's older bytes, never before).
 */
export class CopyWindow {
  private chunks: Extent[] = [];
  private state: Uint8Array = new Uint8Array(0); // 0 pending, 1 in flight, 2 done
  private planning = false;
  private waiters: { index: number; resolve: () => void }[] = [];
  /** Set when a destination write failed: the window stops mirroring and the migration aborts. */
  failure: Error | undefined;

  constructor(
    readonly fd: number,
    /** Told the extra latency (ms) and size of each mirrored guest write. */
    readonly recordMirror: (ms: number, bytes: number) => void,
  ) {}

  /** The copier is computing which chunks to copy: every write until `plan` must be copied again. */
  beginPlanning(): void {
    this.planning = true;
  }

  plan(chunks: Extent[]): void {
    this.chunks = chunks;
    this.state = new Uint8Array(chunks.length);
    this.planning = false;
  }

  dispatched(index: number): void {
    this.state[index] = 1;
  }

  completed(index: number): void {
    this.state[index] = 2;
    if (this.waiters.length === 0) return;
    this.waiters = this.waiters.filter((w) => {
      if (this.state[w.index] !== 2) return true;
      w.resolve();
      return false;
    });
  }

  /** The copy of this file is over (done or failed): from now on every write is mirrored at once. */
  finish(): void {
    this.chunks = [];
    this.state = new Uint8Array(0);
    // A failed copy never completes its chunks: writes waiting on them must not wait forever.
    for (const w of this.waiters) w.resolve();
    this.waiters = [];
  }

  fateOf(offset: number, length: number): WriteFate {
    if (this.failure) return 'mark';
    if (this.planning) return 'mark';
    const end = offset + length;
    let covered = 0;
    let pending = 0;
    for (let i = this.firstChunkEndingAfter(offset); i < this.chunks.length && this.chunks[i][0] < end; i++) {
      const [start, size] = this.chunks[i];
      const overlap = Math.min(end, start + size) - Math.max(offset, start);
      covered += overlap;
      if (this.state[i] === 0) pending += overlap;
    }
    if (pending === 0) return 'mirror';
    return pending === length && covered === length ? 'ahead' : 'mark';
  }

  /** Resolves once every in-flight chunk overlapping the range is done (immediately if none). */
  settled(offset: number, length: number): Promise<void> | undefined {
    const end = offset + length;
    const waits: Promise<void>[] = [];
    for (let i = this.firstChunkEndingAfter(offset); i < this.chunks.length && this.chunks[i][0] < end; i++) {
      if (this.state[i] === 1) {
        const index = i;
        waits.push(new Promise((resolve) => this.waiters.push({ index, resolve })));
      }
    }
    return waits.length > 0 ? Promise.all(waits).then(() => undefined) : undefined;
  }

  private firstChunkEndingAfter(offset: number): number {
    let low = 0;
    let high = this.chunks.length;
    while (low < high) {
      const mid = (low + high) >> 1;
      if (this.chunks[mid][0] + this.chunks[mid][1] <= offset) low = mid + 1;
      else high = mid;
    }
    return low;
  }
}
