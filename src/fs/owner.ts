import { lstat, lchown, chmod } from 'node:fs/promises';
import { fchown, fchmod, fstat } from 'node:fs';
import { promisify } from 'node:util';
import { dirname } from 'node:path';

const S_ISUID = 0o4000;
const S_ISGID = 0o2000;
const PRIVILEGE_BITS = S_ISUID | S_ISGID;

/**
 * The mode to create an entry with before `giveToCaller`: without setuid/setgid, which the chown would clear, and
 * which must not sit on a file of root's even for a moment. giveToCaller puts them back.
 */
export function creationMode(mode: number, uid: number, gid: number): number {
  return uid === 0 && gid === 0 ? mode : mode & ~PRIVILEGE_BITS;
}

/**
 * The daemon creates entries as root; give them to the calling process, as a local filesystem would.
 * A setgid parent directory keeps its group, which the backing filesystem already applied. `mode` is the one the
 * kernel asked for (its own rules, such as setgid only for a member of the group, already applied): its
 * setuid/setgid bits are set once the entry is the caller's.
 */
export async function giveToCaller(target: string | number, backingPath: string, uid: number, gid: number, mode = 0): Promise<void> {
  if (uid === 0 && gid === 0) return;
  const parent = await lstat(dirname(backingPath));
  const group = parent.mode & S_ISGID ? -1 : gid;
  if (typeof target === 'number') await promisify(fchown)(target, uid, group);
  else await lchown(target, uid, group);
  if (!(mode & PRIVILEGE_BITS)) return;
  // Only the privilege bits: the rest is what the backing filesystem made (a default ACL may have masked it).
  if (typeof target === 'number') {
    const st = await promisify(fstat)(target);
    await promisify(fchmod)(target, (st.mode & 0o7777) | (mode & PRIVILEGE_BITS));
  } else {
    const st = await lstat(target);
    await chmod(target, (st.mode & 0o7777) | (mode & PRIVILEGE_BITS));
  }
}
