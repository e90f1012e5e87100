import { basename } from 'node:path';
import { promisify } from 'node:util';
import { close, constants as C, ftruncate, type BigIntStats } from 'node:fs';
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { FerryData, FerryIo } from 'fuse-native';
import type { PathMap } from '../fs/path-map.js';
import type { IoGate, Freeze } from '../fs/gate.js';
import type { HandleTable, Handle } from '../fs/handles.js';
import { backingFlags } from '../fs/ops.js';
import type { Tracker } from '../track/tracker.js';
import type { TrackedFile, TrackingSession } from '../track/tracked-file.js';
import type { DatastoreState } from '../state/datastore-state.js';
import { errorMessage } from '../util/user-error.js';
import { Mover, CancelledError, DeadlineError } from './mover.js';
import { Shadow } from './shadow.js';
import { isSymlinkOnTheWay, symlinkRefusal, walkSteady, walkTree, type FileGroup, type Tree } from './walk.js';
import { mergeExtents } from './extents.js';
import { decide, estimateSwitchoverMs, mirrorReason, type PassFigures } from './policy.js';
import { CopyWindow } from '../track/copy-window.js';
import { IntentLog, covers, fromRegion, markedFrom, type Regions } from '../track/intent-log.js';
import { DirtyMap, type Extent } from '../track/dirty-map.js';
import { decodeMap, encodeMap, type Checkpoint } from './checkpoint.js';
import { planMigration, type Plan } from './preflight.js';
import { isWithin } from '../util/paths.js';
import { faultPoint } from './faults.js';
import { Beneath } from '../util/beneath.js';
import { fstatBig, listDir, removeTree, reopen, withObject } from '../util/beneath-tree.js';
import { parentSite, siteOf, type Site } from './site.js';
import type { Claims } from './claims.js';
import type { CommitQueue } from './commits.js';
import type { SocketInodes } from '../fs/socket-inodes.js';
import { IllegalTransition, Job, type JobState, type StartState } from './job.js';
import type { Interrupted } from './recovery.js';

/** A migration's state as events and status report it (src/migrate/job.ts). */
export type Phase = JobState;

export type Mode = 'iterative' | 'mirror' | 'auto';

export interface MigrationOptions {
  virtual: string;
  dest: string;
  mode: Mode;
  maxDowntimeMs: number;
  maxIterations: number;
  rateLimit: number;
  keepSource: boolean;
  /** Pause the (throttled) copy while the guest writes heavily to the subtree. */
  guestIoPriority: boolean;
}

/** What the engine needs from the mount: narrow handles on the write path, never the other way round. */
export interface MountServices {
  mountpoint: string;
  paths: PathMap;
  gate: IoGate;
  tracker: Tracker;
  handles: HandleTable;
  state: DatastoreState;
  io: FerryIo;
  /** The native data path, if it serves this mount (copy windows then get a C twin). */
  native?: FerryData;
  /** Inode numbers reported for moved sockets (their servers stay reachable). */
  sockets: SocketInodes;
  log: Logger;
  /** What running and interrupted migrations own; a migration releases its claim when it ends. */
  claims: Claims;
  /** The path map's one writer. */
  commits: CommitQueue;
  /** Datastores and mountpoints of the other ferry mounts on this host (a destination must be outside them). */
  otherMounts(): Promise<{ datastore: string; mountpoint: string }[]>;
}

export interface MirrorFigures {
  mirroredBytes: number;
  mirroredWrites: number;
  /** Extra guest write latency caused by mirroring. */
  mirrorLatencyP50Ms: number;
  mirrorLatencyP99Ms: number;
}

export interface PassEvent extends MirrorFigures {
  type: 'pass';
  pass: number;
  mode: 'iterative' | 'mirror';
  dirtyBytes: number;
  copiedBytes: number;
  throughputBytesPerSec: number;
  estimatedSwitchoverMs: number;
  durationMs: number;
}

export interface DoneEvent extends MirrorFigures {
  type: 'done';
  mode: 'iterative' | 'mirror';
  downtimeMs: number;
  passes: number;
  bytesCopied: number;
  durationMs: number;
  source: string;
  destination: string;
}

export interface ErrorEvent {
  type: 'error';
  code: string;
  message: string;
  sourceIntact: true;
}

/** While a pass runs, every half second: how far it has got. */
export interface ProgressEvent {
  type: 'progress';
  pass: number;
  copiedBytes: number;
  totalBytes: number;
}

/** A switchover given up with I/O frozen for longer than --max-downtime: I/O thawed, passes go on. */
export interface SwitchoverEvent {
  type: 'switchover';
  attempt: number;
  outcome: 'abandoned';
  frozenMs: number;
  steps: Record<string, number>;
}

export interface ModeEvent {
  type: 'mode';
  mode: 'mirror';
  reason: string;
}

interface ResumeState {
  intent: Map<bigint, Set<number>>;
  /** Changed while no daemon tracked them (recovery.ts): copied whole. */
  changed: Set<bigint> | 'all';
  complete: Map<bigint, DirtyMap>;
  partial: { ino: bigint; copiedUpTo: number; map: DirtyMap } | undefined;
}

export type MigrationEvent = { type: 'phase'; phase: Phase } | ModeEvent | ProgressEvent | PassEvent | SwitchoverEvent | DoneEvent | ErrorEvent;

/** Guest writes to the subtree above this rate make a --guest-io-priority copy pause. */
const GUEST_BUSY_BYTES_PER_SEC = 2 << 20;
/** Passes in mirror mode before switching over whatever the estimate (mirroring keeps the copy in sync). */
const MIRROR_MAX_PASSES = 5;
/** Region size of the write-intent log: what a crash can cost per written region, at most. */
const INTENT_REGION_BYTES = 4 << 20;
/** Files this large are logged whole when their first copy starts (a small file is copied before it matters). */
const PREVOUCH_MIN_BYTES = BigInt(2 * INTENT_REGION_BYTES);
/** How often a running pass reports its progress. */
const PROGRESS_EVERY_MS = 500;
/** How often a long pass checkpoints its progress. */
const CHECKPOINT_EVERY_MS = 2000;
/** Switchovers abandoned for overrunning --max-downtime before the migration gives up, source intact. */
const MAX_SWITCHOVER_ATTEMPTS = 3;
/** Latency samples kept for the mirror percentiles. */
const MAX_SAMPLES = 100_000;

