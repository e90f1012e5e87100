import { Command } from 'commander';
import { resolve } from 'node:path';
import { realpath } from 'node:fs/promises';
import { request } from '../control/client.js';
import { stateDirFrom } from '../state/state-dir.js';
import { findDaemonServing, isAlive, listRecords, removeRecord, type MountRecord } from '../state/registry.js';
import { abortFuseConnection, findMount, isDeadMount, lazyUnmount } from '../util/mounts.js';
import { UserError } from '../util/user-error.js';
import { action } from './run.js';

const EXIT_WAIT_MS = 30_000;

async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!isAlive(pid)) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return !isAlive(pid);
}

async function stopDaemon(record: MountRecord, force: boolean): Promise<void> {
  try {
    await request(record.socket, 'unmount', { force }, { timeoutMs: 5000 });
  } catch (err) {
    if (!force) throw err;
    // A daemon that cannot answer: abort its FUSE connection, detach the mount, end the process.
    await abortFuseConnection(record.mountpoint);
    await lazyUnmount(record.mountpoint).catch(() => undefined);
    process.kill(record.pid, 'SIGKILL');
  }
  if (!(await waitForExit(record.pid, EXIT_WAIT_MS))) {
    throw new UserError(`the daemon (pid ${record.pid}) did not stop: try \`ferry unmount --force ${record.mountpoint}\``, 1);
  }
}

export function unmountCommand(): Command {
  return new Command('unmount')
    .alias('umount')
    .description('stop the daemon and unmount (--force: also when files are open, or clear a dead mount)')
    .argument('<mountpoint>')
    .option('--force', 'unmount even when busy; clear a dead mount left by a crashed daemon')
    .option('--state-dir <dir>', 'state dir (default $FERRY_STATE_DIR or /var/lib/ferry)')
    .action(
      action(async (mountpointArg: string, flags: { force?: boolean; stateDir?: string }) => {
        const stateDir = stateDirFrom(flags.stateDir);
        const force = !!flags.force;
        const abs = resolve(mountpointArg);
        const mountpoint = (await isDeadMount(abs)) ? abs : await realpath(abs).catch(() => abs);
        const record = (await listRecords(stateDir)).find((r) => r.mountpoint === mountpoint);

        if (record && isAlive(record.pid)) {
          await stopDaemon(record, force);
          if (await findMount(mountpoint)) await lazyUnmount(mountpoint);
          return;
        }
        const mount = await findMount(mountpoint);
        if (mount) {
          if (!record && mount.fstype !== 'fuse.ferry') throw new UserError(`${mountpoint} is a ${mount.fstype} mount, not a ferry mount`);
          // Alive, but registered elsewhere: name the state dir rather than call it dead (even --force would abort it).
          const elsewhere = !record && !(await isDeadMount(mountpoint)) ? await findDaemonServing(mountpoint) : undefined;
          if (elsewhere) {
            throw new UserError(`${mountpoint} is served by the ferry daemon pid ${elsewhere.pid} of state dir ${elsewhere.stateDir}, not ${stateDir}: run \`ferry unmount ${mountpoint} --state-dir ${elsewhere.stateDir}\``);
          }
          if (!force) throw new UserError(`${mountpoint} is a dead mount (its daemon is gone): clear it with \`ferry unmount --force ${mountpoint}\``);
          // The daemon may still be exiting with the connection open: abort it so nothing waits on it.
          await abortFuseConnection(mountpoint);
          await lazyUnmount(mountpoint);
        } else if (!record) {
          throw new UserError(`${mountpoint} is not a ferry mount`);
        }
        if (record) await removeRecord(stateDir, record);
      }),
    );
}
