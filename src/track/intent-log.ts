/**
 * A write-intent log (like md's write-intent bitmap): before a write reaches the source, the coarse region it
 * touches is recorded durably, so after a crash every region that may hold writes newer than the last
 * checkpoint is known and copied again. The first write to a region since the last checkpoint waits for one
 * flush (coalesced with others); later writes to it pass straight through.
 */
export class IntentLog {
  private durable = new Map<bigint, Set<number>>();
  private wanted = new Map<bigint, Set<number>>();
  private touched = new Map<bigint, Set<number>>();
  private flushing: Promise<void> | undefined;
  private again = false;
  private waiters: (() => void)[] = [];
  /** Persists run one after another: they replace the same file. */
  private chain: Promise<void> = Promise.resolve();

  constructor(
    readonly regionBytes: number,
    private readonly persist: (regions: Map<bigint, Set<number>>) => Promise<void>,
    initial?: Map<bigint, Set<number>>,
  ) {
    if (initial) for (const [ino, set] of initial) this.durable.set(ino, new Set(set));
  }

  /** Before a write to [offset, offset+length) of inode `ino`: undefined when its regions are already durable. */
  before(ino: bigint, offset: number, length: number): Promise<void> | undefined {
    const first = Math.floor(offset / this.regionBytes);
    const last = Math.floor((offset + Math.max(length, 1) - 1) / this.regionBytes);
    let missing = false;
    for (let r = first; r <= last; r++) {
      add(this.touched, ino, r);
      if (!this.durable.get(ino)?.has(r)) {
        add(this.wanted, ino, r);
        missing = true;
      }
    }
    if (!missing) return undefined;
    return new Promise((resolve) => {
      this.waiters.push(resolve);
      this.schedule();
    });
  }

  /** Starts an epoch: regions touched from now on survive the next trim. */
  beginEpoch(): void {
    this.touched = new Map();
  }

  /** After a checkpoint holds every dirty bit up to the epoch start: keep only what was touched since. */
  async trimToEpoch(): Promise<void> {
    const keep = new Map([...this.touched].map(([ino, set]) => [ino, new Set(set)]));
    for (const [ino, set] of this.wanted) for (const r of set) add(keep, ino, r);
    this.wanted = new Map();
    await this.serialized(keep);
  }

  /** Every region that may hold writes not in the last checkpoint. */
  regions(): Map<bigint, Set<number>> {
    return this.union();
  }

  private union(): Map<bigint, Set<number>> {
    const all = new Map<bigint, Set<number>>();
    for (const map of [this.durable, this.wanted, this.touched]) for (const [ino, set] of map) for (const r of set) add(all, ino, r);
    return all;
  }

  /** `durable` is always what the last completed write put on disk. */
  private serialized(regions: Map<bigint, Set<number>>): Promise<void> {
    const next = this.chain.then(async () => {
      await this.persist(regions);
      this.durable = regions;
    });
    this.chain = next.catch(() => undefined);
    return next;
  }

  private schedule(): void {
    if (this.flushing) {
      this.again = true;
      return;
    }
    const regions = this.union();
    const waiters = this.waiters;
    this.waiters = [];
    this.flushing = this.serialized(regions).then(
      () => {
        for (const w of waiters) w();
      },
      () => {
        // The state disk failed: let the writes through (the migration notices at its next checkpoint).
        for (const w of waiters) w();
      },
    );
    void this.flushing.then(() => {
      this.flushing = undefined;
      if (this.again || this.waiters.length > 0) {
        this.again = false;
        this.schedule();
      }
    });
  }
}

function add(map: Map<bigint, Set<number>>, ino: bigint, region: number): void {
  let set = map.get(ino);
  if (!set) map.set(ino, (set = new Set()));
  set.add(region);
}
