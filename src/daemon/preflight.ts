import { realpath, readdir, stat, access } from 'node:fs/promises';
import { constants } from 'node:fs';
import { delimiter, join, resolve } from 'node:path';
import { abortFuseConnection, findMount, isDeadMount, lazyUnmount } from '../util/mounts.js';
import { UserError, errnoCode } from '../util/user-error.js';
import { isWithin } from '../util/paths.js';

export interface MountPaths {
  datastore: string;
  mountpoint: string;
}

async function onPath(program: string): Promise<boolean> {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    try {
      await access(join(dir, program), constants.X_OK);
      return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

/** What a crashed ferry daemon left (a restart under systemd finds it): another filesystem's is not ours to clear. */
async function clearDeadMount(mountpoint: string): Promise<void> {
  const dead = await findMount(mountpoint);
  if (dead?.fstype !== 'fuse.ferry') throw new UserError(`${mountpoint} is a dead ${dead?.fstype ?? 'FUSE'} mount, not ferry's: clear it yourself (umount -l ${mountpoint})`);
  await abortFuseConnection(mountpoint);
  await lazyUnmount(mountpoint);
}

/** Everything `ferry mount` refuses, checked before anything is created or mounted. */
export async function checkMountPaths(datastoreArg: string, mountpointArg: string, clearDead: boolean): Promise<MountPaths> {
  const datastoreAbs = resolve(datastoreArg);
  const mountpointAbs = resolve(mountpointArg);

  const datastoreStat = await stat(datastoreAbs).catch((err: unknown) => {
    throw new UserError(
      errnoCode(err) === 'ENOENT' ? `datastore ${datastoreAbs} does not exist` : `cannot use datastore ${datastoreAbs}: ${errnoCode(err)}`,
    );
  });
  if (!datastoreStat.isDirectory()) throw new UserError(`datastore ${datastoreAbs} is not a directory`);

  if (await isDeadMount(mountpointAbs)) {
    if (!clearDead) {
      throw new UserError(`${mountpointAbs} is a dead FUSE mount (its daemon is gone): clear it with \`ferry unmount --force ${mountpointAbs}\`, or mount with --clear-dead`);
    }
    await clearDeadMount(mountpointAbs);
  }
  const mountpointStat = await stat(mountpointAbs).catch((err: unknown) => {
    throw new UserError(
      errnoCode(err) === 'ENOENT'
        ? `mountpoint ${mountpointAbs} does not exist: create it with mkdir first`
        : `cannot use mountpoint ${mountpointAbs}: ${errnoCode(err)}`,
    );
  });
  if (!mountpointStat.isDirectory()) throw new UserError(`mountpoint ${mountpointAbs} is not a directory`);

  const datastore = await realpath(datastoreAbs);
  const mountpoint = await realpath(mountpointAbs);
  const existing = await findMount(mountpoint);
  if (existing) {
    throw new UserError(`${mountpoint} is already a mount (${existing.fstype}): unmount it first or choose another mountpoint`);
  }
  if (isWithin(mountpoint, datastore)) throw new UserError(`mountpoint ${mountpoint} is inside the datastore ${datastore}: put it outside`);
  if (isWithin(datastore, mountpoint)) throw new UserError(`datastore ${datastore} is inside the mountpoint ${mountpoint}: put it outside`);
  if ((await readdir(mountpoint)).length > 0) throw new UserError(`mountpoint ${mountpoint} is not empty: choose an empty directory`);

  if (!(await onPath('fusermount'))) throw new UserError('fusermount is missing: install it with `apt-get install fuse` (or run scripts/setup.sh)');
  return { datastore, mountpoint };
}
