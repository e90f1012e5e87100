/**
 * `ferry evacuate`: every VM home under a directory of the mount moves to `<dest>/<name>`, at most `parallel` at
 * once, each as an ordinary migration (src/migrate/engine.ts: the same preflight, claims, commit writer, events
 * and recovery), all paced by one token bucket (one --rate-limit budget shared by the running moves).
 *
 * States of an evacuation (`state`), changed on the JS thread only:
 *   running → done                        the runner, when no home is pending, running or interrupted
 *   running | interrupted → cancelling → cancelled   `cancel` (ferry cancel <dir>), then the runner once the moves stopped
 *   interrupted → running                 `resume` (ferry evacuate <dir> --resume)
 *   interrupted                           only ever a start state: `recover`, at the mount after a crash
 * States of a home (`HomeRun.state`):
 *   pending → running                     the runner's `next`, synchronously: no await between the pick and the mark,
 *                                         so two workers never take one home
 *   interrupted → running                 the same, for a home whose migration a crash left interrupted
 *   running → moved | failed | cancelled  the runner, from its migration's result (a refused preflight: failed)
 *   pending | interrupted → cancelled     `cancel` (an interrupted one once its migration's undo is done)
 * A migration's failure (ENOSPC, non-convergence, its own cancel) ends that home only: the engine's abort leaves
 * the VM on the source, and the other workers go on.
 *
 * Durable (src/evacuate/record.ts, in the state dir, atomic writes in the order they were asked for): the record
 * with every home pending before the first move starts; a home running, with its migration's id, before that
 * migration's preflight (so before its journal); a home's end after its migration ended; the record removed once
 * the evacuation ended. What a crash at each await leaves, read by `recover` at the next mount:
 *   - before the first write: nothing (no move started).
 *   - a home pending: its migration never journaled: it starts on --resume.
 *   - a home running with migration X: X's journal decides, as recovery left it: interrupted (resumed by --resume),
 *     committed (recovery finished it: the path map names the destination, so moved), or gone and the map naming
 *     the source (undone, or never journaled: pending again).
 *   - a home moved / failed / cancelled: stays so (the record was written after the migration's own end).
 *   - all ended, the record not yet removed: --resume finds nothing left to move and ends it.
 * A write that fails stops new moves (running ones finish: their own journals keep them safe) and fails the
 * evacuation with the error.
 */
import { randomUUID } from 'node:crypto';
import { Migration, type DoneEvent, type ErrorEvent, type MigrationEvent, type MountServices } from '../migrate/engine.js';
import { RefusedError } from '../migrate/preflight.js';
import { TokenBucket } from '../migrate/token-bucket.js';
import { errorMessage } from '../util/user-error.js';
import type { EvacuationPlan } from './plan.js';
import { removeRecord, writeRecord, type EvacuationRecord, type HomeRecord, type HomeState, type MoveOptions } from './record.js';

export type { MoveOptions } from './record.js';
export type EvacuationState = 'running' | 'interrupted' | 'cancelling' | 'done' | 'cancelled';

export interface HomeRun extends HomeRecord {
  migrationObject?: Migration;
  bytesCopied?: number;
}

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
  /** The evacuation's record could not be written or removed. */
  error?: string;
}

export class Evacuation {
  readonly startedAt: number;
  endedAt: number | undefined;
  readonly homes: HomeRun[];
  /** One budget for every move: each migration's mover takes from it (src/migrate/mover.ts `share`). */
  private readonly bucket = new TokenBucket(1, 1);
  private readonly listeners: ((event: EvacuationEvent) => void)[] = [];
  private finished: Promise<EvacuationTotals> | undefined;
  /** The record's writes, in the order asked for. */
  private writing: Promise<void> = Promise.resolve();
  /** Why the record could not be kept: no move starts after it. */
  private recordError: unknown;

  private constructor(
    readonly id: string,
    readonly plan: EvacuationPlan,
    private parallel: number,
    private readonly options: MoveOptions,
    private readonly services: MountServices,
    /** Each new move joins the daemon's migrations (ferry status, ferry cancel <home>, shutdown). */
    private readonly register: (migration: Migration) => void,
    homes: HomeRun[],
    public state: EvacuationState,
    startedAt: number,
  ) {
    this.homes = homes;
    this.startedAt = startedAt;
  }

