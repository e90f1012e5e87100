import fsp from 'node:fs/promises';
import type { Logger } from 'pino';
import type { PathMap } from '../fs/path-map.js';
import type { DatastoreState } from '../state/datastore-state.js';
import { removePartialCopy } from './engine.js';

/**
 * Finishes or undoes migrations a crashed daemon left behind, before the mount serves anything.
 * The path map decides: if it already names the destination, the migration committed and only the
 * source deletion is left; otherwise the source is authoritative and the partial copy goes.
 */
export async function recoverMigrations(state: DatastoreState, paths: PathMap, log: Logger): Promise<void> {
  for (const journal of await state.journals()) {
    if (paths.resolve(journal.virtual) === journal.dest) {
      if (!journal.keepSource) await fsp.rm(journal.source, { recursive: true, force: true });
      log.warn({ migration: journal.id, virtual: journal.virtual, destination: journal.dest }, 'completed a migration interrupted after its commit');
    } else {
      await removePartialCopy(journal.destDir, journal.dest, journal.isFile, journal.destDirExisted, journal.id);
      log.warn({ migration: journal.id, virtual: journal.virtual, source: journal.source }, 'rolled back a migration interrupted before its commit');
    }
    await state.removeJournal(journal.id);
  }
}