/** Debug checks of the write path's invariants (tests set it): a violation fails the migration loudly. */
const CHECK_INVARIANTS = process.env.FERRY_CHECK_INVARIANTS === '1';

/** Minimum bytes a pass must move for its throughput to count (small passes are dominated by overhead). */
const MEASURABLE_BYTES = 8 << 20;

function errorCode(err: unknown): string {
  if (err instanceof CancelledError) return 'ECANCELED';
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' ? code : 'EIO';
}

/**
 * One live migration, driven through its job's states (src/migrate/job.ts: the transition matrix and what each
 * state makes durable): preflight → prepare → bulk → iterate ⇄ switchover → committed → cleanup → done, or
 * aborting → aborted from any state before the commit; a crash leaves it interrupted (or committed).
 */
export class Migration implements TrackingSession {
  readonly id: string;
  readonly startedAt = Date.now();
  /** Changed only by `enter` (this engine) and by the factory of an interrupted migration. */
  readonly job: Job;
  readonly passes: PassEvent[] = [];
  result: DoneEvent | ErrorEvent | undefined;
  plan: Plan | undefined;

  private readonly listeners: ((event: MigrationEvent) => void)[] = [];
  private readonly abortController = new AbortController();
  private readonly mover: Mover;
  private readonly attached = new Set<TrackedFile>();
  private shadow: Shadow | undefined;
  /** The destination directory beneath its parent (prepare, or an interrupted migration's journal). */
  private destDir: Site | undefined;
  private readonly at: Beneath;
  private throughput = 0;
  private bytesCopied = 0;
  /** The freeze of the switchover that committed, once it has. */
  private downtimeMs: number | undefined;
  private finished: Promise<void> = Promise.resolve();
  /** Each attached file's write count when it was attached: guest bytes since are the guest's load. */
  private readonly guestBase = new Map<TrackedFile, number>();
  private guestSample = { at: Date.now(), bytes: 0, busy: false };
  private mirroring: boolean;
  private mirrorPasses = 0;
  private readonly windows = new Map<bigint, CopyWindow>();
  private mirrorSamples: number[] = [];
  private mirroredBytes = 0;
  private mirroredWrites = 0;
  /** Crash safety: intents logged before writes, progress checkpointed after each pass and every few seconds. */
  private intent: IntentLog | undefined;
  private readonly completeInos = new Set<bigint>();
  private partial: { ino: bigint; copiedUpTo: number } | undefined;
  private readonly inFlightMaps = new Map<bigint, DirtyMap>();
  private readonly born = new Map<bigint, bigint>();
  private checkpointing: Promise<void> | undefined;
  private checkpointTimer: NodeJS.Timeout | undefined;
  /** Checkpoint file writes and its removal, one at a time (see barCheckpoints). */
  private sideWrites: Promise<unknown> = Promise.resolve();
  private checkpointsBarred = false;
  /** Why the migration must stop, when that came from outside its own flow (intent log, timer checkpoint). */
  private failure: unknown;
  private resumeFrom: ResumeState | undefined;
  constructor(
    readonly options: MigrationOptions,
    private readonly mount: MountServices,
    id?: string,
    start: StartState = 'preflight',
  ) {
    this.id = id ?? randomUUID().slice(0, 8);
    this.job = new Job(start, (_from, to) => this.emit({ type: 'phase', phase: to }));
    this.at = new Beneath(mount.io);
    this.mover = new Mover(this.abortController.signal, mount.io);
    this.mover.rateLimit = options.rateLimit;
    if (options.guestIoPriority) this.mover.guestBusy = () => this.guestIsBusy();
    this.mirroring = options.mode === 'mirror';
  }

  get phase(): Phase {
    return this.job.state;
  }

  /** Left by a crashed daemon: tracking follows the subtree until `ferry migrate --resume` or `ferry cancel`. */
  get interrupted(): boolean {
    return this.job.state === 'interrupted';
  }

  /** The one way the state changes: an illegal move throws IllegalTransition (a bug: the migration fails). */
  private enter(state: JobState): void {
    this.job.transition(state);
  }

  get prefix(): string {
    return this.options.virtual;
  }

  onEvent(listener: (event: MigrationEvent) => void): void {
    this.listeners.push(listener);
  }

  setRateLimit(bytesPerSec: number): void {
    this.mover.rateLimit = bytesPerSec;
  }

  get rateLimit(): number {
    return this.mover.rateLimit;
  }

  /**
   * Checks everything; throws RefusedError with nothing changed. The subtree is claimed before anything is
   * awaited, the destination as soon as it is resolved; a refused migration holds no claim.
   */
  async preflight(): Promise<void> {
    this.mount.claims.take(this, this.options.virtual);
    try {
      this.emit({ type: 'phase', phase: this.job.state });
      await faultPoint('preflight');
      const plan = await planMigration({
        virtual: this.options.virtual,
        dest: this.options.dest,
        mountpoint: this.mount.mountpoint,
        paths: this.mount.paths,
        at: this.at,
        tracking: this.mount.tracker.enabled,
        otherMounts: await this.mount.otherMounts(),
      });
      this.mount.claims.claimDestination(this, plan.destRoot);
      this.plan = plan;
    } catch (err) {
      this.mount.claims.release(this);
      this.enter('aborted');
      throw err;
    }
  }

  /** Runs to the end; resolves with the last event (done or error). */
  start(): Promise<DoneEvent | ErrorEvent> {
    const run = this.run();
    this.finished = run.then(() => undefined);
    return run;
  }

  /** Cancels a migration that has not committed yet; resolves when it has stopped. */
  async cancel(): Promise<void> {
    if (this.interrupted) {
      await this.abort(new CancelledError('migration cancelled'));
      return;
    }
    if (!this.job.committed) this.abortController.abort();
    await this.finished;
  }

