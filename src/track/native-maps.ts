import type { FerryData, NativeFileRef } from 'fuse-native';
import { DirtyMap } from './dirty-map.js';
import type { LiveMap } from './live-map.js';
import type { CopyWindow } from './copy-window.js';

/** A fresh file's maps cover this much file data, so that most files never need to grow them. */
const MIN_COVERED_BYTES = 1 << 30;

/**
 * One file's maps as the native data path sees them (see native-notes/memory-model.md): each live map sits in a
 * slot of the C file object, in memory C allocated; C marks it with atomic ORs from FUSE worker threads, and JS
 * marks it through C too. A native write that does not fit every map, or whose write-intent region JS has not
 * vouched for, or any write while a mirror window is open, is handed to the JS path, which grows or logs first.
 */
export class NativeMaps {
  readonly ref: NativeFileRef;
  private capacityBlocks: number;
  private readonly slots: (NativeLiveMap | undefined)[] = [];
  private intent: { bits: Uint8Array; shift: number } | undefined;
  private window: CopyWindow | undefined;

  constructor(
    private readonly data: FerryData,
    readonly blockSize: number,
  ) {
    this.ref = data.newFile();
    this.capacityBlocks = roundBlocks(MIN_COVERED_BYTES / blockSize);
  }

  newMap(): LiveMap {
    let slot = 0;
    while (this.slots[slot]) slot++;
    if (slot >= this.data.MAX_SLOTS) throw new Error(`more than ${this.data.MAX_SLOTS} dirty maps on one file`);
    const map = new NativeLiveMap(this, this.data, slot);
    this.slots[slot] = map;
    return map;
  }

  /** Memory for one map at the current capacity. */
  allocate(): { memory: ArrayBuffer; map: DirtyMap } {
    const memory = this.data.newMap(this.capacityBlocks / 8);
    return { memory, map: DirtyMap.over(this.blockSize, new Uint8Array(memory)) };
  }

  freeSlot(slot: number): void {
    this.slots[slot] = undefined;
  }

  /** Room for a file of `size` bytes and some growth, so that native writes need not come to JS to grow. */
  reserve(size: number): void {
    const blocks = Math.ceil(size / this.blockSize);
    if (blocks + blocks / 4 > this.capacityBlocks) this.grow(blocks + blocks / 4);
  }

  /** Grows every map (keeping its bits) to hold at least `blocks` blocks. */
  grow(blocks: number): void {
    this.capacityBlocks = roundBlocks(Math.max(blocks, this.capacityBlocks * 2));
    for (const map of this.slots) map?.regrow();
    // A fresh intent map vouches for nothing: the next write to each region asks JS again.
    if (this.intent) this.armIntent(1 << this.intent.shift, true);
  }

  bytesWritten(): number {
    return this.data.bytesWritten(this.ref);
  }

  /** Counts a JS-path write with the C path's writes of this file (see TrackedFile.beginWrite). */
  orderBegin(): number {
    return this.data.orderBegin(this.ref);
  }

  orderEnd(seq: number): boolean {
    return this.data.orderEnd(this.ref, seq);
  }

  /**
   * A mirror window decides for `map` from now on: in C when both have a C twin (at most one window per file),
   * otherwise by sending every write of the file to JS.
   */
  openWindow(window: CopyWindow, map: LiveMap): void {
    if (window.ref && map instanceof NativeLiveMap && !this.window) {
      this.data.windowAttach(this.ref, window.ref, map.slot);
      this.window = window;
    } else {
      this.data.jsWrites(this.ref, 1);
    }
  }

  closeWindow(window: CopyWindow): void {
    if (this.window === window) {
      this.data.windowAttach(this.ref, null, 0);
      this.window = undefined;
    } else {
      this.data.jsWrites(this.ref, -1);
    }
  }

  /** A migration logs write intents for this file: native writes wait until JS vouches for their regions. */
  armIntent(regionBytes: number, replace = false): void {
    if (this.intent && !replace) return;
    const shift = Math.log2(regionBytes);
    const regions = Math.ceil((this.capacityBlocks * this.blockSize) / regionBytes);
    const bits = new Uint8Array(this.data.newMap(Math.max(8, Math.ceil(regions / 64) * 8)));
    this.data.intent(this.ref, bits.buffer as ArrayBuffer, shift);
    this.intent = { bits, shift };
  }

  disarmIntent(): void {
    if (!this.intent) return;
    this.data.intent(this.ref, null, this.intent.shift);
    this.intent = undefined;
  }

  /** Every intent covering [offset, offset+length) is durable and touched in this epoch. */
  vouch(offset: number, length: number): void {
    if (!this.intent || length <= 0) return;
    const { bits, shift } = this.intent;
    const region = 2 ** shift;
    for (let r = Math.floor(offset / region); r <= Math.floor((offset + length - 1) / region) && r >> 3 < bits.length; r++) {
      bits[r >> 3] |= 0x80 >> (r & 7);
    }
  }

  vouchedRegions(): number[] {
    const regions: number[] = [];
    const bits = this.intent?.bits ?? new Uint8Array(0);
    for (let r = 0; r < bits.length * 8; r++) if (bits[r >> 3] & (0x80 >> (r & 7))) regions.push(r);
    return regions;
  }

  /** A new intent epoch: nothing is vouched for until JS sees each region again. */
  resetIntent(): void {
    this.intent?.bits.fill(0);
  }
}

class NativeLiveMap implements LiveMap {
  current: DirtyMap;

  constructor(
    private readonly owner: NativeMaps,
    private readonly data: FerryData,
    readonly slot: number,
  ) {
    this.current = this.install(false);
  }

  mark(offset: number, length: number): void {
    if (length <= 0) return;
    while (!this.data.mark(this.owner.ref, this.slot, offset, length)) {
      this.owner.grow(Math.floor((offset + length - 1) / this.owner.blockSize) + 1);
    }
  }

  clearFrom(size: number): void {
    this.data.clearFrom(this.owner.ref, this.slot, Math.ceil(size / this.owner.blockSize));
  }

  take(): DirtyMap {
    const taken = this.current;
    this.current = this.install(false);
    return taken;
  }

  release(): void {
    this.data.install(this.owner.ref, this.slot, null, false);
    this.owner.freeSlot(this.slot);
  }

  /** A larger map with every bit of the current one, swapped in with no concurrent mark lost. */
  regrow(): void {
    this.current = this.install(true);
  }

  private install(merge: boolean): DirtyMap {
    const { memory, map } = this.owner.allocate();
    this.data.install(this.owner.ref, this.slot, memory, merge);
    return map;
  }
}

/** Whole 64-bit words of bits. */
function roundBlocks(blocks: number): number {
  return Math.ceil(blocks / 64) * 64;
}
