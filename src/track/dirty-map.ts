import BitField from 'bitfield';

/** [offset, length] in bytes. */
export type Extent = [number, number];

const FILL_THRESHOLD_BITS = 64;

/**
 * One file's dirty blocks: 1 bit per block, MSB-first within a byte (bitfield's order).
 * The buffer grows with the highest block written; scans skip clean 32-bit words.
 */
export class DirtyMap {
  private bits = new BitField(new Uint8Array(8));

  constructor(readonly blockSize: number) {}

  /** A map over existing memory (a whole number of 8-byte units), e.g. a bitmap the native data path marks. */
  static over(blockSize: number, bytes: Uint8Array): DirtyMap {
    const map = new DirtyMap(blockSize);
    map.bits = new BitField(bytes);
    return map;
  }

  /** Marks every block that [offset, offset + length) touches. */
  mark(offset: number, length: number): void {
    if (length <= 0) return;
    const first = Math.floor(offset / this.blockSize);
    const last = Math.floor((offset + length - 1) / this.blockSize);
    this.ensureCapacity(last);
    if (last - first < FILL_THRESHOLD_BITS) {
      for (let block = first; block <= last; block++) this.bits.set(block);
      return;
    }
    const firstFullByte = Math.ceil(first / 8);
    const endFullByte = Math.floor((last + 1) / 8);
    for (let block = first; block < firstFullByte * 8; block++) this.bits.set(block);
    this.bits.buffer.fill(0xff, firstFullByte, endFullByte);
    for (let block = endFullByte * 8; block <= last; block++) this.bits.set(block);
  }

  /** Forgets blocks that lie entirely at or beyond `size` (after a truncate). */
  clearFrom(size: number): void {
    const firstGone = Math.ceil(size / this.blockSize);
    const buffer = this.bits.buffer;
    const firstFullByte = Math.ceil(firstGone / 8);
    for (let block = firstGone; block < Math.min(firstFullByte * 8, buffer.length * 8); block++) {
      this.bits.set(block, false);
    }
    if (firstFullByte < buffer.length) buffer.fill(0, firstFullByte);
  }

  /** The raw bitmap (for a checkpoint). */
  toBytes(): Uint8Array {
    return this.bits.buffer.slice();
  }

  static fromBytes(blockSize: number, bytes: Uint8Array): DirtyMap {
    const map = new DirtyMap(blockSize);
    map.orBytes(bytes);
    return map;
  }

  /** Adds every block dirty in `bytes` (a bitmap of the same block size). */
  orBytes(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    this.ensureCapacity(bytes.length * 8 - 1);
    const own = this.bits.buffer;
    for (let i = 0; i < bytes.length; i++) own[i] |= bytes[i];
  }

  isEmpty(): boolean {
    return this.bits.isEmpty();
  }

  /** Calls `visit(firstBlock, endBlock)` for each maximal run of dirty blocks, in order. */
  forEachRun(visit: (firstBlock: number, endBlock: number) => void): void {
    const bytes = this.bits.buffer;
    const words = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.length >> 2);
    let runStart = -1;
    for (let w = 0; w < words.length; w++) {
      const word = words[w];
      if (word === 0 && runStart < 0) continue;
      if (word === 0xffffffff && runStart >= 0) continue;
      for (let byte = w * 4; byte < w * 4 + 4; byte++) {
        const value = bytes[byte];
        if ((value === 0 && runStart < 0) || (value === 0xff && runStart >= 0)) continue;
        for (let bit = 0; bit < 8; bit++) {
          const dirty = (value & (0x80 >> bit)) !== 0;
          const block = byte * 8 + bit;
          if (dirty && runStart < 0) runStart = block;
          else if (!dirty && runStart >= 0) {
            visit(runStart, block);
            runStart = -1;
          }
        }
      }
    }
    if (runStart >= 0) visit(runStart, bytes.length * 8);
  }

  /** Merged, block-aligned extents clipped to the file size. */
  extents(fileSize: number): Extent[] {
    const extents: Extent[] = [];
    this.forEachRun((firstBlock, endBlock) => {
      const start = firstBlock * this.blockSize;
      const end = Math.min(endBlock * this.blockSize, fileSize);
      if (start < end) extents.push([start, end - start]);
    });
    return extents;
  }

  dirtyBytes(fileSize: number): number {
    let total = 0;
    this.forEachRun((firstBlock, endBlock) => {
      const start = firstBlock * this.blockSize;
      const end = Math.min(endBlock * this.blockSize, fileSize);
      if (start < end) total += end - start;
    });
    return total;
  }

  private ensureCapacity(lastBlock: number): void {
    const neededBytes = Math.floor(lastBlock / 8) + 1;
    const current = this.bits.buffer;
    if (neededBytes <= current.length) return;
    // Whole 8-byte units keep the 32-bit word view in forEachRun exact.
    const size = Math.ceil(Math.max(neededBytes, current.length * 2) / 8) * 8;
    const grown = new Uint8Array(size);
    grown.set(current);
    this.bits = new BitField(grown);
  }
}
