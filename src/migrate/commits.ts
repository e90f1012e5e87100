import type { Logger } from 'pino';
import type { Mapping, PathMap } from '../fs/path-map.js';
import type { DatastoreState } from '../state/datastore-state.js';
import type { DatastoreRecord } from '../state/datastore-record.js';
import { isWithin } from '../util/paths.js';
import { faultPoint } from '../util/faults.js';

/**
 * The one writer of a datastore's path map. Switchovers of different migrations may run at the same time, but
 * their commits run one after another, each reading the map the previous one left: none can write a map that
 * lacks another's entry. The datastore's own record (src/state/datastore-record.ts) gets each commit as pending
 * before the state dir's map is written, and the map as it then stands after (confirmed, or the entry dropped).
 */
export class CommitQueue {
  private tail: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly paths: PathMap,
    private readonly state: DatastoreState,
    private readonly log: Logger,
    private readonly record?: DatastoreRecord,
  ) {}

  /** The commit point of a migration: the path map, written atomically, names `destRoot` for `virtual`. */
  commit(virtual: string, destRoot: string, migration: string): Promise<void> {
    const next = this.tail.then(() => this.apply(virtual, destRoot, migration));
    // The record follows the outcome after the commit resolves (the freeze need not wait for it), before the next.
    const settled = () => this.settleRecord(virtual);
    this.tail = next.then(settled, settled);
    return next;
  }

  /**
   * Room for the record's next versions, held by a migration from its start to its end (datastore-record.ts,
   * hold): in the queue, so that no commit's write of the record runs while the spare is made or removed.
   */
  holdRecord(): Promise<void> {
    return this.enqueue(() => this.record?.hold());
  }

  releaseRecord(): Promise<void> {
    return this.enqueue(() => this.record?.release());
  }

  private enqueue(step: () => Promise<void> | undefined): Promise<void> {
    const next = this.tail.then(step);
    this.tail = next.catch(() => undefined);
    return next;
  }

  private async apply(virtual: string, destRoot: string, migration: string): Promise<void> {
    const before = this.paths.list().filter((m) => m.virtual !== '/');
    const without = this.paths.list().filter((m) => m.virtual !== virtual);
    const natural = naturalBacking(without, virtual);
    const next: Mapping[] = natural === destRoot ? without : [...without, { virtual, backing: destRoot }];
    await faultPoint('commit');
    const saving = next.filter((m) => m.virtual !== '/');
    // Durable before the state dir's map: a mount with another or a lost state dir learns of it (reconcile.ts).
    await this.record?.write(before, [{ migration, virtual, backing: destRoot }]);
    try {
      await faultPoint('commit-save');
      await this.state.saveMappings(saving);
      await faultPoint('commit-saved');
    } catch (err) {
      // The new map may have reached the disk before the error (a failed directory fsync): put the old one back,
      // or the next mount would serve a destination this migration is about to remove.
      if (await this.restore(before, saving, virtual)) throw err;
      this.log.warn({ err, virtual }, 'the path map was saved although the save reported an error: the commit stands');
    }
    if (natural === destRoot) this.paths.remove(virtual);
    else this.paths.set({ virtual, backing: destRoot });
  }

  /** The record as the path map now stands: a pending entry confirmed or dropped. A failure waits for the next mount. */
  private async settleRecord(virtual: string): Promise<void> {
    try {
      await this.record?.write(this.paths.list().filter((m) => m.virtual !== '/'));
    } catch (err) {
      this.log.error({ err, virtual }, "cannot settle the commit in the datastore's record: the next mount does");
    }
  }

  /**
   * After a failed save: puts `before` back and resolves true (the commit failed, the source stays authoritative).
   * If that fails too, the map on disk decides: still `before`, true; already `next` (the save had landed), false:
   * the commit stands, and undoing it would remove the copy the next mount serves. Neither, or unreadable: the map
   * on disk is unknown, so the commit waits (I/O on the subtree stays frozen) and retries every second, until the
   * state directory takes a write again; a guest stalled is better than one served a removed copy.
   */
  private async restore(before: Mapping[], next: Mapping[], virtual: string): Promise<boolean> {
    for (let attempt = 1; ; attempt++) {
      try {
        await faultPoint('commit-restore');
        await this.state.saveMappings(before);
        return true;
      } catch (restoreErr) {
        const onDisk = await this.state.loadMappings().then(asText, () => undefined);
        if (onDisk === asText(before) || onDisk === asText(next)) {
          const old = onDisk === asText(before);
          this.log.error({ err: restoreErr, virtual }, `could not restore the path map after a failed commit; the map on disk is ${old ? 'the old one' : 'the new one: the commit stands'}`);
          return old;
        }
        if (attempt === 1 || attempt % 60 === 0) this.log.fatal({ err: restoreErr, virtual, attempt }, 'the path map on disk is unknown after a failed commit: retrying every second with I/O on the subtree frozen; free or repair the state directory');
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
  }
}

function asText(mappings: Mapping[]): string {
  return JSON.stringify(mappings.map(({ virtual, backing }) => ({ virtual, backing })));
}

/** Where `virtual` would live without its own mapping. */
export function naturalBacking(mappings: Mapping[], virtual: string): string {
  const parent = [...mappings].sort((a, b) => b.virtual.length - a.virtual.length).find((m) => isWithin(virtual, m.virtual));
  if (!parent) throw new Error(`no mapping covers ${virtual}`);
  return parent.virtual === '/' ? parent.backing + virtual : parent.backing + virtual.slice(parent.virtual.length);
}
