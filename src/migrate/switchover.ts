import { close, type BigIntStats } from 'node:fs';
import type { Logger } from 'pino';
import type { IoGate, Freeze } from '../fs/gate.js';
import type { HandleTable, Handle } from '../fs/handles.js';
import type { SocketInodes } from '../fs/socket-inodes.js';
import { backingFlags, openDirect } from '../fs/backing-io.js';
import type { Beneath } from '../util/beneath.js';
import { fstatBig } from '../util/beneath-tree.js';
import { isWithin } from '../util/paths.js';
import { faultPoint } from '../util/faults.js';
import { CancelledError, DeadlineError } from './mover.js';
import { walkTree } from './walk.js';
import type { Plan } from './preflight.js';
import type { Shadow } from './shadow.js';
import type { Copier } from './pass.js';
import type { Attachments } from './attachments.js';
import type { Mirrors } from './mirrors.js';
import type { MigrationEvent } from './events.js';

/** Switchovers abandoned for overrunning --max-downtime before the migration gives up, source intact. */
export const MAX_SWITCHOVER_ATTEMPTS = 3;

export interface SwitchoverDeps {
  plan: Plan;
  at: Beneath;
  gate: IoGate;
  handles: HandleTable;
  sockets: SocketInodes;
  shadow: Shadow;
  copier: Copier;
  attached: Attachments;
  mirrors: Mirrors;
  log: Logger;
  id: string;
  maxDowntimeMs: number;
  signal: AbortSignal;
  mirroring(): boolean;
  /** The commit point (the path map names the destination); the job is *committed* once it resolves. */
  commit(): Promise<void>;
  committed(): boolean;
  /** The freeze of the switchover that committed, reported at its thaw (even when a step after the commit failed). */
  thawedAfterCommit(downtimeMs: number): void;
  emit(event: MigrationEvent): void;
}

/**
 * Freeze the subtree, copy the rest, make it durable, commit, remap, move every open handle, thaw. Returns the
 * freeze time (the downtime the guest sees), or undefined when the freeze overran --max-downtime before the commit:
 * I/O thaws and the passes go on (after MAX_SWITCHOVER_ATTEMPTS such, it throws ETIMEDOUT: the migration aborts).
 *
 * Each step and its undo, with I/O on the subtree frozen throughout (no guest write, open, rename or unlink there
 * runs; elsewhere the mount goes on):
 * - walk, copy, metadata, flush: add to the copy only; undo is the next pass or the abort's removal.
 * - reopen: opens destination fds for the subtree's handles; undo closes them. Nothing is swapped yet.
 * - commit: the one commit writer saves the path map (see commits.ts for a failed save). Before it, a cancel or a
 *   deadline abandons the switchover with the source authoritative; from it on nothing gives up.
 * - swap: infallible, every fd is already open; then thaw.
 * A crash anywhere before the saved map leaves the source authoritative (recovery resumes or undoes); after it,
 * recovery finishes the cleanup.
 */
