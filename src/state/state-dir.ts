import { mkdir, lstat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { UserError, errnoCode, errorMessage } from '../util/user-error.js';

export const DEFAULT_STATE_DIR = '/var/lib/ferry';

export function stateDirFrom(option: string | undefined): string {
  return resolve(option ?? process.env.FERRY_STATE_DIR ?? DEFAULT_STATE_DIR);
}

export function mountsDir(stateDir: string): string {
  return join(stateDir, 'mounts');
}

/**
 * The state dir holds the path map (which backing trees root serves) and the control sockets: whoever can
 * write it controls ferry. A missing one is created 0700; an existing one is used only if it is a real
 * directory owned by this user that nobody else can write, and is never changed to make it so.
 */
export async function ensureStateDir(stateDir: string): Promise<void> {
  for (const dir of [stateDir, mountsDir(stateDir)]) {
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
    } catch (err) {
      if (errnoCode(err) !== 'EEXIST') throw new UserError(`cannot use state dir ${stateDir}: ${errorMessage(err)} (choose another with --state-dir or FERRY_STATE_DIR)`);
    }
    await checkPrivate(dir);
  }
}

async function checkPrivate(dir: string): Promise<void> {
  const st = await lstat(dir);
  const fix = '(choose another with --state-dir or FERRY_STATE_DIR)';
  if (st.isSymbolicLink()) throw new UserError(`state dir ${dir} is a symbolic link: give the real directory ${fix}`);
  if (!st.isDirectory()) throw new UserError(`state dir ${dir} is not a directory ${fix}`);
  const uid = process.getuid?.() ?? 0;
  if (st.uid !== uid) throw new UserError(`state dir ${dir} is owned by uid ${st.uid}, not by uid ${uid} that runs ferry: another user could change what ferry serves ${fix}`);
  if (st.mode & 0o022) {
    const mode = (st.mode & 0o7777).toString(8);
    throw new UserError(`state dir ${dir} is writable by other users (mode ${mode}): another user could change what ferry serves; run chmod go-w ${dir}, or ${fix.slice(1, -1)}`);
  }
}
