import { Command, Option } from 'commander';
import { resolve } from 'node:path';
import { request } from '../control/client.js';
import { stateDirFrom } from '../state/state-dir.js';
import { parseDuration } from '../util/duration.js';
import { formatBytes, parseSize } from '../util/size.js';
import { UserError } from '../util/user-error.js';
import { domainHome } from './libvirt.js';
import { locate } from './locate.js';
import { MigrationProgress } from './progress.js';
import { action, fail, printJson, useJsonErrors } from './run.js';

interface MigrateFlags {
  to?: string;
  domain?: string;
  resume?: boolean;
  mode: string;
  guestIoPriority?: boolean;
  setRate?: string;
  maxDowntime: string;
  maxIterations: string;
  rateLimit?: string;
  keepSource?: boolean;
  detach?: boolean;
  json?: boolean;
  stateDir?: string;
}

interface Final {
  type: 'done' | 'error';
  [key: string]: unknown;
}

/** Bytes per second, e.g. 100M or 100M/s; 0 means unlimited. */
export function parseRate(input: string): number {
  return input.trim() === '0' ? 0 : parseSize(input.replace(/\/s$/, ''), '--rate-limit');
}

export function migrateCommand(): Command {
  return new Command('migrate')
    .description("move a running VM's directory (or one file) to another datastore, live")
    .argument('[path]', 'a directory or file inside a ferry mount (or --domain)')
    .option('--to <dest>', 'where to move it, outside the mount, as mv reads it: into an existing directory, or to a new name')
    .option('--domain <name>', "a libvirt domain instead of <path>: its home, the directory of its disks and NVRAM, inside a ferry mount")
    .addOption(new Option('--mode <mode>', 'iterative: pre-copy passes; mirror: one pass, then guest writes go to both sides; auto: iterative, mirroring when that stops converging').choices(['iterative', 'mirror', 'auto']).default('auto'))
    .option('--guest-io-priority', 'pause the copy while the guest writes heavily to the subtree')
    .option('--set-rate <bytes/s>', 'change the rate limit of the running migration of <path> (0 = unlimited)')
    .option('--resume', 'continue a migration interrupted by a crash of the daemon (see ferry status)')
    .option('--max-downtime <duration>', 'longest allowed I/O freeze at the switchover, e.g. 500ms or 2s (a bare number is seconds, where virsh migrate-setmaxdowntime takes milliseconds)', '5s')
    .option('--max-iterations <n>', 'give up after this many copy passes without converging', '30')
    .option('--rate-limit <bytes/s>', 'cap the copy rate, e.g. 100M (the switchover itself is not capped)')
    .option('--keep-source', 'leave the source files in place after the switch')
    .option('--detach', 'return once the migration has started (follow it with ferry status)')
    .option('--json', 'print one JSON object per event')
    .option('--state-dir <dir>', 'state dir (default $FERRY_STATE_DIR or /var/lib/ferry)')
    .action(
      action(async (given: string | undefined, flags: MigrateFlags, command: Command) => {
        const path = await pathToMigrate(given, flags);
        if (flags.setRate !== undefined) return setRate(path, flags);
        if (flags.resume && flags.to !== undefined) throw new UserError('--resume continues to the destination the interrupted migration recorded: leave out --to');
        if (flags.resume && flags.keepSource) throw new UserError('--resume keeps what the interrupted migration recorded about its source: leave out --keep-source');
        if (!flags.to && !flags.resume) throw new UserError('missing --to <dest>: where should the files go?');
        const maxDowntimeMs = parseDuration(flags.maxDowntime, '--max-downtime');
        const maxIterations = Number(flags.maxIterations);
        if (!Number.isInteger(maxIterations) || maxIterations < 1) throw new UserError('--max-iterations must be a whole number >= 1');
        const rateLimit = flags.rateLimit ? parseRate(flags.rateLimit) : 0;
        const { record, inside } = await locate(stateDirFrom(flags.stateDir), path);
        // A resume never starts a migration: it names the path, and changes only the options given here.
        const fromCli = (name: string) => command.getOptionValueSource(name) === 'cli';
        const params = flags.resume
          ? {
              path: inside,
              detach: !!flags.detach,
              ...(fromCli('mode') && { mode: flags.mode }),
              ...(fromCli('maxDowntime') && { maxDowntimeMs }),
              ...(fromCli('maxIterations') && { maxIterations }),
              ...(fromCli('rateLimit') && { rateLimit }),
              ...(fromCli('guestIoPriority') && { guestIoPriority: true }),
            }
          : {
              path: inside,
              // A trailing slash names a directory to move into (mv's reading): kept for the daemon's preflight.
              to: resolve(flags.to!) + (flags.to!.endsWith('/') && resolve(flags.to!) !== '/' ? '/' : ''),
              mode: flags.mode,
              maxDowntimeMs,
              maxIterations,
              rateLimit,
              keepSource: !!flags.keepSource,
              guestIoPriority: !!flags.guestIoPriority,
              detach: !!flags.detach,
            };

        const verb = flags.resume ? 'resume' : 'migrate';
        if (flags.detach) {
          const started = (await request(record.socket, verb, params)) as { id: string; destination: string };
          if (flags.json) return printJson({ type: 'started', ...started });
          console.log(`migration ${started.id} of ${inside} ${flags.resume ? 'resumed' : `started, to ${started.destination}`}; follow it with \`ferry status ${record.mountpoint}\``);
          return;
        }
        const progress = flags.json ? undefined : await MigrationProgress.start(process.stdout.isTTY);
        let cancelling = false;
        process.on('SIGINT', () => {
          if (cancelling) process.exit(130);
          cancelling = true;
          process.stderr.write('\nferry: cancelling the migration (Ctrl-C again to stop waiting)\n');
          void request(record.socket, 'cancel', { path: inside }).catch(() => undefined);
        });
        const final = (await request(record.socket, verb, params, {
          onEvent: (event) => (flags.json ? printJson(event) : progress!.show(event as { type: string }, inside)),
        })) as Final;
        progress?.stop();
        if (final.type === 'error') {
          // With --json the error event is on stdout already: the stderr line only.
          useJsonErrors(false);
          fail(`migration aborted: ${final.message}`, 1);
        }
        if (!flags.json) {
          console.log(
            `migrated ${inside} to ${final.destination} (${final.mode}): ${final.passes} passes, ${formatBytes(Number(final.bytesCopied))} copied in ${(Number(final.durationMs) / 1000).toFixed(1)} s, downtime ${final.downtimeMs} ms` +
            (Number(final.mirroredWrites) > 0 ? `, ${final.mirroredWrites} writes mirrored (+${final.mirrorLatencyP50Ms} ms p50, +${final.mirrorLatencyP99Ms} ms p99)` : '') +
            (final.keptMountPoint ? `; the source ${final.keptMountPoint} is a mount point: emptied, left in place` : ''),
          );
        }
      }),
    );
}

