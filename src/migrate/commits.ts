import type { Logger } from 'pino';
import type { Mapping, PathMap } from '../fs/path-map.js';
import type { DatastoreState } from '../state/datastore-state.js';
import { isWithin } from '../util/paths.js';
import { faultPoint } from './faults.js';

/**
 * The one writer of a datastore's path map. Switchovers of different migrations may run at the same time, but
 * their commits run one after another, each reading the map the previous one left: none can write a map that
 * lacks another's entry.
 */
export class CommitQueue {
  private tail: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly paths: PathMap,
    private readonly state: DatastoreState,
    private readonly log: Logger,
  ) {}

  /** The commit point of a migration: the path map, written atomically, names `destRoot` for `virtual`. */
  commit(virtual: string, destRoot: string): Promise<void> {
    const next = this.tail.then(() => this.apply(virtual, destRoot));
    this.tail = next.catch(() => undefined);
    return next;
  }

  private async apply(virtual: string, destRoot: string): Promise<void> {
    const before = this.paths.list().filter((m) => m.virtual !== '/');
    const without = this.paths.list().filter((m) => m.virtual !== virtual);
    const natural = naturalBacking(without, virtual);
    const next: Mapping[] = natural === destRoot ? without : [...without, { virtual, backing: destRoot }];
    await faultPoint('commit');
    try {
      await this.state.saveMappings(next.filter((m) => m.virtual !== '/'));
    } catch (err) {
      // The new map may have reached the disk before the error (a failed directory fsync): put the old one back,
      // or the next mount would serve a destination this migration is about to remove.
      await this.state.saveMappings(before).catch((restoreErr) => this.log.fatal({ err: restoreErr, virtual }, 'could not restore the path map after a failed commit: check mappings.json before the next mount'));
      throw err;
    }
    if (natural === destRoot) this.paths.remove(virtual);
    else this.paths.set({ virtual, backing: destRoot });
  }
}

/** Where `virtual` would live without its own mapping. */
export function naturalBacking(mappings: Mapping[], virtual: string): string {
  const parent = [...mappings].sort((a, b) => b.virtual.length - a.virtual.length).find((m) => isWithin(virtual, m.virtual));
  if (!parent) throw new Error(`no mapping covers ${virtual}`);
  return parent.virtual === '/' ? parent.backing + virtual : parent.backing + virtual.slice(parent.virtual.length);
}
