import type { Logger } from 'pino';
import type { PathMap } from '../fs/path-map.js';
import type { Beneath } from '../util/beneath.js';
import { removeTree } from '../util/beneath-tree.js';
import { siteOf, type Site } from './site.js';
import type { MigrationOptions, Mode } from './context.js';
import type { Plan } from './preflight.js';
import { walkTree } from './walk.js';
import { BEAT_SLACK_MS, type DatastoreState, type MigrationJournal } from '../state/datastore-state.js';
import { removePartialCopy } from './undo.js';
import { CheckpointSchema, IntentLogSchema, type Checkpoint } from './checkpoint.js';

/** The options an interrupted migration was started with (`--resume` may change some). */
export function journalOptions(journal: MigrationJournal): MigrationOptions {
  const { virtual, destDir, mode, maxDowntimeMs, maxIterations, rateLimit, keepSource } = journal;
  return { virtual, dest: destDir, mode: mode as Mode, maxDowntimeMs, maxIterations, rateLimit, keepSource, guestIoPriority: false };
}

/** An interrupted migration's plan: its source and destination as the journal recorded them, served from `site`. */
export function journalPlan(journal: MigrationJournal, site: Site): Plan {
  const { virtual, source, isFile, dest, destDir, destDirExisted } = journal;
  return { virtual, source, site, isFile, destRoot: dest, destDir, destDirExisted, tree: { dev: 0n, dirs: [], groups: [], symlinks: [], specials: [] }, neededBytes: 0 };
}

export interface Interrupted {
  journal: MigrationJournal;
  checkpoint: Checkpoint;
  intent: Map<bigint, Set<number>>;
  /** Source inodes changed while no daemon tracked them ('all': cannot tell): the resume copies them whole. */
  changed: Set<bigint> | 'all';
}


/**
 * Finishes or sets aside migrations a crashed daemon left behind, before the mount serves anything.
 * The path map decides: if it already names the destination, the migration committed and only the
 * source deletion is left. Otherwise the source is authoritative: a migration with a checkpoint keeps its
 * partial copy and is returned, to wait for --resume or cancel; one without is undone.
 */
export async function recoverMigrations(state: DatastoreState, paths: PathMap, at: Beneath, log: Logger): Promise<Interrupted[]> {
  const interrupted: Interrupted[] = [];
  // Read before this daemon beats for the first time: it is the crashed daemon's last sign of life.
  const lastBeat = await state.lastBeat();
  for (const journal of await state.journals()) {
    const committed = paths.resolve(journal.virtual) === journal.dest;
    const resumable = committed ? undefined : await readResumable(state, journal, log);
    if (resumable) {
      interrupted.push({ journal, ...resumable, changed: await changedWhileDown(at, paths, journal, resumable.checkpoint, lastBeat, log) });
      log.warn({ migration: journal.id, virtual: journal.virtual, destination: journal.dest }, 'migration interrupted by a crash: resume it with ferry migrate --resume, or ferry cancel');
      continue;
    }
    if (committed) {
      if (!journal.keepSource) {
        // Committed: the source is no longer served, and is reached beneath the directory of the map that held it.
        const site = siteOf(paths, journal.source);
        try {
          const kept = await removeTree(at, site.root, site.path(''));
          if (kept) log.warn({ migration: journal.id, path: kept }, 'the source is a mount point: its contents removed, the directory left in place');
        } finally {
          site.root.retire();
        }
      }
      log.warn({ migration: journal.id, virtual: journal.virtual, destination: journal.dest }, 'completed a migration interrupted after its commit');
    } else {
      const { left } = await removePartialCopy(at, journal);
      log.warn({ migration: journal.id, virtual: journal.virtual, source: journal.source }, 'rolled back a migration interrupted before its commit');
      // A crash between making the root and naming it in the journal, or a name someone else made: not ours to remove.
      if (left) log.warn({ migration: journal.id, left }, `left ${left}: the crashed migration cannot prove it made it; remove it if it is empty and not yours`);
    }
    await state.removeJournal(journal.id);
  }
  return interrupted;
}

/**
 * The checkpoint and intent log of an uncommitted migration, if both can be trusted. A missing intent log means
 * no write was ever logged; one that cannot be read could hide writes, so the copy is not resumed but undone.
 */
async function readResumable(state: DatastoreState, journal: MigrationJournal, log: Logger): Promise<Omit<Interrupted, 'journal' | 'changed'> | undefined> {
  try {
    const stored = await state.readSide<unknown>(journal.id, 'checkpoint');
    if (stored === undefined) return undefined;
    const checkpoint = CheckpointSchema.parse(stored);
    const logged = IntentLogSchema.parse((await state.readSide<unknown>(journal.id, 'intent')) ?? []);
    return { checkpoint, intent: new Map(logged.map(([ino, regions]) => [BigInt(ino), new Set(regions)])) };
  } catch (err) {
    log.error({ err, migration: journal.id }, 'checkpoint or intent log unreadable or of another shape: the partial copy cannot be trusted and is removed');
    return undefined;
  }
}

/**
 * Source files changed while no daemon tracked them: a ctime later than the crashed daemon's last heartbeat (plus
 * its period). Without a heartbeat, any ctime other than the one the checkpoint recorded when the file's copy last
 * started (a file the crashed daemon wrote since then is copied whole too). Looked at before the mount serves
 * anything, so no write of the new daemon's counts. A change made within BEAT_SLACK_MS of the last beat, or one
 * that restored the ctime, goes unseen (README, "Crashes and resume").
 */
async function changedWhileDown(at: Beneath, paths: PathMap, journal: MigrationJournal, checkpoint: Checkpoint, lastBeat: number | undefined, log: Logger): Promise<Set<bigint> | 'all'> {
  const recorded = new Map((checkpoint.identity ?? []).map(([ino, , , ctimeNs]) => [BigInt(ino), BigInt(ctimeNs)]));
  if (lastBeat === undefined) log.warn({ migration: journal.id }, 'no heartbeat of the crashed daemon: the resume copies whole every file whose ctime differs from its checkpoint');
  const site = siteOf(paths, journal.source);
  try {
    const tree = await walkTree(at, site);
    const after = lastBeat === undefined ? undefined : BigInt(lastBeat + BEAT_SLACK_MS) * 1_000_000n;
    const changed = tree.groups.filter((g) => (after === undefined ? recorded.get(g.ino) !== g.stat.ctimeNs : g.stat.ctimeNs > after));
    if (changed.length > 0) log.warn({ migration: journal.id, files: changed.map((g) => g.paths[0]) }, 'files changed while ferry was down: the resume copies them whole');
    return new Set(changed.map((g) => g.ino));
  } catch (err) {
    log.warn({ err, migration: journal.id }, 'cannot tell which files changed while ferry was down: the resume copies every file whole');
    return 'all';
  } finally {
    site.root.retire();
  }
}