  static create(plan: EvacuationPlan, parallel: number, options: MoveOptions, services: MountServices, register: (m: Migration) => void): Evacuation {
    const homes = plan.homes.map((home): HomeRun => ({ ...home, state: 'pending' }));
    return new Evacuation(randomUUID().slice(0, 8), plan, parallel, options, services, register, homes, 'running', Date.now());
  }

  /** An evacuation a crashed daemon left, its homes read against what recovery made of their migrations. */
  static recover(record: EvacuationRecord, services: MountServices, migrations: Migration[], register: (m: Migration) => void): Evacuation {
    const homes = record.homes.map((home): HomeRun => {
      if (home.state !== 'running' && home.state !== 'interrupted') return { ...home };
      const migration = migrations.find((m) => m.id === home.migration && m.interrupted);
      if (migration) return { ...home, state: 'interrupted', migrationObject: migration };
      if (services.paths.resolve(home.virtual) === home.dest) return { ...home, state: 'moved' };
      return { ...home, state: 'pending', migration: undefined };
    });
    const { id, virtual, dest, refused, excluded, left, neededBytes, freeBytes, parallel, options } = record;
    const plan: EvacuationPlan = { virtual, dest, homes: record.homes, refused, excluded, left, neededBytes, freeBytes };
    return new Evacuation(id, plan, parallel, options, services, register, homes, 'interrupted', Date.parse(record.startedAt));
  }

  get virtual(): string {
    return this.plan.virtual;
  }

  /** It owns its directory: no other evacuation of it (or of a directory overlapping it) may start. */
  get isActive(): boolean {
    return this.state === 'running' || this.state === 'cancelling' || this.state === 'interrupted';
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
    for (const home of this.homes) if (home.state === 'running') home.migrationObject?.setRateLimit(bytesPerSec);
  }

  /** Resolves once the record (every home pending) is durable and the first moves have started. */
  async start(): Promise<Promise<EvacuationTotals>> {
    await this.persist();
    this.emit({ type: 'planned', id: this.id, ...this.plan, parallel: this.parallel });
    this.finished = this.run();
    return this.finished;
  }

  /** Continues an interrupted evacuation: committed homes stay, interrupted migrations resume, pending ones start. */
  resume(changes: { parallel?: number; rateLimit?: number }): Promise<EvacuationTotals> {
    if (changes.parallel !== undefined) this.parallel = changes.parallel;
    if (changes.rateLimit !== undefined) this.options.rateLimit = changes.rateLimit;
    this.state = 'running';
    this.emit({ type: 'resumed', id: this.id, homes: this.homes.map(({ name, state, bytes }) => ({ name, state, bytes })), parallel: this.parallel });
    this.finished = this.run();
    return this.finished;
  }

  /** Running moves abort and interrupted ones are undone (sources intact), pending ones never start; moved ones stay. */
  async cancel(): Promise<EvacuationTotals> {
    if (this.state === 'running' || this.state === 'interrupted') {
      const wasRunning = this.state === 'running';
      this.state = 'cancelling';
      for (const home of this.homes) if (home.state === 'pending') this.end(home, 'cancelled', 'the evacuation was cancelled before it started');
      const stopping = this.homes.filter((h) => h.state === 'running' || h.state === 'interrupted');
      await Promise.all(stopping.map((h) => h.migrationObject?.cancel()));
      if (!wasRunning) {
        for (const home of stopping) this.settleFrom(home, home.migrationObject?.result);
        this.finished = this.conclude();
      }
    }
    return this.finished!;
  }

  private async run(): Promise<EvacuationTotals> {
    await Promise.all(Array.from({ length: Math.min(this.parallel, this.homes.length) }, () => this.worker()));
    return this.conclude();
  }

