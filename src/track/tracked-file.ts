import { DirtyMap } from './dirty-map.js';
import type { CopyWindow } from './copy-window.js';
import type { IntentLog } from './intent-log.js';

/** A consumer of dirty blocks with its own maps, independent of `ferry dirty`'s (a migration). */
export interface TrackingSession {
  readonly prefix: string;
  /** Guest bytes written under the session's subtree (for copy back-off). */
  guestBytes: number;
}

interface SessionEntry {
  session: TrackingSession;
  map: DirtyMap;
  window: CopyWindow | undefined;
  intent: IntentLog | undefined;
}

/** A guest write that must also reach a migration's destination before it is acknowledged. */
export interface MirrorJob {
  window: CopyWindow;
  /** In-flight copier chunks the write overlaps; the mirror write must land after them. */
  settled: Promise<void> | undefined;
  /** Where to record the write if mirroring it fails. */
  map: DirtyMap;
}

/** What the write path knows about one file: its current path and the blocks written since each map was last taken. */
export class TrackedFile {
  /** The map `ferry dirty` reports and clears. */
  dirty: DirtyMap;
  /** The backing inode (set when the file is opened), which keys crash-safe migration state. */
  ino: bigint | undefined;
  private sessions: SessionEntry[] = [];

  constructor(
    public path: string,
    readonly blockSize: number,
  ) {
    this.dirty = new DirtyMap(blockSize);
  }

  /** Before a write reaches the backing file: waits until every resumable session has logged its intent. */
  beforeWrite(offset: number, length: number): Promise<unknown> | undefined {
    let waits: Promise<void>[] | undefined;
    for (const s of this.sessions) {
      if (!s.intent) continue;
      // Without a known inode the write cannot be keyed: the whole file is then treated as touched.
      const wait = this.ino === undefined ? s.intent.before(-1n, 0, Number.MAX_SAFE_INTEGER) : s.intent.before(this.ino, offset, length);
      if (wait) (waits ??= []).push(wait);
    }
    return waits && Promise.all(waits);
  }

  /** Records a write that reached the backing file; returns the mirror writes it needs, if any. */
  written(offset: number, length: number): MirrorJob[] | undefined {
    this.dirty.mark(offset, length);
    let jobs: MirrorJob[] | undefined;
    for (const s of this.sessions) {
      s.session.guestBytes += length;
      const fate = s.window ? s.window.fateOf(offset, length) : 'mark';
      if (fate === 'mark') s.map.mark(offset, length);
      else if (fate === 'mirror') (jobs ??= []).push({ window: s.window!, settled: s.window!.settled(offset, length), map: s.map });
    }
    return jobs;
  }

  /**
   * A size change dirties the bytes between the two sizes. `ferry dirty` forgets blocks past the new end;
   * a migration keeps them, so a later write past that end cannot leave stale bytes on its copy.
   */
  resize(oldSize: number, newSize: number): void {
    const low = Math.min(oldSize, newSize);
    const length = Math.max(oldSize, newSize) - low;
    this.dirty.mark(low, length);
    this.dirty.clearFrom(newSize);
    for (const s of this.sessions) s.map.mark(low, length);
  }

  /** Hands the current dirty set to the caller and starts a fresh one, in one step: a later write dirties the new map. */
  takeDirty(): DirtyMap {
    const taken = this.dirty;
    this.dirty = new DirtyMap(this.blockSize);
    return taken;
  }

  isAttached(session: TrackingSession): boolean {
    return this.sessions.some((s) => s.session === session);
  }

  /**
   * Like takeDirty, for a session; attaches the session first if needed (the taken map is then empty).
   * With a window, writes are mirrored or classified against the copier's position from now on.
   */
  takeFor(session: TrackingSession, window?: CopyWindow, intent?: IntentLog): DirtyMap {
    const entry = this.sessions.find((s) => s.session === session);
    if (!entry) {
      this.sessions.push({ session, map: new DirtyMap(this.blockSize), window, intent });
      return new DirtyMap(this.blockSize);
    }
    if (window) entry.window = window;
    const taken = entry.map;
    entry.map = new DirtyMap(this.blockSize);
    return taken;
  }

  peekFor(session: TrackingSession): DirtyMap | undefined {
    return this.sessions.find((s) => s.session === session)?.map;
  }

  detach(session: TrackingSession): void {
    this.sessions = this.sessions.filter((s) => s.session !== session);
  }
}
