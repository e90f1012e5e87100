import fs from 'node:fs';
import { join } from 'node:path';

/** Bytes of a path one syscall takes, its NUL included (Linux). */
export const PATH_MAX = 4096;

/**
 * Paths past PATH_MAX. A tree can be deeper than one syscall's path can say (ext4's users reach such paths with
 * `cd`); a backing path is the mount's path plus a directory's, so it passes PATH_MAX first. The daemon gives each
 * directory it serves or copies under (a root) a short symbolic link in a private directory that is its working
 * directory, and passes a long path as `<link>/<rest>`: the kernel resolves the link's target apart.
 *
 * State, JS thread only: `roots` only grows in a daemon's life (the datastore, and the parent of every mapping's
 * backing and migration destination); a link, made on first use, names its root until the daemon exits and names
 * are never reused, so an op in flight cannot be sent to another directory. A daemon that never calls
 * `useLinkDir` (and any other process) gets every path back unchanged.
 */
const roots: string[] = [];
const links = new Map<string, string>();
let linkDir: string | undefined;

/** Makes `dir` (recreated empty, 0700, in the private state dir) the home of the links and the working directory. */
export function useLinkDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { mode: 0o700 });
  process.chdir(dir);
  linkDir = dir;
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
export function viaRoot(path: string): string {
  if (linkDir === undefined) return path;
  const root = roots.find((r) => path.startsWith(r === '/' ? '/' : r + '/') && path !== r);
  if (root === undefined) return path;
  let link = links.get(root);
  if (link === undefined) {
    const name = String(links.size);
    try {
      fs.symlinkSync(root, join(linkDir, name));
    } catch {
      return path;
    }
    links.set(root, (link = name));
  }
  return link + (root === '/' ? path : path.slice(root.length));
}

/** Removes a tree that may hold paths past PATH_MAX (Node's recursive rm joins absolute paths). */
export function removeTree(path: string): Promise<void> {
  return fs.promises.rm(viaRoot(path), { recursive: true, force: true });
}
