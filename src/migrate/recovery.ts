import type { Logger } from 'pino';
import type { PathMap } from '../fs/path-map.js';
import type { Beneath } from '../util/beneath.js';
import { removeTree } from '../util/beneath-tree.js';
import { siteOf } from './site.js';
import type { DatastoreState, MigrationJournal } from '../state/datastore-state.js';
import { removePartialCopy } from './engine.js';
import type { Checkpoint } from './checkpoint.js';

export interface Interrupted {
  journal: MigrationJournal;
  checkpoint: Checkpoint;
  intent: Map<bigint, Set<number>>;
}

/**
 * Finishes or sets aside migrations a crashed daemon left behind, before the mount serves anything.
 * The path map decides: if it already names the destination, the migration committed and only the
 * source deletion is left. Otherwise the source is authoritative: a migration with a checkpoint keeps its
 * partial copy and is returned, to wait for --resume or cancel; one without is undone.
 */
export async function recoverMigrations(state: DatastoreState, paths: PathMap, at: Beneath, log: Logger): Promise<Interrupted[]> {
  const interrupted: Interrupted[] = [];
  for (const journal of await state.journals()) {
    const committed = paths.resolve(journal.virtual) === journal.dest;
    const resumable = committed ? undefined : await readResumable(state, journal, log);
    if (resumable) {
      interrupted.push({ journal, ...resumable });
      log.warn({ migration: journal.id, virtual: journal.virtual, destination: journal.dest }, 'migration interrupted by a crash: resume it with ferry migrate --resume, or ferry cancel');
      continue;
    }
    if (committed) {
      if (!journal.keepSource) {
        // Committed: the source is no longer served, and is reached beneath the directory of the map that held it.
        const site = siteOf(paths, journal.source);
        try {
          await removeTree(at, site.root, site.path(''));
        } finally {
          site.root.retire();
        }
      }
      log.warn({ migration: journal.id, virtual: journal.virtual, destination: journal.dest }, 'completed a migration interrupted after its commit');
    } else {
      await removePartialCopy(at, journal.destDir, journal.dest, journal.isFile, journal.destDirExisted, journal.id);
      log.warn({ migration: journal.id, virtual: journal.virtual, source: journal.source }, 'rolled back a migration interrupted before its commit');
    }
    await state.removeJournal(journal.id);
  }
  return interrupted;
}

/**
 * The checkpoint and intent log of an uncommitted migration, if both can be trusted. A missing intent log means
 * no write was ever logged; one that cannot be read could hide writes, so the copy is not resumed but undone.
 */
async function readResumable(state: DatastoreState, journal: MigrationJournal, log: Logger): Promise<Omit<Interrupted, 'journal'> | undefined> {
  try {
    const checkpoint = await state.readSide<Checkpoint>(journal.id, 'checkpoint');
    if (!checkpoint) return undefined;
    const logged = (await state.readSide<[string, number[]][]>(journal.id, 'intent')) ?? [];
    return { checkpoint, intent: new Map(logged.map(([ino, regions]) => [BigInt(ino), new Set(regions)])) };
  } catch (err) {
    log.error({ err, migration: journal.id }, 'checkpoint or intent log unreadable: the partial copy cannot be trusted and is removed');
    return undefined;
  }
}
