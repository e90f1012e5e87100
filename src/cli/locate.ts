import { realpath } from 'node:fs/promises';
import { resolve } from 'node:path';
import { findRecordFor, isAlive, type MountRecord } from '../state/registry.js';
import { UserError } from '../util/user-error.js';

export interface Located {
  record: MountRecord;
  /** The path inside the mount, '/'-rooted. */
  inside: string;
  absolute: string;
}

/** Finds the ferry mount that contains `path`, trying the path as written and then with symlinks resolved. */
export async function locate(stateDir: string, path: string): Promise<Located> {
  const absolute = resolve(path);
  let record = await findRecordFor(stateDir, absolute);
  let within = absolute;
  if (!record) {
    within = await realpath(absolute).catch(() => absolute);
    record = await findRecordFor(stateDir, within);
  }
  if (!record) throw new UserError(`${absolute} is not under a ferry mount (see \`ferry status\`)`);
  if (!isAlive(record.pid)) {
    throw new UserError(`the ferry daemon for ${record.mountpoint} is gone: clear the mount with \`ferry unmount --force ${record.mountpoint}\``, 1);
  }
  return { record, inside: within.slice(record.mountpoint.length) || '/', absolute };
}
