import { constants } from 'node:os';

export const E = constants.errno;

/** Node fs errors carry libuv's negative errno, which FUSE expects as is; anything else is an I/O error. */
export function toErrno(err: unknown): number {
  const errno = typeof err === 'object' && err !== null ? (err as { errno?: unknown }).errno : undefined;
  return typeof errno === 'number' && errno < 0 ? errno : -E.EIO;
}

const NAMES = new Map(Object.entries(E).map(([name, n]) => [n, name]));

/** An Error for a negative errno from Fuse.io, with the code Node's own fs errors would carry. */
export function ioError(err: number, what: string): Error & { errno: number; code: string } {
  const code = NAMES.get(-err) ?? `E${-err}`;
  return Object.assign(new Error(`${what} failed: ${code}`), { errno: err, code });
}
