import fs, { constants as C } from 'node:fs';
import { posix } from 'node:path';
import { promisify } from 'node:util';
import { E } from '../fs/errno.js';
import type { Beneath } from '../util/beneath.js';
import { reopen, removeTree, withObject } from '../util/beneath-tree.js';
import { type Tree, type Entry, walkTree } from './walk.js';
import { Site } from './site.js';

const S_IFMT = BigInt(C.S_IFMT);
/** Files and directories flushed at once: enough for the filesystem to fold them into few journal commits. */
const FLUSH_BATCH = 64;
const fsyncAsync = promisify(fs.fsync);

type Kind = 'dir' | 'file' | 'symlink' | 'special';

function kindOf(entry: Entry): Kind {
  if (entry.stat.isDirectory()) return 'dir';
  if (entry.stat.isFile()) return 'file';
  if (entry.stat.isSymbolicLink()) return 'symlink';
  return 'special';
}

function codeOf(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException).code;
}

/** Resolves to undefined when the name is missing; any other failure is the caller's. */
async function unlessMissing<T>(work: Promise<T>): Promise<T | undefined> {
  try {
    return await work;
  } catch (err) {
    if (codeOf(err) === 'ENOENT') return undefined;
    throw err;
  }
}

/**
 * The destination copy of a subtree (VMware's "shadow"). Each pass brings its namespace in line with the
 * source tree: source inodes are followed through renames (the destination file is moved, not recopied),
 * hard links are kept, entries gone from the source are removed. Data is copied separately, by the engine.
 *
 * Every call is made beneath the destination's root fd, never through a symlink: once the copy's directories are
 * given to the VM's owner (applyMetadata), that user may rename entries in them, and a chmod, chown or open by
 * the daemon must still land on the copy's own entries, or fail.
 */
export class Shadow {
  /** Source inode → destination path (relative) of the file holding its data. */
  private readonly placed = new Map<bigint, string>();
  /** The copy's root: the destination directory, or the file in it (a one-file migration). */
  readonly copy: Site;
  private readonly staging: Site;
  /** The staging directory's name in the copy ('' for a one-file copy, which holds no directory). */
  private readonly stagingName: string;
  /** The directory holding the copy's root, whose entry for it a flush makes durable. */
  /** Directories whose entries name the copy: fsynced with it (a one-file copy's new directory too). */
  private readonly holders: Site[];

  constructor(
    private readonly at: Beneath,
    /** The destination directory. */
    dir: Site,
    fileName: string | undefined,
    id: string,
    private readonly source: Site,
  ) {
    this.copy = fileName === undefined ? dir : dir.child(fileName);
    this.staging = dir.child(`.ferry-staging-${id}`);
    this.stagingName = fileName === undefined ? `.ferry-staging-${id}` : '';
    const above = posix.dirname(dir.rel);
    const parent = new Site(dir.root, above === '.' ? '' : above);
    this.holders = fileName === undefined ? [parent] : [dir, parent];
  }

  /** Where each source inode's copy is (for a checkpoint). */
  placedEntries(): [bigint, string][] {
    return [...this.placed];
  }

  /** Takes over the placement a checkpoint recorded (resume after a crash). */
  restore(entries: [bigint, string][]): void {
    for (const [ino, rel] of entries) this.placed.set(ino, rel);
  }

  /** Forgets a placement that no longer names the same file (its inode number was reused). */
  forget(ino: bigint): void {
    this.placed.delete(ino);
  }

  /** Where the copy of a source inode is, relative to the root; undefined for an inode the copy does not hold. */
  placedPath(ino: bigint): string | undefined {
    const rel = this.placed.get(ino);
    return rel === '\0staged' ? undefined : rel;
  }

  /** The copy of a source inode, opened with `flags` (see openFile). */
  open(ino: bigint, flags: number): Promise<number> {
    return this.openFile(this.placed.get(ino)!, flags);
  }

  /**
   * The regular file at `rel` in the copy, opened with `flags`: looked at first (O_PATH, never followed), so that a
   * FIFO or device swapped in by the directory's owner is refused rather than opened.
   */
  openFile(rel: string, flags: number): Promise<number> {
    return this.copy.use(rel, (root, path) =>
      withObject(this.at, root, path, async (object, st) => {
        if (!st.isFile()) throw Object.assign(new Error(`${this.copy.show(rel)} is no longer a regular file`), { code: 'EINVAL' });
        return reopen(object, flags);
      }),
    );
  }

  /** lstat of an entry of the copy. */
  lstat(rel: string): Promise<fs.BigIntStats> {
    return this.copy.use(rel, (root, path) => this.at.lstat(root, path));
  }

