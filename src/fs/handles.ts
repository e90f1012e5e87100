import type { TrackedFile } from '../track/tracked-file.js';

export interface Handle {
  fd: number;
  /** Flags the file was opened with, as the kernel passed them (for reopening elsewhere). */
  flags: number;
  file: TrackedFile;
}

/** Open files of the mount: FUSE file handle → underlying fd. Handle numbers are reused lowest-first. */
export class HandleTable {
  private readonly slots: (Handle | undefined)[] = [];
  private readonly free: number[] = [];
  private openCount = 0;

  add(handle: Handle): number {
    const fh = this.free.length > 0 ? this.free.pop()! : this.slots.length;
    this.slots[fh] = handle;
    this.openCount++;
    return fh;
  }

  get(fh: number): Handle | undefined {
    return this.slots[fh];
  }

  remove(fh: number): Handle | undefined {
    const handle = this.slots[fh];
    if (!handle) return undefined;
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
