import fs from 'node:fs';
import { join } from 'node:path';

/** Bytes of a path one syscall takes, its NUL included (Linux). */
const PATH_MAX = 4096;

/**
 * Paths past PATH_MAX. A tree can be deeper than one syscall's path can say (ext4's users reach such paths with
 * `cd`); a backing path is the mount's path plus a directory's, so it passes PATH_MAX first. The daemon's working
 * directory is the datastore, so a long path there is passed relative to it (as long as the mount's own path).
 * Every other directory it serves or copies under (a root) gets a short symbolic link in a private directory
 * of the state dir, open for the daemon's life, and a long path under it goes as
 * `/proc/self/fd/<that dir>/<link>/<rest>`: the kernel resolves the link's target apart.
 *
 * State, JS thread only: `roots` only grows in a daemon's life (the datastore, and the parent of every mapping's
 * backing and migration destination); a link, made on first use, names its root until the daemon exits and names
 * are never reused, so an op in flight cannot be sent to another directory. A daemon that never calls
 * `useLinkDir` (and any other process) gets every path back unchanged.
 */
const roots: string[] = [];
const links = new Map<string, string>();
let linkDir: { path: string; fd: number } | undefined;
let cwdRoot: string | undefined;

/** Makes `dir` (recreated empty, 0700, in the private state dir) the home of the links, and `cwd` the working directory. */
export function useLinkDir(dir: string, cwd: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { mode: 0o700 });
  linkDir = { path: dir, fd: fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY) };
  process.chdir(cwd);
  cwdRoot = cwd;
  addRoot(cwd);
}

/** Paths under `root` (absolute, normalized) may be reached through its link. */
export function addRoot(root: string): void {
  if (roots.includes(root)) return;
  roots.push(root);
  roots.sort((a, b) => b.length - a.length);
}

/** `path` as one syscall can take it: itself, or past PATH_MAX relative to the link of a root above it. */
export function reachable(path: string): string {
  // Every op of the mount comes here: count UTF-8 bytes only when 3 per UTF-16 unit could reach PATH_MAX.
  if (path.length * 3 < PATH_MAX || Buffer.byteLength(path) < PATH_MAX) return path;
  return viaRoot(path);
}

/**
 * `path` relative to the link of the nearest root strictly above it, whatever its length: for a recursive
 * removal, whose paths grow as it descends. `path` itself when no root is above it or the link cannot be made
 * (the syscall then fails as it would have).
 */
function viaRoot(path: string): string {
  if (linkDir === undefined) return path;
  const root = roots.find((r) => path.startsWith(r === '/' ? '/' : r + '/') && path !== r);
  if (root === undefined) return path;
  if (root === cwdRoot) return path.slice(root.length + 1);
  let link = links.get(root);
  if (link === undefined) {
    const name = String(links.size);
    try {
      fs.symlinkSync(root, join(linkDir.path, name));
    } catch {
      return path;
    }
    links.set(root, (link = `/proc/self/fd/${linkDir.fd}/${name}`));
  }
  return link + (root === '/' ? path : path.slice(root.length));
}

/** Removes a tree that may hold paths past PATH_MAX (Node's recursive rm joins absolute paths). */
export function removeTree(path: string): Promise<void> {
  return fs.promises.rm(viaRoot(path), { recursive: true, force: true });
}
