import { promisify } from 'node:util';
import { close, constants as C, ftruncate, type BigIntStats } from 'node:fs';
import type { Tracker } from '../track/tracker.js';
import type { TrackedFile, TrackingSession } from '../track/tracked-file.js';
import type { IntentLog } from '../track/intent-log.js';
import type { DirtyMap, Extent } from '../track/dirty-map.js';
import type { PathMap } from '../fs/path-map.js';
import type { Beneath } from '../util/beneath.js';
import { fstatBig, reopen, withObject } from '../util/beneath-tree.js';
import { faultPoint } from '../util/faults.js';
import { DeadlineError, type Mover } from './mover.js';
import { isSymlinkOnTheWay, symlinkRefusal, walkSteady, type FileGroup, type Tree } from './walk.js';
import { mergeExtents } from './extents.js';
import { estimateSwitchoverMs } from './policy.js';
import type { Plan } from './preflight.js';
import type { Shadow } from './shadow.js';
import type { Progress } from './progress.js';
import type { Attachments } from './attachments.js';
import type { Mirrors } from './mirrors.js';
import type { MigrationEvent, PassEvent } from './events.js';
import type { Figures } from './figures.js';
import { INTENT_REGION_BYTES } from './checkpointer.js';

/** Files this large are logged whole when their first copy starts (a small file is copied before it matters). */
const PREVOUCH_MIN_BYTES = BigInt(2 * INTENT_REGION_BYTES);
/** How often a running pass reports its progress. */
const PROGRESS_EVERY_MS = 250;
/** Minimum bytes a pass must move for its throughput to count (small passes are dominated by overhead). */
const MEASURABLE_BYTES = 8 << 20;

// Raw fds throughout (fs/promises' FileHandle would close one when garbage-collected; handles and windows keep theirs).
const closeAsync = promisify(close);
const ftruncateAsync = promisify(ftruncate);

export interface CopierDeps {
  plan: Plan;
  at: Beneath;
  tracker: Tracker;
  paths: PathMap;
  session: TrackingSession;
  mover: Mover;
  shadow: Shadow;
  progress: Progress;
  attached: Attachments;
  mirrors: Mirrors;
  figures: Figures;
  /** The migration's write-intent log (none before the first pass starts). */
  intent(): IntentLog | undefined;
  mirroring(): boolean;
  /** The job's state, as the fault point a copied file reaches. */
  phase(): string;
  emit(event: MigrationEvent): void;
}

/**
 * The passes of one migration: each walks the source subtree, brings the copy's namespace in line (Shadow), and
 * copies what each file needs: all of it when this migration has not tracked it all along, else its dirty extents.
 *
 * State, JS thread only: `passes`, `throughput` and `bytesCopied`, changed by the pass that ends (one runs at a
 * time: the driver awaits each, and the switchover's copy is one). What it copies is recorded in Progress, the
 * files it takes maps from in Attachments, their windows in Mirrors.
 */
export class Copier {
  readonly passes: PassEvent[] = [];
  /** Bytes per second the copy achieved in its last measurable pass. */
  throughput = 0;
  bytesCopied = 0;

  constructor(private readonly deps: CopierDeps) {}

  /** One copy pass: sync the namespace, then copy what each file needs (all of it, or its dirty extents). */
  async pass(pass: number): Promise<PassEvent> {
    const { deps } = this;
    const started = Date.now();
    const dirtyBytes = pass === 0 ? 0 : await this.pendingDirtyBytes();
    const tree = await walkSteady(deps.at, deps.plan.site);
    deps.progress.forgetReused(tree, deps.shadow);
    // What this pass will copy, in data bytes: a thin image's holes are never read (issue 28: a 100G image with
    // 60 MiB of data sat at 0% and jumped to 100%).
    deps.figures.startPass(pass, pass === 0 ? tree.groups.reduce((sum, g) => sum + Math.min(Number(g.stat.size), Number(g.stat.blocks) * 512), 0) : dirtyBytes);
    const yieldedBefore = deps.mover.yieldedMs;
    const progress = setInterval(() => deps.emit({ type: 'progress', ...deps.figures.snapshot() }), PROGRESS_EVERY_MS);
    let copied: number;
    try {
      copied = await this.copyTree(tree, await deps.shadow.sync(tree), { frozen: false });
    } finally {
      clearInterval(progress);
    }
    // Each pass ends durable: the freeze then flushes only the last delta, and the measured rate includes the
    // flush, as the switchover's copy will.
    await deps.shadow.flush();
    const durationMs = Math.max(1, Date.now() - started);
    if (copied >= MEASURABLE_BYTES || this.throughput === 0) this.throughput = (copied / durationMs) * 1000 || this.throughput;
    const pending = await this.pendingDirtyBytes();
    deps.figures.left(pending);
    const event: PassEvent = {
      type: 'pass',
      pass,
      mode: deps.mirroring() ? 'mirror' : 'iterative',
      ...deps.mirrors.figures(),
      dirtyBytes: pass === 0 ? copied : dirtyBytes,
      copiedBytes: copied,
      throughputBytesPerSec: Math.round(this.throughput),
      estimatedSwitchoverMs: Math.round(estimateSwitchoverMs(pending, this.throughput)),
      durationMs,
      yieldedToGuestMs: deps.mover.yieldedMs - yieldedBefore,
    };
    this.passes.push(event);
    deps.emit(event);
    return event;
  }

