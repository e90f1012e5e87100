import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { gatherEvidence } from './evidence.js';
import { fileURLToPath } from 'node:url';

/** Unmodified QEMU guests (TCG, Debian cloud kernel, busybox initramfs) running scripts/guest/workload.c on a disk. */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CACHE = join(ROOT, '.cache/guest');
const BUILD = join(ROOT, 'scripts/guest/build.sh');

/** What the guest uses when `region` is not given: the whole disk, up to this much. */
export const DEFAULT_REGION_CAP = 64 << 20;

export interface GuestKit {
  vmlinuz: string;
  initrd: string;
  /** The same static workload binary as in the guest, for golden values on the host. */
  workloadHost: string;
}

/** Boot arguments for the guest's /init; see scripts/guest/init.sh. */
export interface GuestParams {
  seed?: number;
  /** N deterministic writes. With `seconds` too, whichever limit comes first; with neither, 1000 writes. */
  writes?: number;
  /** Write for T seconds; the count is reported, and write i is the same as in a counted run. */
  seconds?: number;
  /** Bytes of the disk used (default: whole disk up to 64 MiB). */
  region?: number;
  /** Write size, a multiple of 512 (default 4096); offsets are bs-aligned. */
  bs?: number;
  /** O_DIRECT writes in the guest. */
  direct?: boolean;
  /** fsync every K writes (0 = never); there is always one at the end. */
  fsync?: number;
  /** Sleep between writes, to shape the write rate. */
  delay_us?: number;
  /** Bytes per second, paced to a schedule (a stall is caught up): the same write rate whatever the storage. */
  rate?: number;
  /** Seconds between FERRY-GUEST-UP (`ready`) and the first write, so the host can start things. */
  start_delay?: number;
  /** Write the per-write trace to the second disk; bootGuest sets it for its `trace` option. */
  trace?: boolean;
  /**
   * On a stall (requests in flight unchanged for two heartbeats) the guest prints where its block layer holds them;
   * with stall_poke (bootGuest's default) it then nudges the queues, then issues a fresh read. See `stalls`.
   */
  stall_poke?: boolean;
}

export interface WriteReport {
  mode: 'write';
  seed: number;
  writes: number;
  bytes: number;
  bs: number;
  region: number;
  direct: 0 | 1;
  elapsed_ms: number;
  mb_per_s: number;
  lat_p50_us: number;
  lat_p99_us: number;
  lat_max_us: number;
  /** Which write was slowest, and when it started (ms after the first write). */
  lat_max_index: number;
  lat_max_at_ms: number;
  /** Failed writes (the workload goes on after one). */
  errors: number;
  first_error: string | null;
  fsyncs: number;
  fsync_errors: number;
  fsync_max_us: number;
}

export interface ChecksumReport {
  mode: 'checksum';
  bytes: number;
  /** 64-bit FNV-1a over the region, 16 hex digits. */
  fnv1a64: string;
  elapsed_ms: number;
}

/** The JSON line the guest prints between FERRY-RESULT-BEGIN and FERRY-RESULT-END. */
export interface GuestReport {
  write: WriteReport;
  /** Of the region on /dev/vda, read after the writes with the guest's caches dropped. */
  checksum: ChecksumReport;
  /** Kernel log lines about I/O errors (rate-limited by the kernel: a lower bound). */
  dmesg_io_errors: number;
  disk_bytes: number;
  /** Guest uptime when the disk showed up. */
  up_s: number;
}

/** Every write of a traced run, in issue order: when it started (µs after the first write began) and how long it
 * took (µs). */
export interface WriteTrace {
  startUs: Uint32Array;
  latUs: Uint32Array;
}

export interface GuestResult {
  report: GuestReport;
  /** With the `trace` boot option. */
  trace?: WriteTrace;
  /** Everything QEMU printed (serial console and its own messages), CR LF made LF. */
  console: string;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** Host milliseconds from spawn to FERRY-GUEST-UP, to the first write, and to QEMU's exit. */
  timing: { readyMs: number; startedMs: number; exitMs: number };
  /** The guest's FERRY-STALL lines: a disk stall, where the guest's block layer held its requests, what ended it. */
  stalls: string[];
}

