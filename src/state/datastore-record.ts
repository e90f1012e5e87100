import fs, { constants as C } from 'node:fs';
import { promisify } from 'node:util';
import { z } from 'zod';
import { Root, type Beneath } from '../util/beneath.js';
import { RESERVED_NAME } from '../fs/reserved.js';
import { UserError } from '../util/user-error.js';
import { listDir, withObject } from '../util/beneath-tree.js';
import { isAlive } from './registry.js';
import type { StoredMapping } from './datastore-state.js';

const FILE = 'moved.json';
const PATH = `${RESERVED_NAME}/${FILE}`;

const virtual = z.string().regex(/^\/./, 'a path in the mount other than /');
const absolute = z.string().regex(/^\//, 'an absolute path');
const entry = z.object({ virtual, backing: absolute }).strict();

/**
 * What a datastore knows of its own subtrees that live elsewhere, kept at its root (never served by the mount):
 * a mount with another, a lost or a fresh state dir still serves them (src/migrate/reconcile.ts). Read back only
 * through this schema: a record of another shape refuses the mount rather than guess.
 */
export const RecordSchema = z.object({
  version: z.literal(1),
  /** The datastore's path map without its root: where each moved subtree lives (absolute paths on this host). */
  moved: z.array(entry),
  /** A commit under way (written before the state dir's path map names it): confirmed into `moved`, or dropped. */
  pending: z.array(entry.extend({ migration: z.string().min(1) }).strict()),
}).strict();
export type DatastoreRecordData = z.infer<typeof RecordSchema>;
export type PendingMove = DatastoreRecordData['pending'][number];

const write = promisify(fs.write);
const fsync = promisify(fs.fsync);
const ftruncate = promisify(fs.ftruncate);
const readFile = promisify(fs.readFile);
const fstat = promisify(fs.fstat);
let temps = 0;
/** A temporary file of the record: `moved.json.tmp-<writer's pid>-<n>`. */
const TEMP = /^moved\.json\.tmp-(\d+)-\d+$/;
/**
 * The room a running migration holds for the record's next version (a record of a few hundred moved subtrees): a
 * datastore that fills up while its VM moves away must still take the commit, or the VM stays on the full disk.
 */
const SPARE_BYTES = 64 * 1024;

/** The record could not be written or its room reserved: the datastore's own space or permissions, not the destination's. */
export class RecordError extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
  }
}

/**
 * The record's file, `.ferry/moved.json` at the datastore's root, read and written beneath the datastore's
 * directory fd (never by a path from /, never through a symlink). Written like a state file: a temporary file
 * fsynced, renamed over, the directory fsynced.
 */
export class DatastoreRecord {
  private readonly root: Root;
  /** What is on disk, as this daemon last read or wrote it (undefined: no record; null: unknown after a failed write). */
  private current: DatastoreRecordData | undefined | null = null;
  /**
   * The spare (a temporary file of SPARE_BYTES, named like any temporary file so that a crash leaves nothing the
   * next mount does not sweep) and the migrations holding it. Changed only by hold, release and replace, which the
   * commit queue runs one at a time (src/migrate/commits.ts).
   */
  private spare: string | undefined;
  private holders = 0;

  constructor(
    private readonly at: Beneath,
    readonly datastore: string,
  ) {
    this.root = new Root(datastore);
  }

  get path(): string {
    return `${this.datastore}/${PATH}`;
  }

  /** The record, or undefined when there is none; a record that cannot be read or trusted is a UserError. */
  async read(): Promise<DatastoreRecordData | undefined> {
    let text: string;
    try {
      text = await this.root.use('', async (root) => {
        const fd = await this.at.open(root, PATH, C.O_RDONLY);
        try {
          // Whoever writes the record decides what the mount serves (as for the state dir: src/state/state-dir.ts).
          this.checkPrivate(await this.at.lstat(root, RESERVED_NAME), `${this.datastore}/${RESERVED_NAME}`);
          this.checkPrivate(await fstat(fd), this.path);
          return await readFile(fd, 'utf8');
        } finally {
          fs.closeSync(fd);
        }
      });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return (this.current = undefined);
      if (err instanceof UserError) throw err;
      throw new UserError(`cannot read the datastore's record ${this.path} (${(err as Error).message}): ${RESERVED_NAME} must be ferry's own directory; move it aside and mount again (README, "If the state dir is lost")`, 1);
    }
    let parsed: DatastoreRecordData;
    try {
      parsed = RecordSchema.parse(JSON.parse(text));
    } catch (err) {
      const reason = err instanceof z.ZodError ? err.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ') : (err as Error).message;
      throw new UserError(`the datastore's record ${this.path} is corrupt (${reason}): repair it or move it aside and mount again (README, "If the state dir is lost")`, 1);
    }
    return (this.current = parsed);
  }

