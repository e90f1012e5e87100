import { lstat, readdir, readlink } from 'node:fs/promises';
import type { BigIntStats } from 'node:fs';
import { join } from 'node:path';
import { reachable } from '../util/long-paths.js';

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
  dirs: Entry[];
  groups: FileGroup[];
  symlinks: SymlinkEntry[];
  /** FIFOs, sockets and device nodes. */
  specials: Entry[];
}

export function relJoin(rel: string, name: string): string {
  return rel === '' ? name : `${rel}/${name}`;
}

/** The path of `rel` under `root`, as a syscall can take it (past PATH_MAX, through a link: util/long-paths). */
export function under(root: string, rel: string): string {
  return rel === '' ? root : reachable(join(root, rel));
}

/**
 * Walks a backing tree (never the mount) with lstat. Entries that vanish mid-walk are skipped:
 * the next pass sees the namespace as it is then.
 */
export async function walkTree(root: string): Promise<Tree> {
  const tree: Tree = { dirs: [], groups: [], symlinks: [], specials: [] };
  const byIno = new Map<bigint, FileGroup>();
  const visit = async (rel: string): Promise<void> => {
    const path = under(root, rel);
    let stat: BigIntStats;
    try {
      stat = await lstat(path, { bigint: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && rel !== '') return;
      throw err;
    }
    if (stat.isDirectory()) {
      tree.dirs.push({ rel, stat });
      const names = await readdir(path).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return [] as string[];
        throw err;
      });
      for (const name of names.sort()) await visit(relJoin(rel, name));
    } else if (stat.isFile()) {
      const group = byIno.get(stat.ino);
      if (group) group.paths.push(rel);
      else {
        const fresh = { ino: stat.ino, paths: [rel], stat };
        byIno.set(stat.ino, fresh);
        tree.groups.push(fresh);
      }
    } else if (stat.isSymbolicLink()) {
      const target = await readlink(path).catch(() => undefined);
      if (target !== undefined) tree.symlinks.push({ rel, stat, target });
    } else if (stat.isFIFO() || stat.isSocket() || stat.isCharacterDevice() || stat.isBlockDevice()) {
      tree.specials.push({ rel, stat });
    }
  };
  await visit('');
  for (const group of tree.groups) group.paths.sort();
  return tree;
}

/** Bytes the subtree occupies on disk (what the destination must have room for). */
export function allocatedBytes(tree: Tree): number {
  let total = 0;
  for (const g of tree.groups) total += Number(g.stat.blocks) * 512;
  for (const d of tree.dirs) total += Number(d.stat.blocks) * 512;
  return total;
}
