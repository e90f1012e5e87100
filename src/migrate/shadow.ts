import fsp from 'node:fs/promises';
import { constants as C } from 'node:fs';
import { dirname, join } from 'node:path';
import type { FerryIo } from 'fuse-native';
import { ioError } from '../fs/errno.js';
import { type Tree, type Entry, under, walkTree } from './walk.js';
import { removeTree } from '../util/long-paths.js';

const S_IFMT = BigInt(C.S_IFMT);


type Kind = 'dir' | 'file' | 'symlink' | 'special';

function kindOf(entry: Entry): Kind {
  if (entry.stat.isDirectory()) return 'dir';
  if (entry.stat.isFile()) return 'file';
  if (entry.stat.isSymbolicLink()) return 'symlink';
  return 'special';
}

async function ignoreMissing(work: Promise<unknown>): Promise<void> {
  await work.catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
}

/**
 * The destination copy of a subtree (VMware's "shadow"). Each pass brings its namespace in line with the
 * source tree: source inodes are followed through renames (the destination file is moved, not recopied),
 * hard links are kept, entries gone from the source are removed. Data is copied separately, by the engine.
 */
export class Shadow {
  /** Source inode → destination path (relative) of the file holding its data. */
  private readonly placed = new Map<bigint, string>();
  private readonly staging: string;

