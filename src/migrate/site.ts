import { basename, dirname, join } from 'node:path';
import type { PathMap } from '../fs/path-map.js';
import { Root } from '../util/beneath.js';
import { isWithin } from '../util/paths.js';

/**
 * Where a migration reads or writes: `rel` beneath a Root. The Root is a directory that root alone chose (the
 * datastore, a mapping's backing, the parent of a destination), opened by its path once; everything below it, which
 * the VM's owner may control, is reached beneath its fd and never through a symlink.
 */
export class Site {
  constructor(
    readonly root: Root,
    readonly rel: string,
  ) {}

  /** `rel` below the site as a path relative to its root. */
  path(rel: string): string {
    return rel === '' ? this.rel : this.rel === '' ? rel : `${this.rel}/${rel}`;
  }

  /** Runs `call` with the root's fd and `rel` (below the site) relative to it. */
  use<T>(rel: string, call: (fd: number, rel: string) => Promise<T>): Promise<T> {
    return this.root.use(this.path(rel), call);
  }

  /** The site of `rel` below this one, on the same root. */
  child(rel: string): Site {
    return new Site(this.root, this.path(rel));
  }

  /** For messages and logs only. */
  show(rel = ''): string {
    return join(this.root.dir, this.path(rel));
  }
}

/** `path` beneath its parent directory, opened by path: for a path root chose (a destination) or holds (a backing). */
export function parentSite(path: string): Site {
  return new Site(new Root(dirname(path)), basename(path));
}

/**
 * `path` (a migration's source) beneath the deepest directory the path map serves that holds it (the datastore, or
 * a mapping's backing), or beneath its parent when it is a backing itself. The Root is the caller's to retire.
 */
export function siteOf(paths: PathMap, path: string): Site {
  let holder: string | undefined;
  for (const { backing } of paths.list()) {
    if (backing !== path && isWithin(path, backing) && (holder === undefined || backing.length > holder.length)) holder = backing;
  }
  return holder === undefined ? parentSite(path) : new Site(new Root(holder), path.slice(holder.length).replace(/^\//, ''));
}
