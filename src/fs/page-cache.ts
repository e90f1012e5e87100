import type { BigIntStats } from 'node:fs';
import { constants as C } from 'node:fs';

// Bits of the open reply's flags (fuse-native's Fuse.OPEN_DIRECT_IO, Fuse.OPEN_KEEP_CACHE: fuse-native.c sets
// fuse_file_info's direct_io and keep_cache from them). Here so that the unit tests need no addon.
export const OPEN_DIRECT_IO = 1;
export const OPEN_KEEP_CACHE = 2;

/**
 * The one place that decides how the kernel caches an open (io-routes.md, goal 1): O_DIRECT opens, and every open
 * with `--direct-io`, are direct_io; the others use the page cache, whose pages the kernel keeps from earlier opens
 * only with `keep` (see CacheRecord), and otherwise drops at this open. Later steps that treat page-cached opens
 * differently key on "the reply has no direct_io".
 */
export function openReplyFlags(directIo: boolean, flags: number, keep: boolean): number {
  if (directIo || flags & C.O_DIRECT) return OPEN_DIRECT_IO;
  return keep ? OPEN_KEEP_CACHE : 0;
}

/** What says a backing file's bytes did not change: any write, truncation or replacement changes one of these. */
interface Identity {
  dev: bigint;
  ino: bigint;
  size: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
}

function identityOf(st: BigIntStats): Identity {
  return { dev: st.dev, ino: st.ino, size: st.size, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs };
}

function same(a: Identity, b: Identity): boolean {
  return a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs;
}

/** Files remembered; the least recently opened or closed is forgotten first (it then opens without its cache once). */
export const CACHE_RECORD_LIMIT = 4096;

/**
 * Per mount path (the kernel's page cache is per FUSE inode, which libfuse 2.9 keys by name): the backing file's
 * identity when the kernel's cached pages of it were last known to hold its bytes. An open may keep those pages
 * only while the file still has that identity: nothing changed it since, inside or outside the mount.
 *
 * Changed only on the JS thread, at the two moments the kernel's pages and the backing file agree:
 * - a page-cached open, after comparing: the kernel either kept pages that matched, or drops them now;
 * - a switchover's commit (`moved`), with the subtree frozen: the same bytes now live in another inode.
 * Any change of the file since, a write through the mount included, changes its size, mtime or ctime and so
 * voids the record: the next open drops the pages. Not recorded at FLUSH or RELEASE, though the kernel's pages
 * match what it wrote: a write through another name of a hard-linked file (another kernel inode, whose pages
 * this one does not see) or outside the mount changes the same backing file, and would be recorded as what
 * this inode caches (the torture's reads found exactly that). Bounded (LRU); a lost entry costs one cold open.
 */
export class CacheRecord {
  private readonly byPath = new Map<string, Identity>();

  record(path: string, st: BigIntStats): void {
    this.byPath.delete(path);
    this.byPath.set(path, identityOf(st));
    if (this.byPath.size > CACHE_RECORD_LIMIT) this.byPath.delete(this.byPath.keys().next().value!);
  }

  /** The backing file opened at `path` is, to the nanosecond, the one recorded there. */
  matches(path: string, st: BigIntStats): boolean {
    const recorded = this.byPath.get(path);
    return recorded !== undefined && same(recorded, identityOf(st));
  }

  /** Inode numbers recorded on device `dev` (a switchover looks up only these among its files). */
  inodesOn(dev: bigint): Set<bigint> {
    const inodes = new Set<bigint>();
    for (const recorded of this.byPath.values()) if (recorded.dev === dev) inodes.add(recorded.ino);
    return inodes;
  }

  /**
   * A switchover committed: each source file of `moves` (by inode on `dev`, as the frozen walk saw it) now lives
   * as its `to` with the same bytes. A record that was current for the source is carried over, so the file keeps
   * its cache; any other stays as it is and no longer matches.
   */
  moved(dev: bigint, moves: Map<bigint, { from: BigIntStats; to: BigIntStats }>): void {
    for (const [path, recorded] of this.byPath) {
      const move = recorded.dev === dev ? moves.get(recorded.ino) : undefined;
      if (move && same(recorded, identityOf(move.from))) this.byPath.set(path, identityOf(move.to));
    }
  }

  get size(): number {
    return this.byPath.size;
  }
}
