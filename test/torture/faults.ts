// The torture's fault kinds beyond kill -9 in a copy (issue 27, item 6): what a round does besides its writers and
// migrations, a destination that fails for real, and writes to the backing store while no daemon runs.
import { spawn } from 'node:child_process';
import fsp from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { run, type Result } from '../helpers/cli.js';
import { DatastoreState } from '../../src/state/datastore-state.js';

export const DEST_FAULTS = ['enospc', 'erofs', 'immutable', 'eio'] as const;
export type DestFault = (typeof DEST_FAULTS)[number];

/**
 * What a round does. plain: migrations, cancels, rate changes, a random kill in a third of them; kill-copy: a kill
 * 2.2-4.7 s into a copy (2.5 s in npm test's run, which then resumes); kill-abort: a cancel, and kill -9 while its undo
 * is held at one of its points;
 * kill-cleanup: kill -9 while a committed migration deletes its source (held by FERRY_FAULTS cleanup=pause); dest:
 * one migration onto the faulty destination, which fails under it at a random instant; reuse: writers unlink and
 * create at once (inode numbers come back) while migrations mirror; readlink: the walk's Nth readlink fails.
 */
export type Special = 'plain' | 'kill-copy' | 'kill-abort' | 'kill-cleanup' | 'dest' | 'reuse' | 'readlink';

export interface Plan {
  special: Special;
  /** Chosen by the run's schedule (npm test), not drawn. */
  scheduled: boolean;
  /** FERRY_FAULTS of the round's daemon ('' for none). */
  faults: string;
  destFault?: DestFault;
  /** ms after the copy starts: the destination fault, or the cancel of kill-abort. */
  afterMs: number;
  /** ms after the abort or cleanup starts: the kill. */
  killDelayMs: number;
  /** Bytes left free when the destination fills (ENOSPC): the fault lands at a later write. */
  slack: number;
}

const WEIGHTS: [Special, number][] = [['plain', 25], ['kill-copy', 20], ['kill-abort', 10], ['kill-cleanup', 10], ['dest', 20], ['reuse', 8], ['readlink', 7]];

/** Every draw is made here, in one order, whatever the round then does: a seed replays its rounds. */
export function drawPlan(rng: { next(): number; int(n: number): number; pick<T>(l: readonly T[]): T }, forced?: Special): Plan {
  let r = rng.next() * WEIGHTS.reduce((s, [, w]) => s + w, 0);
  const drawn = WEIGHTS.find(([, w]) => (r -= w) < 0)?.[0] ?? 'plain';
  const special = forced ?? drawn;
  const destFault = rng.pick(DEST_FAULTS);
  const eio = `${rng.pick(['bulk', 'iterate'])}=fail@${1 + rng.int(3)}`;
  const readlinkAt = 1 + rng.int(6);
  const undoPoint = rng.pick(['aborting', 'undo-barred', 'undo-removed']);
  const plan: Plan = { special, scheduled: forced !== undefined, faults: '', afterMs: 300 + rng.int(1500), killDelayMs: rng.int(1500), slack: rng.int(1 << 20) };
  if (special === 'dest') Object.assign(plan, { destFault, faults: destFault === 'eio' ? eio : '' });
  // The pause holds the source deletion long enough for a kill drawn within it.
  if (special === 'kill-cleanup') plan.faults = 'cleanup=pause:2000';
  if (special === 'readlink') plan.faults = `walk-readlink=fail@${readlinkAt}`;
  // An abort takes milliseconds: a point of its undo (src/migrate/undo.ts) is held, and the kill lands in the hold
  // (before the checkpoint goes, after it, or after the partial copy went).
  if (special === 'kill-abort') Object.assign(plan, { faults: `${undoPoint}=pause:1500`, killDelayMs: rng.int(1200) });
  return plan;
}

async function must(r: Promise<Result>, what: string): Promise<void> {
  const done = await r;
  if (done.code !== 0) throw new Error(`${what} failed (${done.code}): ${done.stderr}`);
}

/**
 * A destination on a filesystem of its own (a 256 MiB tmpfs), made to fail for real: filled (ENOSPC), remounted
 * read-only (EROFS), its copy's directory made immutable (EPERM on every name change). EIO has no real source on
 * this machine (the kernel has no device-mapper, and a loop device over a full file answers ENOSPC): the round's
 * daemon gets a FERRY_FAULTS `fail` in the copy path instead. No home lives here between rounds.
 */
export class FaultyDest {
  /** A read-only remount being retried: whether it took hold, once the retries end. */
  private readOnly?: Promise<boolean>;

  private constructor(readonly dir: string) {}

  static async create(dir: string): Promise<FaultyDest> {
    await fsp.mkdir(dir);
    await must(run('mount', ['-t', 'tmpfs', '-o', 'size=256M,mode=0755', 'ferry-torture-fx', dir]), 'mounting the faulty destination');
    return new FaultyDest(dir);
  }

  /** Makes the destination `dest` fail; true once the fault holds (EROFS: once no file is open for writing there). */
  async apply(fault: DestFault, dest: string, slack: number): Promise<boolean> {
    if (fault === 'eio') return true;
    if (fault === 'immutable') return (await run('chattr', ['+i', dest])).code === 0;
    if (fault === 'enospc') {
      // The copy takes space between statfs and fallocate (which reserves all or nothing): a little less each try.
      for (let attempt = 0; attempt < 8; attempt++) {
        const st = await fsp.statfs(this.dir);
        const size = Math.floor((st.bavail * st.bsize - slack - attempt * (4 << 20)) / 4096) * 4096;
        if (size <= 0) return true;
        if ((await run('fallocate', ['-l', String(size), join(this.dir, '.fill')])).code === 0) return true;
      }
      return false;
    }
    // A remount read-only is refused (EBUSY) while a file there is open for writing: it is retried for up to 3 s
    // until the copy is between two files, unless the copy ends first (then stop() ends the retries, through a
    // file: a remount killed in flight could land after the lift).
    await fsp.rm(this.stopFile, { force: true });
    const child = spawn('bash', ['-c', 'until [ -e "$1" ] || [ $SECONDS -ge 3 ] || mount -o remount,ro "$0" 2>/dev/null; do sleep 0.002; done', this.dir, this.stopFile], { stdio: 'ignore' });
    this.readOnly = new Promise<boolean>((resolve) => child.on('exit', () => resolve(this.readOnlyNow())));
    return this.readOnly;
  }

