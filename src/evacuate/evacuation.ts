/**
 * `ferry evacuate`: every VM home under a directory of the mount moves to `<dest>/<name>`, at most `parallel` at
 * once, each as an ordinary migration (src/migrate/engine.ts: the same preflight, claims, commit writer, events
 * and recovery), all paced by one token bucket (one --rate-limit budget shared by the running moves).
 *
 * States of an evacuation, changed on the JS thread only:
 *   running → done                 the runner, when no home is pending or running
 *   running → cancelling → cancelled   `cancel` (ferry cancel <dir>), then the runner when the running moves stopped
 * States of a home (`HomeRun.state`): pending → running → moved | failed | cancelled, or pending → cancelled.
 *   pending → running: the runner's `next`, synchronously (no await between the pick and the mark: two workers
 *     never take one home). running → moved | failed | cancelled: the runner, from the migration's result (a
 *     refused preflight is failed). pending → cancelled: `cancel`.
 * A migration's failure (ENOSPC, non-convergence, its own cancel) ends that home only: the engine's abort leaves
 * the VM on the source, and the other workers go on.
 *
 * Durable: nothing of the evacuation itself; each home's migration journals, checkpoints and commits as
 * `ferry migrate` does. A crash leaves the moves that committed moved, the running ones interrupted (the remount
 * lists them; `ferry migrate <home> --resume` or `ferry cancel <home>`), the pending ones untouched on the source;
 * running `ferry evacuate` again plans what is still there.
 */
import { randomUUID } from 'node:crypto';
import { Migration, type MigrationEvent, type MigrationOptions, type MountServices } from '../migrate/engine.js';
import { RefusedError } from '../migrate/preflight.js';
import { TokenBucket } from '../migrate/token-bucket.js';
import { errorMessage } from '../util/user-error.js';
import type { EvacuationPlan, HomePlan } from './plan.js';

export type EvacuationState = 'running' | 'cancelling' | 'done' | 'cancelled';
export type HomeState = 'pending' | 'running' | 'moved' | 'failed' | 'cancelled';

export interface HomeRun extends HomePlan {
  state: HomeState;
  migration?: Migration;
  /** Why it failed, or was cancelled. */
  reason?: string;
  bytesCopied?: number;
  startedAt?: number;
  endedAt?: number;
}

/** The per-migration options every move gets (the destination and path are each home's). */
export type MoveOptions = Omit<MigrationOptions, 'virtual' | 'dest'>;

export interface EvacuationEvent {
  type: string;
  [key: string]: unknown;
}

export interface EvacuationTotals extends EvacuationEvent {
  type: 'done';
  id: string;
  state: EvacuationState;
  moved: number;
  failed: number;
  cancelled: number;
  refused: number;
  left: number;
  bytesCopied: number;
  durationMs: number;
}

export class Evacuation {
  readonly id = randomUUID().slice(0, 8);
  readonly startedAt = Date.now();
  endedAt: number | undefined;
  state: EvacuationState = 'running';
  readonly homes: HomeRun[];
  /** One budget for every move: each migration's mover takes from it (src/migrate/mover.ts `share`). */
  private readonly bucket = new TokenBucket(1, 1);
  private readonly listeners: ((event: EvacuationEvent) => void)[] = [];
  private finished: Promise<EvacuationTotals> | undefined;

  constructor(
    readonly plan: EvacuationPlan,
    readonly parallel: number,
    private readonly options: MoveOptions,
    private readonly services: MountServices,
    /** Each move joins the daemon's migrations (ferry status, ferry cancel <home>, shutdown). */
    private readonly register: (migration: Migration) => void,
  ) {
    this.homes = plan.homes.map((home) => ({ ...home, state: 'pending' }));
  }

  get virtual(): string {
    return this.plan.virtual;
  }

  get isActive(): boolean {
    return this.state === 'running' || this.state === 'cancelling';
  }

  get rateLimit(): number {
    return this.options.rateLimit;
  }

  onEvent(listener: (event: EvacuationEvent) => void): void {
    this.listeners.push(listener);
  }

  /** A new budget for all moves, running ones at once (their movers reset the shared bucket on their next chunk). */
  setRateLimit(bytesPerSec: number): void {
    this.options.rateLimit = bytesPerSec;
    for (const home of this.homes) if (home.state === 'running') home.migration?.setRateLimit(bytesPerSec);
  }

  start(): Promise<EvacuationTotals> {
    this.emit({ type: 'planned', id: this.id, ...this.plan, parallel: this.parallel });
    this.finished ??= this.run();
    return this.finished;
  }

