import { execFile } from 'node:child_process';
import { connect } from 'node:net';
import { readFile, readdir } from 'node:fs/promises';
import { findMount } from '../util/mounts.js';

/** What a hung guest run leaves for the one who reads its failure: processes' threads, QEMU's view, FUSE's queue. */

async function read(path: string): Promise<string> {
  return (await readFile(path, 'utf8').catch((e: NodeJS.ErrnoException) => `(${e.code})`)).trim();
}

/** Each thread of `pid`: name, state, where it sleeps, and its kernel stack (root can read it). */
export async function threadStates(pid: number | undefined): Promise<string> {
  if (!pid) return '(no pid)';
  const tids = await readdir(`/proc/${pid}/task`).catch(() => []);
  const lines: string[] = [];
  for (const tid of tids) {
    const dir = `/proc/${pid}/task/${tid}`;
    const stat = await read(`${dir}/stat`);
    const state = /\) (\S)/.exec(stat)?.[1] ?? '?';
    const stack = (await read(`${dir}/stack`)).split('\n').map((l) => l.replace(/^\[<[0-9a-f]+>\] /, '')).slice(0, 6).join(' < ');
    lines.push(`  ${tid} ${await read(`${dir}/comm`)} ${state} wchan=${await read(`${dir}/wchan`)} ${stack}`);
  }
  return lines.join('\n') || `(no /proc/${pid})`;
}

const CONNECTIONS = '/sys/fs/fuse/connections';

/** Requests the kernel has sent to the mount's server and not yet had answered (fusectl mounted for it if need be). */
export async function fuseWaiting(mountpoint: string): Promise<string> {
  const mount = await findMount(mountpoint);
  if (!mount?.fstype.startsWith('fuse')) return '(not a FUSE mount)';
  const mountedHere = (await readdir(CONNECTIONS).catch(() => [])).length === 0 && (await run('mount', ['-t', 'fusectl', 'fusectl', CONNECTIONS]));
  try {
    return await read(`${CONNECTIONS}/${mount.minor}/waiting`);
  } finally {
    if (mountedHere) await run('umount', [CONNECTIONS]);
  }
}

function run(file: string, args: string[]): Promise<boolean> {
  return new Promise((resolve) => execFile(file, args, (err) => resolve(!err)));
}

const BLOCK_STATS = ['rd_operations', 'wr_operations', 'flush_operations', 'failed_rd_operations', 'failed_wr_operations', 'failed_flush_operations', 'idle_time_ns'];

const VIRTIO_STATUS = ['name', 'isr', 'broken', 'started', 'vm-running', 'use-guest-notifier-mask'];

/** query-blockstats and x-query-virtio-status answer at length: keep what says whether requests completed. */
function compact(command: string, line: string): string {
  try {
    if (command.startsWith('x-query-virtio-status')) {
      const status = JSON.parse(line).return as Record<string, unknown>;
      return JSON.stringify(Object.fromEntries(VIRTIO_STATUS.map((k) => [k, status[k]])));
    }
    if (command !== 'query-blockstats') return line;
    const devices = (JSON.parse(line).return as { device: string; stats: Record<string, number> }[]).filter((d) => d.stats.rd_operations + d.stats.wr_operations > 0);
    return JSON.stringify(devices.map((d) => ({ device: d.device, ...Object.fromEntries(BLOCK_STATS.map((k) => [k, d.stats[k]])) })));
  } catch {
    return line;
  }
}

/** A QMP command, by name alone or with its arguments. */
export type QmpCommand = string | { execute: string; arguments: Record<string, unknown> };

const label = (c: QmpCommand) => (typeof c === 'string' ? c : `${c.execute} ${JSON.stringify(c.arguments)}`);