export interface Guest {
  child: ChildProcess;
  /** The guest booted and found its disk (before start_delay). */
  ready: Promise<void>;
  /** The workload is issuing its first write. */
  started: Promise<void>;
  /** Rejects on timeout, on FERRY-ERROR, or if QEMU exits without a result; the error carries the console's tail. */
  result: Promise<GuestResult>;
  /** The console so far. */
  console(): string;
  kill(): void;
}

export interface BootOptions {
  image: string;
  format?: 'raw' | 'qcow2';
  /** QEMU's host-side cache mode; none = O_DIRECT on the image. */
  cache?: 'writeback' | 'none';
  params?: GuestParams;
  /** Hard limit for the whole run; QEMU is killed after it (default 120 s). */
  timeoutMs?: number;
  /** Appended to QEMU's command line. */
  qemuArgs?: string[];
  /** More evidence for a timeout's error (the daemon's log and stacks, say), gathered before QEMU is killed. */
  evidence?: () => Promise<string>;
  /** A file to create for the guest's per-write trace (for latencies within a time window), attached as its
   * second disk (drive id virtio1; the image is virtio0); the result carries it parsed. */
  trace?: string;
}

function exec(file: string, args: string[], timeoutMs = 600_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${file} ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

let kit: Promise<GuestKit> | undefined;

/** Builds the kit once per test file (build.sh is a stamp check when nothing changed). The first build installs
 * packages and downloads a kernel: give the calling hook a few minutes. */
export function ensureGuestKit(): Promise<GuestKit> {
  kit ??= new Promise((resolve, reject) => {
    execFile('bash', [BUILD], { timeout: 15 * 60_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`guest kit: scripts/guest/build.sh failed (${err.code ?? err.signal}):\n${stderr}${stdout}`));
      else resolve({ vmlinuz: join(CACHE, 'vmlinuz'), initrd: join(CACHE, 'initrd.img'), workloadHost: join(CACHE, 'workload-host') });
    });
  });
  return kit;
}

const live = new Set<ChildProcess>();
let exitHookSet = false;

/** The kernel command line for the guest kit: serial console, and `params` for its /init. */
export function bootArgs(params: GuestParams): string {
  // no_timer_check: on a loaded host the emulated CPU can miss the boot's IO-APIC timer check, and the kernel
  // panics ("IO-APIC + timer doesn't work"); seen once in ~20 boots with two guests and a test suite running.
  const args = ['console=ttyS0', 'quiet', 'panic=-1', 'no_timer_check'];
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined) continue;
    const n = typeof value === 'boolean' ? Number(value) : value;
    if (!Number.isSafeInteger(n) || n < 0) throw new Error(`guest param ${key} must be a non-negative integer, got ${value}`);
    args.push(`${key}=${n}`);
  }
  return args.join(' ');
}

function tail(text: string, lines = 40): string {
  return text.split('\n').slice(-lines).join('\n');
}

