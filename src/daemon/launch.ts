import { spawn } from 'node:child_process';
import { openSync, closeSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { UserError } from '../util/user-error.js';

type StartMessage = { type: 'ready'; warnings: string[] } | { type: 'error'; message: string; exitCode: number };

const START_TIMEOUT_MS = 30_000;

/**
 * Starts the daemon in the background (the same CLI with --foreground) and returns once the mount answers,
 * like mount(8): errors before that come back over an IPC channel and are reported here, and so do warnings
 * for the caller to print (the daemon's own stderr is its log).
 */
export async function launchDaemon(cliScript: string, args: string[], mountpoint: string, logFile: string | undefined): Promise<{ pid: number; warnings: string[] }> {
  // The daemon's own stderr goes to its log file: a crash's last words stay next to its log.
  let log: number | 'ignore' = 'ignore';
  let newFile = false;
  if (logFile) {
    mkdirSync(dirname(logFile), { recursive: true, mode: 0o700 });
    newFile = !existsSync(logFile);
    log = openSync(logFile, 'a', 0o600);
  }
  const seeLog = logFile ? `see ${logFile}` : 'see its log in syslog';
  const child = spawn(process.execPath, [cliScript, ...args, '--foreground'], {
    detached: true,
    stdio: ['ignore', log, log, 'ipc'],
  });
  if (typeof log === 'number') closeSync(log);

  const message = await new Promise<StartMessage>((resolve) => {
    const timer = setTimeout(() => resolve({ type: 'error', message: `the daemon did not come up within ${START_TIMEOUT_MS / 1000} s (${seeLog})`, exitCode: 1 }), START_TIMEOUT_MS);
    child.once('message', (m: StartMessage) => {
      clearTimeout(timer);
      resolve(m);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ type: 'error', message: `the daemon exited before mounting (${signal ?? `code ${code}`}; ${seeLog})`, exitCode: 1 });
    });
  });
  if (message.type === 'error') {
    if (child.exitCode === null) child.kill('SIGTERM');
    // A refusal says all there is to say: a first attempt at a mount point leaves no log file behind.
    if (newFile && message.exitCode === 2) rmSync(logFile!, { force: true });
    throw new UserError(message.message, message.exitCode);
  }
  // The mount must answer a stat from outside the daemon and differ from its parent directory.
  const [inside, parent] = await Promise.all([stat(mountpoint), stat(dirname(mountpoint))]);
  if (inside.dev === parent.dev) throw new UserError(`the daemon reported ready but ${mountpoint} is not mounted (${seeLog})`, 1);
  child.unref();
  if (child.connected) child.disconnect();
  return { pid: child.pid!, warnings: message.warnings };
}
