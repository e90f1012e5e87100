import { Command } from 'commander';
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { request, UnreachableError } from '../control/client.js';
import { mountsDir, stateDirFrom } from '../state/state-dir.js';
import { findRecordFor, isAlive, listRecords, type MountRecord } from '../state/registry.js';
import { formatBytes } from '../util/size.js';
import { UserError, errnoCode } from '../util/user-error.js';
import { action, printJson } from './run.js';
import type { DataPathStatus } from '../fs/native-stats.js';
import type { ProgressFigures } from '../migrate/figures.js';

/** Exit codes a monitor can tell apart (`ferry status || alert`); 1 and 2 keep their meaning (error, bad input). */
const STATUS_EXIT = { ok: 0, mountDown: 3, migrationNeedsAttention: 4 } as const;
/** Ended migrations shown in text unless --all: the latest few say how things went, the rest is history. */
const PAST_SHOWN = 5;

interface MigrationStatus {
  id: string;
  path: string;
  destination: string;
  phase: string;
  running: boolean;
  interrupted?: boolean;
  stuck?: { message: string };
  startedAt: string;
  endedAt?: string;
  passes: number;
  progress?: ProgressFigures;
  result?: { type: string; downtimeMs?: number; message?: string };
}

interface MountStatus extends MountRecord {
  state: 'running' | 'dead' | 'unresponsive';
  uptimeMs?: number;
  totalOps?: number;
  bytesRead?: number;
  bytesWritten?: number;
  dirtyBytes?: number;
  openFiles?: unknown[];
  dataPath?: DataPathStatus;
  trackedFiles?: { path: string; size: number; dirtyBytes: number }[];
  mappings?: { virtual: string; backing: string }[];
  migrations?: MigrationStatus[];
  evacuations?: EvacuationStatus[];
}

interface EvacuationStatus {
  id: string;
  path: string;
  destination: string;
  state: string;
  parallel: number;
  rateLimit: number;
  homes: { name: string; bytes: number; state: string; phase?: string; progress?: ProgressFigures; reason?: string }[];
  refused: { name: string; reason: string }[];
  left: string[];
}

async function statusOf(record: MountRecord): Promise<MountStatus> {
  if (!isAlive(record.pid)) return { ...record, state: 'dead' };
  try {
    const live = (await request(record.socket, 'status', {}, { timeoutMs: 10_000 })) as MountStatus;
    return { ...live, state: 'running' };
  } catch (err) {
    if (err instanceof UnreachableError) return { ...record, state: isAlive(record.pid) ? 'unresponsive' : 'dead' };
    throw err;
  }
}

/** 0 when all is well; else the code of the worst trouble: a mount down, then a migration waiting for a user. */
function exitCodeOf(statuses: MountStatus[]): number {
  if (statuses.some((s) => s.state !== 'running')) return STATUS_EXIT.mountDown;
  if (statuses.some((s) => s.migrations?.some(needsAttention) || s.evacuations?.some((e) => e.state === 'interrupted'))) return STATUS_EXIT.migrationNeedsAttention;
  return STATUS_EXIT.ok;
}

function needsAttention(m: MigrationStatus): boolean {
  return !!m.interrupted || !!m.stuck;
}

/** A state dir given on purpose must be one ferry made: a typo or a wrong path is not "no ferry mounts". */
async function checkStateDir(stateDir: string, given: boolean): Promise<void> {
  const fix = 'give the directory `ferry mount` used (--state-dir or FERRY_STATE_DIR)';
  let st;
  try {
    st = await stat(stateDir);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' && !given) return; // no mount was ever made here
    throw new UserError(`state dir ${stateDir} cannot be read (${errnoCode(err) ?? 'error'}): ${fix}`);
  }
  if (!st.isDirectory()) throw new UserError(`state dir ${stateDir} is not a directory: ${fix}`);
  const mounts = await stat(mountsDir(stateDir)).catch(() => undefined);
  if (!mounts?.isDirectory()) throw new UserError(`${stateDir} is not a ferry state dir (it has no mounts/ directory): ${fix}`);
}

