import { constants } from 'node:os';

export const E = constants.errno;

/** Node fs errors carry libuv's negative errno, which FUSE expects as is; anything else is an I/O error. */
export function toErrno(err: unknown): number {
  const errno = typeof err === 'object' && err !== null ? (err as { errno?: unknown }).errno : undefined;
  return typeof errno === 'number' && errno < 0 ? errno : -E.EIO;
}
