import { posix } from 'node:path';
import { isWithin } from '../util/paths.js';
import { rootOf, type Root } from '../util/beneath.js';

export interface Mapping {
  /** A path in the mount: '/' or '/dir/sub' (no trailing slash). */
  virtual: string;
  /** The absolute backing directory or file that serves it. */
  backing: string;
}

/** Where an op acts: `rel` beneath `root` ('' is the root itself). */
export interface Place {
  root: Root;
  rel: string;
}

/**
 * Which backing directory serves each path of the mount: the longest matching prefix wins. Each mapping's backing
 * is held as a Root (an O_PATH fd, opened when the mapping is set): ops resolve beneath it, never by its path.
 */
export class PathMap {
  private mappings: Mapping[];
  /** The root of each mapping, by virtual path: replaced and retired with it. */
  private readonly roots = new Map<string, Root>();
  /** Subtrees that migrations work on (running or interrupted): set and cleared by the migrations' claims. */
  private readonly pinned = new Set<string>();

  constructor(root: string, extra: Mapping[] = []) {
    this.mappings = [];
    this.set({ virtual: '/', backing: root });
    for (const m of extra) this.set(m);
  }

  set(mapping: Mapping): void {
    this.roots.get(mapping.virtual)?.retire();
    this.roots.set(mapping.virtual, rootOf(mapping.backing));
    this.mappings = this.mappings.filter((m) => m.virtual !== mapping.virtual);
    this.mappings.push(mapping);
    this.mappings.sort((a, b) => b.virtual.length - a.virtual.length);
  }

  remove(virtual: string): void {
    if (virtual === '/') return;
    this.mappings = this.mappings.filter((m) => m.virtual !== virtual);
    this.roots.get(virtual)?.retire();
    this.roots.delete(virtual);
  }

  list(): Mapping[] {
    return [...this.mappings];
  }

  /** The mapping that serves `path`. */
  mappingOf(path: string): Mapping {
    for (const m of this.mappings) {
      if (isWithin(path, m.virtual)) return m;
    }
    throw new Error(`no mapping for ${path}`);
  }

  resolve(path: string): string {
    const m = this.mappingOf(path);
    if (m.virtual === '/') return m.backing + (path === '/' ? '' : path);
    return m.backing + path.slice(m.virtual.length);
  }

  /** The root that serves `path`, and `path` relative to it. */
  place(path: string): Place {
    const m = this.mappingOf(path);
    const rel = m.virtual === '/' ? path.slice(1) : path.slice(m.virtual.length + 1);
    return { root: this.roots.get(m.virtual)!, rel };
  }

  /** True when `path` is itself the root of a non-root mapping (it cannot be renamed or removed like a plain entry). */
  isMappingRoot(path: string): boolean {
    return path !== '/' && this.mappings.some((m) => m.virtual === path);
  }

  pin(virtual: string): void {
    this.pinned.add(virtual);
  }

  unpin(virtual: string): void {
    this.pinned.delete(virtual);
  }

  /**
   * True when renaming or removing `path` would move or drop a mapped or migrating subtree: it is the root of one,
   * or an ancestor of one (the subtree would vanish from the namespace while its mapping stays).
   */
  holdsSubtree(path: string): boolean {
    if (path === '/') return false;
    for (const m of this.mappings) if (m.virtual !== '/' && isWithin(m.virtual, path)) return true;
    for (const virtual of this.pinned) if (isWithin(virtual, path)) return true;
    return false;
  }

  /** True when a hard link between `a` and `b` would cross the edge of a migrating subtree. */
  crossesPinned(a: string, b: string): boolean {
    for (const virtual of this.pinned) if (isWithin(a, virtual) !== isWithin(b, virtual)) return true;
    return false;
  }

  /** Names of mapped subtrees directly inside `dir`, which readdir must show even if the backing dir lacks them. */
  mappedChildren(dir: string): string[] {
    return this.mappings.filter((m) => m.virtual !== '/' && posix.dirname(m.virtual) === dir).map((m) => posix.basename(m.virtual));
  }
}
