import { mkdir, chmod, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { UserError, errorMessage } from '../util/user-error.js';

export const DEFAULT_STATE_DIR = '/var/lib/ferry';

export function stateDirFrom(option: string | undefined): string {
  return resolve(option ?? process.env.FERRY_STATE_DIR ?? DEFAULT_STATE_DIR);
}

export function mountsDir(stateDir: string): string {
  return join(stateDir, 'mounts');
}

/** The state dir holds the control sockets: only root may enter it. */
export async function ensureStateDir(stateDir: string): Promise<void> {
  try {
    await mkdir(mountsDir(stateDir), { recursive: true, mode: 0o700 });
    await chmod(stateDir, 0o700);
    await chmod(mountsDir(stateDir), 0o700);
  } catch (err) {
    throw new UserError(`cannot use state dir ${stateDir}: ${errorMessage(err)} (choose another with --state-dir or FERRY_STATE_DIR)`);
  }
  const st = await stat(stateDir);
  if (!st.isDirectory()) throw new UserError(`state dir ${stateDir} is not a directory`);
}