  private checkPrivate(st: { uid: number | bigint; mode: number | bigint }, path: string): void {
    const uid = process.getuid?.() ?? 0;
    if (Number(st.uid) !== uid) throw new UserError(`the datastore's record ${path} is owned by uid ${st.uid}, not by uid ${uid} that runs ferry: another user could change what the mount serves; check its contents, then chown ${uid} it, or move it aside (README, "If the state dir is lost")`, 1);
    if (Number(st.mode) & 0o022) throw new UserError(`the datastore's record ${path} is writable by other users (mode ${(Number(st.mode) & 0o7777).toString(8)}): another user could change what the mount serves; check its contents, then chmod go-w it, or move it aside (README, "If the state dir is lost")`, 1);
  }

  /** Whether `rel` (relative to the datastore) exists; a symlink on the way is an error, never followed. */
  async holds(rel: string): Promise<boolean> {
    try {
      await this.root.use(rel, (root, path) => this.at.lstat(root, path));
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
  }

  /**
   * Removes the temporary files of daemons killed while writing the record (no other process writes one: a temporary
   * file names its writer's pid, and a live writer's is left alone). Returns the names removed.
   */
  async sweepTemps(): Promise<string[]> {
    return this.root.use('', async (root) => {
      const entries = await withObject(this.at, root, RESERVED_NAME, (fd) => listDir(fd)).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return [];
        throw err;
      });
      const removed: string[] = [];
      for (const { name } of entries) {
        const writer = TEMP.exec(name)?.[1];
        if (writer === undefined || isAlive(Number(writer))) continue;
        await this.at.unlink(root, `${RESERVED_NAME}/${name}`).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'ENOENT') throw err;
        });
        removed.push(name);
      }
      // A killed daemon's spare may have been all there was: the datastore is left as ferry found it.
      if (removed.length > 0) await this.removeDirIfEmpty(root);
      return removed;
    });
  }

  /**
   * Reserves room for the record's next versions until release: a spare file written in full, which the next write
   * fills in place (no new blocks) and which is made again from the blocks that write frees. Fails as the commit
   * would, but before anything is copied.
   */
  async hold(): Promise<void> {
    if (this.spare === undefined) {
      try {
        await this.makeSpare();
      } catch (err) {
        const { code, message } = err as NodeJS.ErrnoException;
        throw new RecordError(`cannot reserve room for the datastore's record ${this.path} (${code ?? message}): free ${SPARE_BYTES / 1024} KiB on the datastore, or make it writable, and migrate again`, code);
      }
    }
    this.holders++;
  }

  /** The last holder gone: the spare is removed, and ferry's directory with it when no record is left. */
  async release(): Promise<void> {
    if (--this.holders > 0 || this.spare === undefined) return;
    const spare = this.spare;
    this.spare = undefined;
    await this.root.use('', async (root) => {
      await this.at.unlink(root, spare);
      if (this.current === undefined) await this.removeDirIfEmpty(root);
    });
  }

  private async makeSpare(): Promise<void> {
    await this.root.use('', async (root) => {
      await this.makeDir(root);
      const temp = `${RESERVED_NAME}/${FILE}.tmp-${process.pid}-${++temps}`;
      const fd = await this.at.open(root, temp, C.O_WRONLY | C.O_CREAT | C.O_EXCL, 0o600);
      try {
        // Written, not fallocated: every filesystem counts written blocks as taken (delayed allocation included).
        const zeros = Buffer.alloc(SPARE_BYTES);
        for (let done = 0; done < zeros.length; ) done += (await write(fd, zeros, done, zeros.length - done)).bytesWritten;
      } catch (err) {
        await this.at.unlink(root, temp).catch(() => undefined);
        if (this.current === undefined) await this.removeDirIfEmpty(root).catch(() => undefined);
        throw err;
      } finally {
        fs.closeSync(fd);
      }
      this.spare = temp;
    });
  }

  /** The committed map `moved` with `pending` (if any) on top: durable when this resolves. An empty record is removed. */
  async write(moved: StoredMapping[], pending: PendingMove[] = []): Promise<void> {
    const next: DatastoreRecordData = { version: 1, moved: moved.map(({ virtual, backing }) => ({ virtual, backing })), pending };
    const empty = next.moved.length === 0 && next.pending.length === 0;
    if (this.current !== null && JSON.stringify(next) === JSON.stringify(this.current ?? { version: 1, moved: [], pending: [] })) return;
    this.current = null;
    try {
      if (empty) await this.remove();
      else await this.replace(JSON.stringify(next, null, 2) + '\n');
    } catch (err) {
      // A full or failing datastore: the commit this precedes fails, and the message must say where and why.
      const { code, message } = err as NodeJS.ErrnoException;
      throw new RecordError(`cannot write the datastore's record ${this.path} (${code ?? message}): free a few KiB on the datastore, or make it writable, and migrate again`, code);
    }
    this.current = empty ? undefined : next;
  }

  private async replace(text: string): Promise<void> {
    const data = Buffer.from(text);
    await this.root.use('', async (root) => {
      await this.makeDir(root);
      // The spare, when held and big enough, becomes this version: its blocks are already the datastore's.
      const spare = data.length <= SPARE_BYTES ? this.spare : undefined;
      this.spare = undefined;
      const temp = spare ?? `${RESERVED_NAME}/${FILE}.tmp-${process.pid}-${++temps}`;
      const fd = spare ? await this.at.open(root, temp, C.O_WRONLY) : await this.at.open(root, temp, C.O_WRONLY | C.O_CREAT | C.O_EXCL, 0o600);
      try {
        for (let done = 0; done < data.length; ) done += (await write(fd, data, done, data.length - done)).bytesWritten;
        if (spare) await ftruncate(fd, data.length);
        await fsync(fd);
      } catch (err) {
        await this.at.unlink(root, temp).catch(() => undefined);
        throw err;
      } finally {
        fs.closeSync(fd);
      }
      try {
        await this.at.rename(root, temp, root, PATH);
      } catch (err) {
        await this.at.unlink(root, temp).catch(() => undefined);
        throw err;
      }
      await syncAt(this.at, root, RESERVED_NAME);
    });
    // Made again from what the spare's tail and the old version freed. Not made: the next write takes new blocks,
    // and fails the commit with its errno if there are none (never a commit without its record).
    if (this.holders > 0) await this.makeSpare().catch(() => undefined);
  }

  private async makeDir(root: number): Promise<void> {
    try {
      await this.at.mkdir(root, RESERVED_NAME, 0o700);
      await syncAt(this.at, root, '');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }

  /** Removes ferry's directory unless something is left in it; true when it is gone. */
  private async removeDirIfEmpty(root: number): Promise<boolean> {
    const gone = await this.at.rmdir(root, RESERVED_NAME).then(() => true, (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return true;
      if (err.code === 'ENOTEMPTY') return false;
      throw err;
    });
    await syncAt(this.at, root, gone ? '' : RESERVED_NAME);
    return gone;
  }

  /** No subtree lives elsewhere any more: the datastore is left as it was before ferry moved anything. */
  private async remove(): Promise<void> {
    await this.root.use('', async (root) => {
      await this.at.unlink(root, PATH).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
      });
      // Something else left in it (a temporary file of a killed daemon, the spare of a running migration): the
      // directory stays, still hidden.
      await this.removeDirIfEmpty(root);
    });
  }
}

/** fsync of the directory `rel` beneath `root` ('' is the root itself). */
async function syncAt(at: Beneath, root: number, rel: string): Promise<void> {
  const fd = await at.open(root, rel, C.O_RDONLY | C.O_DIRECTORY);
  try {
    await fsync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
