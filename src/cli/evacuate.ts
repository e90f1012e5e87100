import { Command, Option } from 'commander';
import { basename, dirname, join, resolve } from 'node:path';
import { request } from '../control/client.js';
import { stateDirFrom } from '../state/state-dir.js';
import { parseDuration } from '../util/duration.js';
import { formatBytes } from '../util/size.js';
import { UserError } from '../util/user-error.js';
import { domainHome, domainNames } from './libvirt.js';
import { locate } from './locate.js';
import { EvacuationTable } from './evacuate-progress.js';
import { parseRate } from './migrate.js';
import { action, fail, printJson, useJsonErrors } from './run.js';

interface EvacuateFlags {
  to?: string;
  domains?: boolean;
  parallel: string;
  order?: string;
  exclude: string[];
  fit?: boolean;
  dryRun?: boolean;
  mode: string;
  maxDowntime: string;
  maxIterations: string;
  rateLimit?: string;
  setRate?: string;
  resume?: boolean;
  keepSource?: boolean;
  guestIoPriority?: boolean;
  detach?: boolean;
  json?: boolean;
  stateDir?: string;
}

interface Home {
  name: string;
  bytes: number;
  neededBytes: number;
}

interface Plan {
  virtual: string;
  dest: string;
  homes: Home[];
  refused: { name: string; reason: string }[];
  excluded: string[];
  left: Home[];
  neededBytes: number;
  freeBytes: number;
  parallel: number;
}

type Event = { type: string; home?: string; [key: string]: unknown };

function wholeNumber(value: string, what: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < 1) throw new UserError(`${what} must be a whole number >= 1 (got ${value})`);
  return n;
}

function printPlan(plan: Plan): void {
  console.log(`evacuation of ${plan.virtual} to ${plan.dest}, ${plan.parallel} at a time:`);
  for (const h of plan.homes) console.log(`  move    ${h.name} (${formatBytes(h.bytes)})`);
  for (const r of plan.refused) console.log(`  refused ${r.name}: ${r.reason}`);
  for (const h of plan.left) console.log(`  stays   ${h.name} (${formatBytes(h.bytes)}): does not fit`);
  for (const name of plan.excluded) console.log(`  excluded ${name}`);
  console.log(`  needs ${formatBytes(plan.neededBytes)} (data plus margin) of ${formatBytes(plan.freeBytes)} free at ${plan.dest}`);
}

/** One line per evacuation event (the migrations' own events go to --json only). */
function showEvent(event: Event): void {
  if (event.type === 'planned') printPlan(event as unknown as Plan);
  else if (event.type === 'resumed') console.log(`resumed, ${event.parallel} at a time`);
  else if (event.type === 'started' && event.home) console.log(`${event.home}: started (migration ${event.migration})`);
  else if (event.type === 'finished') console.log(`${event.home}: ${event.state}${event.reason ? ` (${event.reason})` : ''}, ${formatBytes(Number(event.bytesCopied))} copied`);
  else if (event.type === 'pass' && event.home) console.log(`${event.home}: pass ${Number(event.pass) + 1}, ${formatBytes(Number(event.copiedBytes))} copied`);
}

/**
 * The names (under `dir`) of the homes of libvirt's domains that live directly in it. A domain whose files are
 * outside every ferry mount is another datastore's: not a refusal here, just not one of these.
 */
async function domainHomesIn(stateDir: string, dir: string, json: boolean): Promise<string[]> {
  const names: string[] = [];
  for (const domain of await domainNames()) {
    const home = await domainHome(stateDir, domain).catch((err: unknown) => {
      if (err instanceof UserError && err.exitCode === 2 && /outside any ferry mount|no file-backed disk/.test(err.message)) return undefined;
      throw err;
    });
    if (home === undefined || dirname(home) !== dir) continue;
    if (json) printJson({ type: 'domain', domain, home });
    else console.log(`domain ${domain}: its home is ${home}`);
    names.push(basename(home));
  }
  return names;
}

