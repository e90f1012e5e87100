import type { FerryData } from 'fuse-native';
import type { TrackedFile } from '../track/tracked-file.js';
import type { Caller } from './privileges.js';
import { NATIVE_USE, type DirectUse } from './backing-io.js';
import { CacheRecord } from './page-cache.js';

export interface Handle {
  fd: number;
  /** How the handle uses the backing file's page cache, decided at open and kept through switchovers (src/fs/backing-io.ts). */
  directUse: DirectUse;
  /** The backing file opened with O_DIRECT too (`directUse` not 'none', and the filesystem took it). */
  directFd?: number;
  /** Flags the file was opened with, as the kernel passed them (for reopening elsewhere). */
  flags: number;
  file: TrackedFile;
  /**
   * Set when a user other than root opened the file for writing: that user. Each write, truncation and fallocate
   * through the handle first drops setuid/setgid as the kernel does on local filesystems (`killedBits`), whenever
   * they were set. The native path hands such a write to JS when it finds either bit set.
   */
  unprivilegedWriter?: Caller;
}

/**
 * Open files of the mount: FUSE file handle → underlying fd. Handle numbers are reused lowest-first.
 * With the native data path, each handle is registered there too, before the kernel learns its number.
 */
export class HandleTable {
  private readonly slots: (Handle | undefined)[] = [];
  private readonly free: number[] = [];
  private openCount = 0;
  /** Each file's backing identity when the kernel's cached pages last matched it (page-cache.ts: who changes it). */
  readonly cacheRecord = new CacheRecord();

  constructor(private readonly native?: FerryData) {}

  add(handle: Handle): number {
    const fh = this.free.length > 0 ? this.free.pop()! : this.slots.length;
    this.slots[fh] = handle;
    this.openCount++;
    this.native?.open(fh, handle.fd, handle.directFd ?? -1, handle.file.native?.ref ?? null, handle.unprivilegedWriter !== undefined, NATIVE_USE[handle.directUse]);
    return fh;
  }

  /** Points an open handle at other backing fds (switchover, while its subtree is frozen and drained). */
  setFds(fh: number, fd: number, directFd: number | undefined): void {
    const handle = this.slots[fh];
    if (!handle) return;
    handle.fd = fd;
    handle.directFd = directFd;
    this.native?.move(fh, fd, directFd ?? -1);
  }

  get(fh: number): Handle | undefined {
    return this.slots[fh];
  }

  remove(fh: number): Handle | undefined {
    const handle = this.slots[fh];
    if (!handle) return undefined;
    this.native?.close(fh);
    this.slots[fh] = undefined;
    this.free.push(fh);
    this.openCount--;
    return handle;
  }

  get size(): number {
    return this.openCount;
  }

  *entries(): IterableIterator<[number, Handle]> {
    for (let fh = 0; fh < this.slots.length; fh++) {
      const handle = this.slots[fh];
      if (handle) yield [fh, handle];
    }
  }
}
