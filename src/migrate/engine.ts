import fs, { constants as C } from 'node:fs';
import { basename } from 'node:path';
import { randomUUID } from 'node:crypto';
import type { TrackedFile, TrackingSession } from '../track/tracked-file.js';
import { errorMessage } from '../util/user-error.js';
import { faultPoint } from '../util/faults.js';
import { Beneath } from '../util/beneath.js';
import { removeTree } from '../util/beneath-tree.js';
import { Mover, CancelledError } from './mover.js';
import type { TokenBucket } from './token-bucket.js';
import { Figures } from './figures.js';
import { Shadow } from './shadow.js';
import { Steering, type PassFigures } from './policy.js';
import { planMigration, type Plan } from './preflight.js';
import { parentSite, siteOf, type Site } from './site.js';
import { IllegalTransition, Job, type JobState, type StartState } from './job.js';
import { journalOptions, journalPlan, type Interrupted } from './recovery.js';
import { errorCode, type MigrationOptions, type MountServices } from './context.js';
import type { DoneEvent, ErrorEvent, MigrationEvent, PassEvent, Phase } from './events.js';
import { Progress } from './progress.js';
import { Checkpointer, INTENT_REGION_BYTES } from './checkpointer.js';
import { Attachments } from './attachments.js';
import { Mirrors } from './mirrors.js';
import { Copier } from './pass.js';
import { switchover } from './switchover.js';
import { removePartialCopy, undo } from './undo.js';
import type { MigrationJournal, RootMark } from '../state/datastore-state.js';
import { RecordError } from '../state/datastore-record.js';

export type { MigrationOptions, Mode, MountServices } from './context.js';
export type { DoneEvent, ErrorEvent, MigrationEvent, MirrorFigures, ModeEvent, PassEvent, Phase, ProgressEvent, SwitchoverEvent } from './events.js';

/**
 * One live migration: the driver of its job (src/migrate/job.ts: the states, the legal moves, what each makes
 * durable): preflight → prepare → bulk → iterate ⇄ switchover → committed → cleanup → done, or aborting → aborted
 * from any state before the commit; a crash leaves it interrupted (or committed).
 *
 * Who owns which state, and when it may change: each module's header, and the table in
 * native-notes/migration-flow.md, which also reads every await of this flow as an attacker would (a crash, a guest
 * write, a rename, a destination failure there). Here: the job's state (changed only by `enter`), the options, the
 * plan, the result and the abort signal.
 */
export class Migration implements TrackingSession {
  readonly id: string;
  readonly startedAt = Date.now();
  /** When it ended (done or aborted). */
  endedAt: number | undefined;
  /** Live progress: bytes copied of the total, the rate, the time left. */
  readonly figures: Figures;
  /** Changed only by `enter` (this driver) and by the factory of an interrupted migration. */
  readonly job: Job;
  result: DoneEvent | ErrorEvent | undefined;
  /** Why the last undo stopped short (its checkpoint could not be removed): the job stays aborting, still tracking. */
  stuck: ErrorEvent | undefined;
  plan: Plan | undefined;

  private readonly listeners: ((event: MigrationEvent) => void)[] = [];
  private readonly abortController = new AbortController();
  private readonly mover: Mover;
  private readonly at: Beneath;
  private readonly progress: Progress;
  private readonly attached = new Attachments(this);
  private readonly mirrors: Mirrors;
  private shadow: Shadow | undefined;
  private checkpointer: Checkpointer | undefined;
  private copier: Copier | undefined;
  /** The destination directory beneath its parent (prepare, or an interrupted migration's journal). */
  private destDir: Site | undefined;
  /** The destination's root is this migration's (prepare made it, or a crashed daemon did): the undo removes it. */
  /** The destination's root exists because this migration made it; `rootMark` is its identity once known ('pending'
   * until then, undefined for a journal of an older ferry): the undo removes only a root that still has it. */
  private rootMade = false;
  /** Holds room for the datastore's record (commits.ts holdRecord): set by run, cleared by releaseRecord. */
  private holdsRecord = false;
  private rootMark: RootMark | undefined = 'pending';
  /** The source's root when the cleanup found it a mount point: emptied, left in place. */
  private keptMountPoint: string | undefined;
  /** The freeze of the switchover that committed, once it has. */
  private downtimeMs: number | undefined;
  private finished: Promise<void> = Promise.resolve();
  private readonly steering: Steering;
  /** Why the migration must stop, when that came from outside its own flow (intent log, timer checkpoint). */
  private failure: unknown;
  /** The undo under way (abort), joined by a cancel or a failure that arrives meanwhile. */
  private undoing: Promise<ErrorEvent> | undefined;