  /**
   * An interrupted migration as a crashed daemon left it: its partial copy, checkpoint and intent log. From now
   * on every file under the subtree is tracked again (and its writes intent-logged), until resume or cancel.
   */
  static interrupted({ journal, checkpoint, intent, changed }: Interrupted, mount: MountServices): Migration {
    const options: MigrationOptions = {
      virtual: journal.virtual,
      dest: journal.destDir,
      mode: journal.mode as Mode,
      maxDowntimeMs: journal.maxDowntimeMs,
      maxIterations: journal.maxIterations,
      rateLimit: journal.rateLimit,
      keepSource: journal.keepSource,
      guestIoPriority: false,
    };
    const m = new Migration(options, mount, journal.id, 'interrupted');
    // Uncommitted: the path map still serves the subtree from its source.
    const site = siteOf(mount.paths, journal.source);
    m.plan = { virtual: journal.virtual, source: journal.source, site, isFile: journal.isFile, destRoot: journal.dest, destDir: journal.destDir, destDirExisted: journal.destDirExisted, tree: { dev: 0n, dirs: [], groups: [], symlinks: [], specials: [] }, neededBytes: 0 };
    m.destDir = parentSite(journal.destDir);
    m.shadow = new Shadow(m.at, m.destDir, journal.isFile ? basename(journal.dest) : undefined, journal.id, site);
    m.shadow.restore(checkpoint.placed.map(([ino, rel]) => [BigInt(ino), rel]));
    for (const [ino, ns] of checkpoint.born) m.born.set(BigInt(ino), BigInt(ns));
    m.intent = m.newIntentLog(intent);
    const bs = mount.tracker.blockSize;
    m.resumeFrom = {
      intent,
      changed,
      complete: new Map(checkpoint.complete.map(([ino, bits]) => [BigInt(ino), decodeMap(bs, bits)])),
      partial: checkpoint.partial && { ino: BigInt(checkpoint.partial.ino), copiedUpTo: checkpoint.partial.copiedUpTo, map: decodeMap(bs, checkpoint.partial.dirty) },
    };
    mount.claims.take(m, journal.virtual, journal.dest);
    mount.tracker.follow(journal.virtual, (file) => {
      file.takeFor(m, undefined, m.intent);
      m.attach(file);
    });
    return m;
  }

  /** Continues an interrupted migration without recopying what its checkpoint proves current. */
  resume(changes: Partial<MigrationOptions> = {}): Promise<DoneEvent | ErrorEvent> {
    Object.assign(this.options, changes);
    if (changes.rateLimit !== undefined) this.mover.rateLimit = changes.rateLimit;
    if (changes.guestIoPriority) this.mover.guestBusy = () => this.guestIsBusy();
    if (changes.mode !== undefined) this.mirroring = changes.mode === 'mirror';
    return this.start();
  }

  private newIntentLog(initial?: Regions): IntentLog {
    return new IntentLog(
      INTENT_REGION_BYTES,
      async (regions, trimming) => {
        if (trimming) await faultPoint('intent-trim');
        await this.mount.state.writeSide(this.id, 'intent', [...regions].map(([ino, set]) => [String(ino), [...set]]));
      },
      initial,
      (err) => this.intentFailed(err),
      CHECK_INVARIANTS ? (vouched) => this.checkVouched(vouched) : undefined,
    );
  }

  /**
   * The intent log could not be written, so a resume could miss writes: the checkpoint goes first (a crash from
   * now on undoes the copy instead of resuming it), then the migration stops. The guest's writes are held only
   * until the checkpoint is gone.
   */
  private async intentFailed(err: unknown): Promise<void> {
    this.mount.log.error({ err, migration: this.id }, 'the write-intent log could not be written: the migration stops, the VM stays on the source');
    try {
      await this.barCheckpoints();
    } catch (rmErr) {
      this.mount.log.error({ err: rmErr, migration: this.id }, 'could not remove the checkpoint after the intent log failed');
    }
    this.fail(Object.assign(new Error(`the write-intent log could not be written (${errorMessage(err)})`), { code: errorCode(err) }));
  }

  /** Stops the migration from outside its own flow; it aborts at its next step, source intact. */
  private fail(err: unknown): void {
    this.failure ??= err;
    if (this.interrupted) {
      void this.abort(err);
      return;
    }
    this.abortController.abort();
  }

  /** Debug builds: every region C may write without asking must be in the durable intent log. */
  private checkVouched(vouched: Regions): void {
    for (const file of this.attached) {
      if (file.ino === undefined) continue;
      for (const region of file.vouchedRegions()) {
        if (covers(vouched, file.ino, region)) continue;
        const err = Object.assign(new Error(`invariant broken: region ${region} of inode ${file.ino} passes natively but is not in the durable intent log`), { code: 'EINVARIANT' });
        this.mount.log.fatal({ migration: this.id }, err.message);
        this.fail(err);
        return;
      }
    }
  }

  private writeCheckpoint(checkpoint: Checkpoint): Promise<void> {
    const next = this.sideWrites.then(async () => {
      if (this.checkpointsBarred) throw new Error('the write-intent log failed: no checkpoint may be written');
      await this.mount.state.writeSide(this.id, 'checkpoint', checkpoint);
    });
    this.sideWrites = next.catch(() => undefined);
    return next;
  }

  /** No checkpoint exists, nor will: after this resolves no crash can resume from a log that missed writes. */
  private barCheckpoints(): Promise<void> {
    const next = this.sideWrites.then(async () => {
      this.checkpointsBarred = true;
      await this.mount.state.removeSide(this.id, 'checkpoint');
    });
    this.sideWrites = next.catch(() => undefined);
    return next;
  }