  private async conclude(): Promise<EvacuationTotals> {
    await this.writing;
    this.state = this.state === 'cancelling' ? 'cancelled' : 'done';
    this.endedAt = Date.now();
    if (this.recordError === undefined) {
      await removeRecord(this.services.state, this.id).catch((err) => this.recordFailed(err));
    }
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
      ...(this.recordError !== undefined && { error: `the evacuation's record could not be kept: ${errorMessage(this.recordError)}` }),
    };
    this.emit(totals);
    return totals;
  }

  private async worker(): Promise<void> {
    for (let home = this.next(); home; home = this.next()) await this.move(home);
  }

  /** The next interrupted, else pending home, marked running before anything is awaited. */
  private next(): HomeRun | undefined {
    if (this.state !== 'running' || this.recordError !== undefined) return undefined;
    const home = this.homes.find((h) => h.state === 'interrupted') ?? this.homes.find((h) => h.state === 'pending');
    if (!home) return undefined;
    home.state = 'running';
    return home;
  }

  private async move(home: HomeRun): Promise<void> {
    const resumed = home.migrationObject?.interrupted ? home.migrationObject : undefined;
    const migration = resumed ?? new Migration({ ...this.options, virtual: home.virtual, dest: `${this.plan.dest}/` }, this.services);
    migration.shareRateBudget(this.bucket);
    home.migrationObject = migration;
    home.migration = migration.id;
    migration.onEvent((event: MigrationEvent) => this.emit({ ...event, home: home.name }));
    try {
      // Before the migration journals anything: a crash from here on finds it by its id.
      await this.persist();
    } catch {
      this.end(home, 'failed', 'not started: the evacuation could not record it');
      return;
    }
    this.emit({ type: 'started', home: home.name, migration: migration.id, ...(resumed && { resumed: true }) });
    let running: Promise<DoneEvent | ErrorEvent>;
    if (resumed) running = resumed.resume({ rateLimit: this.options.rateLimit });
    else {
      try {
        // The home may have changed since the plan: its own preflight decides, and takes its claims.
        await migration.preflight();
      } catch (err) {
        this.end(home, 'failed', err instanceof RefusedError ? err.message : `its preflight failed: ${errorMessage(err)}`);
        await this.persist().catch(() => undefined);
        return;
      }
      this.register(migration);
      running = migration.start();
    }
    // A cancel that came during the preflight found no migration to stop.
    if (this.state === 'cancelling') void migration.cancel();
    this.settleFrom(home, await running);
    await this.persist().catch(() => undefined);
  }

  private settleFrom(home: HomeRun, result: DoneEvent | ErrorEvent | undefined): void {
    const migration = home.migrationObject;
    home.bytesCopied = result?.type === 'done' ? result.bytesCopied : (migration?.figures.snapshot().copiedBytes ?? 0);
    if (result?.type === 'done') this.end(home, 'moved');
    else if (result === undefined) this.end(home, 'failed', migration?.stuck?.message ?? 'its migration did not end');
    else this.end(home, result.code === 'ECANCELED' ? 'cancelled' : 'failed', result.message);
  }

  private end(home: HomeRun, state: HomeState, reason?: string): void {
    home.state = state;
    home.reason = reason;
    this.emit({ type: 'finished', home: home.name, state, ...(reason && { reason }), bytesCopied: home.bytesCopied ?? 0 });
  }

  /** The record as it stands now, durable in call order; a failure is kept (no new move starts) and rethrown. */
  private persist(): Promise<void> {
    const record = this.record();
    const write = this.writing.then(() => writeRecord(this.services.state, record));
    this.writing = write.catch((err) => this.recordFailed(err));
    return write;
  }

  private recordFailed(err: unknown): void {
    this.recordError ??= err;
    this.services.log.error({ err, evacuation: this.id }, 'could not write the evacuation record: no new move starts');
  }

  private record(): EvacuationRecord {
    const { virtual, dest, refused, excluded, left, neededBytes, freeBytes } = this.plan;
    const homes = this.homes.map(({ name, virtual, dest, bytes, neededBytes, state, migration, reason }) => ({ name, virtual, dest, bytes, neededBytes, state, migration, reason }));
    return { id: this.id, virtual, dest, parallel: this.parallel, options: this.options, startedAt: new Date(this.startedAt).toISOString(), refused, excluded, left, neededBytes, freeBytes, homes };
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
        migration: h.migration,
        phase: h.migrationObject?.phase,
        progress: h.state === 'running' ? h.migrationObject?.figures.snapshot() : undefined,
        reason: h.reason,
      })),
      refused: this.plan.refused,
      left: this.plan.left.map((h) => h.name),
    };
  }
}
