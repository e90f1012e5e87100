import { readdir, readFile, unlink } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join, resolve } from 'node:path';
import { readStateFile, writeFileAtomic } from './atomic.js';
import { mountsDir } from './state-dir.js';
import { isWithin } from '../util/paths.js';

/** What a running daemon publishes about itself in the state dir, so the CLI can find it. */
export interface MountRecord {
  id: string;
  mountpoint: string;
  datastore: string;
  pid: number;
  socket: string;
  blockSize: number;
  /** Bytes fetched around a read that misses the page cache (native data path; 0: off). */
  readAround?: number;
  /** How long a FUSE worker polls for the next request after a short one (native data path; 0: off). */
  busyPollNs?: number;
  startedAt: string;
  logFile?: string;
}

const SOCKET_PATH_MAX = 107;

export function mountId(mountpoint: string): string {
  return createHash('sha256').update(mountpoint).digest('hex').slice(0, 16);
}

export function socketPathFor(stateDir: string, mountpoint: string): string {
  const socket = join(mountsDir(stateDir), `${mountId(mountpoint)}.sock`);
  if (Buffer.byteLength(socket) > SOCKET_PATH_MAX) {
    throw new Error(`state dir path too long for a Unix socket: ${socket}`);
  }
  return socket;
}

function recordPath(stateDir: string, id: string): string {
  return join(mountsDir(stateDir), `${id}.json`);
}

export async function writeRecord(stateDir: string, record: MountRecord): Promise<void> {
  await writeFileAtomic(recordPath(stateDir, record.id), JSON.stringify(record, null, 2) + '\n');
}

export async function removeRecord(stateDir: string, record: MountRecord): Promise<void> {
  await unlink(recordPath(stateDir, record.id)).catch(() => undefined);
  await unlink(record.socket).catch(() => undefined);
}

/** True while the process exists and has not exited (a zombie or an exiting process counts as gone). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const state = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0];
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

export async function listRecords(stateDir: string): Promise<MountRecord[]> {
  let names: string[];
  try {
    names = await readdir(mountsDir(stateDir));
  } catch {
    return [];
  }
  const records: MountRecord[] = [];
  for (const name of names.filter((n) => n.endsWith('.json'))) {
    try {
      records.push(JSON.parse(await readStateFile(join(mountsDir(stateDir), name))) as MountRecord);
    } catch {
      // A record being replaced or a stray file: not a mount.
    }
  }
  return records;
}

/** The record of the mount that contains `path` (the deepest one, should mounts nest). */
export async function findRecordFor(stateDir: string, path: string): Promise<MountRecord | undefined> {
  const abs = resolve(path);
  const matches = (await listRecords(stateDir)).filter((r) => isWithin(abs, r.mountpoint));
  return matches.sort((a, b) => b.mountpoint.length - a.mountpoint.length)[0];
}

/**
 * The live ferry daemon serving `mountpoint` whatever state dir it was started with (found by its command line:
 * `ferry mount <datastore> <mountpoint> ... --state-dir <dir>`), for telling a user which state dir to name.
 */
export async function findDaemonServing(mountpoint: string): Promise<{ pid: number; stateDir: string } | undefined> {
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const args = (await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '')).split('\0');
    const at = args.indexOf('mount');
    if (at < 0 || args[at + 2] !== mountpoint || !args.some((a) => a.endsWith('main.js') || a.endsWith('/ferry'))) continue;
    const dir = args.indexOf('--state-dir');
    if (dir >= 0 && args[dir + 1]) return { pid: Number(name), stateDir: args[dir + 1] };
  }
  return undefined;
}
