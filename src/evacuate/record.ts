import { mkdir, readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { readStateFile, syncDir, writeFileAtomic } from '../state/atomic.js';
import type { DatastoreState } from '../state/datastore-state.js';
import type { MigrationOptions } from '../migrate/context.js';
import type { HomePlan, Refusal } from './plan.js';

/** The per-migration options every move gets (the destination and path are each home's). */
export type MoveOptions = Omit<MigrationOptions, 'virtual' | 'dest'>;

export type HomeState = 'pending' | 'running' | 'interrupted' | 'moved' | 'failed' | 'cancelled';

export interface HomeRecord extends HomePlan {
  state: HomeState;
  /** The migration of this home, once its state says running (written before that migration journals anything). */
  migration?: string;
  reason?: string;
}

/** An evacuation as its state-dir file holds it (src/evacuate/evacuation.ts: when it is written). */
export interface EvacuationRecord {
  id: string;
  virtual: string;
  dest: string;
  parallel: number;
  options: MoveOptions;
  startedAt: string;
  refused: Refusal[];
  excluded: string[];
  left: HomePlan[];
  neededBytes: number;
  freeBytes: number;
  homes: HomeRecord[];
}

const dirOf = (state: DatastoreState) => join(state.dir, 'evacuations');

/** Written atomically (temp file fsynced, renamed, directory fsynced). */
export async function writeRecord(state: DatastoreState, record: EvacuationRecord): Promise<void> {
  await mkdir(dirOf(state), { recursive: true, mode: 0o700 });
  await writeFileAtomic(join(dirOf(state), `${record.id}.json`), JSON.stringify(record, null, 2) + '\n');
}

/** Durably gone; only "already gone" is not an error. */
export async function removeRecord(state: DatastoreState, id: string): Promise<void> {
  await unlink(join(dirOf(state), `${id}.json`)).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
  await syncDir(dirOf(state)).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
}

/** Evacuations a crashed daemon left; a record that cannot be read fails the mount rather than being forgotten. */
export async function readRecords(state: DatastoreState): Promise<EvacuationRecord[]> {
  const names = await readdir(dirOf(state)).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [] as string[];
    throw err;
  });
  const records: EvacuationRecord[] = [];
  for (const name of names.filter((n) => /^[^.]+\.json$/.test(n))) records.push(JSON.parse(await readStateFile(join(dirOf(state), name))) as EvacuationRecord);
  return records;
}
