import { readdir, readFile } from 'node:fs/promises';
import { listMounts, type MountEntry } from '../util/mounts.js';

const EVERY_MS = 250;

/**
 * Calls `onGone` once the FUSE session is over: the mount has left the mount table (umount, fusermount -u,
 * umount -l) and nothing holds it any more. A lazily detached mount still serves the processes that keep files
 * open on it; when the last one closes, the kernel may tear the connection down before that file's RELEASE
 * reaches us, so "no open handle here" is not enough: no process may have a file of this mount open either
 * (/proc/<pid>/fdinfo names each fd's mount). Reads /proc only; it never touches the mount (the daemon must not).
 */
export function watchMount(mount: MountEntry, openFiles: () => number, onGone: () => void): { stop(): void } {
  let checking = false;
  const timer = setInterval(() => {
    if (checking) return;
    checking = true;
    isOver(mount, openFiles)
      .then((over) => {
        if (!over) return;
        clearInterval(timer);
        onGone();
      })
      .catch(() => undefined)
      .finally(() => (checking = false));
  }, EVERY_MS);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}

async function isOver(mount: MountEntry, openFiles: () => number): Promise<boolean> {
  if ((await listMounts()).some((m) => m.id === mount.id)) return false;
  return openFiles() === 0 || !(await anyProcessHolds(mount.id));
}

async function anyProcessHolds(mountId: string): Promise<boolean> {
  const pattern = new RegExp(`^mnt_id:\\s*${mountId}$`, 'm');
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const fds = await readdir(`/proc/${pid}/fdinfo`).catch(() => [] as string[]);
    for (const fd of fds) {
      const info = await readFile(`/proc/${pid}/fdinfo/${fd}`, 'utf8').catch(() => '');
      if (pattern.test(info)) return true;
    }
  }
  return false;
}