  /** Durable progress: placement, inodes copied in full with their dirty bits, the file being copied and how far. */
  private async checkpoint(): Promise<void> {
    if (this.checkpointing || !this.intent || !this.shadow) return this.checkpointing;
    const run = async () => {
      this.intent!.beginEpoch();
      for (const file of this.attached) file.newIntentEpoch();
      // Every write admitted before this point has marked its blocks once this resolves.
      await this.mount.gate.quiesce();
      const bs = this.mount.tracker.blockSize;
      const perIno = new Map<bigint, DirtyMap>();
      const orInto = (ino: bigint, map: DirtyMap) => {
        let into = perIno.get(ino);
        if (!into) perIno.set(ino, (into = new DirtyMap(bs)));
        into.orBytes(map.toBytes());
      };
      for (const file of this.attached) {
        const map = file.peekFor(this);
        if (map && file.ino !== undefined) orInto(file.ino, map);
      }
      for (const [ino, map] of this.inFlightMaps) orInto(ino, map);
      const empty = new DirtyMap(bs);
      // Progress is read here, then made durable at the destination before it is recorded.
      const checkpoint: Checkpoint = {
        at: new Date().toISOString(),
        placed: this.shadow!.placedEntries().map(([ino, rel]) => [String(ino), rel]),
        born: [...this.born].map(([ino, ns]) => [String(ino), String(ns)]),
        complete: [...this.completeInos].map((ino) => [String(ino), encodeMap(perIno.get(ino) ?? empty)]),
        partial: this.partial && { ino: String(this.partial.ino), copiedUpTo: this.partial.copiedUpTo, dirty: encodeMap(perIno.get(this.partial.ino) ?? empty) },
      };
      await this.shadow!.flush();
      await this.writeCheckpoint(checkpoint);
      await faultPoint('checkpoint-written');
      // The file being copied for the first time: a resume copies it again from its checkpointed offset on, so
      // the log may keep that part at no cost, and the guest's writes there need not wait for a flush.
      const unproven: Regions = new Map();
      const partial = checkpoint.partial;
      if (partial) unproven.set(BigInt(partial.ino), new Set([fromRegion(Math.ceil(partial.copiedUpTo / INTENT_REGION_BYTES))]));
      await this.intent!.trimToEpoch(unproven);
      await faultPoint('intent-trimmed');
    };
    this.checkpointing = run().finally(() => (this.checkpointing = undefined));
    return this.checkpointing;
  }

  /** The ranges the first pass after a resume must copy for one inode: what the checkpoint cannot vouch for. */
  private resumedRanges(ino: bigint, size: number, taken: DirtyMap[]): Extent[] {
    const state = this.resumeFrom!;
    const whole: Extent[] = [[0, size]];
    if (state.changed === 'all' || state.changed.has(ino)) return whole;
    const logged = state.intent.get(ino) ?? new Set<number>();
    const from = markedFrom(logged) * INTENT_REGION_BYTES;
    const intents: Extent[] = [...logged].filter((r) => r >= 0).map((r): Extent => [r * INTENT_REGION_BYTES, INTENT_REGION_BYTES]);
    if (from < size) intents.push([from, size - from]);
    const dormant = taken.map((m) => m.extents(size));
    const complete = state.complete.get(ino);
    let ranges: Extent[];
    if (complete) ranges = mergeExtents([complete.extents(size), intents, ...dormant]);
    else if (state.partial?.ino === ino) {
      const upTo = Math.min(state.partial.copiedUpTo, size);
      ranges = mergeExtents([state.partial.map.extents(upTo), intents, [[upTo, size - upTo]], ...dormant]);
    } else return whole;
    return ranges.filter(([start]) => start < size).map(([start, length]) => [start, Math.min(length, size - start)]);
  }

  get isRunning(): boolean {
    return this.result === undefined && !this.interrupted;
  }

  /** Running, or interrupted and waiting for --resume: either way it owns its subtree. */
  get isActive(): boolean {
    return this.result === undefined;
  }

  /** Every event carries `at` (ms since the epoch) so scripts can draw a timeline. */
  private emit(event: MigrationEvent): void {
    const stamped = { ...event, at: Date.now() };
    const level = event.type === 'progress' ? 'debug' : 'info';
    this.mount.log[level]({ migration: this.id, virtual: this.options.virtual, ...stamped }, `migration ${event.type}`);
    for (const listener of this.listeners) listener(stamped);
  }

  private async run(): Promise<DoneEvent | ErrorEvent> {
    const plan = this.plan!;
    try {
      if (!this.resumeFrom) await this.prepare(plan);
      this.intent ??= this.newIntentLog();
      this.checkpointTimer = setInterval(() => void this.checkpoint().catch((err) => this.fail(err)), CHECKPOINT_EVERY_MS);

      this.enter('bulk');
      await this.pass(0, true);
      this.resumeFrom = undefined;
      // A resumed migration follows every file of its subtree until its first pass has attached each one: a file
      // first opened between the resume and the copier's arrival is tracked from its first write.
      this.mount.tracker.unfollow(this.options.virtual);
      this.enter('iterate');
      let downtimeMs: number | undefined;
      for (let attempt = 1, pass = 1; downtimeMs === undefined; attempt++) {
        for (; ; pass++) {
          this.checkMirrors();
          await this.checkpoint();
          if ((await this.decideNext()) === 'switchover') break;
          await this.pass(pass, true);
          await faultPoint('iterate');
        }
        this.checkMirrors();
        clearInterval(this.checkpointTimer);
        await this.checkpointing;
        downtimeMs = await this.switchover(attempt);
        if (downtimeMs === undefined) {
          this.enter('iterate');
          this.checkpointTimer = setInterval(() => void this.checkpoint().catch((err) => this.fail(err)), CHECKPOINT_EVERY_MS);
        }
      }
      this.enter('cleanup');
      await this.cleanup();
      const done: DoneEvent = {
        type: 'done',
        mode: this.mirroring ? 'mirror' : 'iterative',
        ...this.mirrorFigures(),
        downtimeMs,
        passes: this.passes.length,
        bytesCopied: this.bytesCopied,
        durationMs: Date.now() - this.startedAt,
        source: plan.source,
        destination: plan.destRoot,
      };
      this.settle(done);
      this.enter('done');
      this.emit(done);
      return done;
    } catch (err) {
      clearInterval(this.checkpointTimer);
      if (err instanceof IllegalTransition) this.mount.log.fatal({ err, migration: this.id }, err.message);
      if (this.job.committed) {
        // Past the commit the destination is authoritative: only the source deletion can be left over (the
        // journal stays: the next mount finishes it).
        this.mount.log.error({ err, migration: this.id }, 'cleanup after commit failed');
        const done: DoneEvent = { type: 'done', mode: this.mirroring ? 'mirror' : 'iterative', ...this.mirrorFigures(), downtimeMs: this.downtimeMs ?? 0, passes: this.passes.length, bytesCopied: this.bytesCopied, durationMs: Date.now() - this.startedAt, source: plan.source, destination: plan.destRoot };
        this.settle(done);
        if (this.job.is('committed')) this.enter('cleanup');
        if (this.job.is('cleanup')) this.enter('done');
        this.emit(done);
        return done;
      }
      return this.abort(this.failure ?? err);
    }
  }

