import { listMounts } from '../util/mounts.js';
import { isWithin } from '../util/paths.js';
import { RefusedError } from './preflight.js';

/** Kernel pseudo filesystems: they show files, but hold no data (statfs says 0 B free, which misleads). */
const PSEUDO = new Set(['proc', 'sysfs', 'devtmpfs', 'devpts', 'cgroup', 'cgroup2', 'debugfs', 'tracefs', 'securityfs', 'pstore', 'bpf', 'configfs', 'efivarfs', 'fusectl', 'mqueue', 'binfmt_misc', 'nsfs', 'autofs', 'rpc_pipefs', 'hugetlbfs']);

/** Refuses a destination whose nearest existing directory lies on a pseudo filesystem (/proc, /sys, /dev...). */
export async function refusePseudoFilesystem(existing: string, dest: string): Promise<void> {
  // The mount holding `existing`: the deepest mount point above it, the last mounted there if several.
  let holder: { mountpoint: string; fstype: string } | undefined;
  for (const entry of await listMounts()) {
    if (isWithin(existing, entry.mountpoint) && (!holder || entry.mountpoint.length >= holder.mountpoint.length)) holder = entry;
  }
  if (holder && PSEUDO.has(holder.fstype)) {
    throw new RefusedError(`destination ${dest} is on a ${holder.fstype} filesystem (${holder.mountpoint}), a kernel pseudo filesystem: not a place for VM disks; give a directory on real storage`);
  }
}