export function evacuateCommand(): Command {
  return new Command('evacuate')
    .description('move every VM home directly under a directory of a ferry mount to another datastore, live, a few at a time')
    .argument('<dir>', 'a directory inside a ferry mount (its root, or any directory in it) whose subdirectories are VM homes')
    .option('--to <dest-dir>', 'an existing directory outside the mount: each home moves to <dest-dir>/<name>')
    .option('--domains', 'move only the homes of libvirt domains (as ferry migrate --domain finds them) directly under <dir>')
    .option('--parallel <n>', 'moves at once', '2')
    .addOption(new Option('--order <order>', 'which homes start first (default name; with --fit: largest)').choices(['smallest', 'largest', 'name']))
    .option('--exclude <glob>', 'leave out the homes whose name matches (repeatable)', (glob: string, all: string[]) => [...all, glob], [] as string[])
    .option('--fit', 'when the destination cannot hold them all, move what fits and list what stays (instead of refusing)')
    .option('--dry-run', 'print the plan and exit: nothing moves')
    .addOption(new Option('--mode <mode>', 'each move: iterative, mirror or auto (as ferry migrate)').choices(['iterative', 'mirror', 'auto']).default('auto'))
    .option('--max-downtime <duration>', 'each move: longest allowed I/O freeze at its switchover', '5s')
    .option('--max-iterations <n>', 'each move: give up after this many copy passes without converging', '30')
    .option('--rate-limit <bytes/s>', 'one copy budget shared by all running moves, e.g. 200M')
    .option('--resume', 'continue an evacuation interrupted by a crash of the daemon (see ferry status): moved homes stay, interrupted moves resume, pending ones start')
    .option('--set-rate <bytes/s>', 'change the shared budget of the running evacuation of <dir> (0 = unlimited)')
    .option('--guest-io-priority', "each move: pause its copy while the guest writes heavily")
    .option('--keep-source', 'leave the source files in place after each switch')
    .option('--detach', 'return once the evacuation has started (follow it with ferry status)')
    .option('--json', 'print one JSON object per event: the plan, each move (tagged with its home), the totals')
    .option('--state-dir <dir>', 'state dir (default $FERRY_STATE_DIR or /var/lib/ferry)')
    .action(
      action(async (dir: string, flags: EvacuateFlags, command: Command) => {
        const { record, inside } = await locate(stateDirFrom(flags.stateDir), dir);
        if (flags.setRate !== undefined) {
          const rateLimit = parseRate(flags.setRate);
          const summary = await request(record.socket, 'set-rate', { path: inside, rateLimit });
          if (flags.json) return printJson(summary);
          console.log(`shared rate limit of the evacuation of ${inside}: ${rateLimit ? `${formatBytes(rateLimit)}/s` : 'unlimited'}`);
          return;
        }
        if (flags.resume && flags.to !== undefined) throw new UserError('--resume continues to the destination the interrupted evacuation recorded: leave out --to');
        if (!flags.to && !flags.resume) throw new UserError('missing --to <dest-dir>: where should the homes go?');
        const fromCli = (name: string) => command.getOptionValueSource(name) === 'cli';
        if (flags.resume) {
          for (const name of ['order', 'exclude', 'fit', 'dryRun', 'mode', 'maxDowntime', 'maxIterations', 'keepSource', 'guestIoPriority']) {
            if (fromCli(name)) throw new UserError(`--resume keeps the plan and options the interrupted evacuation recorded: leave out --${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`);
          }
        }
        if (flags.resume && flags.domains) throw new UserError('--resume keeps the plan the interrupted evacuation recorded: leave out --domains');
        const only = flags.domains && !flags.resume ? await domainHomesIn(stateDirFrom(flags.stateDir), resolve(join(record.mountpoint, inside)), !!flags.json) : undefined;
        const method = flags.resume ? 'evacuate-resume' : 'evacuate';
        const params = flags.resume ? {
          path: inside,
          ...(fromCli('parallel') && { parallel: wholeNumber(flags.parallel, '--parallel') }),
          ...(fromCli('rateLimit') && { rateLimit: parseRate(flags.rateLimit!) }),
          detach: !!flags.detach,
        } : {
          path: inside,
          to: resolve(flags.to!),
          parallel: wholeNumber(flags.parallel, '--parallel'),
          ...(flags.order && { order: flags.order }),
          exclude: flags.exclude,
          ...(only && { only }),
          fit: !!flags.fit,
          dryRun: !!flags.dryRun,
          mode: flags.mode,
          maxDowntimeMs: parseDuration(flags.maxDowntime, '--max-downtime'),
          maxIterations: wholeNumber(flags.maxIterations, '--max-iterations'),
          rateLimit: flags.rateLimit ? parseRate(flags.rateLimit) : 0,
          keepSource: !!flags.keepSource,
          guestIoPriority: !!flags.guestIoPriority,
          detach: !!flags.detach,
        };
        if (flags.dryRun) {
          const plan = (await request(record.socket, 'evacuate', params)) as Plan;
          if (flags.json) return printJson(plan);
          printPlan(plan);
          console.log('dry run: nothing moved');
          return;
        }
        if (flags.detach) {
          const started = (await request(record.socket, method, params)) as { id: string; homes: number };
          if (flags.json) return printJson({ type: 'started', ...started });
          console.log(`evacuation ${started.id} of ${inside} started (${started.homes} homes); follow it with \`ferry status ${record.mountpoint}\``);
          return;
        }
        let cancelling = false;
        process.on('SIGINT', () => {
          if (cancelling) process.exit(130);
          cancelling = true;
          process.stderr.write('\nferry: cancelling the evacuation (Ctrl-C again to stop waiting)\n');
          void request(record.socket, 'cancel', { path: inside }).catch(() => undefined);
        });
        const table = !flags.json && process.stdout.isTTY ? new EvacuationTable((text) => process.stdout.write(text)) : undefined;
        const show = (event: Event) => {
          if (!table) return showEvent(event);
          if (event.type === 'planned') printPlan(event as unknown as Plan);
          table.show(event);
        };
        const totals = (await request(record.socket, method, params, {
          onEvent: (event) => (flags.json ? printJson(event) : show(event as Event)),
        })) as { state: string; moved: number; failed: number; cancelled: number; refused: number; left: number; bytesCopied: number; durationMs: number; error?: string };
        table?.stop();
        const line = `${totals.moved} moved, ${totals.failed} failed, ${totals.cancelled} cancelled, ${totals.refused} refused, ${totals.left} did not fit; ${formatBytes(totals.bytesCopied)} copied in ${(totals.durationMs / 1000).toFixed(1)} s`;
        if (totals.failed > 0 || totals.state === 'cancelled' || totals.error) {
          useJsonErrors(false);
          fail(`evacuation of ${inside} ${totals.state === 'cancelled' ? 'cancelled' : 'incomplete'}: ${line}; the VMs not moved run on the source${totals.error ? `; ${totals.error}` : ''}`, 1);
        }
        if (!flags.json) console.log(`evacuated ${inside}: ${line}`);
      }),
    );
}