export async function switchover(deps: SwitchoverDeps, attempt: number): Promise<number | undefined> {
  const { plan, shadow } = deps;
  const frozenAt = Date.now();
  const deadline = frozenAt + deps.maxDowntimeMs;
  const freeze: Freeze = await deps.gate.freeze(plan.virtual);
  const steps: Record<string, number> = { drainMs: Date.now() - frozenAt };
  // Every step before the commit may give up; from the commit on, the switchover finishes whatever it takes.
  const step = async <T>(name: string, work: () => Promise<T>): Promise<T> => {
    const t0 = Date.now();
    const result = await work();
    steps[name] = Date.now() - t0;
    if (!deps.committed() && Date.now() > deadline) throw new DeadlineError(`the freeze overran ${deps.maxDowntimeMs} ms in step ${name}`);
    return result;
  };
  const reopened: { fh: number; handle: Handle; fd: number; directFd: number | undefined }[] = [];
  let downtimeMs: number | undefined;
  try {
    // Once: with the mount frozen nothing may move the subtree, and a walk that saw it move fails the migration.
    const tree = await step('walkMs', () => walkTree(deps.at, plan.site));
    const copied = await step('copyMs', async () => deps.copier.copyTree(tree, await shadow.sync(tree), { frozen: true, deadline }));
    steps.copiedBytes = copied;
    await step('metadataMs', () => shadow.applyMetadata(tree));
    await step('flushMs', () => shadow.flush());
    await step('reopenMs', async () => {
      // By inode, not by name: the name a handle was opened through may since have gone, or now name another
      // file. The frozen walk placed every inode of the subtree; a handle on any of them moves to its copy.
      // Only the subtree's handles: they are frozen, while one elsewhere may be released (its fd closed and the
      // number reused) during an await here. The tracker keeps each handle's path current through renames and
      // libfuse's hiding, and the preflight and rename refuse hard links across the subtree's edge.
      for (const [fh, handle] of deps.handles.entries()) {
        if (!isWithin(handle.file.path, plan.virtual)) continue;
        const st = await fstatBig(handle.fd);
        const rel = st.dev === tree.dev ? shadow.placedPath(st.ino) : undefined;
        if (rel === undefined) throw Object.assign(new Error(`${handle.file.path} is open but its inode ${st.ino} has no copy`), { code: 'EINVARIANT' });
        const fd = await shadow.openFile(rel, backingFlags(handle.flags));
        // An O_DIRECT or page-cached handle gets its twin on the destination too (per its filesystem's alignment:
        // direct.h).
        const directFd = await openDirect(fd, handle.flags, handle.directUse).catch((err: unknown) => {
          closeQuietly(fd);
          throw err;
        });
        reopened.push({ fh, handle, fd, directFd });
      }
    });
    const sockets = await Promise.all(tree.specials.filter((s) => s.stat.isSocket()).map(async (s) => [s.stat, await shadow.lstat(s.rel)] as const));
    await faultPoint('before-commit');
    if (deps.signal.aborted) throw new CancelledError('migration cancelled');
    await step('commitMs', () => deps.commit());
    for (const [from, to] of sockets) deps.sockets.moved(from, to);
    // Infallible from here: every destination fd is already open.
    for (const { fh, handle, fd, directFd } of reopened) {
      closeQuietly(handle.fd, handle.directFd);
      deps.handles.setFds(fh, fd, directFd);
    }
    // The files are other inodes now: a later migration must key them by their new numbers.
    for (const file of deps.attached) file.ino = undefined;
    for (const { handle, fd } of reopened) handle.file.ino = await fstatBig(fd).then((st) => st.ino, () => undefined);
    // Same bytes, new inodes: a file whose kernel cache was current for the source keeps it (page-cache.ts).
    const cacheRecord = deps.handles.cacheRecord;
    const recorded = cacheRecord.inodesOn(tree.dev);
    const moves = new Map<bigint, { from: BigIntStats; to: BigIntStats }>();
    for (const group of tree.groups) {
      const rel = recorded.has(group.ino) ? shadow.placedPath(group.ino) : undefined;
      const to = rel === undefined ? undefined : await shadow.lstat(rel).catch(() => undefined);
      if (to) moves.set(group.ino, { from: group.stat, to });
    }
    cacheRecord.moved(tree.dev, moves);
    await faultPoint('after-commit');
    deps.copier.passes.push({ type: 'pass', pass: deps.copier.passes.length, mode: deps.mirroring() ? 'mirror' : 'iterative', ...deps.mirrors.figures(), dirtyBytes: copied, copiedBytes: copied, throughputBytesPerSec: Math.round(deps.copier.throughput), estimatedSwitchoverMs: 0, durationMs: Date.now() - frozenAt, yieldedToGuestMs: 0 });
  } catch (err) {
    if (!deps.committed()) for (const { fd, directFd } of reopened) closeQuietly(fd, directFd);
    if (!(err instanceof DeadlineError) || deps.committed()) throw err;
    // Nothing is lost before the commit: the copy so far is a pass like any other.
    deps.emit({ type: 'switchover', attempt, outcome: 'abandoned', frozenMs: Date.now() - frozenAt, steps });
    if (attempt >= MAX_SWITCHOVER_ATTEMPTS) {
      throw Object.assign(new Error(`the switchover overran --max-downtime (${deps.maxDowntimeMs} ms) ${attempt} times: the copy cannot finish within the allowed freeze (allow more with --max-downtime)`), { code: 'ETIMEDOUT' });
    }
    return undefined;
  } finally {
    deps.gate.thaw(freeze);
    if (deps.committed()) deps.thawedAfterCommit((downtimeMs = Date.now() - frozenAt));
    deps.log.info({ migration: deps.id, attempt, frozenMs: Date.now() - frozenAt, ...steps }, 'switchover freeze');
  }
  return downtimeMs;
}

function closeQuietly(...fds: (number | undefined)[]): void {
  for (const fd of fds) if (fd !== undefined) close(fd, () => undefined);
}
