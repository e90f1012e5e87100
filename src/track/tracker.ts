import { fstatSync } from 'node:fs';
import type { FerryData } from 'fuse-native';
import { TrackedFile, type MirrorJob, type WriteOrder } from './tracked-file.js';
import { NativeMaps } from './native-maps.js';
import { isWithin } from '../util/paths.js';

/**
 * Dirty tracking for every file of one mount, keyed by the file's path in the mount.
 * Open handles hold their TrackedFile directly, so a rename moves only the key.
 */
export class Tracker {
  private readonly byPath = new Map<string, TrackedFile>();

  constructor(
    readonly blockSize: number,
    readonly enabled: boolean,
    /** The native data path, when it serves registered handles: maps then live where C marks them. */
    private readonly native?: FerryData,
  ) {}

  /** Sessions that follow every file under their prefix from the moment it is first used (an interrupted migration). */
  private readonly following: { prefix: string; attach(file: TrackedFile): void }[] = [];

  /** The file's tracking, started now if it had none. */
  acquire(path: string): TrackedFile {
    let file = this.byPath.get(path);
    if (!file) {
      file = new TrackedFile(path, this.blockSize, this.enabled && this.native ? new NativeMaps(this.native, this.blockSize) : undefined);
      this.byPath.set(path, file);
      for (const f of this.following) if (isWithin(path, f.prefix)) f.attach(file);
    }
    return file;
  }

  follow(prefix: string, attach: (file: TrackedFile) => void): void {
    this.following.push({ prefix, attach });
    for (const [path, file] of this.byPath) if (isWithin(path, prefix)) attach(file);
  }

  unfollow(prefix: string): void {
    const index = this.following.findIndex((f) => f.prefix === prefix);
    if (index >= 0) this.following.splice(index, 1);
  }

  /**
   * Before a write reaches the backing file (resumable migrations log their intent first, keyed by inode). A
   * switchover forgets the inodes of the files it moved: the handle's backing fd tells it again, at once.
   */
  beforeWrite(file: TrackedFile, offset: number, length: number, fd?: number): Promise<unknown> | undefined {
    if (!this.enabled) return undefined;
    if (file.ino === undefined && fd !== undefined) file.ino = inodeOf(fd);
    return file.beforeWrite(offset, length);
  }

  find(path: string): TrackedFile | undefined {
    return this.byPath.get(path);
  }

  /** Right before a write reaches the backing file (see TrackedFile.beginWrite). */
  beginWrite(file: TrackedFile): WriteOrder | undefined {
    return this.enabled ? file.beginWrite() : undefined;
  }

  /** Records a successful write; returns the mirror writes the write path must finish before replying. */
  written(file: TrackedFile, offset: number, length: number, order: WriteOrder | undefined): MirrorJob[] | undefined {
    return this.enabled ? file.written(offset, length, order) : undefined;
  }

  /** After the write and its mirrors (length 0: it failed). */
  endWrite(file: TrackedFile, order: WriteOrder | undefined, offset: number, length: number): void {
    if (order) file.endWrite(order, offset, length);
  }

  /**
   * A size change dirties the bytes between the two sizes (a shrink zeroes the tail of the new last block), or,
   * where a migration mirrors the file, returns the truncates of the copies the caller must make before replying.
   */
  resized(file: TrackedFile, oldSize: number, newSize: number, order?: WriteOrder): MirrorJob[] | undefined {
    return this.enabled && oldSize !== newSize ? file.resize(oldSize, newSize, order) : undefined;
  }

  /** Bytes changed in place other than by a write (fallocate): the next pass copies them (see TrackedFile.changed). */
  changed(file: TrackedFile, offset: number, length: number): void {
    if (this.enabled) file.changed(offset, length);
  }

  unlinked(path: string): void {
    this.drop(path);
  }

  /**
   * A name goes. A linked file's `path` must stay one of its names (or the file is nameless): a handle opened
   * through another name still reaches it, and anything that looks a file up by its `path` must find this file.
   */
  private drop(path: string): void {
    const file = this.byPath.get(path);
    this.byPath.delete(path);
    if (!file || file.path !== path) return;
    for (const [other, f] of this.byPath) {
      if (f === file) {
        file.path = other;
        return;
      }
    }
  }

  linked(existing: string, newPath: string): void {
    this.byPath.set(newPath, this.acquire(existing));
  }

  /** Follows a rename of a file or of a whole directory. */
  renamed(from: string, to: string): void {
    // Two links of one file: rename(2) does nothing, and both names stay.
    if (from !== to && this.byPath.has(to) && this.byPath.get(from) === this.byPath.get(to)) return;
    for (const path of [...this.byPath.keys()]) {
      if (isWithin(path, to)) this.drop(path);
    }
    for (const [path, file] of [...this.byPath]) {
      if (!isWithin(path, from)) continue;
      const moved = to + path.slice(from.length);
      this.byPath.delete(path);
      this.byPath.set(moved, file);
      if (file.path === path) file.path = moved;
    }
  }

  entries(): IterableIterator<[string, TrackedFile]> {
    return this.byPath.entries();
  }
}

/** The inode behind a backing fd; undefined if fstat fails (the intent log then breaks rather than guess). */
function inodeOf(fd: number): bigint | undefined {
  try {
    return fstatSync(fd, { bigint: true }).ino;
  } catch {
    return undefined;
  }
}