  constructor(
    readonly options: MigrationOptions,
    private readonly mount: MountServices,
    id?: string,
    start: StartState = 'preflight',
  ) {
    this.id = id ?? randomUUID().slice(0, 8);
    this.job = new Job(start, (_from, to) => this.emit({ type: 'phase', phase: to }));
    this.at = new Beneath(mount.io);
    this.progress = new Progress(mount.tracker.blockSize, INTENT_REGION_BYTES);
    this.mirrors = new Mirrors(mount.native);
    this.mover = new Mover(this.abortController.signal, mount.io);
    this.mover.rateLimit = options.rateLimit;
    this.figures = new Figures(() => this.mover.bytesMoved);
    if (options.guestIoPriority) this.mover.guestBusy = () => this.attached.guestIsBusy();
    this.steering = new Steering(options.mode === 'mirror', () => this.options.mode === 'auto');
  }

  get phase(): Phase {
    return this.job.state;
  }

  /** Left by a crashed daemon: tracking follows the subtree until `ferry migrate --resume` or `ferry cancel`. */
  get interrupted(): boolean {
    return this.job.state === 'interrupted';
  }

  get passes(): readonly PassEvent[] {
    return this.copier?.passes ?? [];
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

  /** Set before `start`: every move of an evacuation takes from one budget (src/evacuate/). */
  shareRateBudget(bucket: TokenBucket): void {
    this.mover.share(bucket);
  }

  get rateLimit(): number {
    return this.mover.rateLimit;
  }

  get isRunning(): boolean {
    return this.result === undefined && !this.interrupted;
  }

  /** Running, or interrupted and waiting for --resume: either way it owns its subtree. */
  get isActive(): boolean {
    return this.result === undefined;
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
      const { virtual, dest } = this.options;
      const { mountpoint, paths, tracker } = this.mount;
      const plan = await planMigration({ virtual, dest, mountpoint, paths, at: this.at, tracking: tracker.enabled, otherMounts: await this.mount.otherMounts() });
      this.mount.claims.claimDestination(this, plan.destRoot);
      this.plan = plan;
      this.emit({ type: 'plan', source: plan.source, destination: plan.destRoot });
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
    // Interrupted, or an abort that could not remove its checkpoint: the undo runs (again) here.
    if (this.interrupted || this.job.is('aborting')) {
      await this.abort(this.failure ?? new CancelledError('migration cancelled'));
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
    const m = new Migration(journalOptions(journal), mount, journal.id, 'interrupted');
    // Uncommitted: the path map still serves the subtree from its source.
    const site = siteOf(mount.paths, journal.source);
    m.plan = journalPlan(journal, site);
    m.destDir = parentSite(journal.destDir);
    m.shadow = new Shadow(m.at, m.destDir, journal.isFile ? basename(journal.dest) : undefined, journal.id, site);
    m.shadow.restore(checkpoint.placed.map(([ino, rel]) => [BigInt(ino), rel]));
    m.progress.restore(checkpoint, intent, changed);
    m.checkpointer = m.newCheckpointer(m.shadow, intent);
    m.rootMade = true;
    m.rootMark = journal.root;
    mount.claims.take(m, journal.virtual, journal.dest);
    // Until its first pass after --resume is over, every file of the subtree is attached on its first open.
    mount.tracker.follow(journal.virtual, (file) => m.follow(file));
    return m;
  }

  private follow(file: TrackedFile): void {
    file.takeFor(this, undefined, this.checkpointer?.intent);
    this.attached.add(file);
  }

  /** Continues an interrupted migration without recopying what its checkpoint proves current. */
  resume(changes: Partial<MigrationOptions> = {}): Promise<DoneEvent | ErrorEvent> {
    Object.assign(this.options, changes);
    if (changes.rateLimit !== undefined) this.mover.rateLimit = changes.rateLimit;
    if (changes.guestIoPriority) this.mover.guestBusy = () => this.attached.guestIsBusy();
    if (changes.mode !== undefined) this.steering.mirroring = changes.mode === 'mirror';
    return this.start();
  }

  private newCheckpointer(shadow: Shadow, intent?: Map<bigint, Set<number>>): Checkpointer {
    return new Checkpointer(
      {
        id: this.id,
        state: this.mount.state,
        gate: this.mount.gate,
        log: this.mount.log,
        session: this,
        progress: this.progress,
        shadow,
        files: () => this.attached,
        fail: (err) => this.fail(err),
      },
      intent,
    );
  }

  /** What the pass and the switchover share: the copy, its tracked files and windows, the events. */
  private parts(plan: Plan, shadow: Shadow) {
    return { plan, at: this.at, shadow, attached: this.attached, mirrors: this.mirrors, mirroring: () => this.steering.mirroring, emit: (event: MigrationEvent) => this.emit(event) };
  }

  private newCopier(plan: Plan, shadow: Shadow): Copier {
    const { tracker, paths } = this.mount;
    return new Copier({ ...this.parts(plan, shadow), tracker, paths, session: this, mover: this.mover, progress: this.progress, figures: this.figures, intent: () => this.checkpointer?.intent, phase: () => this.phase });
  }

  private switchover(plan: Plan, shadow: Shadow, copier: Copier, attempt: number): Promise<number | undefined> {
    const { gate, handles, sockets, log } = this.mount;
    return switchover(
      {
        ...this.parts(plan, shadow),
        ...{ gate, handles, sockets, log, copier, id: this.id, maxDowntimeMs: this.options.maxDowntimeMs, signal: this.abortController.signal },
        commit: () => this.commit(plan),
        committed: () => this.job.committed,
        thawedAfterCommit: (ms) => (this.downtimeMs = ms),
      },
      attempt,
    );
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
      if (!this.shadow) await this.prepare(plan);
      else await this.holdRecord();
      const shadow = this.shadow!;
      this.checkpointer ??= this.newCheckpointer(shadow);
      const copier = (this.copier = this.newCopier(plan, shadow));
      const checkpointer = this.checkpointer;
      checkpointer.startTimer();

      this.enter('bulk');
      await copier.pass(0);
      // A resumed migration follows every file of its subtree until its first pass has attached each one: a file
      // first opened between the resume and the copier's arrival is tracked from its first write.
      this.mount.tracker.unfollow(this.options.virtual);
      this.enter('iterate');
      let downtimeMs: number | undefined;
      for (let attempt = 1, pass = 1; downtimeMs === undefined; attempt++) {
        for (; ; pass++) {
          this.mirrors.check();
          await checkpointer.checkpoint();
          if ((await this.decideNext(copier)) === 'switchover') break;
          await copier.pass(pass);
          await faultPoint('iterate');
        }
        this.mirrors.check();
        await checkpointer.stopTimer();
        this.enter('switchover');
        downtimeMs = await this.switchover(plan, shadow, copier, attempt);
        if (downtimeMs === undefined) {
          this.enter('iterate');
          checkpointer.startTimer();
        }
      }
      this.enter('cleanup');
      await this.cleanup(plan);
      await this.releaseRecord();
      return this.finish(plan);
    } catch (err) {
      await this.checkpointer?.stopTimer();
      await this.releaseRecord();
      if (err instanceof IllegalTransition) this.mount.log.fatal({ err, migration: this.id }, err.message);
      if (this.job.committed) {
        // Past the commit the destination is authoritative: only the source deletion can be left over (the
        // journal stays: the next mount finishes it).
        this.mount.log.error({ err, migration: this.id }, 'cleanup after commit failed');
        if (this.job.is('committed')) this.enter('cleanup');
        return this.finish(plan);
      }
      return this.abort(this.failure ?? err);
    }
  }

  /** Before the first byte is copied: a datastore that fills up meanwhile still takes the commit's record. */
  private async holdRecord(): Promise<void> {
    await this.mount.commits.holdRecord();
    this.holdsRecord = true;
  }

  /** The record's room, given back once this migration can no longer commit (or has, and its record is settled). */
  private async releaseRecord(): Promise<void> {
    if (!this.holdsRecord) return;
    this.holdsRecord = false;
    await this.mount.commits.releaseRecord().catch((err: unknown) => this.mount.log.warn({ err, migration: this.id }, "cannot remove the spare of the datastore's record: the next mount does"));
  }

  private finish(plan: Plan): DoneEvent {
    this.figures.finish();
    const { copiedBytes, totalBytes, percent } = this.figures.snapshot();
    const done: DoneEvent = {
      type: 'done',
      mode: this.steering.mirroring ? 'mirror' : 'iterative',
      ...this.mirrors.figures(),
      downtimeMs: this.downtimeMs ?? 0,
      passes: this.passes.length,
      bytesCopied: this.copier?.bytesCopied ?? 0,
      copiedBytes,
      totalBytes,
      percent,
      durationMs: Date.now() - this.startedAt,
      source: plan.source,
      destination: plan.destRoot,
      ...(this.keptMountPoint && { keptMountPoint: this.keptMountPoint }),
    };
    this.settle(done);
    this.enter('done');
    this.emit(done);
    return done;
  }

  private async prepare(plan: Plan): Promise<void> {
    this.enter('prepare');
    await this.holdRecord();
    const journal: MigrationJournal = {
      id: this.id,
      virtual: plan.virtual,
      source: plan.source,
      dest: plan.destRoot,
      destDir: plan.destDir,
      destDirExisted: plan.destDirExisted,
      root: 'pending',
      isFile: plan.isFile,
      keepSource: this.options.keepSource,
      startedAt: new Date(this.startedAt).toISOString(),
      mode: this.options.mode,
      maxDowntimeMs: this.options.maxDowntimeMs,
      maxIterations: this.options.maxIterations,
      rateLimit: this.options.rateLimit,
    };
    await this.mount.state.writeJournal(journal);
    this.destDir = parentSite(plan.destDir);
    await faultPoint('journaled');
    // The destination's root (a directory, or the one file in its existing parent), made exclusively: a name that
    // appeared since the preflight is someone else's, fails the migration, and is not the undo's to remove.
    let fd: number;
    if (plan.isFile) {
      fd = await this.destDir.use(basename(plan.destRoot), (root, rel) => this.at.open(root, rel, C.O_CREAT | C.O_EXCL | C.O_WRONLY, 0o600));
      this.rootMade = true;
    } else {
      await this.destDir.use('', (root, rel) => this.at.mkdir(root, rel, 0o700));
      this.rootMade = true;
      fd = await this.destDir.use('', (root, rel) => this.at.open(root, rel, C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW));
    }
    try {
      const st = fs.fstatSync(fd, { bigint: true });
      this.rootMark = { dev: String(st.dev), ino: String(st.ino) };
    } finally {
      fs.closeSync(fd);
    }
    // Until the journal names the root by identity, a recovery leaves it: it cannot tell it from someone else's.
    await faultPoint('root-made');
    await this.mount.state.writeJournal({ ...journal, root: this.rootMark });
    this.shadow = new Shadow(this.at, this.destDir, plan.isFile ? basename(plan.destRoot) : undefined, this.id, plan.site);
    await faultPoint('prepare');
  }

  /** Iterate or switch over; in auto mode, start mirroring when iterating stops paying off. */
  private async decideNext(copier: Copier): Promise<'switchover' | 'copy'> {
    const history: PassFigures[] = copier.passes.map((p) => ({ dirtyBytes: p.dirtyBytes, copiedBytes: p.copiedBytes, durationMs: p.durationMs }));
    const { maxDowntimeMs, maxIterations } = this.options;
    const next = this.steering.next({ dirtyBytes: await copier.pendingDirtyBytes(), throughput: copier.throughput, maxDowntimeMs, maxIterations, history });
    if (next.action !== 'mirror') return next.action;
    this.emit({ type: 'mode', mode: 'mirror', reason: next.reason });
    return 'copy';
  }

  /** The commit point: the path map, written atomically, names the destination. */
  private async commit(plan: Plan): Promise<void> {
    await this.mount.commits.commit(plan.virtual, plan.destRoot, this.id);
    this.enter('committed');
  }

  private async cleanup(plan: Plan): Promise<void> {
    await this.detachAll();
    await faultPoint('cleanup');
    if (!this.options.keepSource) {
      this.keptMountPoint = await removeTree(this.at, plan.site.root, plan.site.path(''));
      if (this.keptMountPoint) this.mount.log.warn({ migration: this.id, path: this.keptMountPoint }, 'the source is a mount point: its contents removed, the directory left in place');
    }
    await this.mount.state.removeJournal(this.id);
  }

  /** Undoes a migration that has not committed; a second call joins the undo under way, or retries a stuck one. */
  private abort(err: unknown): Promise<ErrorEvent> {
    this.undoing ??= this.undo(err).finally(() => (this.undoing = undefined));
    return this.undoing;
  }

  /** undo.ts: the order, and what a failed step leaves. */
  private async undo(err: unknown): Promise<ErrorEvent> {
    const plan = this.plan!;
    if (!this.job.is('aborting')) this.enter('aborting');
    const code = errorCode(err);
    let message = errorMessage(err);
    // The stack is for whoever debugs a failed migration; the event carries the message only.
    if (!(err instanceof CancelledError)) this.mount.log.warn({ err, migration: this.id }, 'migration aborting');
    if (code === 'ENOSPC' && !(err instanceof RecordError)) message = `the destination ran out of space (${message})`;
    const undone = await undo({
      barCheckpoints: () => (this.checkpointer ? this.checkpointer.bar() : this.mount.state.removeSide(this.id, 'checkpoint')),
      detach: () => this.detachAll(),
      removeCopy: async () => {
        if (!this.rootMade) return;
        const { left } = await removePartialCopy(this.at, { destDir: plan.destDir, dest: plan.destRoot, isFile: plan.isFile, destDirExisted: plan.destDirExisted, id: this.id, root: this.rootMark });
        if (left) this.mount.log.warn({ migration: this.id, left }, `left ${left}: it is not the root this migration made`);
      },
      removeJournal: () => this.mount.state.removeJournal(this.id),
    });
    if (undone.outcome === 'stuck') {
      // Still aborting: it owns its subtree, tracks it, and `ferry cancel` tries the undo again.
      this.mount.log.error({ err: undone.err, migration: this.id }, 'could not remove the checkpoint: tracking stays on');
      this.failure ??= err;
      const event: ErrorEvent = (this.stuck = { type: 'error', code, message: `${message}; its checkpoint could not be removed (${errorMessage(undone.err)}), so tracking and intent logging stay on and a resume after the next mount stays correct (ferry cancel tries the undo again); the VM keeps running on the source`, sourceIntact: true });
      this.emit(event);
      return event;
    }
    if (undone.outcome === 'leftover') {
      this.mount.log.error({ err: undone.err, migration: this.id }, 'could not remove the partial copy');
      message += `; the partial copy at ${plan.destRoot} could not be removed (${errorMessage(undone.err)}): the next mount removes it`;
    }
    const event: ErrorEvent = { type: 'error', code, message: `${message}; the VM keeps running on the source`, sourceIntact: true };
    this.stuck = undefined;
    this.settle(event);
    this.enter('aborted');
    this.emit(event);
    return event;
  }

  /** The end state: the migration no longer owns its subtree or destination. */
  private settle(result: DoneEvent | ErrorEvent): void {
    this.result = result;
    this.endedAt = Date.now();
    this.mount.tracker.unfollow(this.options.virtual);
    this.mount.claims.release(this);
    this.plan?.site.root.retire();
    this.destDir?.root.retire();
  }

  private async detachAll(): Promise<void> {
    this.attached.detachAll();
    // No write may still be mirroring through a window (in JS or in C) when its fd closes.
    await this.mount.gate.quiesce();
    this.mirrors.closeAll();
  }
}
