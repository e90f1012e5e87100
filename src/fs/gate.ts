import type { FerryData } from 'fuse-native';
import { isWithin } from '../util/paths.js';

/** Paths that an op touches; both are checked together so a rename can never hold one side while waiting on the other. */
type Run = (ticket: number) => void;

interface Waiting {
  path: string;
  path2: string | undefined;
  run: Run;
}

export interface Freeze {
  readonly prefix: string;
}

/**
 * The I/O gate: every FUSE op enters it before touching backing files and leaves it when done.
 * Freezing a subtree holds new ops under it and resolves once every op admitted earlier has left;
 * ops elsewhere keep running. Admitted ops are counted per epoch (advanced by freezes and by the
 * watchdog's clock), which costs O(1) per op and also tells how long the oldest op has been running.
 * With the native data path, C keeps the same gate for the reads and writes it answers: a frozen subtree's ops
 * go from C to this gate (which holds them), and freezing or quiescing also drains the ops C admitted.
 */
export class IoGate {
  private epoch = 0;
  private readonly inflight = new Map<number, number>();
  private readonly epochStarted = new Map<number, number>([[0, Date.now()]]);
  private frozen: Freeze[] = [];
  private waiting: Waiting[] = [];
  private drains: { beforeEpoch: number; resolve: () => void }[] = [];

  constructor(
    private readonly native?: FerryData,
    /** An op held by a freeze that threw as it started: it is reported, and the ops behind it still start. */
    private readonly onStartError: (err: unknown) => void = () => undefined,
  ) {}

  admit(path: string, path2: string | undefined, run: Run): void {
    if (this.frozen.length > 0 && this.isFrozen(path, path2)) {
      this.waiting.push({ path, path2, run });
      return;
    }
    const ticket = this.epoch;
    this.inflight.set(ticket, (this.inflight.get(ticket) ?? 0) + 1);
    try {
      run(ticket);
    } catch (err) {
      // An op that never started never leaves: a later freeze would wait for it forever.
      this.leave(ticket);
      throw err;
    }
  }

  leave(ticket: number): void {
    const left = (this.inflight.get(ticket) ?? 1) - 1;
    if (left > 0) {
      this.inflight.set(ticket, left);
      return;
    }
    this.inflight.delete(ticket);
    if (ticket !== this.epoch) this.epochStarted.delete(ticket);
    if (this.drains.length > 0) this.settleDrains();
  }

  /** Holds new ops under `prefix`; resolves when ops admitted before the call have all left. */
  async freeze(prefix: string): Promise<Freeze> {
    const freeze: Freeze = { prefix };
    // C first: if it throws, nothing is frozen. The drain never rejects, so the caller always gets the freeze
    // to thaw.
    this.native?.freeze(prefix);
    this.frozen.push(freeze);
    await this.drain();
    return freeze;
  }

  /** Resolves once every op admitted before the call has left; holds nothing back. */
  async quiesce(): Promise<void> {
    await this.drain();
  }

  thaw(freeze: Freeze): void {
    if (this.frozen.includes(freeze)) this.native?.thaw(freeze.prefix);
    this.frozen = this.frozen.filter((f) => f !== freeze);
    const ready = this.waiting.filter((w) => !this.isFrozen(w.path, w.path2));
    this.waiting = this.waiting.filter((w) => this.isFrozen(w.path, w.path2));
    // One op whose start throws must not strand the others held behind the same freeze.
    for (const w of ready) {
      try {
        this.admit(w.path, w.path2, w.run);
      } catch (err) {
        this.onStartError(err);
      }
    }
  }

  /** Starts a new epoch (the watchdog calls this every second). */
  advance(): number {
    if ((this.inflight.get(this.epoch) ?? 0) === 0) this.epochStarted.delete(this.epoch);
    this.epoch++;
    this.epochStarted.set(this.epoch, Date.now());
    return this.epoch;
  }

  /** How long the oldest admitted op has been running, to within one epoch; 0 when idle. */
  oldestInflightAgeMs(now = Date.now()): number {
    let oldest = Infinity;
    for (const epoch of this.inflight.keys()) oldest = Math.min(oldest, epoch);
    if (oldest === Infinity) return 0;
    return now - (this.epochStarted.get(oldest) ?? now);
  }

  get inflightCount(): number {
    let total = 0;
    for (const count of this.inflight.values()) total += count;
    return total;
  }

  /** Subtrees frozen now (a switchover in progress); the metrics endpoint reports it. */
  get frozenCount(): number {
    return this.frozen.length;
  }

  get waitingCount(): number {
    return this.waiting.length;
  }

  private async drain(): Promise<void> {
    const beforeEpoch = this.advance();
    const js = new Promise<void>((resolve) => {
      this.drains.push({ beforeEpoch, resolve });
      this.settleDrains();
    });
    const native = this.native ? new Promise<void>((resolve) => this.native!.drain(resolve)) : undefined;
    await Promise.all([js, native]);
  }

  private isFrozen(path: string, path2: string | undefined): boolean {
    return this.frozen.some((f) => isWithin(path, f.prefix) || (path2 !== undefined && isWithin(path2, f.prefix)));
  }

  private settleDrains(): void {
    this.drains = this.drains.filter((drain) => {
      for (const epoch of this.inflight.keys()) if (epoch < drain.beforeEpoch) return true;
      drain.resolve();
      return false;
    });
  }
}
