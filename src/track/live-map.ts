import { DirtyMap } from './dirty-map.js';

/**
 * A dirty map that the write path marks while others read it or take it. The JS implementation below is a plain
 * DirtyMap; the native one (native-maps.ts) lives in memory the C data path marks from FUSE worker threads.
 */
export interface LiveMap {
  /** The map as it stands, for scans (bits set while it is read may be missed). */
  readonly current: DirtyMap;
  mark(offset: number, length: number): void;
  /** Forgets blocks that lie entirely at or beyond `size`. */
  clearFrom(size: number): void;
  /** Installs an empty map and returns the previous one: every concurrent mark lands in one of the two. */
  take(): DirtyMap;
  /** Nothing marks this map any more (its session ended). */
  release(): void;
}

export class JsLiveMap implements LiveMap {
  current: DirtyMap;

  constructor(private readonly blockSize: number) {
    this.current = new DirtyMap(blockSize);
  }

  mark(offset: number, length: number): void {
    this.current.mark(offset, length);
  }

  clearFrom(size: number): void {
    this.current.clearFrom(size);
  }

  take(): DirtyMap {
    const taken = this.current;
    this.current = new DirtyMap(this.blockSize);
    return taken;
  }

  release(): void {}
}
