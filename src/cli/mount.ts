import { Command, Option } from 'commander';
import { fileURLToPath } from 'node:url';
import { resolve } from 'node:path';
import { ensureStateDir, stateDirFrom } from '../state/state-dir.js';
import { logFileFor } from '../daemon/log-target.js';
import { DEFAULT_SYSLOG_ADDRESS, LOG_TARGETS, syslogAddress, syslogPipeline, type LogTarget } from '../daemon/logger.js';
import { UserError } from '../util/user-error.js';
import { parseBlockSize, parseReadAround } from '../util/size.js';
import { parseBusyPoll } from '../util/duration.js';
import { formatMetricsAddress, parseMetricsAddress } from '../metrics/address.js';
import { action, warn } from './run.js';
import { applyMountOptions } from './mount-options.js';

interface MountFlags {
  blockSize: string;
  readAround: string;
  busyPoll: string;
  stateDir?: string;
  foreground?: boolean;
  logLevel: string;
  logFile?: string;
  logFormat: 'json' | 'pretty';
  logTarget?: LogTarget;
  syslogAddress?: string;
  allowOther?: boolean;
  mmap?: boolean;
  directIo?: boolean;
  clearDead?: boolean;
  track: boolean;
  metrics?: string;
  metricsPerFile?: boolean;
  options?: string;
}

