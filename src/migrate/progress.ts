import type { BigIntStats } from 'node:fs';
import { DirtyMap, type Extent } from '../track/dirty-map.js';
import { markedFrom, type Regions } from '../track/intent-log.js';
import { mergeExtents } from './extents.js';
import { decodeMap, encodeMap, type Checkpoint } from './checkpoint.js';
import type { Tree } from './walk.js';
import type { Shadow } from './shadow.js';

/** What a checkpoint left for the first pass of a resume. */
interface ResumeState {
  intent: Regions;
  /** Changed while no daemon tracked them (recovery.ts): copied whole. */
  changed: Set<bigint> | 'all';
  complete: Map<bigint, DirtyMap>;
  partial: { ino: bigint; copiedUpTo: number; map: DirtyMap } | undefined;
}

/** A source file as it was when its copy last started: what a resume compares it with. */
interface Identity {
  size: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
  birthNs: bigint;
}

/**
 * How far a migration's copy has got, in what a checkpoint records: the inodes copied in full at least once, the
 * one being copied for the first time and how far, the ranges of a recopy in flight, each copied inode's identity,
 * and, after a crash, what the checkpoint vouched for until the first pass is over.
 *
 * State, JS thread only: changed by the pass (copyTree, between its awaits: it is the only copier of a migration)
 * and by the factory of an interrupted migration (restore); the checkpointer only reads it (snapshot).
 */
export class Progress {
  private readonly complete = new Set<bigint>();
  private partial: { ino: bigint; copiedUpTo: number } | undefined;
  private readonly inFlight = new Map<bigint, DirtyMap>();
  private readonly identities = new Map<bigint, Identity>();
  private resumeFrom: ResumeState | undefined;
  /** Inodes copied since the resume: their ranges no longer come from the checkpoint. */
  private readonly copiedSinceResume = new Set<bigint>();

  constructor(
    private readonly blockSize: number,
    private readonly regionBytes: number,
  ) {}

  /** Takes over an interrupted migration's checkpoint: its first pass copies only what that cannot vouch for. */
  restore(checkpoint: Checkpoint, intent: Regions, changed: Set<bigint> | 'all'): void {
    const bs = this.blockSize;
    for (const [ino, ns] of checkpoint.born) this.identities.set(BigInt(ino), { size: -1n, mtimeNs: -1n, ctimeNs: -1n, birthNs: BigInt(ns) });
    for (const [ino, size, mtimeNs, ctimeNs, birthNs] of checkpoint.identity ?? []) {
      this.identities.set(BigInt(ino), { size: BigInt(size), mtimeNs: BigInt(mtimeNs), ctimeNs: BigInt(ctimeNs), birthNs: BigInt(birthNs) });
    }
    this.resumeFrom = {
      intent,
      changed,
      complete: new Map(checkpoint.complete.map(([ino, bits]) => [BigInt(ino), decodeMap(bs, bits)])),
      partial: checkpoint.partial && { ino: BigInt(checkpoint.partial.ino), copiedUpTo: checkpoint.partial.copiedUpTo, map: decodeMap(bs, checkpoint.partial.dirty) },
    };
  }

  /**
   * After a resume, the checkpoint's ranges decide what an inode's first copy takes: until that copy is done, not
   * merely until the first pass ends (a file renamed before that pass reached it is copied in a later one, and its
   * dirty maps hold only the writes since the remount).
   */
  resumesFor(ino: bigint): boolean {
    return this.resumeFrom !== undefined && !this.copiedSinceResume.has(ino);
  }

  isComplete(ino: bigint): boolean {
    return this.complete.has(ino);
  }

  /**
   * A copy of `ino` starts, of `ranges`, from a source looking like `stat`. Until it is done a checkpoint counts a
   * recopy's ranges as dirty; a first copy records how far it got instead.
   */
  begin(ino: bigint, stat: BigIntStats, ranges: Extent[]): void {
    this.identities.set(ino, { size: stat.size, mtimeNs: stat.mtimeNs, ctimeNs: stat.ctimeNs, birthNs: stat.birthtimeNs });
    if (this.complete.has(ino)) {
      const inFlight = new DirtyMap(this.blockSize);
      for (const [offset, length] of ranges) inFlight.mark(offset, length);
      this.inFlight.set(ino, inFlight);
    } else {
      this.partial = { ino, copiedUpTo: 0 };
    }
  }

  /** A first copy has copied everything below `upTo`. */
  advanced(ino: bigint, upTo: number): void {
    if (this.partial?.ino === ino) this.partial.copiedUpTo = upTo;
  }

  done(ino: bigint): void {
    this.complete.add(ino);
    if (this.resumeFrom) this.copiedSinceResume.add(ino);
    if (this.partial?.ino === ino) this.partial = undefined;
    this.inFlight.delete(ino);
  }

  /** The durable picture of this progress, given each inode's dirty maps as they were read after a quiesce. */
  snapshot(dirty: Iterable<[bigint, DirtyMap]>, placed: [bigint, string][]): Checkpoint {
    const perIno = new Map<bigint, DirtyMap>();
    const orInto = (ino: bigint, map: DirtyMap) => {
      let into = perIno.get(ino);
      if (!into) perIno.set(ino, (into = new DirtyMap(this.blockSize)));
      into.orBytes(map.toBytes());
    };
    for (const [ino, map] of dirty) orInto(ino, map);
    for (const [ino, map] of this.inFlight) orInto(ino, map);
    const empty = new DirtyMap(this.blockSize);
    const identities = [...this.identities];
    return {
      at: new Date().toISOString(),
      placed: placed.map(([ino, rel]) => [String(ino), rel]),
      born: identities.map(([ino, id]) => [String(ino), String(id.birthNs)]),
      identity: identities.filter(([, id]) => id.size >= 0n).map(([ino, id]) => [String(ino), String(id.size), String(id.mtimeNs), String(id.ctimeNs), String(id.birthNs)]),
      complete: [...this.complete].map((ino) => [String(ino), encodeMap(perIno.get(ino) ?? empty)]),
      partial: this.partial && { ino: String(this.partial.ino), copiedUpTo: this.partial.copiedUpTo, dirty: encodeMap(perIno.get(this.partial.ino) ?? empty) },
    };
  }

  /** The ranges the first pass after a resume must copy for one inode: what the checkpoint cannot vouch for. */
  resumedRanges(ino: bigint, size: number, taken: DirtyMap[]): Extent[] {
    const state = this.resumeFrom!;
    const whole: Extent[] = [[0, size]];
    if (state.changed === 'all' || state.changed.has(ino)) return whole;
    const logged = state.intent.get(ino) ?? new Set<number>();
    const from = markedFrom(logged) * this.regionBytes;
    const intents: Extent[] = [...logged].filter((r) => r >= 0).map((r): Extent => [r * this.regionBytes, this.regionBytes]);
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

  /** After a crash, a placed inode not copied since whose birth time changed is another file now: copied afresh. */
  forgetReused(tree: Tree, shadow: Shadow): void {
    for (const group of tree.groups) {
      if (!this.resumesFor(group.ino)) continue;
      const born = this.identities.get(group.ino)?.birthNs;
      if (born !== undefined && born !== 0n && born !== group.stat.birthtimeNs) {
        shadow.forget(group.ino);
        this.complete.delete(group.ino);
        this.resumeFrom?.complete.delete(group.ino);
      }
    }
  }
}