  /**
   * Copies each inode of the walk to its placed copy. A name is only a way to reach the inode: the source is
   * opened and its inode checked before any dirty map is taken, so a rename-over or unlink since the walk costs
   * nothing here (the next pass walks again) and never sends one inode's bytes or bits to another's copy.
   */
  async copyTree(tree: Tree, fresh: Set<bigint>, { frozen, deadline }: { frozen: boolean; deadline?: number }): Promise<number> {
    const { deps } = this;
    const { plan, progress, session } = deps;
    let copied = 0;
    for (const group of tree.groups) {
      if (deadline !== undefined && Date.now() > deadline) throw new DeadlineError('the freeze overran its deadline while copying');
      const src = await this.openSource(tree, group, frozen);
      if (src === undefined) continue;
      let dst: number | undefined;
      try {
        const window = deps.mirroring() && !frozen ? await deps.mirrors.windowFor(group.ino, fresh.has(group.ino), () => deps.shadow.open(group.ino, C.O_RDWR)) : undefined;
        // A first copy of a large file: log all of it before it is tracked (see the trim in Checkpointer), so the
        // guest's writes to it wait for no flush until a checkpoint proves part of it copied. Not in the freeze:
        // no guest write runs then, and the flush would only lengthen it.
        if (!frozen && src.fd !== undefined && !progress.isComplete(group.ino) && src.stat.size >= PREVOUCH_MIN_BYTES) await deps.intent()?.vouchFrom(group.ino, 0);
        // From here to takeFor nothing is awaited: the tracker's names and the inode checked agree.
        const files = group.paths.map((rel) => deps.tracker.acquire(rel === '' ? plan.virtual : `${plan.virtual}/${rel}`));
        if (src.fd === undefined || files.some((f) => f.ino !== undefined && f.ino !== group.ino)) {
          // With I/O frozen the namespace cannot move: a mismatch there is a bug, never a copy to commit.
          if (frozen) throw Object.assign(new Error(`${group.paths[0]} is not inode ${group.ino} of device ${tree.dev} during the switchover`), { code: 'EINVARIANT' });
          continue;
        }
        const srcFd = src.fd;
        const full = fresh.has(group.ino) || files.some((f) => !f.isAttached(session));
        // Take the dirty maps before reading: a write racing this copy dirties the fresh map and is copied again.
        // With a window the write path mirrors or classifies writes against the copier from here on.
        window?.beginPlanning();
        const maps = files.map((f) => f.takeFor(session, window, deps.intent()));
        for (const f of files) deps.attached.add(f);
        dst = await deps.shadow.open(group.ino, C.O_RDWR);
        const size = Number((await fstatBig(srcFd)).size);
        if (Number((await fstatBig(dst)).size) !== size) await ftruncateAsync(dst, size);
        // A file this migration did not track all along cannot be vouched for by its checkpoint: copied whole.
        const resumed = progress.resumesFor(group.ino) && !full ? progress.resumedRanges(group.ino, size, maps) : undefined;
        const ranges = resumed ?? (full ? [[0, size] as Extent] : mergeExtents(maps.map((m) => m.extents(size))));
        progress.begin(group.ino, src.stat, ranges);
        let moved: number;
        try {
          moved = await deps.mover.copy(srcFd, dst, ranges, {
            sparse: fresh.has(group.ino),
            throttle: !frozen,
            window,
            deadline,
            onProgress: (upTo) => progress.advanced(group.ino, upTo),
          });
        } catch (err) {
          // The maps were taken: an abandoned switchover gives their ranges back for the next attempt.
          if (err instanceof DeadlineError) for (const f of files) for (const [offset, length] of ranges) f.markFor(session, offset, length);
          throw err;
        }
        progress.done(group.ino);
        copied += moved;
      } finally {
        if (src.fd !== undefined) await closeAsync(src.fd);
        if (dst !== undefined) await closeAsync(dst);
      }
      await faultPoint(deps.phase());
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
    const { site } = this.deps.plan;
    try {
      return await site.use(group.paths[0], (root, rel) =>
        withObject(this.deps.at, root, rel, async (object, stat) =>
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

  /**
   * Dirty bytes waiting in this migration's maps that hold data in the source: what the next copy reads. A range
   * that a truncation dirtied and an extension left a hole costs a punch, not a copy; counted, it made a writer
   * that cuts and regrows its file look as fast as the copy (issue 19). Only estimates and decisions use this.
   */
  async pendingDirtyBytes(): Promise<number> {
    let total = 0;
    for (const file of this.deps.attached) {
      const map = file.peekFor(this.deps.session);
      if (map && map.dirtyBytes(Infinity) > 0) total += await this.dataBytesIn(file, map);
    }
    return total;
  }

  /** The data bytes of the map's dirty ranges in the file's source; all of them when it cannot be looked at. */
  private async dataBytesIn(file: TrackedFile, map: DirtyMap): Promise<number> {
    const all = map.dirtyBytes(Infinity);
    try {
      const { root, rel } = this.deps.paths.place(file.path);
      return await root.use(rel, (fd, path) =>
        withObject(this.deps.at, fd, path, async (object, st) => {
          if (!st.isFile() || (file.ino !== undefined && st.ino !== file.ino)) return all;
          const handle = await reopen(object, C.O_RDONLY);
          try {
            const data = await this.deps.mover.dataIn(handle, map.extents(Number(st.size)));
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
}
