export type Regions = Map<bigint, Set<number>>;

/**
 * A region number below zero stands for every region of the inode from `-(r + 1)` on: `fromRegion(0)` is the whole
 * file. It logs, in one entry, the part of a file a crash would make the resume copy again anyway.
 */
export const fromRegion = (first: number): number => -(first + 1);

/** The first region a marker in `set` covers from (Infinity when none). */
export function markedFrom(set: Set<number> | undefined): number {
  let from = Infinity;
  for (const r of set ?? []) if (r < 0) from = Math.min(from, -(r + 1));
  return from;
}

/** True when `regions` logs region `r` of `ino`, by itself or by a marker. */
export function covers(regions: Regions, ino: bigint, r: number): boolean {
  const set = regions.get(ino);
  return set !== undefined && (set.has(r) || r >= markedFrom(set));
}

/**
 * A write-intent log (like md's write-intent bitmap): before a write reaches the source, the coarse region it
 * touches is recorded durably, so after a crash every region that may hold writes newer than the last
 * checkpoint is known and copied again. The first write to a region since the last checkpoint waits for one
 * flush (coalesced with others); later writes to it pass straight through.
 *
 * Who changes what (all on the JS thread; see native-notes/memory-model.md, "Write intents"):
 * - `touched`, `wanted`: `before()` adds; `beginEpoch()` empties `touched`; a flush empties `wanted` as it starts.
 * - `vouched`: the regions a write may pass without waiting (and that C may be told about). Only a completed
 *   flush adds to it, and only what that flush put on disk. A trim withdraws what it will drop *before* it
 *   starts writing, so no write can pass on a region that the file on disk is about to lose.
 * - Flushes run one at a time, each writing the set computed when it starts.
 * - `keep`: what the next trim keeps besides the epoch's regions (regions the checkpoint does not vouch for yet);
 *   set by `trimToEpoch`, taken by the trim's flush.
 */
export class IntentLog {
  private vouched: Regions = new Map();
  /** Per inode, the first region a marker in `vouched` covers from: `before()` asks it for every region. */
  private vouchedFrom = new Map<bigint, number>();
  private keep: Regions = new Map();
  private wanted: Regions = new Map();
  private touched: Regions = new Map();
  private waiters: (() => void)[] = [];
  private trimWaiters: { resolve: () => void; reject: (err: unknown) => void }[] = [];
  private flushing = false;
  private failure: unknown;
  /** After a failure: resolves once the owner has stopped counting on the log (writes wait until then). */
  private released: Promise<void> | undefined;
  private isReleased = false;

  constructor(
    readonly regionBytes: number,
    /** Replaces the log on disk with `regions`; `trimming`: the write that drops what a checkpoint covers. */
    private readonly persist: (regions: Regions, trimming: boolean) => Promise<void>,
    initial?: Regions,
    /** The log could not be written: the owner stops counting on it; writes go on once this resolves. */
    private readonly onFailure: (err: unknown) => Promise<void> | void = () => undefined,
    /** Debug check after every change of `vouched` (tests: nothing vouched elsewhere may lie outside it). */
    private readonly onVouchedChange?: (vouched: Regions) => void,
  ) {
    if (initial) this.setVouched(copy(initial), false);
  }

  private setVouched(vouched: Regions, notify = true): void {
    this.vouched = vouched;
    this.vouchedFrom = new Map();
    for (const [ino, set] of vouched) {
      const from = markedFrom(set);
      if (from !== Infinity) this.vouchedFrom.set(ino, from);
    }
    if (notify) this.onVouchedChange?.(vouched);
  }

  private isVouched(ino: bigint, r: number): boolean {
    return this.vouched.get(ino)?.has(r) === true || r >= (this.vouchedFrom.get(ino) ?? Infinity);
  }

  /**
   * Logs every region of `ino` from `first` on (a file whose copy starts: a crash before a checkpoint proves any
   * of it copies it again anyway), so that writes there pass without waiting. Resolves once that is durable.
   */
  vouchFrom(ino: bigint, first: number): Promise<void> {
    if (this.failure !== undefined) return Promise.resolve();
    add(this.wanted, ino, fromRegion(first));
    return new Promise((resolve) => {
      this.waiters.push(resolve);
      this.kick();
    });
  }

  /**
   * A write the log cannot key (its file's inode is unknown): it cannot be made durable, so the log breaks, its
   * owner stops counting on it (the migration aborts, source intact), and the write goes on after that.
   */
  unkeyable(what: string): Promise<void> | undefined {
    if (this.failure === undefined) this.fail(Object.assign(new Error(`a write to ${what} cannot be logged: its inode is unknown`), { code: 'EINVARIANT' }), [], []);
    return this.isReleased ? undefined : this.released;
  }