  private async prepare(plan: Plan): Promise<void> {
    this.enter('prepare');
    await this.mount.state.writeJournal({
      id: this.id,
      virtual: plan.virtual,
      source: plan.source,
      dest: plan.destRoot,
      destDir: plan.destDir,
      destDirExisted: plan.destDirExisted,
      isFile: plan.isFile,
      keepSource: this.options.keepSource,
      startedAt: new Date(this.startedAt).toISOString(),
      mode: this.options.mode,
      maxDowntimeMs: this.options.maxDowntimeMs,
      maxIterations: this.options.maxIterations,
      rateLimit: this.options.rateLimit,
    });
    this.destDir = parentSite(plan.destDir);
    try {
      await this.destDir.use('', (root, rel) => this.at.mkdir(root, rel, 0o700));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || !plan.destDirExisted) throw err;
    }
    this.shadow = new Shadow(this.at, this.destDir, plan.isFile ? basename(plan.destRoot) : undefined, this.id, plan.site);
    await faultPoint('prepare');
  }

  /** Iterate or switch over; in auto mode, start mirroring when iterating stops paying off. */
  private async decideNext(): Promise<'switchover' | 'copy'> {
    const dirtyBytes = await this.pendingDirtyBytes();
    const history: PassFigures[] = this.passes.map((p) => ({ dirtyBytes: p.dirtyBytes, copiedBytes: p.copiedBytes, durationMs: p.durationMs }));
    if (this.mirroring) {
      this.mirrorPasses++;
      const estimate = estimateSwitchoverMs(dirtyBytes, this.throughput);
      return dirtyBytes === 0 || estimate <= this.options.maxDowntimeMs || this.mirrorPasses > MIRROR_MAX_PASSES ? 'switchover' : 'copy';
    }
    const decision = decide({ dirtyBytes, throughput: this.throughput, maxDowntimeMs: this.options.maxDowntimeMs, history, maxIterations: this.options.maxIterations });
    if (decision.action === 'switchover') return 'switchover';
    const reason = decision.action === 'abort' ? decision.reason : mirrorReason(dirtyBytes, history, this.throughput);
    if (this.options.mode === 'auto' && reason) {
      this.mirroring = true;
      this.emit({ type: 'mode', mode: 'mirror', reason });
      return 'copy';
    }
    if (decision.action === 'abort') throw Object.assign(new Error(decision.reason), { code: 'ENOCONVERGE' });
    return 'copy';
  }

  /** A destination write failed while mirroring: the migration cannot finish. */
  private checkMirrors(): void {
    for (const window of this.windows.values()) if (window.failure) throw window.failure;
  }

  private guestIsBusy(): boolean {
    const now = Date.now();
    if (now - this.guestSample.at >= 100) {
      const bytes = this.guestBytes();
      const rate = ((bytes - this.guestSample.bytes) / (now - this.guestSample.at)) * 1000;
      this.guestSample = { at: now, bytes, busy: rate > GUEST_BUSY_BYTES_PER_SEC };
    }
    return this.guestSample.busy;
  }

  private guestBytes(): number {
    let total = 0;
    for (const [file, base] of this.guestBase) total += file.bytesWritten - base;
    return total;
  }

  private attach(file: TrackedFile): void {
    this.attached.add(file);
    if (!this.guestBase.has(file)) this.guestBase.set(file, file.bytesWritten);
  }

  private recordMirror(ms: number, bytes: number): void {
    this.mirroredBytes += bytes;
    this.mirroredWrites++;
    if (this.mirrorSamples.length < MAX_SAMPLES) this.mirrorSamples.push(ms);
    else this.mirrorSamples[Math.floor(Math.random() * MAX_SAMPLES)] = ms;
  }

  /** Mirrors made so far: by JS, by C through windows already closed (folded in), and through open ones. */
  private mirrorFigures(): MirrorFigures {
    const { bytes, writes, samples } = this.mirrorTotals();
    const sorted = samples.sort((a, b) => a - b);
    const at = (q: number) => (sorted.length ? Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] * 1000) / 1000 : 0);
    return { mirroredBytes: bytes, mirroredWrites: writes, mirrorLatencyP50Ms: at(0.5), mirrorLatencyP99Ms: at(0.99) };
  }

  /** JS's mirror counts plus what C mirrored through the open windows. */
  private mirrorTotals(): { bytes: number; writes: number; samples: number[] } {
    const totals = { bytes: this.mirroredBytes, writes: this.mirroredWrites, samples: [...this.mirrorSamples] };
    for (const window of this.windows.values()) {
      const native = window.nativeStats();
      if (!native) continue;
      totals.bytes += native.bytes;
      totals.writes += native.ops;
      for (const us of native.samplesUs) totals.samples.push(us / 1000);
    }
    return totals;
  }

  /** The destination file of a source inode, opened once for mirror writes. */
  private async windowFor(ino: bigint): Promise<CopyWindow> {
    let window = this.windows.get(ino);
    if (!window) {
      const fd = await this.shadow!.open(ino, C.O_RDWR);
      window = new CopyWindow(fd, (ms, bytes) => this.recordMirror(ms, bytes), this.mount.native);
      this.windows.set(ino, window);
    }
    return window;
  }

  /**
   * Dirty bytes waiting in this migration's maps that hold data in the source: what the next copy reads. A range
   * that a truncation dirtied and an extension left a hole costs a punch, not a copy; counted, it made a writer
   * that cuts and regrows its file look as fast as the copy (issue 19). Only estimates and decisions use this.
   */
  private async pendingDirtyBytes(): Promise<number> {
    let total = 0;
    for (const file of this.attached) {
      const map = file.peekFor(this);
      if (map && map.dirtyBytes(Infinity) > 0) total += await this.dataBytesIn(file, map);
    }
    return total;
  }

  /** The data bytes of the map's dirty ranges in the file's source; all of them when it cannot be looked at. */
  private async dataBytesIn(file: TrackedFile, map: DirtyMap): Promise<number> {
    const all = map.dirtyBytes(Infinity);
    try {
      const { root, rel } = this.mount.paths.place(file.path);
      return await root.use(rel, (fd, path) =>
        withObject(this.at, fd, path, async (object, st) => {
          if (!st.isFile() || (file.ino !== undefined && st.ino !== file.ino)) return all;
          const handle = await reopen(object, C.O_RDONLY);
          try {
            const data = await this.mover.dataIn(handle, map.extents(Number(st.size)));
            return data.reduce((sum, [, length]) => sum + length, 0);
          } finally {
            await closeAsync(handle);
          }
        }),
      );
    } catch {
      return all; // renamed or unlinked since: the estimate errs on the safe side
    }
  }

  /** One copy pass: sync the namespace, then copy what each file needs (all of it, or its dirty extents). */
  private async pass(pass: number, throttle: boolean): Promise<PassEvent> {
    const started = Date.now();
    const dirtyBytes = pass === 0 ? 0 : await this.pendingDirtyBytes();
    const tree = await walkSteady(this.at, this.plan!.site);
    if (this.resumeFrom) this.forgetReusedInodes(tree);
    const totalBytes = pass === 0 ? tree.groups.reduce((sum, g) => sum + Number(g.stat.size), 0) : dirtyBytes;
    const movedBefore = this.mover.bytesMoved;
    const progress = setInterval(() => this.emit({ type: 'progress', pass, copiedBytes: this.mover.bytesMoved - movedBefore, totalBytes }), PROGRESS_EVERY_MS);
    let copied: number;
    try {
      copied = await this.copyTree(tree, await this.shadow!.sync(tree), { frozen: !throttle });
    } finally {
      clearInterval(progress);
    }
    // Each pass ends durable: the freeze then flushes only the last delta, and the measured rate includes the
    // flush, as the switchover's copy will.
    await this.shadow!.flush();
    const durationMs = Math.max(1, Date.now() - started);
    if (copied >= MEASURABLE_BYTES || this.throughput === 0) this.throughput = (copied / durationMs) * 1000 || this.throughput;
    const event: PassEvent = {
      type: 'pass',
      pass,
      mode: this.mirroring ? 'mirror' : 'iterative',
      ...this.mirrorFigures(),
      dirtyBytes: pass === 0 ? copied : dirtyBytes,
      copiedBytes: copied,
      throughputBytesPerSec: Math.round(this.throughput),
      estimatedSwitchoverMs: Math.round(estimateSwitchoverMs(await this.pendingDirtyBytes(), this.throughput)),
      durationMs,
    };
    this.passes.push(event);
    this.emit(event);
    return event;
  }

  /**
   * Copies each inode of the walk to its placed copy. A name is only a way to reach the inode: the source is
   * opened and its inode checked before any dirty map is taken, so a rename-over or unlink since the walk costs
   * nothing here (the next pass walks again) and never sends one inode's bytes or bits to another's copy.
   */
  private async copyTree(tree: Tree, fresh: Set<bigint>, { frozen, deadline }: { frozen: boolean; deadline?: number }): Promise<number> {
    const plan = this.plan!;
    let copied = 0;
    for (const group of tree.groups) {
      if (deadline !== undefined && Date.now() > deadline) throw new DeadlineError('the freeze overran its deadline while copying');
      const src = await this.openSource(tree, group, frozen);
      if (src === undefined) continue;
      let dst: number | undefined;
      try {
        const window = this.mirroring && !frozen ? await this.windowFor(group.ino) : undefined;
        const opened = src.stat;
        // A first copy of a large file: log all of it before it is tracked (see the trim in checkpoint()), so the
        // guest's writes to it wait for no flush until a checkpoint proves part of it copied. Not in the freeze:
        // no guest write runs then, and the flush would only lengthen it.
        if (!frozen && src.fd !== undefined && !this.completeInos.has(group.ino) && opened.size >= PREVOUCH_MIN_BYTES) await this.intent?.vouchFrom(group.ino, 0);
        // From here to takeFor nothing is awaited: the tracker's names and the inode checked agree.
        const files = group.paths.map((rel) => this.mount.tracker.acquire(rel === '' ? plan.virtual : `${plan.virtual}/${rel}`));
        if (src.fd === undefined || files.some((f) => f.ino !== undefined && f.ino !== group.ino)) {
          // With I/O frozen the namespace cannot move: a mismatch there is a bug, never a copy to commit.
          if (frozen) throw Object.assign(new Error(`${group.paths[0]} is not inode ${group.ino} of device ${tree.dev} during the switchover`), { code: 'EINVARIANT' });
          continue;
        }
        const srcFd = src.fd;
        this.born.set(group.ino, group.stat.birthtimeNs);
        const full = fresh.has(group.ino) || files.some((f) => !f.isAttached(this));
        // Take the dirty maps before reading: a write racing this copy dirties the fresh map and is copied again.
        // With a window the write path mirrors or classifies writes against the copier from here on.
        window?.beginPlanning();
        const maps = files.map((f) => f.takeFor(this, window, this.intent));
        for (const f of files) this.attach(f);
        dst = await this.shadow!.open(group.ino, C.O_RDWR);
        const size = Number((await fstatBig(srcFd)).size);
        if (Number((await fstatBig(dst)).size) !== size) await ftruncateAsync(dst, size);
        // A file this migration did not track all along cannot be vouched for by its checkpoint: copied whole.
        const resumed = this.resumeFrom && !full ? this.resumedRanges(group.ino, size, maps) : undefined;
        const ranges = resumed ?? (full ? [[0, size] as Extent] : mergeExtents(maps.map((m) => m.extents(size))));
        // Until this copy is done, a checkpoint must still count what it copies as dirty; a first full copy
        // records how far it got instead.
        if (this.completeInos.has(group.ino)) {
          const inFlight = new DirtyMap(this.mount.tracker.blockSize);
          for (const [offset, length] of ranges) inFlight.mark(offset, length);
          this.inFlightMaps.set(group.ino, inFlight);
        } else {
          this.partial = { ino: group.ino, copiedUpTo: 0 };
        }
        let moved: number;
        try {
          moved = await this.mover.copy(srcFd, dst, ranges, {
            sparse: fresh.has(group.ino),
            throttle: !frozen,
            window,
            deadline,
            onProgress: (upTo) => {
              if (this.partial?.ino === group.ino) this.partial.copiedUpTo = upTo;
            },
          });
        } catch (err) {
          // The maps were taken: an abandoned switchover gives their ranges back for the next attempt.
          if (err instanceof DeadlineError) for (const f of files) for (const [offset, length] of ranges) f.markFor(this, offset, length);
          throw err;
        }
        this.completeInos.add(group.ino);
        if (this.partial?.ino === group.ino) this.partial = undefined;
        this.inFlightMaps.delete(group.ino);
        copied += moved;
      } finally {
        if (src.fd !== undefined) await closeAsync(src.fd);
        if (dst !== undefined) await closeAsync(dst);
      }
      await faultPoint(this.phase);
    }
    this.bytesCopied += copied;
    return copied;
  }

  /**
   * The source file of `group` by its first name, beneath the source's root and never through a symlink: looked at
   * first (O_PATH), and opened for reading (`fd`) only if it is the inode the walk recorded (st_dev and st_ino), so
   * that nothing else, and no FIFO or device, is ever read. Undefined when the name is gone since the walk (unless
   * frozen: then the namespace cannot have moved). A symlink on the way fails the migration.
   */
  private async openSource(tree: Tree, group: FileGroup, frozen: boolean): Promise<{ stat: BigIntStats; fd?: number } | undefined> {
    const { site } = this.plan!;
    try {
      return await site.use(group.paths[0], (root, rel) =>
        withObject(this.at, root, rel, async (object, stat) =>
          stat.dev === tree.dev && stat.ino === group.ino ? { stat, fd: await reopen(object, C.O_RDONLY) } : { stat },
        ),
      );
    } catch (err) {
      if (isSymlinkOnTheWay(err)) throw symlinkRefusal(site.show(group.paths[0]), err);
      const code = (err as NodeJS.ErrnoException).code;
      if ((code === 'ENOENT' || code === 'ENOTDIR') && !frozen) return undefined;
      throw err;
    }
  }

  /** After a crash, a placed inode whose birth time changed is another file now: copy it afresh. */
  private forgetReusedInodes(tree: Tree): void {
    for (const group of tree.groups) {
      const born = this.born.get(group.ino);
      if (born !== undefined && born !== 0n && born !== group.stat.birthtimeNs) {
        this.shadow!.forget(group.ino);
        this.completeInos.delete(group.ino);
        this.resumeFrom?.complete.delete(group.ino);
      }
    }
  }


  /**
   * Freeze the subtree, copy the rest, make it durable, commit, remap, move every open handle, thaw.
   * Returns the freeze time (the downtime the guest sees), or undefined when the freeze overran --max-downtime
   * before the commit: I/O thaws and the passes go on (after MAX_SWITCHOVER_ATTEMPTS such, the migration aborts).
   */
  private async switchover(attempt: number): Promise<number | undefined> {
    const plan = this.plan!;
    this.enter('switchover');
    const frozenAt = Date.now();
    const deadline = frozenAt + this.options.maxDowntimeMs;
    const freeze: Freeze = await this.mount.gate.freeze(plan.virtual);
    const steps: Record<string, number> = { drainMs: Date.now() - frozenAt };
    // Every step before the commit may give up; from the commit on, the switchover finishes whatever it takes.
    const step = async <T>(name: string, work: () => Promise<T>): Promise<T> => {
      const t0 = Date.now();
      const result = await work();
      steps[name] = Date.now() - t0;
      if (!this.job.committed && Date.now() > deadline) throw new DeadlineError(`the freeze overran ${this.options.maxDowntimeMs} ms in step ${name}`);
      return result;
    };
    const reopened: { fh: number; handle: Handle; fd: number }[] = [];
    try {
      // Once: with the mount frozen nothing may move the subtree, and a walk that saw it move fails the migration.
      const tree = await step('walkMs', () => walkTree(this.at, plan.site));
      const copied = await step('copyMs', async () => this.copyTree(tree, await this.shadow!.sync(tree), { frozen: true, deadline }));
      steps.copiedBytes = copied;
      await step('metadataMs', () => this.shadow!.applyMetadata(tree));
      await step('flushMs', () => this.shadow!.flush());
      await step('reopenMs', async () => {
        // By inode, not by name: the name a handle was opened through may since have gone, or now name another
        // file. The frozen walk placed every inode of the subtree; a handle on any of them moves to its copy.
        // Only the subtree's handles: they are frozen, while one elsewhere may be released (its fd closed and the
        // number reused) during an await here. The tracker keeps each handle's path current through renames and
        // libfuse's hiding, and the preflight and rename refuse hard links across the subtree's edge.
        for (const [fh, handle] of this.mount.handles.entries()) {
          if (!isWithin(handle.file.path, plan.virtual)) continue;
          const st = await fstatBig(handle.fd);
          const rel = st.dev === tree.dev ? this.shadow!.placedPath(st.ino) : undefined;
          if (rel === undefined) throw Object.assign(new Error(`${handle.file.path} is open but its inode ${st.ino} has no copy`), { code: 'EINVARIANT' });
          const fd = await this.shadow!.openFile(rel, backingFlags(handle.flags));
          reopened.push({ fh, handle, fd });
        }
      });
      const sockets = await Promise.all(
        tree.specials.filter((s) => s.stat.isSocket()).map(async (s) => [s.stat, await this.shadow!.lstat(s.rel)] as const),
      );
      await faultPoint('before-commit');
      if (this.abortController.signal.aborted) throw new CancelledError('migration cancelled');
      await step('commitMs', () => this.commit());
      for (const [from, to] of sockets) this.mount.sockets.moved(from, to);
      // Infallible from here: every destination fd is already open.
      for (const { fh, handle, fd } of reopened) {
        closeQuietly(handle.fd);
        this.mount.handles.setFd(fh, fd);
      }
      // The files are other inodes now: a later migration must key them by their new numbers.
      for (const file of this.attached) file.ino = undefined;
      for (const { handle, fd } of reopened) handle.file.ino = await fstatBig(fd).then((st) => st.ino, () => undefined);
      await faultPoint('after-commit');
      this.passes.push({ type: 'pass', pass: this.passes.length, mode: this.mirroring ? 'mirror' : 'iterative', ...this.mirrorFigures(), dirtyBytes: copied, copiedBytes: copied, throughputBytesPerSec: Math.round(this.throughput), estimatedSwitchoverMs: 0, durationMs: Date.now() - frozenAt });
    } catch (err) {
      if (!this.job.committed) for (const { fd } of reopened) closeQuietly(fd);
      if (!(err instanceof DeadlineError) || this.job.committed) throw err;
      // Nothing is lost before the commit: the copy so far is a pass like any other.
      this.emit({ type: 'switchover', attempt, outcome: 'abandoned', frozenMs: Date.now() - frozenAt, steps });
      if (attempt >= MAX_SWITCHOVER_ATTEMPTS) {
        throw Object.assign(new Error(`the switchover overran --max-downtime (${this.options.maxDowntimeMs} ms) ${attempt} times: the copy cannot finish within the allowed freeze (allow more with --max-downtime)`), { code: 'ETIMEDOUT' });
      }
      return undefined;
    } finally {
      this.mount.gate.thaw(freeze);
      if (this.job.committed) this.downtimeMs = Date.now() - frozenAt;
      this.mount.log.info({ migration: this.id, attempt, frozenMs: Date.now() - frozenAt, ...steps }, 'switchover freeze');
    }
    return this.downtimeMs;
  }

  /** The commit point: the path map, written atomically, names the destination. */
  private async commit(): Promise<void> {
    await this.mount.commits.commit(this.plan!.virtual, this.plan!.destRoot);
    this.enter('committed');
  }

  private async cleanup(): Promise<void> {
    const plan = this.plan!;
    await this.detachAll();
    await faultPoint('cleanup');
    if (!this.options.keepSource) await removeTree(this.at, plan.site.root, plan.site.path(''));
    await this.mount.state.removeJournal(this.id);
  }

  /**
   * Undoes a migration that has not committed. The checkpoint goes first, while tracking and intent logging are
   * still on: from then on a crash undoes the copy instead of resuming it, so no write the stopped tracking misses
   * can end up in a resumed copy. If the checkpoint cannot be removed, tracking stays on (a later resume stays
   * correct) and the failure says so. The journal is removed only once the partial copy is: a journal without a
   * checkpoint makes the next mount finish the undo.
   */
  private async abort(err: unknown): Promise<ErrorEvent> {
    const plan = this.plan!;
    this.enter('aborting');
    const code = errorCode(err);
    let message = errorMessage(err);
    // The stack is for whoever debugs a failed migration; the event carries the message only.
    if (!(err instanceof CancelledError)) this.mount.log.warn({ err, migration: this.id }, 'migration aborting');
    if (code === 'ENOSPC') message = `the destination ran out of space (${message})`;
    try {
      await this.barCheckpoints();
    } catch (rmErr) {
      this.mount.log.error({ err: rmErr, migration: this.id }, 'could not remove the checkpoint: tracking stays on');
      const event: ErrorEvent = { type: 'error', code, message: `${message}; its checkpoint could not be removed (${errorMessage(rmErr)}), so tracking and intent logging stay on and a resume after the next mount stays correct; the VM keeps running on the source`, sourceIntact: true };
      this.result = event;
      this.emit(event);
      return event;
    }
    await this.detachAll();
    try {
      await removePartialCopy(this.at, plan.destDir, plan.destRoot, plan.isFile, plan.destDirExisted, this.id);
      await this.mount.state.removeJournal(this.id);
    } catch (cleanupErr) {
      this.mount.log.error({ err: cleanupErr, migration: this.id }, 'could not remove the partial copy');
      message += `; the partial copy at ${plan.destRoot} could not be removed (${errorMessage(cleanupErr)}): the next mount removes it`;
    }
    const event: ErrorEvent = { type: 'error', code, message: `${message}; the VM keeps running on the source`, sourceIntact: true };
    this.settle(event);
    this.enter('aborted');
    this.emit(event);
    return event;
  }

  /** The end state: the migration no longer owns its subtree or destination. */
  private settle(result: DoneEvent | ErrorEvent): void {
    this.result = result;
    this.mount.tracker.unfollow(this.options.virtual);
    this.mount.claims.release(this);
    this.plan?.site.root.retire();
    this.destDir?.root.retire();
  }

  private async detachAll(): Promise<void> {
    for (const file of this.attached) file.detach(this);
    this.attached.clear();
    this.guestBase.clear();
    // No write may still be mirroring through a window (in JS or in C) when its fd closes.
    await this.mount.gate.quiesce();
    // The windows' C counts are folded into the migration's before the windows go.
    const totals = this.mirrorTotals();
    this.mirroredBytes = totals.bytes;
    this.mirroredWrites = totals.writes;
    this.mirrorSamples = totals.samples;
    for (const window of this.windows.values()) closeQuietly(window.fd);
    this.windows.clear();
  }
}

