import { DirtyMap } from './dirty-map.js';

/** What the write path knows about one file: its current path and the blocks written since the map was last taken. */
export class TrackedFile {
  dirty: DirtyMap;

  constructor(
    public path: string,
    readonly blockSize: number,
  ) {
    this.dirty = new DirtyMap(blockSize);
  }

  /** Hands the current dirty set to the caller and starts a fresh one, in one step: a later write dirties the new map. */
  takeDirty(): DirtyMap {
    const taken = this.dirty;
    this.dirty = new DirtyMap(this.blockSize);
    return taken;
  }
}