/** The <path> argument, or the home of the libvirt domain that --domain names: exactly one of them. */
async function pathToMigrate(given: string | undefined, flags: MigrateFlags): Promise<string> {
  if (flags.domain !== undefined && given !== undefined) throw new UserError(`give either <path> or --domain, not both (${given}, --domain ${flags.domain})`);
  if (flags.domain !== undefined) {
    const home = await domainHome(stateDirFrom(flags.stateDir), flags.domain);
    if (flags.json) printJson({ type: 'domain', domain: flags.domain, home });
    else console.log(`domain ${flags.domain}: its home is ${home}`);
    return home;
  }
  if (given === undefined) throw new UserError('missing <path>: which directory or file inside a ferry mount (or --domain <name>)?');
  return given;
}

async function setRate(path: string, flags: MigrateFlags): Promise<void> {
  const rateLimit = parseRate(flags.setRate!);
  const { record, inside } = await locate(stateDirFrom(flags.stateDir), path);
  const summary = await request(record.socket, 'set-rate', { path: inside, rateLimit });
  if (flags.json) return printJson(summary);
  console.log(`rate limit of the migration of ${inside}: ${rateLimit ? `${formatBytes(rateLimit)}/s` : 'unlimited'}`);
}

export function cancelCommand(): Command {
  return new Command('cancel')
    .description('cancel a running migration (the VM stays on the source, the partial copy is removed) or evacuation')
    .argument('<path>', 'the path being migrated or evacuated, inside a ferry mount')
    .option('--json', 'print the migration as JSON')
    .option('--state-dir <dir>', 'state dir (default $FERRY_STATE_DIR or /var/lib/ferry)')
    .action(
      action(async (path: string, flags: { json?: boolean; stateDir?: string }) => {
        const { record, inside } = await locate(stateDirFrom(flags.stateDir), path);
        const summary = await request(record.socket, 'cancel', { path: inside });
        if (flags.json) return printJson(summary);
        const evacuation = (summary as { evacuation?: unknown; moved?: number; cancelled?: number; failed?: number }).evacuation;
        if (evacuation) {
          const { moved, cancelled, failed } = summary as Record<string, number>;
          console.log(`cancelled the evacuation of ${inside}: ${moved} moved (they stay moved), ${cancelled} cancelled and ${failed} failed (those run on the source)`);
          return;
        }
        const left = (summary as { result?: { message?: string } }).result?.message?.match(/; (the partial copy .*could not be removed.*?)(;|$)/)?.[1];
        console.log(`cancelled the migration of ${inside}; the source is intact${left ? `; ${left}` : ''}`);
      }),
    );
}