// Raw fds throughout (fs/promises' FileHandle would close one when garbage-collected; handles and windows keep theirs).
const closeAsync = promisify(close);
const ftruncateAsync = promisify(ftruncate);

function closeQuietly(fd: number): void {
  close(fd, () => undefined);
}

/** Undo of everything a migration wrote at its destination, beneath the destination's parent, never followed. */
export async function removePartialCopy(at: Beneath, destDir: string, destRoot: string, isFile: boolean, destDirExisted: boolean, id: string): Promise<void> {
  const dir = parentSite(destDir);
  try {
    if (isFile) {
      await removeTree(at, dir.root, dir.path(basename(destRoot)));
      await removeTree(at, dir.root, dir.path(`.ferry-staging-${id}`));
      if (!destDirExisted) {
        await dir.use('', (root, rel) => at.rmdir(root, rel)).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'ENOENT') throw err;
        });
      }
      return;
    }
    if (!destDirExisted) {
      await removeTree(at, dir.root, dir.path(''));
      return;
    }
    const entries = await dir.use('', (root, rel) => withObject(at, root, rel, (fd) => listDir(fd))).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [];
      throw err;
    });
    for (const entry of entries) await removeTree(at, dir.root, dir.path(entry.name));
  } finally {
    dir.root.retire();
  }
}
