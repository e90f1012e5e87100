import type { FerryDataStats } from 'fuse-native';
import type { Counters } from '../fs/counters.js';
import type { MountStatus } from '../daemon/control-handlers.js';

type MigrationStatus = MountStatus['migrations'][number];
type EvacuationStatus = MountStatus['evacuations'][number];

/** What one scrape reads: taken once per request, so every metric of a scrape agrees with the others. */
export interface Scrape {
  status: MountStatus;
  /** The JS data path's own counters (status adds the native path's into them). */
  js: Counters;
  native: FerryDataStats | undefined;
  frozenSubtrees: number;
  /** The newest migration of each subtree, at most MIGRATION_SERIES of them, running ones first. */
  migrations: MigrationStatus[];
  /** The newest evacuation of each directory, at most MIGRATION_SERIES of them, unfinished ones first. */
  evacuations: EvacuationStatus[];
}

/** Bounded series: a daemon that moved many subtrees reports the running and latest ones, not its whole history. */
export const MIGRATION_SERIES = 20;

export function latestMigrations(all: readonly MigrationStatus[]): MigrationStatus[] {
  const byPath = new Map<string, MigrationStatus>();
  for (const m of all) byPath.set(m.path, m);
  const newest = [...byPath.values()].sort((a, b) => Number(b.running) - Number(a.running) || b.startedAt.localeCompare(a.startedAt));
  return newest.slice(0, MIGRATION_SERIES);
}

export function latestEvacuations(all: readonly EvacuationStatus[]): EvacuationStatus[] {
  const byPath = new Map<string, EvacuationStatus>();
  for (const e of all) byPath.set(e.path, e);
  const unfinished = (e: EvacuationStatus) => Number(e.state !== 'done' && e.state !== 'cancelled');
  const newest = [...byPath.values()].sort((a, b) => unfinished(b) - unfinished(a) || b.startedAt.localeCompare(a.startedAt));
  return newest.slice(0, MIGRATION_SERIES);
}
