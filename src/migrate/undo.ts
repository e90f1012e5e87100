import { basename } from 'node:path';
import type { Beneath } from '../util/beneath.js';
import { listDir, removeTree, withObject } from '../util/beneath-tree.js';
import { faultPoint } from '../util/faults.js';
import { parentSite } from './site.js';
import type { MigrationJournal } from '../state/datastore-state.js';

/**
 * Undo of everything a migration wrote at its destination, beneath the destination's parent, never followed: the
 * engine's abort and recovery (a crash before the commit, with no checkpoint to resume from) both end here. Only
 * what the migration made goes: the directory it created for a directory's copy, or the file (and its staging)
 * in the existing parent of a one-file copy, and only when the name still has the identity the journal gave it
 * (`root`): a root still 'pending' (a crash came between its creation and the journal naming it) or with another
 * identity is left, and its path returned. A journal of an older ferry has no `root` and may name a destination
 * directory that existed before (`destDirExisted`): it is emptied and kept; one it created for a file goes too.
 */
export async function removePartialCopy(at: Beneath, journal: UndoTarget): Promise<{ left?: string }> {
  const { destDir, dest: destRoot, isFile, destDirExisted, id, root: mark } = journal;
  const dir = parentSite(destDir);
  try {
    if (isFile) await removeTree(at, dir.root, dir.path(`.ferry-staging-${id}`));
    if (mark !== undefined) {
      const found = await identityAt(at, destRoot);
      if (!found) return {};
      if (mark === 'pending' || found.dev !== mark.dev || found.ino !== mark.ino) return { left: destRoot };
    }
    if (isFile) {
      await removeTree(at, dir.root, dir.path(basename(destRoot)));
      if (!destDirExisted) {
        await dir.use('', (root, rel) => at.rmdir(root, rel)).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'ENOENT') throw err;
        });
      }
      return {};
    }
    if (!destDirExisted) {
      await removeTree(at, dir.root, dir.path(''));
      return {};
    }
    const entries = await dir.use('', (root, rel) => withObject(at, root, rel, (fd) => listDir(fd))).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [];
      throw err;
    });
    for (const entry of entries) await removeTree(at, dir.root, dir.path(entry.name));
    return {};
  } finally {
    dir.root.retire();
  }
}

export type UndoTarget = Pick<MigrationJournal, 'destDir' | 'dest' | 'isFile' | 'destDirExisted' | 'id' | 'root'>;

/** The identity of what `path` names (never followed), or undefined when nothing does. */
async function identityAt(at: Beneath, path: string): Promise<{ dev: string; ino: string } | undefined> {
  const site = parentSite(path);
  try {
    const st = await site.use('', (root, rel) => at.lstat(root, rel));
    return { dev: String(st.dev), ino: String(st.ino) };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  } finally {
    site.root.retire();
  }
}

export interface UndoSteps {
  /** Removes the checkpoint and bars new ones, while tracking and intent logging are still on. */
  barCheckpoints(): Promise<void>;
  /** Stops tracking (and mirroring) for the migration. */
  detach(): Promise<void>;
  /** Removes the partial copy. */
  removeCopy(): Promise<void>;
  removeJournal(): Promise<void>;
}

/**
 * The undo of an uncommitted migration, in the one safe order. The checkpoint goes first: from then on a crash
 * undoes the copy instead of resuming it, so no write that the stopped tracking misses can end up in a resumed copy.
 * If it cannot go, nothing else happens ('stuck': tracking stays on, a resume after a remount stays correct, and the
 * undo may be tried again). The journal goes last: a journal without a checkpoint makes the next mount finish the
 * undo ('leftover': the partial copy could not be removed now).
 */
export async function undo(steps: UndoSteps): Promise<{ outcome: 'undone' } | { outcome: 'stuck' | 'leftover'; err: unknown }> {
  await faultPoint('aborting');
  try {
    await steps.barCheckpoints();
  } catch (err) {
    return { outcome: 'stuck', err };
  }
  await faultPoint('undo-barred');
  await steps.detach();
  try {
    await steps.removeCopy();
    await faultPoint('undo-removed');
    await steps.removeJournal();
  } catch (err) {
    return { outcome: 'leftover', err };
  }
  return { outcome: 'undone' };
}