export function mountCommand(): Command {
  return new Command('mount')
    .description('serve a datastore directory through a FUSE mount that tracks every write')
    .argument('<datastore>', 'directory holding the VM files')
    .argument('<mountpoint>', 'empty directory to mount on')
    .option('--block-size <size>', 'dirty-tracking granularity, a power of two from 4K to 16M', '64K')
    .option('--read-around <size>', 'on a read that misses the page cache (direct_io opens, random reads of page-cached ones), fetch this much around it (0: off)', '128K')
    .option('--busy-poll <duration>', 'after answering a short request, watch for the next one this long before sleeping (0: off)', '50us')
    .option('--state-dir <dir>', 'where daemons keep sockets and state (default $FERRY_STATE_DIR or /var/lib/ferry)')
    .option('--foreground', 'stay attached; unmount on SIGINT/SIGTERM')
    .addOption(new Option('--log-level <level>', 'log level').choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).default('info'))
    .addOption(new Option('--log-target <target>', 'where logs go (default: file in the background, stderr in the foreground)').choices(LOG_TARGETS))
    .option('--log-file <file>', 'the log file, JSON lines appended across mounts (default <state-dir>/logs/<mountpoint as systemd-escape --path>.log)')
    .addOption(new Option('--log-format <format>', 'json for machines, pretty for people (on stderr only)').choices(['json', 'pretty']).default('json'))
    .option('--syslog-address <address>', `with --log-target syslog: a Unix datagram socket (default ${DEFAULT_SYSLOG_ADDRESS}), or udp://host:port, tcp://host:port (RFC 5424)`)
    .option('--allow-other', 'let other users in, with kernel permission checks (default_permissions)')
    .option('--direct-io', 'every open bypasses the page cache (direct_io), not only O_DIRECT ones: buffered writers of one file then run in parallel, and every read is a request')
    .option('--mmap', 'accepted for old command lines: opens without O_DIRECT use the page cache, and files map shared, by default now')
    .option('--clear-dead', 'first clear a dead ferry mount a crashed daemon left at <mountpoint> (never a live one): for restarts by systemd')
    .option('--metrics <address>', 'serve Prometheus metrics at http://<address>/metrics: host:port, a port (on 127.0.0.1), or unix:/path')
    .option('--metrics-per-file', 'with --metrics: also one series per dirty file (unbounded: as many as files)')
    .option('--no-track', 'do not record dirty blocks (for benchmarks only: a migration needs tracking)')
    .option('-o, --options <list>', "the options above as mount(8) takes them (fstab, mount -t fuse.ferry): a long option's name with _ for - as the key, key=value or a bare flag (block_size=64K,allow_other,state_dir=/var/lib/ferry); mount(8)'s generic ones (rw, nofail, _netdev, noauto, dev, suid, x-systemd.*, ...) are ignored")
    .action(
      action(async (datastore: string, mountpoint: string, given: MountFlags, command: Command) => {
        if (given.options !== undefined) applyMountOptions(command, given.options);
        const flags = command.opts<MountFlags>();
        if (flags.directIo && flags.mmap) throw new UserError('--direct-io and --mmap contradict each other: --direct-io makes every open direct_io, --mmap asks for the page cache (the default)');
        const blockSize = parseBlockSize(flags.blockSize);
        const readAround = parseReadAround(flags.readAround);
        const busyPollNs = parseBusyPoll(flags.busyPoll);
        const metrics = flags.metrics === undefined ? undefined : parseMetricsAddress(flags.metrics);
        if (flags.metricsPerFile && !metrics) throw new UserError('--metrics-per-file goes with --metrics <address>');
        const stateDir = stateDirFrom(flags.stateDir);
        const logTarget = flags.logTarget ?? (flags.foreground && !flags.logFile ? 'stderr' : 'file');
        checkLogFlags(flags, logTarget);
        // A syslog that cannot be reached is refused here, before a daemon starts without a log.
        if (logTarget === 'syslog' || logTarget === 'journald') syslogPipeline(syslogAddress(logTarget, flags.syslogAddress));
        const logFile = logTarget !== 'file' ? undefined : resolve(flags.logFile ?? logFileFor(stateDir, resolve(mountpoint)));
        if (flags.foreground) {
          const { runDaemon } = await import('../daemon/main.js');
          await runDaemon({
            logTarget,
            ...(flags.syslogAddress !== undefined && { syslogAddress: flags.syslogAddress }),
            datastore,
            mountpoint,
            blockSize,
            readAround,
            busyPollNs,
            stateDir,
            allowOther: !!flags.allowOther,
            directIo: !!flags.directIo,
            clearDead: !!flags.clearDead,
            track: flags.track,
            ...(metrics && { metrics }),
            metricsPerFile: !!flags.metricsPerFile,
            logLevel: flags.logLevel,
            logFormat: flags.logFormat,
            logFile,
          }).catch((err: unknown) => {
            // Launched by `ferry mount`: it has the error and prints it; our stderr is the log, JSON only.
            if (process.send) process.exit(err instanceof UserError ? err.exitCode : 1);
            throw err;
          });
          process.exit(0);
        }
        await ensureStateDir(stateDir);
        const { launchDaemon } = await import('../daemon/launch.js');
        const args = ['mount', resolve(datastore), resolve(mountpoint), '--block-size', String(blockSize), '--read-around', String(readAround), '--busy-poll', busyPollNs === 0 ? '0' : `${busyPollNs}ns`, '--state-dir', stateDir];
        args.push('--log-level', flags.logLevel, '--log-format', flags.logFormat, '--log-target', logTarget);
        if (logFile) args.push('--log-file', logFile);
        if (flags.syslogAddress !== undefined) args.push('--syslog-address', flags.syslogAddress);
        if (flags.allowOther) args.push('--allow-other');
        if (flags.directIo) args.push('--direct-io');
        if (flags.clearDead) args.push('--clear-dead');
        if (!flags.track) args.push('--no-track');
        if (metrics) args.push('--metrics', formatMetricsAddress(metrics));
        if (flags.metricsPerFile) args.push('--metrics-per-file');
        const { warnings } = await launchDaemon(fileURLToPath(new URL('./main.js', import.meta.url)), args, resolve(mountpoint), logFile);
        for (const warning of warnings) warn(warning);
      }),
    );
}

/** One format per log file: pretty lines only on a terminal's stderr; each target with its own option. */
function checkLogFlags(flags: MountFlags, target: LogTarget): void {
  if (flags.logFormat === 'pretty' && target !== 'stderr') {
    throw new UserError('--log-format pretty is for people at a terminal: use it with --foreground (logs on stderr); files and syslog get JSON');
  }
  if (target === 'stderr' && !flags.foreground) throw new UserError('--log-target stderr needs --foreground: a background daemon has no terminal');
  if (flags.logFile !== undefined && target !== 'file') throw new UserError(`--log-file goes with --log-target file, not ${target}`);
  if (flags.syslogAddress !== undefined && target !== 'syslog') throw new UserError('--syslog-address goes with --log-target syslog (journald has its own socket)');
}