/** Boots a guest on `image` (always werror=report,rerror=report: QEMU's default pauses the VM on ENOSPC). */
export async function bootGuest(options: BootOptions): Promise<Guest> {
  const { vmlinuz, initrd } = await ensureGuestKit();
  const format = options.format ?? 'raw';
  const cache = options.cache ?? 'writeback';
  const timeoutMs = options.timeoutMs ?? 120_000;
  const drive = (file: string, more: string) => `file=${file.replace(/,/g, ',,')},if=virtio,${more}`;
  const params = { stall_poke: true, ...options.params, ...(options.trace && { trace: true }) };
  // A trace line per write is at most 22 bytes: 64 MiB holds 3 million writes, and costs nothing until written.
  if (options.trace) await createImage(options.trace, 'raw', 64 << 20);
  // maxcpus=2: TCG emits the guest's memory barriers only when more than one vCPU may exist. Without them the
  // virtio driver's "publish used_event, then reread used.idx" can be reordered against QEMU's I/O thread, an
  // interrupt is lost for good (event index), and the guest stalls with its requests completed (README, Limits).
  const args = [
    ...['-accel', 'tcg', '-m', '256M', '-smp', '1,maxcpus=2', '-nographic', '-no-reboot', '-nic', 'none'],
    ...['-kernel', vmlinuz, '-initrd', initrd, '-append', bootArgs(params)],
    ...['-drive', drive(options.image, `format=${format},cache=${cache},werror=report,rerror=report`)],
    ...(options.trace ? ['-drive', drive(options.trace, 'format=raw,cache=writeback')] : []),
    ...(options.qemuArgs ?? []),
  ];
  // A QMP socket of its own, for the evidence of a timeout: is the VM running, what has the block layer done.
  const qmpDir = await mkdtemp(join(tmpdir(), 'ferry-qmp-'));
  const qmp = join(qmpDir, 'qmp.sock');
  args.push('-qmp', `unix:${qmp},server=on,wait=off`);
  const t0 = performance.now();
  const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  if (!exitHookSet) {
    // A test process that dies must not leave guests running.
    process.once('exit', () => live.forEach((c) => c.kill('SIGKILL')));
    exitHookSet = true;
  }

  let log = '';
  let readyMs = NaN;
  let startedMs = NaN;
  let onReady!: () => void;
  let onStarted!: () => void;
  const ready = new Promise<void>((resolve) => (onReady = resolve));
  const started = new Promise<void>((resolve) => (onStarted = resolve));
  const append = (d: Buffer) => {
    // Drop every CR: a CR LF pair can be split across chunks, and `.` in a RegExp does not match CR.
    log += d.toString('latin1').replace(/\r/g, '');
    if (Number.isNaN(readyMs) && log.includes('FERRY-GUEST-UP')) {
      readyMs = performance.now() - t0;
      onReady();
    }
    if (Number.isNaN(startedMs) && log.includes('FERRY-WORKLOAD-START')) {
      startedMs = performance.now() - t0;
      onStarted();
    }
  };
  child.stdout!.on('data', append);
  child.stderr!.on('data', append);

  let timedOut = false;
  let evidence = '';
  const timer = setTimeout(() => {
    timedOut = true;
    void gatherEvidence(child.pid, qmp, options.evidence)
      .then((text) => (evidence = text))
      .finally(() => child.kill('SIGKILL'));
  }, timeoutMs);

  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('error', (err) => {
      log += `\n[spawn error: ${err.message}]\n`;
      resolve({ code: null, signal: null });
    });
    child.on('close', (code, signal) => resolve({ code, signal }));
  });

  const result = exited.then(async ({ code, signal }): Promise<GuestResult> => {
    clearTimeout(timer);
    live.delete(child);
    void rm(qmpDir, { recursive: true, force: true });
    const exitMs = performance.now() - t0;
    const match = /FERRY-RESULT-BEGIN\n(.*)\nFERRY-RESULT-END/.exec(log);
    if (!match || timedOut) {
      const why = timedOut
        ? `timed out after ${timeoutMs} ms`
        : (/FERRY-ERROR .*/.exec(log)?.[0] ?? `QEMU exited (code ${code}, signal ${signal}) without a result`);
      throw new Error(`guest on ${options.image}: ${why}\n--- console tail ---\n${tail(log)}${evidence}`);
    }
    const trace = options.trace ? await readTrace(options.trace) : undefined;
    const stalls = log.split('\n').filter((line) => line.startsWith('FERRY-STALL'));
    // A stall the guest came out of only when nudged is a fault below ferry (see README, Limits): say so loudly.
    if (stalls.length) process.stderr.write(`guest on ${options.image}: disk stall (guest's evidence follows)\n${stalls.join('\n')}\n`);
    return { report: JSON.parse(match[1]) as GuestReport, trace, console: log, exitCode: code, signal, timing: { readyMs, startedMs, exitMs }, stalls };
  });
  // Markers that never come reject once QEMU is gone; all three are marked handled so that a test that only
  // awaits some of them (or kills the guest) does not trip on the others.
  const never = (what: string) => exited.then(() => Promise.reject(new Error(`guest exited before ${what}\n${tail(log)}`)));
  const readyOrExit = Promise.race([ready, never('FERRY-GUEST-UP')]);
  const startedOrExit = Promise.race([started, never('FERRY-WORKLOAD-START')]);
  for (const p of [result, readyOrExit, startedOrExit]) p.catch(() => undefined);

  return { child, ready: readyOrExit, started: startedOrExit, result, console: () => log, kill: () => void child.kill('SIGKILL') };
}

