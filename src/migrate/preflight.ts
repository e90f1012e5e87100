import fsp from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, resolve, sep } from 'node:path';
import type { PathMap } from '../fs/path-map.js';
import { formatBytes } from '../util/size.js';
import type { Beneath } from '../util/beneath.js';
import { CHANGED, allocatedBytes, isSymlinkOnTheWay, symlinkRefusal, walkSteady, type Tree } from './walk.js';
import { siteOf, type Site } from './site.js';
import { isWithin } from '../util/paths.js';
import { refusePseudoFilesystem } from './dest-fs.js';

export class RefusedError extends Error {
  readonly code = 'EREFUSED';
}

/**
 * realpath that never enters the mount: each component is resolved by hand and checked against the
 * mountpoint before it is touched (a daemon that looks into its own mount deadlocks).
 * Returns the resolved existing prefix and the components below it that do not exist yet.
 */
export async function resolveOutsideMount(path: string, mountpoint: string): Promise<{ existing: string; missing: string[] }> {
  const pending = path.split(sep).filter(Boolean);
  let current = '/';
  let hops = 0;
  while (pending.length > 0) {
    const name = pending.shift()!;
    if (name === '.') continue;
    const next = name === '..' ? dirname(current) : join(current, name);
    if (isWithin(next, mountpoint)) throw new RefusedError(`destination ${path} leads into the ferry mount ${mountpoint}: give a directory outside it`);
    const st = await fsp.lstat(next).catch(() => undefined);
    if (!st) return { existing: current, missing: [name, ...pending] };
    if (st.isSymbolicLink()) {
      if (++hops > 40) throw new RefusedError(`destination ${path}: too many symbolic links`);
      const target = await fsp.readlink(next);
      pending.unshift(...target.split(sep).filter(Boolean));
      if (isAbsolute(target)) current = '/';
      continue;
    }
    current = next;
  }
  return { existing: current, missing: [] };
}

export interface Plan {
  virtual: string;
  source: string;
  /** The source beneath the directory of the path map that holds it (its Root is the migration's to retire). */
  site: Site;
  isFile: boolean;
  /** Where the subtree's root will live: the destination directory itself, or the file inside it. */
  destRoot: string;
  destDir: string;
  destDirExisted: boolean;
  tree: Tree;
  neededBytes: number;
}

export interface PreflightInput {
  virtual: string;
  dest: string;
  mountpoint: string;
  paths: PathMap;
  at: Beneath;
  tracking: boolean;
  /** The other ferry mounts on this host: their datastores and mountpoints are no place for a copy. */
  otherMounts: { datastore: string; mountpoint: string }[];
  /** An evacuation's plan checks the destination's room for all its homes at once (src/evacuate/plan.ts). */
  spaceCheckedByCaller?: boolean;
}

/** Space kept free beyond the subtree's allocated bytes: metadata, and writes during the copy. */
function marginFor(bytes: number): number {
  return Math.max(16 << 20, Math.ceil(bytes * 0.02));
}

/**
 * The destination as `mv` reads its target: an existing directory holds the subtree under its own name (the name
 * it has in the mount), a missing path is its new name (its parent must exist). A trailing slash names a directory
 * to move into. The final destination never exists yet: the migration creates it, and the undo removes only it.
 */
async function placeDestination(input: PreflightInput, isFile: boolean): Promise<{ destRoot: string; destDir: string; destDirExisted: boolean }> {
  const { mountpoint } = input;
  const lexical = resolve(input.dest);
  const into = input.dest.endsWith('/') && lexical !== '/';
  if (isWithin(lexical, mountpoint)) throw new RefusedError(`destination ${lexical} is inside the ferry mount ${mountpoint}: give a directory outside it`);
  const { existing, missing } = await resolveOutsideMount(lexical, mountpoint);
  await refusePseudoFilesystem(existing, lexical);
  if (missing.length > 1) throw new RefusedError(`the parent directory of ${lexical} does not exist: create it first`);
  let destRoot: string;
  if (missing.length === 1) {
    if (into) throw new RefusedError(`destination ${lexical}/ does not exist: a trailing slash names a directory to move into (create it, or leave out the slash to give the new name)`);
    if (!(await fsp.stat(existing)).isDirectory()) throw new RefusedError(`the parent of ${lexical} is not a directory`);
    destRoot = join(existing, missing[0]);
  } else {
    if (!(await fsp.stat(existing)).isDirectory()) throw new RefusedError(`destination ${lexical} exists and is not a directory: give a new name, or a directory to move into`);
    destRoot = join(existing, basename(input.virtual));
    if (isWithin(destRoot, mountpoint)) throw new RefusedError(`destination ${destRoot} is inside the ferry mount ${mountpoint}: give a directory outside it`);
  }
  if (await fsp.lstat(destRoot).catch(() => undefined)) throw new RefusedError(`destination ${destRoot} already exists: give a new name, or a directory to move into`);
  return isFile ? { destRoot, destDir: dirname(destRoot), destDirExisted: true } : { destRoot, destDir: destRoot, destDirExisted: false };
}