  /** Running moves abort (sources intact), pending ones never start; committed ones stay moved. */
  async cancel(): Promise<EvacuationTotals> {
    if (this.state === 'running') {
      this.state = 'cancelling';
      for (const home of this.homes) if (home.state === 'pending') this.end(home, 'cancelled', 'the evacuation was cancelled before it started');
      await Promise.all(this.homes.filter((h) => h.state === 'running').map((h) => h.migration?.cancel()));
    }
    return this.finished!;
  }

  private async run(): Promise<EvacuationTotals> {
    const workers = Array.from({ length: Math.min(this.parallel, this.homes.length) }, () => this.worker());
    await Promise.all(workers);
    this.state = this.state === 'cancelling' ? 'cancelled' : 'done';
    this.endedAt = Date.now();
    const count = (state: HomeState) => this.homes.filter((h) => h.state === state).length;
    const totals: EvacuationTotals = {
      type: 'done',
      id: this.id,
      state: this.state,
      moved: count('moved'),
      failed: count('failed'),
      cancelled: count('cancelled'),
      refused: this.plan.refused.length,
      left: this.plan.left.length,
      bytesCopied: this.homes.reduce((sum, h) => sum + (h.bytesCopied ?? 0), 0),
      durationMs: this.endedAt - this.startedAt,
    };
    this.emit(totals);
    return totals;
  }

  private async worker(): Promise<void> {
    for (let home = this.next(); home; home = this.next()) await this.move(home);
  }

  /** The next pending home, marked running before anything is awaited. */
  private next(): HomeRun | undefined {
    if (this.state !== 'running') return undefined;
    const home = this.homes.find((h) => h.state === 'pending');
    if (!home) return undefined;
    home.state = 'running';
    home.startedAt = Date.now();
    return home;
  }

  private async move(home: HomeRun): Promise<void> {
    const migration = new Migration({ ...this.options, virtual: home.virtual, dest: `${this.plan.dest}/` }, this.services);
    migration.shareRateBudget(this.bucket);
    home.migration = migration;
    migration.onEvent((event: MigrationEvent) => this.emit({ ...event, home: home.name }));
    this.emit({ type: 'started', home: home.name, migration: migration.id });
    try {
      // The home may have changed since the plan: its own preflight decides, and takes its claims.
      await migration.preflight();
    } catch (err) {
      const reason = err instanceof RefusedError ? err.message : `its preflight failed: ${errorMessage(err)}`;
      this.end(home, 'failed', reason);
      return;
    }
    this.register(migration);
    const running = migration.start();
    // A cancel that came during the preflight found no migration to stop.
    if (this.state === 'cancelling') void migration.cancel();
    const result = await running;
    home.bytesCopied = result.type === 'done' ? result.bytesCopied : migration.figures.snapshot().copiedBytes;
    if (result.type === 'done') this.end(home, 'moved');
    else this.end(home, result.code === 'ECANCELED' ? 'cancelled' : 'failed', result.message);
  }

  private end(home: HomeRun, state: HomeState, reason?: string): void {
    home.state = state;
    home.reason = reason;
    home.endedAt = Date.now();
    this.emit({ type: 'finished', home: home.name, state, ...(reason && { reason }), bytesCopied: home.bytesCopied ?? 0 });
  }

  private emit(event: EvacuationEvent): void {
    const stamped = { ...event, evacuation: this.id, at: Date.now() };
    if (event.type !== 'progress') this.services.log.info({ evacuation: this.id, virtual: this.plan.virtual, event: event.type, home: event.home }, `evacuation ${event.type}`);
    for (const listener of this.listeners) listener(stamped);
  }

  /** For status: the evacuation and its per-home table. */
  summary() {
    return {
      id: this.id,
      path: this.plan.virtual,
      destination: this.plan.dest,
      state: this.state,
      parallel: this.parallel,
      rateLimit: this.rateLimit,
      startedAt: new Date(this.startedAt).toISOString(),
      endedAt: this.endedAt === undefined ? undefined : new Date(this.endedAt).toISOString(),
      homes: this.homes.map((h) => ({
        name: h.name,
        path: h.virtual,
        destination: h.dest,
        bytes: h.bytes,
        state: h.state,
        migration: h.migration?.id,
        phase: h.migration?.phase,
        progress: h.state === 'running' ? h.migration?.figures.snapshot() : undefined,
        reason: h.reason,
      })),
      refused: this.plan.refused,
      left: this.plan.left.map((h) => h.name),
    };
  }
}