/** The record of the mount at (or containing) `path`, dead or alive: status is how a dead one is found. */
async function recordFor(stateDir: string, path: string): Promise<MountRecord> {
  const record = await findRecordFor(stateDir, resolve(path));
  if (!record) throw new UserError(`${resolve(path)} is not under a ferry mount of state dir ${stateDir} (see \`ferry status\`)`);
  return record;
}

const time = (iso: string | undefined) => (iso ? iso.replace('T', ' ').replace(/\.\d+Z$/, ' UTC') : '?');

function progressText(p: ProgressFigures): string {
  const rate = p.rateBytesPerSec > 0 ? `, ${formatBytes(p.rateBytesPerSec)}/s` : '';
  const eta = p.etaSeconds !== null && p.etaSeconds > 0 ? `, about ${p.etaSeconds} s left` : '';
  return `${p.percent}% (${formatBytes(p.copiedBytes)} of ${formatBytes(p.totalBytes)})${rate}${eta}`;
}

function migrationText(m: MigrationStatus): string {
  const times = `started ${time(m.startedAt)}${m.endedAt ? `, ended ${time(m.endedAt)}` : ''}`;
  if (m.interrupted) return `INTERRUPTED by a crash: \`ferry migrate --resume\` continues it, \`ferry cancel\` drops the partial copy; ${times}`;
  if (m.stuck) return `ABORT STUCK, still tracking: ${m.stuck.message}; ${times}`;
  if (m.running) {
    const step = m.phase === 'bulk' ? 'bulk copy' : m.phase;
    const pass = m.progress ? ` (pass ${m.progress.pass + 1})` : '';
    return `running, ${step}${pass}: ${m.progress ? progressText(m.progress) : 'starting'}; ${times}`;
  }
  if (m.result?.type === 'done') return `done in ${m.passes} pass${m.passes === 1 ? '' : 'es'}, downtime ${m.result.downtimeMs} ms; ${times}`;
  return `aborted: ${m.result?.message}; ${times}`;
}

function dataPathText(d: DataPathStatus): string {
  if (d.mode !== 'native') return 'JavaScript (FERRY_NATIVE=0)';
  // A latency only when writes were measured: an empty histogram has no quantile to show.
  const latency = d.writeOps > 0 && d.writeLatencyP50Us > 0 ? `; half the writes took at most ${d.writeLatencyP50Us} µs, 99 in 100 at most ${d.writeLatencyP99Us} µs` : '';
  return `native (${d.readOps} reads, ${d.writeOps} writes answered in C, ${d.fastPathReads + d.fastPathWrites} of them by the request loop's fast path, ${d.passedOps} handed to JavaScript${latency})`;
}

function printHuman(s: MountStatus, all: boolean): void {
  if (s.state === 'unresponsive') {
    console.log(`${s.mountpoint}: UNRESPONSIVE (daemon pid ${s.pid} does not answer) — see its log; \`ferry unmount --force ${s.mountpoint}\` aborts it`);
    return;
  }
  if (s.state === 'dead') {
    console.log(`${s.mountpoint}: DEAD (daemon pid ${s.pid} is gone) — clear with \`ferry unmount --force ${s.mountpoint}\``);
    return;
  }
  console.log(`${s.mountpoint} ← ${s.datastore}`);
  console.log(`  pid ${s.pid}, up ${Math.round((s.uptimeMs ?? 0) / 1000)} s, block size ${formatBytes(s.blockSize)}, read-around ${s.readAround ? formatBytes(s.readAround) : 'off'}, busy poll ${s.busyPollNs ? `${s.busyPollNs / 1000} µs` : 'off'}`);
  console.log(`  ${s.totalOps} ops, ${formatBytes(s.bytesRead ?? 0)} read, ${formatBytes(s.bytesWritten ?? 0)} written, ${s.openFiles?.length ?? 0} open file(s)`);
  if (s.logFile) console.log(`  log: ${s.logFile}`);
  if (s.dataPath) console.log(`  data path: ${dataPathText(s.dataPath)}`);
  console.log(`  ${s.trackedFiles?.length ?? 0} file(s) with dirty blocks, ${formatBytes(s.dirtyBytes ?? 0)} dirty`);
  for (const f of s.trackedFiles ?? []) console.log(`    ${f.path}\t${formatBytes(f.dirtyBytes)} of ${formatBytes(f.size)}`);
  console.log('  path map:');
  for (const m of s.mappings ?? []) console.log(`    ${m.virtual} → ${m.backing}`);
  const migrations = s.migrations ?? [];
  // Active ones always; of the ended ones the latest few unless --all.
  const ended = migrations.filter((m) => !m.running && !needsAttention(m));
  const hidden = all ? new Set() : new Set(ended.slice(0, Math.max(0, ended.length - PAST_SHOWN)));
  for (const m of migrations) if (!hidden.has(m)) console.log(`  migration ${m.id}: ${m.path} → ${m.destination} (${migrationText(m)})`);
  if (hidden.size > 0) console.log(`  ${hidden.size} older migration${hidden.size === 1 ? '' : 's'} not shown (--all)`);
  for (const e of s.evacuations ?? []) printEvacuation(e);
}

