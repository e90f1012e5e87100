import { DirtyMap } from './dirty-map.js';
import { JsLiveMap, type LiveMap } from './live-map.js';
import type { NativeMaps } from './native-maps.js';
import type { CopyWindow } from './copy-window.js';
import type { IntentLog } from './intent-log.js';

/** A consumer of dirty blocks with its own maps, independent of `ferry dirty`'s (a migration). */
export interface TrackingSession {
  readonly prefix: string;
}

interface SessionEntry {
  session: TrackingSession;
  map: LiveMap;
  window: CopyWindow | undefined;
  intent: IntentLog | undefined;
}

/** A guest write that must also reach a migration's destination before it is acknowledged. */
export interface MirrorJob {
  window: CopyWindow;
  /** In-flight copier chunks the write overlaps; the mirror write must land after them. */
  settled: Promise<void> | undefined;
  /** Where to record the write if mirroring it fails. */
  map: LiveMap;
}

/** A write between beginWrite and endWrite: the windows it may mirror to, and its place among the file's writes. */
export interface WriteOrder {
  readonly windows: readonly CopyWindow[];
  readonly seq: number;
}

const UNORDERED: WriteOrder = { windows: [], seq: 0 };

/**
 * What the write path knows about one file: its current path and the blocks written since each map was last taken.
 * With `native`, the maps live where the C data path marks them; this class's logic is the same either way.
 */
export class TrackedFile {
  /** The backing inode (set when the file is opened), which keys crash-safe migration state. */
  ino: bigint | undefined;
  private readonly dirtyMap: LiveMap;
  private sessions: SessionEntry[] = [];
  private jsBytes = 0;
  private orderedInFlight = 0;
  private orderedSeq = 0;

  constructor(
    public path: string,
    readonly blockSize: number,
    readonly native?: NativeMaps,
  ) {
    this.dirtyMap = this.newMap();
  }

  /** The map `ferry dirty` reports and clears. */
  get dirty(): DirtyMap {
    return this.dirtyMap.current;
  }

  /** Bytes written to the file through the mount since tracking began, on either data path. */
  get bytesWritten(): number {
    return this.jsBytes + (this.native?.bytesWritten() ?? 0);
  }

  /** Before a write reaches the backing file: waits until every resumable session has logged its intent. */
  beforeWrite(offset: number, length: number): Promise<unknown> | undefined {
    let waits: Promise<void>[] | undefined;
    let logged = false;
    for (const s of this.sessions) {
      if (!s.intent) continue;
      logged = true;
      const wait = this.ino === undefined ? s.intent.unkeyable(this.path) : s.intent.before(this.ino, offset, length);
      if (wait) (waits ??= []).push(wait);
    }
    // Durable and touched in this epoch already: later writes there may stay on the native path.
    if (logged && !waits && this.ino !== undefined) this.native?.vouch(offset, length);
    return waits && Promise.all(waits);
  }

  /**
   * Right before a write reaches the backing file. Writes to one file run in parallel, so two writes of one block
   * may reach the source and a mirror in different orders. A write that starts while a window is open counts
   * itself (with the C path's writes, for a native file); one that overlapped another in time is marked dirty
   * when it ends (endWrite), so the copier copies the source's bytes again. A window that opened after the write
   * started gets its blocks marked, not mirrored.
   */
  beginWrite(): WriteOrder {
    // Every JS-path write comes here: allocate only when a window is open.
    if (!this.sessions.some((s) => s.window)) return UNORDERED;
    const windows = this.sessions.flatMap((s) => (s.window ? [s.window] : []));
    if (this.native) return { windows, seq: this.native.orderBegin() };
    const alone = this.orderedInFlight++ === 0;
    this.orderedSeq++;
    return { windows, seq: alone ? this.orderedSeq : 0 };
  }

  /** After the write and its mirrors (length 0: the write failed). */
  endWrite(order: WriteOrder, offset: number, length: number): void {
    if (order.windows.length === 0) return;
    let alone: boolean;
    if (this.native) {
      alone = this.native.orderEnd(order.seq);
    } else {
      alone = order.seq !== 0 && this.orderedSeq === order.seq;
      this.orderedInFlight--;
    }
    if (alone || length === 0) return;
    for (const s of this.sessions) s.map.mark(offset, length);
  }

