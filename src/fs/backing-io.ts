import fs from 'node:fs';
import { constants as C } from 'node:fs';
import type { FerryIo } from 'fuse-native';
import type { Handle } from './handles.js';
import { ioError } from './errno.js';
import { reopen } from '../util/beneath-tree.js';
import { faultPoint } from '../util/faults.js';

/**
 * The kernel already resolved O_APPEND's offset, O_CREAT/O_EXCL and O_TRUNC; the backing fd must write exactly
 * where the kernel said (so tracking sees the real offset). O_DIRECT goes to a second fd (`openDirect`).
 */
const KERNEL_HANDLED = C.O_APPEND | C.O_DIRECT | C.O_CREAT | C.O_EXCL | C.O_TRUNC | C.O_NOCTTY;

/** The flags of a handle's plain backing fd, for an open through the mount with `flags`. */
export function backingFlags(flags: number): number {
  return flags & ~KERNEL_HANDLED;
}

/** linux/fuse.h's FOPEN_DIRECT_IO (kernel ABI): the open's reply bypasses the FUSE inode's page cache. */
const FOPEN_DIRECT_IO = 1;

/**
 * Which of a handle's I/O takes its O_DIRECT twin (native-notes/io-routes.md, goals 2 and 3):
 * - 'all': opened with O_DIRECT: a cache=none guest's reads and writes keep out of the host's page cache;
 * - 'reads': page-cached (the open's reply has no direct_io): the FUSE inode's page cache is the one cache, so the
 *   daemon's reads must not fill the backing file's as well: a sequential read takes the twin; on the native path
 *   a random one takes the plain fd with the read-around and drops the pages it read (native/ferry/data.c); writes
 *   stay buffered on the plain fd;
 * - 'none': a direct_io open without O_DIRECT (served from the backing's cache, with read-around), or a
 *   page-cached write-only one (the kernel sends it no READ).
 * Keyed on `fuseOpenFlags`, the open's reply as the one function that decides it computed it.
 */
export type DirectUse = 'all' | 'reads' | 'none';

/** The same three as native/ferry/data.h's FERRY_USE_* (the native data path's handle table). */
export const NATIVE_USE: Record<DirectUse, number> = { none: 0, reads: 1, all: 2 };

export function directUse(flags: number, fuseOpenFlags: number): DirectUse {
  if (flags & C.O_DIRECT) return 'all';
  if (fuseOpenFlags & FOPEN_DIRECT_IO || (flags & (C.O_WRONLY | C.O_RDWR)) === C.O_WRONLY) return 'none';
  return 'reads';
}

/**
 * The same inode opened again with O_DIRECT (through the plain fd's /proc link, never a name), for a handle whose
 * `use` is not 'none'. undefined otherwise, or when the backing filesystem refuses O_DIRECT (EINVAL): the handle
 * then has only its plain fd, as before.
 */
export async function openDirect(fd: number, flags: number, use: DirectUse): Promise<number | undefined> {
  if (use === 'none') return undefined;
  try {
    await faultPoint('open-direct');
    return await reopen(fd, backingFlags(flags) | C.O_DIRECT);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EINVAL') return undefined;
    throw err;
  }
}

type Done = (err: Error | null, bytes: number) => void;

/**
 * The JS path's read of a handle: one with an O_DIRECT twin (opened with O_DIRECT, or page-cached) through Fuse.io's direct read (aligned requests direct, others the
 * counted fallback; native/ferry/direct.h), which reads into aligned memory of its own: Node's Buffers are not.
 */
export function readHandle(io: FerryIo, handle: Handle, buf: Buffer, len: number, pos: number, done: Done): void {
  if (handle.directFd === undefined) return fs.read(handle.fd, buf, 0, len, pos, done);
  io.directRead(handle.fd, handle.directFd, len, pos, (err, data) => {
    if (err) return done(ioError(err, 'read'), 0);
    data!.copy(buf);
    done(null, data!.length);
  });
}

/**
 * The JS path's write of a handle; an O_DIRECT one's data is copied into aligned memory by Fuse.io. A page-cached
 * handle's writes stay buffered (its twin is for reads).
 */
export function writeHandle(io: FerryIo, handle: Handle, buf: Buffer, len: number, pos: number, done: Done): void {
  if (handle.directFd === undefined || handle.directUse !== 'all') return fs.write(handle.fd, buf, 0, len, pos, done);
  io.directWrite(handle.fd, handle.directFd, buf.subarray(0, len), pos, (err, written) => {
    done(err ? ioError(err, 'write') : null, written ?? 0);
  });
}

/** Closes a handle's backing fds. */
export function closeBacking(handle: Handle, done: (err: NodeJS.ErrnoException | null) => void): void {
  if (handle.directFd !== undefined) fs.close(handle.directFd, () => undefined);
  fs.close(handle.fd, done);
}
