import { Command, Option } from 'commander';
import { fileURLToPath } from 'node:url';
import { resolve } from 'node:path';
import { ensureStateDir, mountsDir, stateDirFrom } from '../state/state-dir.js';
import { mountId } from '../state/registry.js';
import { parseBlockSize, parseReadAround } from '../util/size.js';
import { parseBusyPoll } from '../util/duration.js';
import { action, warn } from './run.js';

interface MountFlags {
  blockSize: string;
  readAround: string;
  busyPoll: string;
  stateDir?: string;
  foreground?: boolean;
  logLevel: string;
  logFile?: string;
  logFormat: 'json' | 'pretty';
  allowOther?: boolean;
  mmap?: boolean;
  track: boolean;
}

export function mountCommand(): Command {
  return new Command('mount')
    .description('serve a datastore directory through a FUSE mount that tracks every write')
    .argument('<datastore>', 'directory holding the VM files')
    .argument('<mountpoint>', 'empty directory to mount on')
    .option('--block-size <size>', 'dirty-tracking granularity, a power of two from 4K to 16M', '64K')
    .option('--read-around <size>', 'on a read that misses the page cache, fetch this much around it (0: off)', '128K')
    .option('--busy-poll <duration>', 'after answering a short request, watch for the next one this long before sleeping (0: off)', '50us')
    .option('--state-dir <dir>', 'where daemons keep sockets and state (default $FERRY_STATE_DIR or /var/lib/ferry)')
    .option('--foreground', 'stay attached; unmount on SIGINT/SIGTERM')
    .addOption(new Option('--log-level <level>', 'log level').choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).default('info'))
    .option('--log-file <file>', 'write logs here (default: stderr in the foreground, <state-dir>/mounts/<id>.log in the background)')
    .addOption(new Option('--log-format <format>', 'json for machines, pretty for people').choices(['json', 'pretty']).default('json'))
    .option('--allow-other', 'let other users in, with kernel permission checks (default_permissions)')
    .option('--mmap', 'let files be mapped shared (MAP_SHARED): opens without O_DIRECT use the page cache')
    .option('--no-track', 'do not record dirty blocks (for benchmarks only: a migration needs tracking)')
    .action(
      action(async (datastore: string, mountpoint: string, flags: MountFlags) => {
        const blockSize = parseBlockSize(flags.blockSize);
        const readAround = parseReadAround(flags.readAround);
        const busyPollNs = parseBusyPoll(flags.busyPoll);
        const stateDir = stateDirFrom(flags.stateDir);
        const logFile = flags.logFile ? resolve(flags.logFile) : undefined;
        if (flags.foreground) {
          const { runDaemon } = await import('../daemon/main.js');
          await runDaemon({
            datastore,
            mountpoint,
            blockSize,
            readAround,
            busyPollNs,
            stateDir,
            allowOther: !!flags.allowOther,
            mmap: !!flags.mmap,
            track: flags.track,
            logLevel: flags.logLevel,
            logFormat: flags.logFormat,
            logFile,
          });
          process.exit(0);
        }
        await ensureStateDir(stateDir);
        const { launchDaemon } = await import('../daemon/launch.js');
        const daemonLog = logFile ?? `${mountsDir(stateDir)}/${mountId(resolve(mountpoint))}.log`;
        const args = ['mount', resolve(datastore), resolve(mountpoint), '--block-size', String(blockSize), '--read-around', String(readAround), '--busy-poll', busyPollNs === 0 ? '0' : `${busyPollNs}ns`, '--state-dir', stateDir];
        args.push('--log-level', flags.logLevel, '--log-format', flags.logFormat, '--log-file', daemonLog);
        if (flags.allowOther) args.push('--allow-other');
        if (flags.mmap) args.push('--mmap');
        if (!flags.track) args.push('--no-track');
        const { warnings } = await launchDaemon(fileURLToPath(new URL('./main.js', import.meta.url)), args, resolve(mountpoint), daemonLog);
        for (const warning of warnings) warn(warning);
      }),
    );
}
