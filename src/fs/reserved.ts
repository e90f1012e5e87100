import { E } from './errno.js';

/**
 * The datastore's own record of where its moved subtrees went (src/state/datastore-record.ts) lives at its root
 * under this name, which the mount never serves: nothing through the mount can read, change or shadow it.
 */
export const RESERVED_NAME = '.ferry';
const RESERVED = `/${RESERVED_NAME}`;

export function isReserved(path: string): boolean {
  return path === RESERVED || path.startsWith(`${RESERVED}/`);
}

/** Ops that make a new name at their (first) path: refused there rather than told it does not exist. */
const MAKES_NAME = new Set(['create', 'mkdir', 'mknod', 'symlink']);

/**
 * 0, or the errno an op on `path` (and `path2`, the new name of a rename or link) gets when it touches the reserved
 * name: ENOENT to look at it (it is not there), EPERM to make it.
 */
export function reservedErrno(op: string, path: string, path2?: string): number {
  if (isReserved(path)) return MAKES_NAME.has(op) ? -E.EPERM : -E.ENOENT;
  if (path2 !== undefined && isReserved(path2)) return -E.EPERM;
  return 0;
}