  private get stopFile(): string {
    return `${this.dir}.stop`;
  }

  private async readOnlyNow(): Promise<boolean> {
    const r = await run('findmnt', ['-n', '-o', 'OPTIONS', '--mountpoint', this.dir]);
    return r.stdout.split(',')[0].trim() === 'ro';
  }

  /** Ends a read-only remount still being retried. */
  async stop(): Promise<void> {
    if (!this.readOnly) return;
    await fsp.writeFile(this.stopFile, '');
    await this.readOnly;
  }

  /** Lifts every fault: writable again, no filler, no immutable copy. */
  async lift(dest: string): Promise<void> {
    await this.stop();
    this.readOnly = undefined;
    await must(run('mount', ['-o', 'remount,rw', this.dir]), 'remounting the faulty destination read-write');
    await fsp.rm(join(this.dir, '.fill'), { force: true });
    if (await fsp.lstat(dest).then(() => true, () => false)) await must(run('chattr', ['-i', dest]), `chattr -i ${dest}`);
  }

  /** Unmounts it; lazily if a daemon still has files open there (it detaches now, goes with the daemon). */
  async close(): Promise<void> {
    await this.stop();
    if ((await run('umount', [this.dir])).code !== 0) await run('umount', ['-l', this.dir]);
  }
}

/** Where each home lives, from the path map on disk (no daemon to ask). */
async function homeBackings(stateDir: string, datastore: string, homes: readonly string[]): Promise<Map<string, string>> {
  const maps = await new DatastoreState(stateDir, datastore).loadMappings();
  return new Map(homes.map((h) => [h, maps.find((e) => e.virtual === `/${h}`)?.backing ?? join(datastore, h)]));
}

interface StoredModel {
  files: Record<string, string>;
  inFlight: { names: string[] } | null;
}

/**
 * While the daemon is down: writes, appends 1 MiB to, or truncates a few writer files directly in the backing
 * store (and sometimes a disk image), and makes the models say the same. The resume must carry them (its
 * recovery finds them by ctime: more than 2 s past the last heartbeat, so it waits until 3 s after the kill).
 * Returns how many files it changed.
 */
export async function writeBehind(
  o: { stateDir: string; datastore: string; homes: readonly string[]; modelDir: string; killedAt: number; configs: Map<string, Map<string, Buffer>> },
  rng: { int(n: number): number; pick<T>(l: readonly T[]): T; chance(p: number): boolean },
  log: (e: Record<string, unknown>) => void,
): Promise<number> {
  const where = await homeBackings(o.stateDir, o.datastore, o.homes);
  const models: { name: string; bin: string }[] = [];
  for (const w of (await fsp.readdir(o.modelDir)).sort()) {
    const model = JSON.parse(await fsp.readFile(join(o.modelDir, w, 'model.json'), 'utf8')) as StoredModel;
    const uncertain = new Set(model.inFlight?.names ?? []);
    for (const [name, key] of Object.entries(model.files)) if (!uncertain.has(name)) models.push({ name, bin: join(o.modelDir, w, `${key.replace(/\//g, '_')}.bin`) });
  }
  await new Promise((r) => setTimeout(r, Math.max(0, o.killedAt + 3000 - Date.now())));
  let changed = 0;
  for (let i = 1 + rng.int(4); i > 0 && models.length > 0; i--) {
    const { name, bin } = models.splice(rng.int(models.length), 1)[0];
    const home = name.slice(0, name.indexOf('/'));
    const path = join(where.get(home)!, name.slice(home.length + 1));
    const content = await fsp.readFile(bin);
    const op = rng.pick(['write', 'append', 'truncate'] as const);
    let next: Buffer;
    if (op === 'truncate') {
      const size = rng.int(content.length + 1);
      await fsp.truncate(path, size);
      next = Buffer.from(content.subarray(0, size));
    } else {
      const data = randomBytes(op === 'append' ? 1 << 20 : 1 + rng.int(128 << 10));
      const offset = op === 'append' ? content.length : rng.int(content.length + 1);
      const fh = await fsp.open(path, 'r+');
      await fh.write(data, 0, data.length, offset).finally(() => fh.close());
      next = Buffer.concat([content, Buffer.alloc(Math.max(0, offset + data.length - content.length))]);
      data.copy(next, offset);
    }
    await fsp.writeFile(bin, next);
    log({ behind: name, path, op, from: content.length, to: next.length });
    changed++;
  }
  if (rng.chance(0.3)) {
    const home = rng.pick(o.homes);
    const disk = o.configs.get(home)!.get('disk.img')!;
    const data = randomBytes(64 << 10);
    const offset = rng.int(disk.length - data.length);
    const fh = await fsp.open(join(where.get(home)!, 'disk.img'), 'r+');
    await fh.write(data, 0, data.length, offset).finally(() => fh.close());
    data.copy(disk, offset);
    log({ behind: `${home}/disk.img`, op: 'write', offset });
    changed++;
  }
  return changed;
}