  constructor(
    readonly root: string,
    readonly isFile: boolean,
    id: string,
    private readonly source: string,
    private readonly io: FerryIo,
  ) {
    this.staging = isFile ? join(dirname(root), `.ferry-staging-${id}`) : join(root, `.ferry-staging-${id}`);
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

  pathOf(ino: bigint): string {
    return under(this.root, this.placed.get(ino)!);
  }

  /** Brings the namespace in line with `tree`; returns the inodes whose destination file is new (copy in full, holes allowed). */
  async sync(tree: Tree): Promise<Set<bigint>> {
    const groups = new Map(tree.groups.map((g) => [g.ino, g]));
    const wanted = new Map<string, Kind>();
    for (const e of [...tree.dirs, ...tree.symlinks, ...tree.specials]) wanted.set(e.rel, kindOf(e));
    for (const g of tree.groups) for (const p of g.paths) wanted.set(p, 'file');

    // Files whose inode is gone from the source lose their copy; files renamed since the last pass step aside.
    await fsp.mkdir(this.staging, { recursive: true, mode: 0o700 });
    for (const [ino, rel] of [...this.placed]) {
      const group = groups.get(ino);
      if (!group) {
        this.placed.delete(ino);
        await ignoreMissing(fsp.unlink(under(this.root, rel)));
      } else if (group.paths[0] !== rel) {
        await fsp.rename(under(this.root, rel), join(this.staging, String(ino)));
        this.placed.set(ino, '\0staged');
      }
    }
    const primaryAt = new Map<string, bigint>();
    for (const [ino, rel] of this.placed) primaryAt.set(rel, ino);
    await this.prune(wanted, groups, primaryAt);

    for (const dir of tree.dirs) await fsp.mkdir(under(this.root, dir.rel), { recursive: true, mode: 0o700 });
    const fresh = new Set<bigint>();
    for (const group of tree.groups) {
      const target = under(this.root, group.paths[0]);
      if (this.placed.get(group.ino) === '\0staged') {
        await fsp.rename(join(this.staging, String(group.ino)), target);
      } else if (!this.placed.has(group.ino)) {
        await (await fsp.open(target, C.O_CREAT | C.O_TRUNC | C.O_WRONLY, 0o600)).close();
        fresh.add(group.ino);
      }
      this.placed.set(group.ino, group.paths[0]);
      const primaryIno = (await fsp.lstat(target)).ino;
      for (const secondary of group.paths.slice(1)) {
        const path = under(this.root, secondary);
        const existing = await fsp.lstat(path).catch(() => undefined);
        if (existing?.ino === primaryIno) continue;
        if (existing) await fsp.unlink(path);
        await fsp.link(target, path);
      }
    }
    for (const link of tree.symlinks) {
      const path = under(this.root, link.rel);
      const current = await fsp.readlink(path).catch(() => undefined);
      if (current === link.target) continue;
      if (current !== undefined) await fsp.unlink(path);
      await fsp.symlink(link.target, path);
    }
    for (const special of tree.specials) {
      const path = under(this.root, special.rel);
      const existing = await fsp.lstat(path, { bigint: true }).catch(() => undefined);
      const { mode, rdev } = special.stat;
      if (existing && (existing.mode & S_IFMT) === (mode & S_IFMT) && existing.rdev === rdev) continue;
      if (existing) await fsp.unlink(path);
      // mknod(2) itself: sockets too (a QEMU monitor's), which mknod(1) cannot make. setMetadata sets the mode.
      const err = await new Promise<number>((resolve) => this.io.mknod(path, Number(mode & S_IFMT) | 0o600, Number(rdev), resolve));
      if (err) throw ioError(err, `mknod ${path}`);
    }
    await removeTree(this.staging);
    return fresh;
  }

  /** Removes destination entries the source no longer has (or has as another kind or another file). */
  private async prune(wanted: Map<string, Kind>, groups: Map<bigint, { paths: string[] }>, primaryAt: Map<string, bigint>): Promise<void> {
    const existing = await walkTree(this.root).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    });
    if (!existing) return;
    const stagingName = this.staging.slice(this.root.length + 1);
    const entries: Entry[] = [...existing.dirs, ...existing.symlinks, ...existing.specials];
    for (const g of existing.groups) for (const p of g.paths) entries.push({ rel: p, stat: g.stat });
    for (const entry of entries) {
      if (entry.rel === stagingName || entry.rel.startsWith(stagingName + '/')) continue;
      const kind = kindOf(entry);
      let keep = wanted.get(entry.rel) === kind;
      if (keep && kind === 'file') {
        const ino = primaryAt.get(entry.rel);
        const ownerIsPrimary = ino !== undefined && groups.get(ino)?.paths[0] === entry.rel;
        const isSecondary = [...groups.values()].some((g) => g.paths.indexOf(entry.rel) > 0);
        keep = ownerIsPrimary || isSecondary;
      }
      if (!keep) await removeTree(join(this.root, entry.rel));
    }
  }

  /** Extended attributes, owners, modes and times as the source has them: files first, then directories deepest first. */
  async applyMetadata(tree: Tree): Promise<void> {
    for (const group of tree.groups) {
      await this.copyXattrs(under(this.source, group.paths[0]), this.pathOf(group.ino));
      await this.setMetadata(this.pathOf(group.ino), group.stat);
    }
    for (const dir of tree.dirs) await this.copyXattrs(under(this.source, dir.rel), under(this.root, dir.rel));
    for (const link of tree.symlinks) {
      const path = under(this.root, link.rel);
      await fsp.lchown(path, Number(link.stat.uid), Number(link.stat.gid));
      await this.setTimes(path, link.stat);
    }
    for (const special of tree.specials) await this.setMetadata(under(this.root, special.rel), special.stat);
    const dirs = [...tree.dirs].sort((a, b) => b.rel.split('/').length - a.rel.split('/').length);
    for (const dir of dirs) await this.setMetadata(under(this.root, dir.rel), dir.stat);
  }

  private async setMetadata(path: string, stat: Entry['stat']): Promise<void> {
    // chown first: it clears setuid/setgid bits that chmod then restores.
    await fsp.lchown(path, Number(stat.uid), Number(stat.gid));
    await fsp.chmod(path, Number(stat.mode) & 0o7777);
    await this.setTimes(path, stat);
  }

  /** To the nanosecond (Node's utimes takes seconds as a double), never following a symlink. */
  private setTimes(path: string, stat: Entry['stat']): Promise<void> {
    const { atimeNs: a, mtimeNs: m } = stat;
    const G = 1_000_000_000n;
    return new Promise((resolve, reject) =>
      this.io.utimensat(path, Number(a / G), Number(a % G), Number(m / G), Number(m % G), this.io.AT_SYMLINK_NOFOLLOW, (err) =>
        err ? reject(ioError(err, `setting the times of ${path}`)) : resolve(),
      ),
    );
  }

  private async copyXattrs(from: string, to: string): Promise<void> {
    const call = <T>(fn: (cb: (err: number, value?: T) => void) => void) =>
      new Promise<T | undefined>((resolve, reject) => fn((err, value) => (err === -61 || err === -95 ? resolve(undefined) : err ? reject(ioError(err, `the xattr copy of ${from}`)) : resolve(value))));
    const names = (await call<string[]>((cb) => this.io.llistxattr(from, cb))) ?? [];
    for (const name of names) {
      const value = await call<Buffer>((cb) => this.io.lgetxattr(from, name, cb));
      if (value) await call((cb) => this.io.lsetxattr(to, name, value, 0, cb));
    }
  }

  /** fsync every file and directory of the copy, and the directory holding its root. */
  async flush(): Promise<void> {
    const tree = await walkTree(this.root);
    const paths = [...tree.groups.map((g) => under(this.root, g.paths[0])), ...tree.dirs.map((d) => under(this.root, d.rel)), dirname(this.root)];
    // In parallel: the filesystem can fold the flushes into one journal commit.
    await Promise.all(
      paths.map(async (path) => {
        const handle = await fsp.open(path, 'r');
        try {
          await handle.sync();
        } finally {
          await handle.close();
        }
      }),
    );
  }
}