/** Every refusal of `ferry migrate`, checked before anything is written anywhere. */
export async function planMigration(input: PreflightInput): Promise<Plan> {
  const { virtual, paths } = input;
  if (!input.tracking) throw new RefusedError('this mount runs with --no-track: remount with tracking to migrate');
  if (virtual === '/') throw new RefusedError('cannot migrate the root of the mount: name a directory or file inside it');
  const nested = paths.list().find((m) => m.virtual !== virtual && m.virtual !== '/' && isWithin(m.virtual, virtual));
  if (nested) throw new RefusedError(`${virtual} contains ${nested.virtual}, which already lives at ${nested.backing}: migrate that first`);

  const source = paths.resolve(virtual);
  const site = siteOf(paths, source);
  try {
    return await planSubtree(input, source, site);
  } catch (err) {
    site.root.retire();
    throw err;
  }
}

async function planSubtree(input: PreflightInput, source: string, site: Site): Promise<Plan> {
  const { virtual, paths } = input;
  let sourceStat;
  try {
    sourceStat = await site.use('', (root, rel) => input.at.lstat(root, rel));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new RefusedError(`no such file or directory in the mount: ${virtual}`);
    if (isSymlinkOnTheWay(err)) throw new RefusedError(symlinkRefusal(source, err).message);
    throw err;
  }
  if (!sourceStat.isDirectory() && !sourceStat.isFile()) throw new RefusedError(`${virtual} is neither a directory nor a regular file`);
  const isFile = sourceStat.isFile();

  if (!isAbsolute(input.dest)) throw new RefusedError(`destination ${input.dest} must be an absolute path`);
  const { destRoot, destDir, destDirExisted } = await placeDestination(input, isFile);
  if (destRoot === source) throw new RefusedError(`destination ${destRoot} is the source itself`);
  if (isWithin(destRoot, source)) throw new RefusedError(`destination ${destRoot} is inside the source tree ${source}`);
  if (isWithin(source, destRoot)) throw new RefusedError(`the source ${source} is inside the destination ${destRoot}`);
  for (const m of paths.list()) {
    if (!isWithin(destRoot, m.backing)) continue;
    const alias = m.virtual === '/' ? destRoot.slice(m.backing.length) || '/' : m.virtual + destRoot.slice(m.backing.length);
    if (alias !== virtual) {
      throw new RefusedError(`destination ${destRoot} lies inside ${m.backing}, which this mount serves (it would show up as ${alias}): choose a directory outside the datastore`);
    }
  }

  for (const other of input.otherMounts) {
    if (isWithin(destRoot, other.datastore) || isWithin(destRoot, other.mountpoint) || isWithin(other.datastore, destRoot)) {
      throw new RefusedError(`destination ${destRoot} overlaps ${other.datastore}, which another ferry mount serves at ${other.mountpoint}: choose a directory outside it`);
    }
  }

  const tree = await walkSteady(input.at, site).catch((err: NodeJS.ErrnoException) => {
    // A symlink where the subtree had a directory, a mount point in it, or a namespace that kept moving: a refusal.
    if (err.code === 'ELOOP' || err.code === 'EXDEV' || err.code === CHANGED) throw new RefusedError(err.message);
    throw err;
  });
  // A file also linked from outside the subtree would be split in two by the move: the outside name would keep
  // the source inode, which cleanup deletes under it.
  const split = tree.groups.find((g) => g.stat.nlink > BigInt(g.paths.length));
  if (split) {
    const where = isFile ? virtual : `${virtual}/${split.paths[0]}`;
    throw new RefusedError(`${where} has ${split.stat.nlink} hard links, ${Number(split.stat.nlink) - split.paths.length} of them outside ${virtual}: moving it would split them (remove those links, or migrate a directory that holds them all)`);
  }
  const neededBytes = allocatedBytes(tree) + marginFor(allocatedBytes(tree));
  if (input.spaceCheckedByCaller) return { virtual, source, site, isFile, destRoot, destDir, destDirExisted, tree, neededBytes };
  const fs = await fsp.statfs(dirname(destRoot));
  const freeBytes = fs.bavail * fs.bsize;
  if (freeBytes < neededBytes) {
    throw new RefusedError(`not enough space at ${dirname(destRoot)}: ${formatBytes(freeBytes)} free, the migration needs ${formatBytes(neededBytes)} (data plus margin)`);
  }
  return { virtual, source, site, isFile, destRoot, destDir, destDirExisted, tree, neededBytes };
}