/** An evacuation and its per-home table. */
function printEvacuation(e: EvacuationStatus): void {
  const what = e.state === 'interrupted' ? 'INTERRUPTED by a crash: `ferry evacuate --resume` continues it, `ferry cancel` gives up the rest' : e.state;
  const rate = e.rateLimit > 0 ? `, ${formatBytes(e.rateLimit)}/s shared` : '';
  console.log(`  evacuation ${e.id}: ${e.path} → ${e.destination} (${what}; ${e.parallel} at a time${rate})`);
  for (const h of e.homes) {
    const doing = h.progress ? `, ${h.phase === 'bulk' ? 'bulk copy' : h.phase} (pass ${h.progress.pass + 1}): ${progressText(h.progress)}` : '';
    console.log(`    ${h.name.padEnd(16)} ${h.state.padEnd(11)} ${formatBytes(h.bytes).padStart(10)}${doing}${h.reason ? `: ${h.reason}` : ''}`);
  }
  for (const r of e.refused) console.log(`    ${r.name.padEnd(16)} refused: ${r.reason}`);
  for (const name of e.left) console.log(`    ${name.padEnd(16)} stays: did not fit`);
}

export function statusCommand(): Command {
  return new Command('status')
    .description('show ferry mounts: datastore, daemon, ops and bytes served, dirty files, path map, migrations and their progress')
    .argument('[mountpoint]', 'only this mount')
    .option('--json', 'print JSON (an array, or one object with a mountpoint)')
    .option('--all', 'list every past migration (text shows the last 5)')
    .option('--state-dir <dir>', 'state dir (default $FERRY_STATE_DIR or /var/lib/ferry)')
    .addHelpText(
      'after',
      [
        '',
        'Exit status:',
        `  ${STATUS_EXIT.ok}  all mounts answer and no migration needs attention`,
        `  ${STATUS_EXIT.mountDown}  a mount is dead or unresponsive (\`ferry unmount --force <mountpoint>\` clears it)`,
        `  ${STATUS_EXIT.migrationNeedsAttention}  a migration or evacuation is interrupted (\`ferry migrate --resume\`, \`ferry evacuate --resume\` or \`ferry cancel\`) or an abort is stuck (\`ferry cancel\`)`,
        '  1  an error (a daemon that fails to answer is reported as unresponsive, exit 3)',
        "  2  bad input, such as a --state-dir that is not ferry's",
      ].join('\n'),
    )
    .action(
      action(async (mountpoint: string | undefined, flags: { json?: boolean; all?: boolean; stateDir?: string }) => {
        const stateDir = stateDirFrom(flags.stateDir);
        await checkStateDir(stateDir, flags.stateDir !== undefined);
        if (mountpoint) {
          const status = await statusOf(await recordFor(stateDir, mountpoint));
          if (flags.json) printJson(status);
          else printHuman(status, !!flags.all);
          process.exitCode = exitCodeOf([status]);
          return;
        }
        const statuses = await Promise.all((await listRecords(stateDir)).map(statusOf));
        if (flags.json) printJson(statuses);
        else if (statuses.length === 0) console.log('no ferry mounts');
        else statuses.forEach((s) => printHuman(s, !!flags.all));
        process.exitCode = exitCodeOf(statuses);
      }),
    );
}
