import { DirtyMap } from './dirty-map.js';

/** A consumer of dirty blocks with its own maps, independent of `ferry dirty`'s (a migration). */
export interface TrackingSession {
  readonly prefix: string;
}

/** What the write path knows about one file: its current path and the blocks written since each map was last taken. */
export class TrackedFile {
  /** The map `ferry dirty` reports and clears. */
  dirty: DirtyMap;
  private sessionMaps: { session: TrackingSession; map: DirtyMap }[] = [];

  constructor(
    public path: string,
    readonly blockSize: number,
  ) {
    this.dirty = new DirtyMap(blockSize);
  }

  mark(offset: number, length: number): void {
    this.dirty.mark(offset, length);
    for (const s of this.sessionMaps) s.map.mark(offset, length);
  }

  resize(oldSize: number, newSize: number): void {
    const low = Math.min(oldSize, newSize);
    this.mark(low, Math.max(oldSize, newSize) - low);
    this.dirty.clearFrom(newSize);
    for (const s of this.sessionMaps) s.map.clearFrom(newSize);
  }

  /** Hands the current dirty set to the caller and starts a fresh one, in one step: a later write dirties the new map. */
  takeDirty(): DirtyMap {
    const taken = this.dirty;
    this.dirty = new DirtyMap(this.blockSize);
    return taken;
  }

  isAttached(session: TrackingSession): boolean {
    return this.sessionMaps.some((s) => s.session === session);
  }

  /** Like takeDirty, for a session; attaches the session first if needed (then the taken map is empty). */
  takeFor(session: TrackingSession): DirtyMap {
    const entry = this.sessionMaps.find((s) => s.session === session);
    const fresh = new DirtyMap(this.blockSize);
    if (!entry) {
      this.sessionMaps.push({ session, map: fresh });
      return new DirtyMap(this.blockSize);
    }
    const taken = entry.map;
    entry.map = fresh;
    return taken;
  }

  peekFor(session: TrackingSession): DirtyMap | undefined {
    return this.sessionMaps.find((s) => s.session === session)?.map;
  }

  detach(session: TrackingSession): void {
    this.sessionMaps = this.sessionMaps.filter((s) => s.session !== session);
  }
}