/** Parses the trace the workload wrote (format in scripts/guest/workload.c). */
export async function readTrace(file: string): Promise<WriteTrace> {
  const bytes = await readFile(file);
  const end = bytes.indexOf('\nEND\n');
  const lines = bytes.subarray(0, end + 1).toString('latin1').split('\n');
  const count = Number(/^FERRY-TRACE (\d+)$/.exec(lines[0])?.[1]);
  if (end < 0 || !Number.isSafeInteger(count) || lines.length !== count + 2) throw new Error(`${file}: no complete write trace`);
  const startUs = new Uint32Array(count);
  const latUs = new Uint32Array(count);
  for (let i = 0; i < count; i++) {
    const [start, lat] = lines[i + 1].split(' ');
    startUs[i] = Number(start);
    latUs[i] = Number(lat);
  }
  return { startUs, latUs };
}

/** A fresh image of `size` bytes: a sparse raw file, or an empty qcow2. */
export async function createImage(path: string, format: 'raw' | 'qcow2', size: number): Promise<void> {
  if (format === 'raw') {
    await writeFile(path, '');
    await truncate(path, size);
  } else {
    await exec('qemu-img', ['create', '-q', '-f', 'qcow2', path, String(size)]);
  }
}

async function scratchDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'ferry-test-guest-'));
}

async function virtualSize(image: string, format: 'raw' | 'qcow2'): Promise<number> {
  const info = JSON.parse(await exec('qemu-img', ['info', '--output=json', '-f', format, image]));
  return info['virtual-size'] as number;
}

/** Checksum of the first `region` bytes of a raw file, by the same code as in the guest. */
async function rawChecksum(file: string, region: number): Promise<string> {
  const { workloadHost } = await ensureGuestKit();
  return (JSON.parse(await exec(workloadHost, ['checksum', file, String(region)])) as ChecksumReport).fnv1a64;
}

/** The checksum the guest should report for `region` of an image (qcow2 is converted to raw first). The default
 * region is the guest's: the whole disk up to 64 MiB. */
export async function imageChecksum(image: string, format: 'raw' | 'qcow2' = 'raw', region?: number): Promise<string> {
  const bytes = region ?? Math.min(await virtualSize(image, format), DEFAULT_REGION_CAP);
  if (format === 'raw') return rawChecksum(image, bytes);
  const dir = await scratchDir();
  try {
    const raw = join(dir, 'image.raw');
    await exec('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', image, raw]);
    return await rawChecksum(raw, bytes);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The checksum a guest run of `writes` writes should end with, computed on the host without a guest: the same
 * writes applied to a scratch copy of `base` (default: zeros). For a timed run, pass the count it reported. */
export async function goldenChecksum(o: { seed: number; writes: number; bs?: number; region: number; base?: string; baseFormat?: 'raw' | 'qcow2' }): Promise<string> {
  const { workloadHost } = await ensureGuestKit();
  const dir = await scratchDir();
  try {
    const file = join(dir, 'golden.raw');
    if (!o.base) await writeFile(file, '');
    else if (o.baseFormat === 'qcow2') await exec('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', o.base, file]);
    // Only the region matters, and a copy of it is quicker than of a whole (possibly large) image.
    else await pipeline(createReadStream(o.base, { end: o.region - 1 }), createWriteStream(file));
    await exec(workloadHost, ['simulate', file, String(o.seed), String(o.writes), String(o.bs ?? 4096), String(o.region)]);
    return await rawChecksum(file, o.region);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
