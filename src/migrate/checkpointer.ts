import type { Logger } from 'pino';
import type { IoGate } from '../fs/gate.js';
import type { DatastoreState } from '../state/datastore-state.js';
import type { TrackedFile, TrackingSession } from '../track/tracked-file.js';
import type { DirtyMap } from '../track/dirty-map.js';
import { IntentLog, covers, fromRegion, type Regions } from '../track/intent-log.js';
import { errorMessage } from '../util/user-error.js';
import { faultPoint } from '../util/faults.js';
import { errorCode } from './context.js';
import type { Progress } from './progress.js';
import type { Shadow } from './shadow.js';

/** Region size of the write-intent log: what a crash can cost per written region, at most. */
export const INTENT_REGION_BYTES = 4 << 20;
/** How often a long pass checkpoints its progress. */
const CHECKPOINT_EVERY_MS = 2000;
/** Debug checks of the write path's invariants (tests set it): a violation fails the migration loudly. */
const CHECK_INVARIANTS = process.env.FERRY_CHECK_INVARIANTS === '1';

export interface CheckpointerDeps {
  id: string;
  state: DatastoreState;
  gate: IoGate;
  log: Logger;
  session: TrackingSession;
  progress: Progress;
  shadow: Shadow;
  /** The files the migration tracks now. */
  files(): Iterable<TrackedFile>;
  /** Stops the migration from outside its flow (it aborts at its next step, source intact). */
  fail(err: unknown): void;
}

/**
 * Crash safety of one migration: the write-intent log (a region is logged before the guest's first write to it
 * reaches the source), checkpoints of its progress (after each pass and every 2 s; the destination is flushed
 * first, and only then may the intent log forget what the checkpoint vouches for), and, once the migration stops,
 * the removal of its checkpoint. The guest's writes that the log holds when it fails are let go only once no
 * checkpoint can vouch for them: removed, or the datastore's heartbeat stopped (see intentFailed).
 *
 * State, JS thread only: `running` (the checkpoint being taken: one at a time), `timer` (started and stopped by the
 * driver), `sideWrites` (the checkpoint file's writes and its removal, in order), `barred` (set once, by `bar`: no
 * checkpoint is ever written again, so no crash can resume from a log that missed writes).
 */
export class Checkpointer {
  readonly intent: IntentLog;
  private running: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private sideWrites: Promise<unknown> = Promise.resolve();
  private barred = false;

  constructor(
    private readonly deps: CheckpointerDeps,
    initial?: Regions,
  ) {
    this.intent = new IntentLog(
      INTENT_REGION_BYTES,
      async (regions, trimming) => {
        if (trimming) await faultPoint('intent-trim');
        await deps.state.writeSide(deps.id, 'intent', [...regions].map(([ino, set]) => [String(ino), [...set]]));
      },
      initial,
      (err) => this.intentFailed(err),
      CHECK_INVARIANTS ? (vouched) => this.checkVouched(vouched) : undefined,
    );
  }

  startTimer(): void {
    this.timer ??= setInterval(() => void this.checkpoint().catch((err) => this.deps.fail(err)), CHECKPOINT_EVERY_MS);
  }

  /** No timed checkpoint starts from now on; resolves once the one running (if any) has ended. */
  async stopTimer(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running?.catch(() => undefined);
  }

  /** Durable progress: placement, inodes copied in full with their dirty bits, the file being copied and how far. */
  checkpoint(): Promise<void> {
    if (this.running) return this.running;
    const { deps } = this;
    const run = async () => {
      this.intent.beginEpoch();
      for (const file of deps.files()) file.newIntentEpoch();
      // Every write admitted before this point has marked its blocks once this resolves.
      await deps.gate.quiesce();
      const dirty: [bigint, DirtyMap][] = [];
      for (const file of deps.files()) {
        const map = file.peekFor(deps.session);
        if (map && file.ino !== undefined) dirty.push([file.ino, map]);
      }
      // Progress is read here, then made durable at the destination before it is recorded.
      const checkpoint = deps.progress.snapshot(dirty, deps.shadow.placedEntries());
      await deps.shadow.flush();
      await this.write(checkpoint);
      await faultPoint('checkpoint-written');
      // The file being copied for the first time: a resume copies it again from its checkpointed offset on, so
      // the log may keep that part at no cost, and the guest's writes there need not wait for a flush.
      const unproven: Regions = new Map();
      const partial = checkpoint.partial;
      if (partial) unproven.set(BigInt(partial.ino), new Set([fromRegion(Math.ceil(partial.copiedUpTo / INTENT_REGION_BYTES))]));
      await this.intent.trimToEpoch(unproven);
      await faultPoint('intent-trimmed');
    };
    this.running = run().finally(() => (this.running = undefined));
    return this.running;
  }

  private write(checkpoint: unknown): Promise<void> {
    const next = this.sideWrites.then(async () => {
      if (this.barred) throw new Error('the migration is stopping: no checkpoint may be written');
      await this.deps.state.writeSide(this.deps.id, 'checkpoint', checkpoint);
    });
    this.sideWrites = next.catch(() => undefined);
    return next;
  }

  /** No checkpoint exists, nor will: after this resolves no crash can resume from a log that missed writes. */
  bar(): Promise<void> {
    const next = this.sideWrites.then(async () => {
      this.barred = true;
      await this.deps.state.removeSide(this.deps.id, 'checkpoint');
    });
    this.sideWrites = next.catch(() => undefined);
    return next;
  }

  /**
   * The intent log could not be written, so a resume could miss writes: the checkpoint goes first (a crash from
   * now on undoes the copy instead of resuming it), then the migration stops. The intent log holds the guest's
   * writes until this resolves.
   */
  private async intentFailed(err: unknown): Promise<void> {
    const { deps } = this;
    deps.log.error({ err, migration: deps.id }, 'the write-intent log could not be written: the migration stops, the VM stays on the source');
    let message = `the write-intent log could not be written (${errorMessage(err)})`;
    try {
      await this.bar();
    } catch (rmErr) {
      // The checkpoint stays and would vouch for regions the log no longer covers: the heartbeat stops instead, and
      // the held writes wait out its slack, so that a resume after a crash copies every file written from now on.
      deps.log.error({ err: rmErr, migration: deps.id }, 'could not remove the checkpoint after the intent log failed: the heartbeat stops');
      message += `; its checkpoint could not be removed either (${errorMessage(rmErr)})`;
      await deps.state.stopBeating();
    }
    deps.fail(Object.assign(new Error(message), { code: errorCode(err) }));
  }

  /** Debug builds: every region C may write without asking must be in the durable intent log. */
  private checkVouched(vouched: Regions): void {
    const { deps } = this;
    for (const file of deps.files()) {
      if (file.ino === undefined) continue;
      for (const region of file.vouchedRegions()) {
        if (covers(vouched, file.ino, region)) continue;
        const err = Object.assign(new Error(`invariant broken: region ${region} of inode ${file.ino} passes natively but is not in the durable intent log`), { code: 'EINVARIANT' });
        deps.log.fatal({ migration: deps.id }, err.message);
        deps.fail(err);
        return;
      }
    }
  }
}