/** Runs QMP commands on a QEMU's socket; every failure becomes text, within `timeoutMs`. */
export function qmpQueries(socket: string, commands: QmpCommand[], timeoutMs = 3000): Promise<string> {
  return new Promise((resolve) => {
    const out: string[] = [];
    const conn = connect(socket);
    const done = (why?: string) => {
      clearTimeout(timer);
      conn.destroy();
      resolve(out.join('\n') + (why ? `\n(${why})` : ''));
    };
    const timer = setTimeout(() => done('QMP timed out'), timeoutMs);
    let buffer = '';
    let sent = -1;
    conn.on('error', (e) => done(`QMP: ${e.message}`));
    conn.on('data', (chunk) => {
      buffer += chunk.toString();
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line.includes('"event"')) continue;
        // sent: -1 before the greeting, 0 after qmp_capabilities went out, k after the k-th command went out.
        if (sent >= 1) out.push(`  ${label(commands[sent - 1])}: ${compact(label(commands[sent - 1]), line)}`);
        if (sent === commands.length) return done();
        const next = sent < 0 ? 'qmp_capabilities' : commands[sent];
        conn.write(JSON.stringify(typeof next === 'string' ? { execute: next } : next) + '\n');
        sent += 1;
      }
    });
  });
}

/**
 * Each virtio device's interrupt status and first queue: the guest's published avail index against the last one
 * QEMU took, requests in QEMU's hands, and the used index QEMU last signalled. Tells a lost kick from a lost
 * interrupt from a request stuck in QEMU.
 */
async function virtqueues(qmpSocket: string): Promise<string> {
  const listed = /x-query-virtio: (.*)/.exec(await qmpQueries(qmpSocket, ['x-query-virtio']))?.[1] ?? '';
  let paths: string[];
  try {
    paths = (JSON.parse(listed).return as { path: string }[]).map((d) => d.path);
  } catch {
    return `(no virtio devices listed: ${listed})`;
  }
  const commands = paths.flatMap((path): QmpCommand[] => [
    { execute: 'x-query-virtio-status', arguments: { path } },
    { execute: 'x-query-virtio-queue-status', arguments: { path, queue: 0 } },
  ]);
  const status = await qmpQueries(qmpSocket, commands);
  return `${status}\n${await ringWords(qmpSocket, status)}`;
}

/**
 * The ring words as the guest wrote them in its memory (QEMU's shadow index is only what QEMU last read): the
 * avail index and used_event the driver published, the used index and avail_event the device published.
 */
async function ringWords(qmpSocket: string, queueStatus: string): Promise<string> {
  const commands: QmpCommand[] = [];
  const legend: string[] = [];
  for (const line of queueStatus.split('\n')) {
    const q = /"vring-avail": (\d+).*"vring-used": (\d+).*"vring-num": (\d+)/.exec(line);
    if (!q) continue;
    const [avail, used, num] = q.slice(1).map(Number);
    const words = { 'avail.idx': avail + 2, used_event: avail + 4 + 2 * num, 'used.idx': used + 2, avail_event: used + 4 + 8 * num };
    legend.push(Object.entries(words).map(([name, at]) => `${name}@${at}`).join(' '));
    for (const at of Object.values(words)) commands.push({ execute: 'human-monitor-command', arguments: { 'command-line': `xp /1hu ${at}` } });
  }
  return commands.length ? `  ring words: ${legend.join('; ')}\n${await qmpQueries(qmpSocket, commands)}` : '(no ring addresses)';
}

/** The evidence of a guest that stopped making progress, before it is killed. */
export async function gatherEvidence(qemuPid: number | undefined, qmpSocket: string, more?: () => Promise<string>): Promise<string> {
  const parts = [
    `--- QEMU (pid ${qemuPid}) threads ---\n${await threadStates(qemuPid)}`,
    `--- QMP ---\n${await qmpQueries(qmpSocket, ['query-status', 'query-block-jobs', 'query-blockstats', 'x-query-virtio'])}`,
    `--- virtqueues ---\n${await virtqueues(qmpSocket)}`,
  ];
  if (more) parts.push(await more().catch((e: Error) => `(more evidence failed: ${e.message})`));
  return `\n${parts.join('\n')}`;
}
