import type { Logger } from 'pino';
import { rootOf, type Beneath } from '../util/beneath.js';
import { UserError } from '../util/user-error.js';
import type { DatastoreState, StoredMapping } from '../state/datastore-state.js';
import type { DatastoreRecord, PendingMove } from '../state/datastore-record.js';
import { isWithin } from '../util/paths.js';
import { naturalBacking } from './commits.js';

/**
 * At mount, before recovery: makes the state dir's path map agree with the datastore's own record
 * (src/state/datastore-record.ts), which every commit updates before and after the state dir's.
 * - agreeing: nothing said;
 * - the state dir has no path map, or one that lacks or adds entries: the record wins, the state dir is rewritten,
 *   and the returned line says so;
 * - both name different places for one subtree, or a commit under way whose outcome nothing can tell: UserError.
 * A pending entry whose migration the state dir still journals is left to recovery (the state dir that knew is
 * here); the record is rewritten from the outcome after recovery (`DatastoreRecord.write`).
 */
export async function reconcileRecord(record: DatastoreRecord, state: DatastoreState, stateDir: string, at: Beneath, log: Logger): Promise<string | undefined> {
  const stored = await record.read();
  if (!stored) return undefined;
  const map = await state.storedMappings();
  const journaled = new Set((await state.journals()).map((j) => j.id));
  let moved: StoredMapping[] = stored.moved;
  // Subtrees the state dir decides on: a commit it journals is finished or undone by recovery.
  const deferred = new Set<string>();
  for (const pending of stored.pending) {
    if (journaled.has(pending.migration)) {
      deferred.add(pending.virtual);
      continue;
    }
    if (await committed(record, pending, moved, map, at)) moved = applied(record.datastore, moved, pending);
  }

  const own = new Map((map ?? []).map((m) => [m.virtual, m.backing]));
  for (const { virtual, backing } of moved) {
    const other = own.get(virtual);
    if (other !== undefined && other !== backing && !deferred.has(virtual)) {
      throw new UserError(`the datastore's record ${record.path} says ${virtual} lives at ${backing}, the state dir ${stateDir} says ${other}: find which holds the VM's current data, then move the wrong one aside (the record, or the state dir's ${state.dir}/mappings.json) and mount again (README, "If the state dir is lost")`, 1);
    }
  }
  const next = [...moved.filter((m) => !deferred.has(m.virtual)), ...(map ?? []).filter((m) => deferred.has(m.virtual))];
  if (sameMap(next, map ?? [])) return undefined;
  await state.saveMappings(next);
  const served = next.length === 0 ? 'every subtree from the datastore itself' : next.map((m) => `${m.virtual} from ${m.backing}`).join(', ');
  const notice = `the state dir ${stateDir} ${map === undefined ? 'knew nothing of' : 'disagreed with'} the datastore's record ${record.path}: the record wins, serving ${served} (the state dir now agrees)`;
  log.warn({ record: record.path, stateDir, before: map ?? null, after: next }, notice);
  return notice;
}

/**
 * Whether a commit the state dir no longer journals happened. The state dir's map tells, if it shows exactly the
 * map before or after it. Otherwise the disk: the source goes only after a commit, the copy only after an abort.
 */
async function committed(record: DatastoreRecord, pending: PendingMove, moved: StoredMapping[], map: StoredMapping[] | undefined, at: Beneath): Promise<boolean> {
  if (map && sameMap(map, applied(record.datastore, moved, pending))) return true;
  if (map && sameMap(map, moved)) return false;
  const rest = without(moved, pending.virtual);
  // Where the subtree lived before this commit: its own entry (a move back, or on), else where the map puts it.
  const own = moved.find((m) => m.virtual === pending.virtual)?.backing;
  const source = own ?? naturalBacking([{ virtual: '/', backing: record.datastore }, ...rest], pending.virtual);
  // In the datastore itself: beneath its fd. Elsewhere (moved, or a subtree of a moved one): beneath its parent.
  const inDatastore = own === undefined && !rest.some((m) => isWithin(pending.virtual, m.virtual));
  const sourceThere = inDatastore ? await record.holds(pending.virtual.slice(1)) : await exists(at, source);
  const destThere = await exists(at, pending.backing);
  if (destThere !== sourceThere) return destThere;
  throw new UserError(`the move of ${pending.virtual} from ${source} to ${pending.backing} (migration ${pending.migration}) was under way and the state dir that knew how it ended is gone; ${sourceThere ? 'both copies exist' : 'neither copy exists'}: ${sourceThere ? 'remove the one the VM must not run from (with the mount down) and mount again' : 'restore one of them and mount again'} (README, "If the state dir is lost")`, 1);
}

/** The map `moved` after the commit `pending`: its own entry, or none when it moves back to where it would be anyway. */
function applied(datastore: string, moved: StoredMapping[], pending: PendingMove): StoredMapping[] {
  const rest = without(moved, pending.virtual);
  const natural = naturalBacking([{ virtual: '/', backing: datastore }, ...rest], pending.virtual);
  return natural === pending.backing ? rest : [...rest, { virtual: pending.virtual, backing: pending.backing }];
}

function without(moved: StoredMapping[], virtual: string): StoredMapping[] {
  return moved.filter((m) => m.virtual !== virtual);
}

function sameMap(a: StoredMapping[], b: StoredMapping[]): boolean {
  const text = (m: StoredMapping[]) => JSON.stringify(m.map(({ virtual, backing }) => [virtual, backing]).sort());
  return text(a) === text(b);
}

/**
 * The line to print when moved subtrees' backings do not exist on this host (a datastore brought from another host
 * whose destinations sit elsewhere here): they are served, and fail with ENOENT until their directory appears.
 */
export async function missingBackings(mappings: StoredMapping[], at: Beneath): Promise<string | undefined> {
  const missing: StoredMapping[] = [];
  for (const m of mappings) if (!(await exists(at, m.backing))) missing.push(m);
  if (missing.length === 0) return undefined;
  return `moved subtrees whose files are not at their recorded place on this host: ${missing.map((m) => `${m.virtual} (${m.backing})`).join(', ')}; they fail with ENOENT until that path holds them: mount or bind-mount their datastore there (README, "If the state dir is lost")`;
}

/** Whether `path` exists, looked at beneath its parent's fd without following its last component. */
async function exists(at: Beneath, path: string): Promise<boolean> {
  const root = rootOf(path);
  try {
    await root.use('', (fd, rel) => at.lstat(fd, rel));
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  } finally {
    root.retire();
  }
}
