import fs, { type BigIntStats } from 'node:fs';
import type { Beneath } from '../util/beneath.js';
import { fstatBig, listDir, withEntry } from '../util/beneath-tree.js';
import { faultPoint } from '../util/faults.js';
import type { Site } from './site.js';

/** Paths are relative to the subtree root; '' is the root itself (a directory, or the file of a one-file migration). */
export interface Entry {
  rel: string;
  stat: BigIntStats;
}

export interface SymlinkEntry extends Entry {
  target: string;
}

/** One inode with all its names in the subtree (several when hard-linked); the first name holds the data. */
export interface FileGroup {
  ino: bigint;
  paths: string[];
  stat: BigIntStats;
}

export interface Tree {
  /** The filesystem of the whole subtree: every entry's st_dev (an inode number means something only with it). */
  dev: bigint;
  dirs: Entry[];
  groups: FileGroup[];
  symlinks: SymlinkEntry[];
  /** FIFOs, sockets and device nodes. */
  specials: Entry[];
}

export function relJoin(rel: string, name: string): string {
  return rel === '' ? name : `${rel}/${name}`;
}

/** A walk or copy that would have gone through a symlink: the migration stops, nothing read through it. */
export function symlinkRefusal(where: string, err?: unknown): Error {
  const why = err === undefined ? 'is a symbolic link where a directory was listed' : 'cannot be reached without following a symbolic link';
  return Object.assign(new Error(`${where} ${why}: the subtree changed under the migration, and a migration never follows a symlink`), { code: 'ELOOP' });
}

/**
 * The namespace moved while it was walked: one directory under two names, a file under more names than it has
 * links, a symlink that was none when read. A rename through the mount can do that to a pass's walk (walk again);
 * with the mount frozen, only a change made in the backing store can.
 */
export const CHANGED = 'ECHANGED';

function changed(message: string): Error {
  return Object.assign(new Error(`${message}: the subtree changed while the migration walked it`), { code: CHANGED });
}

/** ELOOP or EXDEV from a resolution beneath a root: a component is a symlink (or leads out of the root). */
export function isSymlinkOnTheWay(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ELOOP' || code === 'EXDEV';
}

/**
 * Walks a backing tree (never the mount) directory fd by directory fd: each entry is opened O_PATH beneath its
 * parent's fd, never followed, and recorded with the st_dev and st_ino of what was opened; a directory is listed
 * through the fd it was opened as. A directory that the listing showed and that is a symlink when opened fails
 * the walk (a swap in the backing store), as does an entry on another filesystem, and a view no namespace can be
 * (CHANGED): such a view would give the copy a directory twice, or lose a symlink. Entries that vanish mid-walk are
 * skipped: the next pass sees the namespace as it is then. Nothing else is skipped: a readlink that fails fails
 * the walk, or the symlink would silently be missing from the copy.
 */
export function walkTree(at: Beneath, site: Site): Promise<Tree> {
  return site.use('', async (rootFd, base) => {
    let top: number;
    try {
      top = await at.object(rootFd, base);
    } catch (err) {
      if (isSymlinkOnTheWay(err)) throw symlinkRefusal(site.show(), err);
      throw err;
    }
    try {
      const st = await fstatBig(top);
      // Opened without following: a symlink here is the subtree's root swapped for one.
      if (st.isSymbolicLink()) throw symlinkRefusal(site.show());
      if (!st.isDirectory() && !st.isFile()) throw Object.assign(new Error(`${site.show()} is neither a directory nor a regular file`), { code: 'EINVAL' });
      const tree: Tree = { dev: st.dev, dirs: [], groups: [], symlinks: [], specials: [] };
      const byIno = new Map<bigint, FileGroup>();
      /** Each inode met: its first name, and how many names it was met under. */
      const met = new Map<bigint, { rel: string; names: number }>();
      const add = async (dir: number, name: string, rel: string, fd: number, stat: BigIntStats): Promise<void> => {
        if (stat.dev !== tree.dev) {
          throw Object.assign(new Error(`${site.show(rel)} is on another filesystem (a mount point in the subtree): a migration moves one filesystem's tree`), { code: 'EXDEV' });
        }
        const seen = met.get(stat.ino);
        if (seen) {
          // A directory has one name; anything else at most as many as its links.
          seen.names++;
          if (stat.isDirectory() || BigInt(seen.names) > stat.nlink) throw changed(`${site.show(rel)} and ${site.show(seen.rel)} are one inode (${stat.ino}, ${stat.nlink} link(s))`);
        } else met.set(stat.ino, { rel, names: 1 });
        if (stat.isDirectory()) {
          tree.dirs.push({ rel, stat });
          const entries = await listDir(fd);
          await faultPoint('walk-listed');
          for (const entry of entries) {
            const childRel = relJoin(rel, entry.name);
            await withEntry(at, fd, entry.name, async (child, childStat) => {
              if (entry.isDirectory() && childStat.isSymbolicLink()) throw symlinkRefusal(site.show(childRel));
              await add(fd, entry.name, childRel, child, childStat);
            });
          }
        } else if (stat.isFile()) {
          const group = byIno.get(stat.ino);
          if (group) group.paths.push(rel);
          else {
            const fresh = { ino: stat.ino, paths: [rel], stat };
            byIno.set(stat.ino, fresh);
            tree.groups.push(fresh);
          }
        } else if (stat.isSymbolicLink()) {
          let target: string;
          try {
            await faultPoint('walk-readlink');
            // By name in the pinned parent (Node cannot read a link through its O_PATH fd), never followed.
            target = await at.readlink(dir, name);
          } catch (err) {
            const code = (err as NodeJS.ErrnoException).code;
            if (code === 'ENOENT') return; // gone since it was opened, as any entry that vanishes mid-walk
            if (code === 'EINVAL') throw changed(`${site.show(rel)} stopped being a symbolic link as it was read`);
            throw err;
          }
          tree.symlinks.push({ rel, stat, target });
        } else if (stat.isFIFO() || stat.isSocket() || stat.isCharacterDevice() || stat.isBlockDevice()) {
          tree.specials.push({ rel, stat });
        }
      };
      await add(rootFd, base, '', top, st);
      for (const group of tree.groups) group.paths.sort();
      return tree;
    } finally {
      fs.closeSync(top);
    }
  });
}

/** Walks before a moving namespace fails the pass (a rename through the mount rarely meets one walk, let alone five). */
const WALK_ATTEMPTS = 5;

/** Walks a tree that renames through the mount may move meanwhile: a walk that saw it move is made again. */
export async function walkSteady(at: Beneath, site: Site): Promise<Tree> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await walkTree(at, site);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== CHANGED || attempt >= WALK_ATTEMPTS) throw err;
    }
  }
}

/** Bytes the subtree occupies on disk (what the destination must have room for). */
export function allocatedBytes(tree: Tree): number {
  let total = 0;
  for (const g of tree.groups) total += Number(g.stat.blocks) * 512;
  for (const d of tree.dirs) total += Number(d.stat.blocks) * 512;
  return total;
}
