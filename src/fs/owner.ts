import { lstat, lchown } from 'node:fs/promises';
import { fchown } from 'node:fs';
import { promisify } from 'node:util';
import { dirname } from 'node:path';

const S_ISGID = 0o2000;

/**
 * The daemon creates entries as root; give them to the calling process, as a local filesystem would.
 * A setgid parent directory keeps its group, which the backing filesystem already applied.
 */
export async function giveToCaller(target: string | number, backingPath: string, uid: number, gid: number): Promise<void> {
  if (uid === 0 && gid === 0) return;
  const parent = await lstat(dirname(backingPath));
  const group = parent.mode & S_ISGID ? -1 : gid;
  if (typeof target === 'number') await promisify(fchown)(target, uid, group);
  else await lchown(target, uid, group);
}
