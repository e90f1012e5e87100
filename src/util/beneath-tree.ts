import fs, { type BigIntStats, type Dirent } from 'node:fs';
import { posix } from 'node:path';
import { promisify } from 'node:util';
import { E } from '../fs/errno.js';
import { O_PATH, procPath, type Beneath, type Root } from './beneath.js';

/*
 * Whole trees beneath a root fd: listed, opened and removed directory fd by directory fd, so that their depth is
 * unbounded (no path grows past PATH_MAX) and no component is ever followed: every entry is opened O_PATH with
 * no-follow beneath its parent's fd, and what the call acts on is that object.
 */

const fstatAsync = promisify(fs.fstat);
const openAsync = promisify(fs.open);
const readdirAsync = promisify(fs.readdir);
const readFileAsync = promisify(fs.readFile);

export function fstatBig(fd: number): Promise<BigIntStats> {
  return fstatAsync(fd, { bigint: true });
}

/** The entries of the directory an fd (O_PATH or not) names, sorted by name. */
export async function listDir(fd: number): Promise<Dirent[]> {
  const entries = await readdirAsync(procPath(fd), { withFileTypes: true });
  return entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/**
 * Opens the object an O_PATH fd names for I/O, with `flags`: exactly that inode (through /proc/self/fd/N, which the
 * kernel resolves to it and never follows further). The caller has checked what it is: a FIFO or a device is never
 * opened by accident.
 */
export function reopen(object: number, flags: number): Promise<number> {
  return openAsync(procPath(object), flags);
}

/**
 * Like `withObject`, for an entry a listing of `dir` showed: an entry gone since (ENOENT) is skipped (undefined), as
 * a walk sees the namespace as it is now.
 */
export async function withEntry<T>(at: Beneath, dir: number, name: string, work: (fd: number, st: BigIntStats) => Promise<T>): Promise<T | undefined> {
  let fd: number;
  try {
    fd = await at.object(dir, name);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    return await work(fd, await fstatBig(fd));
  } finally {
    fs.closeSync(fd);
  }
}

/** Runs `work` on the object at `rel` beneath `root` (an O_PATH fd, never followed), closed after. */
export async function withObject<T>(at: Beneath, root: number, rel: string, work: (fd: number, st: BigIntStats) => Promise<T>): Promise<T> {
  const fd = await at.object(root, rel);
  try {
    return await work(fd, await fstatBig(fd));
  } finally {
    fs.closeSync(fd);
  }
}

function isMissing(err: unknown): boolean {
  return (err as NodeJS.ErrnoException).code === 'ENOENT';
}

/** The mount an fd's object is on (/proc's fdinfo): a bind mount of the same filesystem shares its st_dev. */
async function mountIdOf(fd: number): Promise<string | undefined> {
  const info = await readFileAsync(`/proc/self/fdinfo/${fd}`, 'utf8');
  return /^mnt_id:\s*(\d+)/m.exec(info)?.[1];
}

/** Where an object sits: its filesystem, inode and mount, to tell whether a directory below is a mount point. */
interface Place {
  dev: bigint;
  ino: bigint;
  mnt: string | undefined;
}

async function placeOf(fd: number, st: BigIntStats): Promise<Place> {
  return { dev: st.dev, ino: st.ino, mnt: await mountIdOf(fd) };
}

/**
 * Removes `rel` beneath `root` and everything under it, as `rm -rf` would, but never through a symlink (one is
 * removed as itself) and never into another filesystem: a mount point below fails the removal (EXDEV), its
 * contents untouched. `rel` itself a mount point (or a filesystem's root) is emptied and left in place, its path
 * returned: ferry never removes a mount point. A name already gone is fine.
 */
export function removeTree(at: Beneath, root: Root, rel: string): Promise<string | undefined> {
  return root.use(rel, async (fd, path) => {
    const parent = posix.dirname(path) === '.' ? '' : posix.dirname(path);
    let dir: number;
    try {
      dir = await at.open(fd, parent, O_PATH | fs.constants.O_DIRECTORY);
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw err;
    }
    try {
      const above = await placeOf(dir, await fstatBig(dir));
      return await removeIn(at, dir, posix.basename(path), above, true, `${root.dir}/${path}`);
    } finally {
      fs.closeSync(dir);
    }
  });
}

/**
 * Removes `name` in the directory `dir` (at `above`); at the top of a removal, a mount point is emptied and kept
 * (its path returned), below it one fails the removal.
 */
async function removeIn(at: Beneath, dir: number, name: string, above: Place, top: boolean, shown: string): Promise<string | undefined> {
  let object: number;
  try {
    object = await at.object(dir, name);
  } catch (err) {
    if (isMissing(err)) return undefined;
    throw err;
  }
  let isDirectory: boolean;
  let mountPoint: boolean;
  try {
    const st = await fstatBig(object);
    isDirectory = st.isDirectory();
    const here = isDirectory ? await placeOf(object, st) : undefined;
    mountPoint = st.dev !== above.dev || (here !== undefined && (here.mnt !== above.mnt || here.ino === above.ino));
    if (mountPoint && !top) throw Object.assign(new Error(`${shown} is a mount point: not removed`), { code: 'EXDEV', errno: -E.EXDEV });
    if (here) for (const entry of await listDir(object)) await removeIn(at, object, entry.name, here, false, `${shown}/${entry.name}`);
  } finally {
    fs.closeSync(object);
  }
  if (mountPoint) return shown;
  // By name in the pinned parent, never followed: if the name was swapped since, the call fails on what is there
  // (or removes a symlink as itself).
  try {
    if (isDirectory) await at.rmdir(dir, name);
    else await at.unlink(dir, name);
  } catch (err) {
    if (!isMissing(err)) throw err;
  }
  return undefined;
}
