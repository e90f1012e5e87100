import { readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { errnoCode } from './user-error.js';

const run = promisify(execFile);

export interface MountEntry {
  /** The mount's ID (mountinfo's first field), as /proc/<pid>/fdinfo's mnt_id names it. */
  id: string;
  mountpoint: string;
  fstype: string;
  source: string;
  /** The device number's minor part: for a FUSE mount, its connection under /sys/fs/fuse/connections. */
  minor: string;
}

/** mountinfo escapes space, tab, newline and backslash as octal. */
function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export async function listMounts(): Promise<MountEntry[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const mounts: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const [left, right] = line.split(' - ');
    const fields = left.split(' ');
    const [fstype, source] = right.split(' ');
    mounts.push({ id: fields[0], mountpoint: unescapeMountField(fields[4]), fstype, source: unescapeMountField(source), minor: fields[2].split(':')[1] });
  }
  return mounts;
}

export async function findMount(mountpoint: string): Promise<MountEntry | undefined> {
  const mounts = await listMounts();
  // The last entry wins: it is the one stacked on top.
  return mounts.filter((m) => m.mountpoint === mountpoint).at(-1);
}

/** A FUSE mount whose server is gone answers every access with ENOTCONN. */
export async function isDeadMount(path: string): Promise<boolean> {
  try {
    await stat(path);
    return false;
  } catch (err) {
    return errnoCode(err) === 'ENOTCONN';
  }
}

export async function lazyUnmount(mountpoint: string): Promise<void> {
  try {
    await run('fusermount', ['-uz', mountpoint]);
  } catch {
    await run('umount', ['-l', mountpoint]);
  }
}

const CONNECTIONS = '/sys/fs/fuse/connections';

/**
 * Aborts a hung FUSE connection (the only way out when its server stops answering): writes 1 to
 * /sys/fs/fuse/connections/<minor>/abort. If fusectl had to be mounted there for that, it is unmounted again.
 */
export async function abortFuseConnection(mountpoint: string): Promise<boolean> {
  const mount = await findMount(mountpoint);
  if (!mount?.fstype.startsWith('fuse')) return false;
  const mountedHere = (await readdir(CONNECTIONS).catch(() => [])).length === 0 && (await run('mount', ['-t', 'fusectl', 'fusectl', CONNECTIONS]).then(() => true, () => false));
  try {
    await writeFile(`${CONNECTIONS}/${mount.minor}/abort`, '1');
    return true;
  } catch {
    return false;
  } finally {
    if (mountedHere) await run('umount', [CONNECTIONS]).catch(() => undefined);
  }
}
