import { posix } from 'node:path';
import { isWithin } from '../util/paths.js';

export interface Mapping {
  /** A path in the mount: '/' or '/dir/sub' (no trailing slash). */
  virtual: string;
  /** The absolute backing directory or file that serves it. */
  backing: string;
}

/** Which backing directory serves each path of the mount: the longest matching prefix wins. */
export class PathMap {
  private mappings: Mapping[];
  /** Subtrees that migrations work on (running or interrupted): set and cleared by the migrations' claims. */
  private readonly pinned = new Set<string>();

  constructor(root: string, extra: Mapping[] = []) {
    this.mappings = [];
    this.set({ virtual: '/', backing: root });
    for (const m of extra) this.set(m);
  }

  set(mapping: Mapping): void {
    this.mappings = this.mappings.filter((m) => m.virtual !== mapping.virtual);
    this.mappings.push(mapping);
    this.mappings.sort((a, b) => b.virtual.length - a.virtual.length);
  }

  remove(virtual: string): void {
    if (virtual !== '/') this.mappings = this.mappings.filter((m) => m.virtual !== virtual);
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