  /** Records a write that reached the backing file; returns the mirror writes it needs, if any. */
  written(offset: number, length: number, order: WriteOrder = UNORDERED): MirrorJob[] | undefined {
    this.jsBytes += length;
    this.dirtyMap.mark(offset, length);
    let jobs: MirrorJob[] | undefined;
    for (const s of this.sessions) {
      const fate = s.window && order.windows.includes(s.window) ? s.window.fateOf(offset, length) : 'mark';
      if (fate === 'mark') s.map.mark(offset, length);
      else if (fate === 'mirror') (jobs ??= []).push({ window: s.window!, settled: s.window!.settled(offset, length), map: s.map });
    }
    return jobs;
  }

  /**
   * A size change dirties the bytes between the two sizes. `ferry dirty` forgets blocks past the new end;
   * a migration keeps them, so a later write past that end cannot leave stale bytes on its copy.
   */
  resize(oldSize: number, newSize: number, order: WriteOrder = UNORDERED): MirrorJob[] | undefined {
    const low = Math.min(oldSize, newSize);
    const length = Math.max(oldSize, newSize) - low;
    this.dirtyMap.mark(low, length);
    this.dirtyMap.clearFrom(newSize);
    // Where a window mirrors the file, the size change is mirrored too (the caller truncates the copy once the
    // copier's in-flight chunks there are done): a file shrunk and grown again must not be all dirty each pass.
    let jobs: MirrorJob[] | undefined;
    for (const s of this.sessions) {
      const mirrored = s.window && order.windows.includes(s.window) && s.window.mirrorsResize();
      if (mirrored) (jobs ??= []).push({ window: s.window!, settled: s.window!.settled(low, length), map: s.map });
      else s.map.mark(low, length);
    }
    return jobs;
  }

  /** Bytes changed in place other than by a write (fallocate): dirty in every map, never mirrored. */
  changed(offset: number, length: number): void {
    this.dirtyMap.mark(offset, length);
    for (const s of this.sessions) s.map.mark(offset, length);
  }

  /** Hands the current dirty set to the caller and starts a fresh one, in one step: a later write dirties the new map. */
  takeDirty(): DirtyMap {
    return this.dirtyMap.take();
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
      // Intents first: no native write may reach the session's map unlogged. (Before its window opens, a
      // write only marks the map, which copies it again: always safe.)
      if (intent) this.native?.armIntent(intent.regionBytes);
      const map = this.newMap();
      this.sessions.push({ session, map, window, intent });
      if (window) this.native?.openWindow(window, map);
      return new DirtyMap(this.blockSize);
    }
    if (window && !entry.window) {
      entry.window = window;
      this.native?.openWindow(window, entry.map);
    }
    return entry.map.take();
  }

  /** Marks a range in a session's map (blocks handed back after a copy that did not happen). */
  markFor(session: TrackingSession, offset: number, length: number): void {
    this.sessions.find((s) => s.session === session)?.map.mark(offset, length);
  }

  peekFor(session: TrackingSession): DirtyMap | undefined {
    return this.sessions.find((s) => s.session === session)?.map.current;
  }

  detach(session: TrackingSession): void {
    for (const s of this.sessions) {
      if (s.session !== session) continue;
      if (s.window) this.native?.closeWindow(s.window);
      s.map.release();
    }
    this.sessions = this.sessions.filter((s) => s.session !== session);
    if (!this.sessions.some((s) => s.intent)) this.native?.disarmIntent();
  }

  /** Intent regions the native path writes without asking JS (debug checks). */
  vouchedRegions(): number[] {
    return this.native?.vouchedRegions() ?? [];
  }

  /** The session's intent log began an epoch: nothing is vouched for any more. */
  newIntentEpoch(): void {
    this.native?.resetIntent();
  }

  private newMap(): LiveMap {
    return this.native ? this.native.newMap() : new JsLiveMap(this.blockSize);
  }
}
