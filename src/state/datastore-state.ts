import { mkdir, readdir, readFile, unlink, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { readStateFile, syncDir, writeFileAtomic } from './atomic.js';

export interface StoredMapping {
  virtual: string;
  backing: string;
}

/** The identity of a destination root ferry made (decimal strings: JSON has no 64-bit integers), or 'pending'. */
export type RootMark = 'pending' | { dev: string; ino: string };

/** A migration's durable record: enough to finish or undo it after a crash. */
export interface MigrationJournal {
  id: string;
  virtual: string;
  source: string;
  dest: string;
  /** The destination directory existed before: undo removes only what the migration made in it. Since issue 28
   * true for a file's parent (the file goes into it), false for a directory's copy (created); an older journal may
   * have it true for a directory (an existing empty one the copy filled, emptied by the undo). */
  destDirExisted: boolean;
  destDir: string;
  /** The destination's root as this migration made it: 'pending' from the journal's first write until the root
   * exists and is named here by identity. Undo removes only a root that has that identity; absent in journals of
   * a ferry before issue 28 (which removed the root by name). */
  root?: RootMark;
  isFile: boolean;
  keepSource: boolean;
  startedAt: string;
  /** The options the migration was started with, for --resume. */
  mode: string;
  maxDowntimeMs: number;
  maxIterations: number;
  rateLimit: number;
}

/** How often a daemon beats (src/daemon/main.ts). */
export const HEARTBEAT_MS = 1000;
/** The heartbeat's period plus a margin for a slow tick: a file whose ctime is later than the last beat plus this
 * was changed while no daemon tracked it. */
export const BEAT_SLACK_MS = 2000;

/**
 * Durable state of one datastore, kept across mounts: which subtrees live elsewhere (the path map) and
 * the journals of migrations in flight. Writing the path map is the commit point of a migration.
 */
export class DatastoreState {
  readonly dir: string;
  /** The heartbeat being written, and whether beats have stopped for good (stopBeating). */
  private beating: Promise<unknown> = Promise.resolve();
  private beatsStopped = false;

  constructor(stateDir: string, datastore: string) {
    this.dir = join(stateDir, 'datastores', createHash('sha256').update(datastore).digest('hex').slice(0, 16));
  }

  private get journalsDir(): string {
    return join(this.dir, 'migrations');
  }

  async init(datastore: string): Promise<void> {
    await mkdir(this.journalsDir, { recursive: true, mode: 0o700 });
    await writeFileAtomic(join(this.dir, 'datastore'), datastore + '\n');
  }

  async loadMappings(): Promise<StoredMapping[]> {
    return (await this.storedMappings()) ?? [];
  }

  /** The path map as stored, or undefined when this state dir has none for the datastore (never committed here). */
  async storedMappings(): Promise<StoredMapping[] | undefined> {
    try {
      return JSON.parse(await readStateFile(join(this.dir, 'mappings.json'))) as StoredMapping[];
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async saveMappings(mappings: StoredMapping[]): Promise<void> {
    await writeFileAtomic(join(this.dir, 'mappings.json'), JSON.stringify(mappings, null, 2) + '\n');
  }

  async writeJournal(journal: MigrationJournal): Promise<void> {
    await writeFileAtomic(join(this.journalsDir, `${journal.id}.json`), JSON.stringify(journal, null, 2) + '\n');
  }

  /**
   * Side files first, the journal last, then the directory made durable: until the journal goes, recovery finds
   * the migration and finishes or undoes it again. Only "already gone" is not an error.
   */
  async removeJournal(id: string): Promise<void> {
    for (const suffix of ['checkpoint.json', 'intent.json', 'json']) {
      await unlink(join(this.journalsDir, `${id}.${suffix}`)).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
      });
    }
    await syncDir(this.journalsDir);
  }

  /**
   * The daemon's heartbeat, written every second while it serves the datastore: after a crash, a file whose ctime
   * is later than the last beat (plus a period) was changed while no daemon tracked it. Not fsynced: after a host
   * crash the beat read back can only be older, which flags more files, never fewer.
   */
  beat(now = Date.now()): Promise<void> {
    if (this.beatsStopped) return Promise.resolve();
    // In place, one fixed-width write: a kill can never leave it truncated or half old, half new.
    const text = `${String(now).padStart(16, '0')}\n`;
    const write = writeFile(join(this.dir, 'alive'), text, { flag: 'r+' }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
      return writeFile(join(this.dir, 'alive'), text);
    });
    this.beating = write.catch(() => undefined);
    return write;
  }

  /**
   * Beats no more, and resolves once the slack has passed since the last one: from then on every file changed is
   * one a resume after a crash copies whole (recovery.ts). For a checkpoint that could not be removed: the writes
   * it no longer vouches for are then caught all the same. Lasts for the daemon's life.
   */
  async stopBeating(): Promise<void> {
    this.beatsStopped = true;
    await this.beating;
    await new Promise((resolve) => setTimeout(resolve, HEARTBEAT_MS + BEAT_SLACK_MS));
  }

  /** The last heartbeat (ms since the epoch), or undefined when none can be read (then nothing is vouched for). */
  async lastBeat(): Promise<number | undefined> {
    const text = await readFile(join(this.dir, 'alive'), 'utf8').catch(() => '');
    const ms = Number(text.trim());
    return text.trim() !== '' && Number.isSafeInteger(ms) ? ms : undefined;
  }

  /** A migration's side files (checkpoint, intent log): written atomically, removed with the journal. */
  async writeSide(id: string, kind: 'checkpoint' | 'intent', value: unknown): Promise<void> {
    await writeFileAtomic(join(this.journalsDir, `${id}.${kind}.json`), JSON.stringify(value) + '\n');
  }

  /** Undefined when the file does not exist; throws when it cannot be read or parsed (never guessed). */
  async readSide<T>(id: string, kind: 'checkpoint' | 'intent'): Promise<T | undefined> {
    let text: string;
    try {
      text = await readStateFile(join(this.journalsDir, `${id}.${kind}.json`));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    return JSON.parse(text) as T;
  }

  /** Durably removes a side file (a crash after this returns cannot find it). */
  async removeSide(id: string, kind: 'checkpoint' | 'intent'): Promise<void> {
    try {
      await unlink(join(this.journalsDir, `${id}.${kind}.json`));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    await syncDir(this.journalsDir);
  }

  async journals(): Promise<MigrationJournal[]> {
    // Only a directory never made means no migrations: any other error must fail recovery, not hide a migration.
    const names = await readdir(this.journalsDir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [] as string[];
      throw err;
    });
    const journals: MigrationJournal[] = [];
    for (const name of names.filter((n) => /^[^.]+\.json$/.test(n))) {
      journals.push(JSON.parse(await readStateFile(join(this.journalsDir, name))) as MigrationJournal);
    }
    return journals;
  }
}
