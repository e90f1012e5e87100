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

/**
 * For an open with O_DIRECT through the mount, the same inode opened again with O_DIRECT (through the plain fd's
 * /proc link, never a name): a cache=none guest's I/O keeps out of the host's page cache (issue 29 goal 3).
 * undefined without O_DIRECT, or when the backing filesystem refuses O_DIRECT (EINVAL): the handle then has only
 * its plain fd, as before.
 */
export async function openDirect(fd: number, flags: number): Promise<number | undefined> {
  if (!(flags & C.O_DIRECT)) return undefined;
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
 * The JS path's read of a handle: an O_DIRECT one through Fuse.io's direct read (aligned requests direct, others the
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

/** The JS path's write of a handle; an O_DIRECT one's data is copied into aligned memory by Fuse.io. */
export function writeHandle(io: FerryIo, handle: Handle, buf: Buffer, len: number, pos: number, done: Done): void {
  if (handle.directFd === undefined) return fs.write(handle.fd, buf, 0, len, pos, done);
  io.directWrite(handle.fd, handle.directFd, buf.subarray(0, len), pos, (err, written) => {
    done(err ? ioError(err, 'write') : null, written ?? 0);
  });
}

/** Closes a handle's backing fds. */
export function closeBacking(handle: Handle, done: (err: NodeJS.ErrnoException | null) => void): void {
  if (handle.directFd !== undefined) fs.close(handle.directFd, () => undefined);
  fs.close(handle.fd, done);
}
