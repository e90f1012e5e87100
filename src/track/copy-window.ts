import { constants } from 'node:os';
import type { FerryData, NativeWindowRef, NativeWindowStats } from 'fuse-native';
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
 * With the native data path, every change is also made to the window's C twin, which classifies and mirrors
 * the writes answered in C (native/ferry/window.c); writes that reach JS use this object. Both see the same states.
 */
export class CopyWindow {
  private chunks: Extent[] = [];
  private state: Uint8Array = new Uint8Array(0); // 0 pending, 1 in flight, 2 done
  private planning = false;
  private waiters: { index: number; resolve: () => void }[] = [];
  private jsFailure: Error | undefined;
  /** The C twin, when the native data path serves this mount. */
  readonly ref: NativeWindowRef | undefined;

  constructor(
    readonly fd: number,
    /** Told the extra latency (ms) and size of each guest write mirrored by JS (see nativeStats for C's). */
    readonly recordMirror: (ms: number, bytes: number) => void,
    private readonly native?: FerryData,
  ) {
    this.ref = native?.windowNew(fd);
  }

  /** Set when a destination write failed: the window stops mirroring and the migration aborts. */
  get failure(): Error | undefined {
    if (this.jsFailure) return this.jsFailure;
    const errno = this.ref ? this.native!.windowStats(this.ref).error : 0;
    if (!errno) return undefined;
    const code = Object.entries(constants.errno).find(([, n]) => n === errno)?.[0] ?? `errno ${errno}`;
    return Object.assign(new Error(`mirroring to the destination failed: ${code}`), { code });
  }

  fail(err: Error): void {
    this.jsFailure ??= err;
  }

  /** Mirrors written by the native path through this window. */
  nativeStats(): NativeWindowStats | undefined {
    return this.ref && this.native!.windowStats(this.ref);
  }

  /** The copier is computing which chunks to copy: every write until `plan` must be copied again. */
  beginPlanning(): void {
    this.planning = true;
    if (this.ref) this.native!.windowPlan(this.ref, null, null);
  }

  plan(chunks: Extent[]): void {
    this.chunks = chunks;
    this.state = new Uint8Array(chunks.length);
    this.planning = false;
    if (this.ref) {
      this.native!.windowPlan(this.ref, Float64Array.from(chunks, (c) => c[0]), Float64Array.from(chunks, (c) => c[1]));
    }
  }

  dispatched(index: number): void {
    this.state[index] = 1;
    if (this.ref) this.native!.windowState(this.ref, index, 1);
  }

  completed(index: number): void {
    this.state[index] = 2;
    if (this.ref) this.native!.windowState(this.ref, index, 2);
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
    if (this.ref) this.native!.windowPlan(this.ref, new Float64Array(0), new Float64Array(0));
    // A failed copy never completes its chunks: writes waiting on them must not wait forever.
    for (const w of this.waiters) w.resolve();
    this.waiters = [];
  }

  /**
   * A size change is mirrored unless the copy is being planned (or mirroring failed): unlike a write's bytes,
   * it may overlap chunks not yet copied, which the copier reads from the source as it is by then.
   */
  mirrorsResize(): boolean {
    return !this.jsFailure && !this.planning;
  }

  fateOf(offset: number, length: number): WriteFate {
    // (A failure in C stops C's mirroring; a JS mirror write to a failing destination fails here too.)
    if (this.jsFailure) return 'mark';
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
