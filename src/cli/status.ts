import { Command } from 'commander';
import { request, UnreachableError } from '../control/client.js';
import { stateDirFrom } from '../state/state-dir.js';
import { isAlive, listRecords, type MountRecord } from '../state/registry.js';
import { formatBytes } from '../util/size.js';
import { locate } from './locate.js';
import { action, printJson } from './run.js';
import type { DataPathStatus } from '../fs/native-stats.js';

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
  migrations?: { id: string; path: string; destination: string; phase: string; running: boolean; interrupted?: boolean; stuck?: { message: string }; passes: number; result?: { type: string; downtimeMs?: number; message?: string } }[];
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

function printHuman(s: MountStatus): void {
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
  const d = s.dataPath;
  if (d?.mode === 'native') {
    console.log(`  data path: native (${d.readOps} reads, ${d.writeOps} writes answered in C, ${d.passedOps} handed to JS; ${d.pollCaught} requests caught by polling, ${d.pollVain} polls in vain; write latency p50 ≤${d.writeLatencyP50Us} µs, p99 ≤${d.writeLatencyP99Us} µs)`);
  } else if (d) {
    console.log('  data path: JavaScript (FERRY_NATIVE=0)');
  }
  console.log(`  ${s.trackedFiles?.length ?? 0} file(s) with dirty blocks, ${formatBytes(s.dirtyBytes ?? 0)} dirty`);
  for (const f of s.trackedFiles ?? []) console.log(`    ${f.path}\t${formatBytes(f.dirtyBytes)} of ${formatBytes(f.size)}`);
  for (const m of s.migrations ?? []) {
    const outcome = m.interrupted ? 'INTERRUPTED by a crash: `ferry migrate --resume` continues it, `ferry cancel` drops the partial copy' : m.stuck ? `ABORT STUCK, still tracking: ${m.stuck.message}` : m.running ? `running, ${m.phase}` : m.result?.type === 'done' ? `done, downtime ${m.result.downtimeMs} ms` : `aborted: ${m.result?.message}`;
    console.log(`  migration ${m.id}: ${m.path} → ${m.destination} (${outcome}, ${m.passes} passes)`);
  }
}

export function statusCommand(): Command {
  return new Command('status')
    .description('show ferry mounts: datastore, daemon, ops and bytes served, dirty files')
    .argument('[mountpoint]', 'only this mount')
    .option('--json', 'print JSON (an array, or one object with a mountpoint)')
    .option('--state-dir <dir>', 'state dir (default $FERRY_STATE_DIR or /var/lib/ferry)')
    .action(
      action(async (mountpoint: string | undefined, flags: { json?: boolean; stateDir?: string }) => {
        const stateDir = stateDirFrom(flags.stateDir);
        if (mountpoint) {
          const status = await statusOf((await locate(stateDir, mountpoint)).record);
          return flags.json ? printJson(status) : printHuman(status);
        }
        const statuses = await Promise.all((await listRecords(stateDir)).map(statusOf));
        if (flags.json) return printJson(statuses);
        if (statuses.length === 0) console.log('no ferry mounts');
        statuses.forEach(printHuman);
      }),
    );
}
