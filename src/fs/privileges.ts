import { readFile } from 'node:fs/promises';
import { constants as C } from 'node:fs';

const S_ISUID = 0o4000;
const S_ISGID = 0o2000;

/** Who changes a file: its fsuid, and every group it is in (fsgid and supplementary groups). */
export interface Caller {
  uid: number;
  groups: readonly number[];
}

/**
 * The caller of a FUSE request, from the ids the request carries; its supplementary groups from /proc, read while
 * the calling thread waits for the reply (`pid` is its thread id). Root keeps the bits whatever its groups, so
 * its are not read. A thread that is gone counts as in its own group only: it drops more, never less.
 */
export async function callerOf(uid: number, gid: number, pid: number): Promise<Caller> {
  if (uid === 0 || pid === 0) return { uid, groups: [gid] };
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const line = /^Groups:(.*)$/m.exec(status)?.[1] ?? '';
    return { uid, groups: [gid, ...line.split(/\s+/).filter(Boolean).map(Number)] };
  } catch {
    return { uid, groups: [gid] };
  }
}

/**
 * The setuid/setgid bits that `caller`'s write, truncation or fallocate of a regular file kills, as the kernel
 * decides for local filesystems (setattr_should_drop_suidgid, Linux 6.2 and later): setuid always; setgid where
 * group execute is set, or where the caller is not in the file's group. Root (CAP_FSETID) keeps both.
 */
export function killedBits(st: { mode: number; gid: number }, caller: Caller): number {
  if (caller.uid === 0 || (st.mode & C.S_IFMT) !== C.S_IFREG) return 0;
  let kill = st.mode & S_ISUID;
  if (st.mode & S_ISGID && (st.mode & C.S_IXGRP || !caller.groups.includes(st.gid))) kill |= S_ISGID;
  return kill;
}

/** A file whose setuid/setgid a change by someone other than root may kill. */
export function hasPrivileges(mode: number): boolean {
  return (mode & (S_ISUID | S_ISGID)) !== 0;
}