  /** Before a write to [offset, offset+length) of inode `ino`: undefined when its regions are already durable. */
  before(ino: bigint, offset: number, length: number): Promise<void> | undefined {
    const first = Math.floor(offset / this.regionBytes);
    const last = Math.floor((offset + Math.max(length, 1) - 1) / this.regionBytes);
    let missing = false;
    for (let r = first; r <= last; r++) {
      add(this.touched, ino, r);
      if (!this.isVouched(ino, r)) {
        add(this.wanted, ino, r);
        missing = true;
      }
    }
    // A broken log lets writes through once its owner no longer counts on it.
    if (this.failure !== undefined) return this.isReleased ? undefined : this.released;
    if (!missing) return undefined;
    return new Promise((resolve) => {
      this.waiters.push(resolve);
      this.kick();
    });
  }

  /** Starts an epoch: regions touched from now on survive the next trim. */
  beginEpoch(): void {
    this.touched = new Map();
  }

  /**
   * After a checkpoint holds every dirty bit up to the epoch start: keep only what was touched since, and `keep`
   * (what that checkpoint does not vouch for, which a resume copies again anyway).
   */
  trimToEpoch(keep: Regions = new Map()): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    this.keep = union(this.keep, keep);
    return new Promise((resolve, reject) => {
      this.trimWaiters.push({ resolve, reject });
      this.kick();
    });
  }

  private kick(): void {
    if (this.flushing) return;
    this.flushing = true;
    void this.flushLoop();
  }

  private async flushLoop(): Promise<void> {
    while (this.failure === undefined && (this.waiters.length > 0 || this.trimWaiters.length > 0)) {
      const trimming = this.trimWaiters.length > 0;
      const trimWaiters = this.trimWaiters;
      const waiters = this.waiters;
      this.trimWaiters = [];
      this.waiters = [];
      const content = trimming ? union(this.touched, this.wanted, this.keep) : union(this.vouched, this.touched, this.wanted);
      this.wanted = new Map();
      if (trimming) {
        this.keep = new Map();
        // Withdraw first: a write from now on to a dropped region waits for the next flush.
        this.setVouched(intersect(this.vouched, content));
      }
      try {
        await this.persist(content, trimming);
      } catch (err) {
        this.fail(err, waiters, trimWaiters);
        break;
      }
      // Nothing else changes `vouched` while a flush runs, so the file on disk now holds all of it and more.
      this.setVouched(content);
      for (const w of waiters) w();
      for (const t of trimWaiters) t.resolve();
    }
    this.flushing = false;
  }

  private fail(err: unknown, waiters: (() => void)[], trimWaiters: { reject: (err: unknown) => void }[]): void {
    this.failure = err;
    this.setVouched(new Map());
    for (const t of [...trimWaiters, ...this.trimWaiters]) t.reject(err);
    const held = [...waiters, ...this.waiters];
    this.waiters = [];
    this.trimWaiters = [];
    this.released = Promise.resolve()
      .then(() => this.onFailure(err))
      .catch(() => undefined)
      .then(() => {
        this.isReleased = true;
        for (const w of held) w();
      });
  }
}

function add(map: Regions, ino: bigint, region: number): void {
  let set = map.get(ino);
  if (!set) map.set(ino, (set = new Set()));
  set.add(region);
}

function copy(map: Regions): Regions {
  return new Map([...map].map(([ino, set]) => [ino, new Set(set)]));
}

function union(...maps: Regions[]): Regions {
  const all: Regions = new Map();
  for (const map of maps) for (const [ino, set] of map) for (const r of set) add(all, ino, r);
  return all;
}

/** What both log: markers meet at the later start, and a region logged by one and marked by the other stays. */
function intersect(a: Regions, b: Regions): Regions {
  const both: Regions = new Map();
  for (const [ino, setA] of a) {
    const setB = b.get(ino);
    if (!setB) continue;
    const fromA = markedFrom(setA);
    const fromB = markedFrom(setB);
    if (Math.max(fromA, fromB) !== Infinity) add(both, ino, fromRegion(Math.max(fromA, fromB)));
    for (const r of setA) if (r >= 0 && (setB.has(r) || r >= fromB)) add(both, ino, r);
    for (const r of setB) if (r >= 0 && r >= fromA) add(both, ino, r);
  }
  return both;
}