  /** Brings the namespace in line with `tree`; returns the inodes whose destination file is new (copy in full, holes allowed). */
  async sync(tree: Tree): Promise<Set<bigint>> {
    const { at } = this;
    const groups = new Map(tree.groups.map((g) => [g.ino, g]));
    const wanted = new Map<string, Kind>();
    for (const e of [...tree.dirs, ...tree.symlinks, ...tree.specials]) wanted.set(e.rel, kindOf(e));
    for (const g of tree.groups) for (const p of g.paths) wanted.set(p, 'file');

    // Files whose inode is gone from the source lose their copy; files renamed since the last pass step aside.
    await this.mkdir(this.staging, '');
    for (const [ino, rel] of [...this.placed]) {
      const group = groups.get(ino);
      if (!group) {
        this.placed.delete(ino);
        await unlessMissing(this.copy.use(rel, (root, path) => at.unlink(root, path)));
      } else if (group.paths[0] !== rel) {
        await this.copy.use(rel, (root, path) => at.rename(root, path, root, this.staging.path(String(ino))));
        this.placed.set(ino, '\0staged');
      }
    }
    const primaryAt = new Map<string, bigint>();
    for (const [ino, rel] of this.placed) primaryAt.set(rel, ino);
    await this.prune(wanted, groups, primaryAt);

    // In walk order: a directory before what it holds.
    for (const dir of tree.dirs) await this.mkdir(this.copy, dir.rel);
    const fresh = new Set<bigint>();
    for (const group of tree.groups) {
      const primary = group.paths[0];
      await this.copy.use(primary, async (root, target) => {
        if (this.placed.get(group.ino) === '\0staged') {
          await at.rename(root, this.staging.path(String(group.ino)), root, target);
        } else if (!this.placed.has(group.ino)) {
          // O_NONBLOCK: a FIFO the owner of a directory of the copy put there fails the open (ENXIO), never hangs it.
          fs.closeSync(await at.open(root, target, C.O_CREAT | C.O_TRUNC | C.O_WRONLY | C.O_NONBLOCK, 0o600));
          fresh.add(group.ino);
        }
        this.placed.set(group.ino, primary);
        const primaryIno = (await at.lstat(root, target)).ino;
        for (const secondary of group.paths.slice(1)) {
          const path = this.copy.path(secondary);
          const existing = await unlessMissing(at.lstat(root, path));
          if (existing?.ino === primaryIno) continue;
          if (existing) await at.unlink(root, path);
          await at.link(root, target, root, path);
        }
      });
    }
    for (const link of tree.symlinks) {
      await this.copy.use(link.rel, async (root, path) => {
        const current = await unlessMissing(at.lstat(root, path));
        if (current?.isSymbolicLink() && (await at.readlink(root, path)) === link.target) return;
        if (current) await at.unlink(root, path);
        await at.symlink(link.target, root, path);
      });
    }
    for (const special of tree.specials) {
      await this.copy.use(special.rel, async (root, path) => {
        const existing = await unlessMissing(at.lstat(root, path));
        const { mode, rdev } = special.stat;
        if (existing && (existing.mode & S_IFMT) === (mode & S_IFMT) && existing.rdev === rdev) return;
        if (existing) await at.unlink(root, path);
        // mknod(2) itself: sockets too (a QEMU monitor's), which mknod(1) cannot make. setMetadata sets the mode.
        await at.mknod(root, path, Number(mode & S_IFMT) | 0o600, Number(rdev));
      });
    }
    await removeTree(at, this.staging.root, this.staging.path(''));
    return fresh;
  }

  /** mkdir (0700: only root, until applyMetadata) of `rel` in `site`; one there already is fine. */
  private async mkdir(site: Site, rel: string): Promise<void> {
    try {
      await site.use(rel, (root, path) => this.at.mkdir(root, path, 0o700));
    } catch (err) {
      if (codeOf(err) !== 'EEXIST') throw err;
    }
  }

  /** Removes destination entries the source no longer has (or has as another kind or another file). */
  private async prune(wanted: Map<string, Kind>, groups: Map<bigint, { paths: string[] }>, primaryAt: Map<string, bigint>): Promise<void> {
    const existing = await unlessMissing(walkTree(this.at, this.copy));
    if (!existing) return;
    const entries: Entry[] = [...existing.dirs, ...existing.symlinks, ...existing.specials];
    for (const g of existing.groups) for (const p of g.paths) entries.push({ rel: p, stat: g.stat });
    for (const entry of entries) {
      if (this.stagingName !== '' && (entry.rel === this.stagingName || entry.rel.startsWith(this.stagingName + '/'))) continue;
      const kind = kindOf(entry);
      let keep = wanted.get(entry.rel) === kind;
      if (keep && kind === 'file') {
        const ino = primaryAt.get(entry.rel);
        const ownerIsPrimary = ino !== undefined && groups.get(ino)?.paths[0] === entry.rel;
        const isSecondary = [...groups.values()].some((g) => g.paths.indexOf(entry.rel) > 0);
        keep = ownerIsPrimary || isSecondary;
      }
      if (!keep) await removeTree(this.at, this.copy.root, this.copy.path(entry.rel));
    }
  }

