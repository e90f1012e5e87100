import fs from 'node:fs';
import { posix } from 'node:path';
import { promisify } from 'node:util';
import type { Beneath } from '../util/beneath.js';

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
 * The daemon creates entries as root; give them to the calling process, as a local filesystem would. `rel` is the
 * new entry beneath `root`, never followed (a symlink gets its own owner); `fd`, when given, is the entry opened,
 * and is what changes.
 * A setgid parent directory keeps its group, which the backing filesystem already applied. `mode` is the one the
 * kernel asked for (its own rules, such as setgid only for a member of the group, already applied): its
 * setuid/setgid bits are set once the entry is the caller's.
 */
export async function giveToCaller(at: Beneath, root: number, rel: string, fd: number | undefined, uid: number, gid: number, mode = 0): Promise<void> {
  if (uid === 0 && gid === 0) return;
  const parent = await at.lstat(root, posix.dirname(rel) === '.' ? '' : posix.dirname(rel));
  const group = parent.mode & BigInt(S_ISGID) ? -1 : gid;
  if (fd !== undefined) await promisify(fs.fchown)(fd, uid, group);
  else await at.chown(root, rel, uid, group);
  if (!(mode & PRIVILEGE_BITS)) return;
  // Only the privilege bits: the rest is what the backing filesystem made (a default ACL may have masked it).
  if (fd !== undefined) {
    const st = await promisify(fs.fstat)(fd);
    await promisify(fs.fchmod)(fd, (st.mode & 0o7777) | (mode & PRIVILEGE_BITS));
  } else {
    const st = await at.lstat(root, rel);
    await at.chmod(root, rel, (Number(st.mode) & 0o7777) | (mode & PRIVILEGE_BITS));
  }
}