  /** Extended attributes, owners, modes and times as the source has them: files first, then directories deepest first. */
  async applyMetadata(tree: Tree): Promise<void> {
    for (const group of tree.groups) {
      const rel = this.placed.get(group.ino)!;
      await this.copyXattrs(group.paths[0], rel);
      await this.setMetadata(rel, group.stat);
    }
    for (const dir of tree.dirs) await this.copyXattrs(dir.rel, dir.rel);
    for (const link of tree.symlinks) {
      await this.copy.use(link.rel, (root, path) => this.at.chown(root, path, Number(link.stat.uid), Number(link.stat.gid)));
      await this.setTimes(link.rel, link.stat);
    }
    for (const special of tree.specials) await this.setMetadata(special.rel, special.stat);
    const dirs = [...tree.dirs].sort((a, b) => b.rel.split('/').length - a.rel.split('/').length);
    for (const dir of dirs) await this.setMetadata(dir.rel, dir.stat);
  }

  /** Never through a symlink: chown and chmod act on the entry itself (chmod refuses a symlink). */
  private async setMetadata(rel: string, stat: Entry['stat']): Promise<void> {
    await this.copy.use(rel, async (root, path) => {
      // chown first: it clears setuid/setgid bits that chmod then restores.
      await this.at.chown(root, path, Number(stat.uid), Number(stat.gid));
      await this.at.chmod(root, path, Number(stat.mode) & 0o7777);
    });
    await this.setTimes(rel, stat);
  }

  /** To the nanosecond (Node's utimes takes seconds as a double), never following a symlink. */
  private setTimes(rel: string, stat: Entry['stat']): Promise<void> {
    const { atimeNs: a, mtimeNs: m } = stat;
    const G = 1_000_000_000n;
    return this.copy.use(rel, (root, path) => this.at.utimens(root, path, [Number(a / G), Number(a % G)], [Number(m / G), Number(m % G)]));
  }

  /** Object to object, each reached beneath its root and never followed. */
  private async copyXattrs(from: string, to: string): Promise<void> {
    const { at } = this;
    // ENODATA (the name went since it was listed) and EOPNOTSUPP (a filesystem without xattrs) leave nothing to copy.
    const absent = (err: unknown) => {
      const errno = (err as { errno?: number }).errno;
      if (errno === -E.ENODATA || errno === -E.EOPNOTSUPP) return undefined;
      throw err;
    };
    const names = (await this.source.use(from, (root, path) => at.listxattr(root, path)).catch(absent)) ?? [];
    for (const name of names) {
      const value = await this.source.use(from, (root, path) => at.getxattr(root, path, name)).catch(absent);
      if (value) await this.copy.use(to, (root, path) => at.setxattr(root, path, name, value)).catch(absent);
    }
  }

  /**
   * fsync every file and directory of the copy, and the directory holding its root: in batches, so that a home of
   * many files does not run out of fds. Each is looked at first (O_PATH) and must be a file or directory.
   */
  async flush(): Promise<void> {
    const tree = await walkTree(this.at, this.copy);
    const targets: [Site, string][] = [...tree.groups.map((g): [Site, string] => [this.copy, g.paths[0]]), ...tree.dirs.map((d): [Site, string] => [this.copy, d.rel]), ...this.holders.map((h): [Site, string] => [h, ''])];
    for (let i = 0; i < targets.length; i += FLUSH_BATCH) {
      await Promise.all(targets.slice(i, i + FLUSH_BATCH).map(([site, rel]) => this.fsync(site, rel)));
    }
  }

  private fsync(site: Site, rel: string): Promise<void> {
    return site.use(rel, (root, path) =>
      withObject(this.at, root, path, async (object, st) => {
        if (!st.isFile() && !st.isDirectory()) throw Object.assign(new Error(`${site.show(rel)} is neither a file nor a directory`), { code: 'EINVAL' });
        const fd = await reopen(object, C.O_RDONLY);
        try {
          await fsyncAsync(fd);
        } finally {
          fs.closeSync(fd);
        }
      }),
    );
  }
}
