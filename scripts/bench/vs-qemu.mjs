#!/usr/bin/env node
// ferry against QEMU's own live disk mirror (`npm run bench:vs-qemu`): the same guest (the busybox guest kit,
// TCG, O_DIRECT 4 KiB random writes, cache=none), the same image (raw and qcow2), moved while it writes
//   - by ferry: the disk in a VM home on a ferry mount, `ferry migrate <home> --to <dir> --json` (default mode);
//   - by QEMU: the disk in a plain directory, QMP drive-mirror sync=full to a new file, BLOCK_JOB_READY,
//     block-job-complete, BLOCK_JOB_COMPLETED; with copy-mode=background (QEMU's default) and write-blocking.
// Movers alternate within a round (each round starts with the next one); the table shows medians over the rounds.
// The guest records every write's start and latency (guest kit trace), so its stall and p99 are read for time
// windows on the host's clock: before the migration, during it, and around the switch.
// Env: FERRY_BENCH_DIR (default /var/tmp), FERRY_BENCH_ROUNDS (3), FERRY_BENCH_FORMATS ("raw qcow2"),
// FERRY_BENCH_DISK_MIB (1024: virtual size), FERRY_BENCH_DATA_MIB (512: data in the image before the guest
// starts), FERRY_BENCH_REGION_MIB (256: where the guest writes), FERRY_BENCH_SECONDS (guest run; must outlast
// the migration), FERRY_BENCH_BEFORE (seconds of guest writes before the migration starts, default 6),
// FERRY_BENCH_RATE_MIB (the guest's write rate, paced to a schedule: the same for every mover, so that the total
// compares the movers and not how much each lets the guest write; default unpaced).
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createCipheriv } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const { bootGuest, goldenChecksum } = await import(path.join(root, 'dist/demo/guest.js'));
const cli = path.join(root, 'dist/cli/main.js');
const MiB = 1 << 20;
function positiveEnv(name, fallback) {
  const value = Number(process.env[name] ?? fallback);
  if (!(value > 0) || !Number.isInteger(value)) {
    console.error(`bench:vs-qemu: ${name} must be a positive whole number, not '${process.env[name]}'`);
    process.exit(2);
  }
  return value;
}
const ROUNDS = positiveEnv('FERRY_BENCH_ROUNDS', 3);
const DISK = positiveEnv('FERRY_BENCH_DISK_MIB', 1024) * MiB;
const DATA = positiveEnv('FERRY_BENCH_DATA_MIB', 512) * MiB;
const REGION = positiveEnv('FERRY_BENCH_REGION_MIB', 256) * MiB;
const SECONDS = positiveEnv('FERRY_BENCH_SECONDS', 24);
const BEFORE = positiveEnv('FERRY_BENCH_BEFORE', 6);
const RATE = process.env.FERRY_BENCH_RATE_MIB === undefined ? 0 : positiveEnv('FERRY_BENCH_RATE_MIB', 0) * MiB;
const FORMATS = (process.env.FERRY_BENCH_FORMATS ?? 'raw qcow2').split(/\s+/).filter(Boolean);
const SEED = 17;
const BS = 4096;
// The switch window: from the mover's switch step (ferry: the switchover phase up to cleanup; QEMU: from
// block-job-complete to BLOCK_JOB_COMPLETED), widened by this on both sides.
const SWITCH_MARGIN_MS = 500;
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }));
const MOVERS = [
  { id: 'ferry', label: 'ferry migrate (default mode)' },
  { id: 'background', label: 'QEMU drive-mirror, copy-mode=background' },
  { id: 'write-blocking', label: 'QEMU drive-mirror, copy-mode=write-blocking' },
];
if (DATA > DISK || REGION > DISK) {
  console.error('bench:vs-qemu: FERRY_BENCH_DATA_MIB and FERRY_BENCH_REGION_MIB must not exceed FERRY_BENCH_DISK_MIB');
  process.exit(2);
}

const work = fs.mkdtempSync(path.join(process.env.FERRY_BENCH_DIR ?? '/var/tmp', 'ferry-bench-vs-qemu-'));
/** Mounts (with their state dirs) and QEMU processes this run started: whatever happens, they go. */
const mounts = new Map();
const qemus = new Set();

function ferry(stateDir, ...args) {
  return execFileSync(process.execPath, [cli, ...args, '--state-dir', stateDir], { encoding: 'utf8', maxBuffer: 64 * MiB });
}
function cleanup() {
  for (const child of qemus) child.kill('SIGKILL');
  for (const [mnt, stateDir] of mounts) {
    try {
      ferry(stateDir, 'unmount', mnt, '--force');
    } catch (err) {
      console.error(`bench:vs-qemu: unmount ${mnt}: ${err.message}`);
    }
  }
  mounts.clear();
}
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    cleanup();
    fs.rmSync(work, { recursive: true, force: true });
    process.exit(130);
  });
}

function dropCaches() {
  spawnSync('sync');
  fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
}
/** Removes a scratch tree; with `-o discard` the freed space is trimmed after the next commit, so let it settle. */
function removeTree(dir) {
  fs.rmSync(dir, { recursive: true, force: true });
  spawnSync('sync');
  spawnSync('sleep', ['1']);
}
/** The base image: DATA bytes of deterministic noise (AES-CTR of zeros) at the start of a DISK-byte raw file. */
function makeBase(file) {
  const cipher = createCipheriv('aes-128-ctr', Buffer.alloc(16, 7), Buffer.alloc(16, 0));
  const zeros = Buffer.alloc(16 * MiB);
  const fd = fs.openSync(file, 'w');
  for (let at = 0; at < DATA; at += zeros.length) fs.writeSync(fd, cipher.update(zeros.subarray(0, Math.min(zeros.length, DATA - at))));
  fs.ftruncateSync(fd, DISK);
  fs.closeSync(fd);
}
/** User + system CPU seconds of a process (or one of its threads), from /proc. */
function cpuSeconds(pid, tid) {
  const stat = fs.readFileSync(tid ? `/proc/${pid}/task/${tid}/stat` : `/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}
/** Bytes allocated under a directory (what the destination holds on disk). */
function allocated(dir) {
  let bytes = 0;
  for (const name of fs.readdirSync(dir)) bytes += fs.statSync(path.join(dir, name)).blocks * 512;
  return bytes;
}

/** A QMP connection: commands one at a time, events kept so that one may be waited for after it came. */
async function qmpConnect(socket) {
  for (let i = 0; !fs.existsSync(socket); i++) {
    if (i > 100) throw new Error(`no QMP socket at ${socket}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const conn = net.connect(socket);
  const events = [];
  const waiters = [];
  let pending;
  let buffer = '';
  const greeting = new Promise((resolve) => (pending = { resolve }));
  conn.on('data', (chunk) => {
    buffer += chunk.toString();
    for (let nl; (nl = buffer.indexOf('\n')) >= 0; ) {
      const msg = JSON.parse(buffer.slice(0, nl));
      buffer = buffer.slice(nl + 1);
      if (msg.event) {
        msg.receivedAt = Date.now();
        events.push(msg);
        for (const w of waiters.filter((w) => w.match(msg))) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(msg);
        }
      } else if (pending) {
        const p = pending;
        pending = undefined;
        if (msg.error) p.reject(new Error(`QMP ${p.what}: ${msg.error.desc}`));
        else p.resolve(msg.return ?? msg);
      }
    }
  });
  conn.on('error', () => undefined);
  // QEMU gone (the guest powered off, or crashed): nothing waited for will come.
  conn.on('close', () => {
    for (const w of waiters.splice(0)) w.reject(new Error('QMP connection closed'));
    pending?.reject?.(new Error('QMP connection closed'));
  });
  await greeting;
  const command = (execute, args) =>
    new Promise((resolve, reject) => {
      pending = { resolve, reject, what: execute };
      conn.write(JSON.stringify({ execute, ...(args && { arguments: args }) }) + '\n');
    });
  await command('qmp_capabilities');
  return {
    command,
    event(name, timeoutMs) {
      const match = (e) => e.event === name || (e.event === 'BLOCK_JOB_ERROR' && name.startsWith('BLOCK_JOB'));
      const seen = events.find(match);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ${name} within ${timeoutMs} ms`)), timeoutMs);
        waiters.push({ match, resolve: (e) => (clearTimeout(timer), resolve(e)), reject: (e) => (clearTimeout(timer), reject(e)) });
      });
    },
    close: () => conn.destroy(),
  };
}

/** QEMU's mirror of the guest's disk (drive virtio0) to `dest`; times on the host's clock. */
async function qemuMirror(qmp, dest, format, copyMode) {
  const start = Date.now();
  await qmp.command('drive-mirror', { device: 'virtio0', target: dest, format, sync: 'full', mode: 'absolute-paths', 'copy-mode': copyMode });
  const ready = await qmp.event('BLOCK_JOB_READY', 600_000);
  if (ready.event !== 'BLOCK_JOB_READY') throw new Error(`mirror failed: ${JSON.stringify(ready)}`);
  const switchStart = Date.now();
  await qmp.command('block-job-complete', { device: 'virtio0' });
  const completed = await qmp.event('BLOCK_JOB_COMPLETED', 600_000);
  if (completed.event !== 'BLOCK_JOB_COMPLETED' || completed.data.error) throw new Error(`mirror failed: ${JSON.stringify(completed)}`);
  const end = completed.receivedAt;
  const phasesMs = { mirror: ready.receivedAt - start, complete: end - switchStart };
  return { start, end, activeStart: start, activeEnd: end, switchStart, switchEnd: end, bytesCopied: completed.data.offset, switchMs: end - switchStart, cliCpu: 0, phasesMs };
}

/** `ferry migrate` of the home; the CLI's own CPU comes from bash's `times` (its children's line). */
async function ferryMigrate(stateDir, home, dest) {
  const start = Date.now();
  const child = spawn('bash', ['-c', '"$@"; rc=$?; times >&2; exit $rc', 'bash', process.execPath, cli, 'migrate', home, '--to', dest, '--json', '--state-dir', stateDir]);
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const code = await new Promise((resolve) => child.on('close', resolve));
  const end = Date.now();
  const events = out.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
  const done = events.at(-1);
  if (code !== 0 || done?.type !== 'done') throw new Error(`ferry migrate failed (exit ${code}): ${out}${err}`);
  const phases = events.filter((e) => e.type === 'phase');
  const phase = (p) => phases.findLast((e) => e.phase === p)?.at;
  // How long each phase lasted (bulk, iterate, switchover, cleanup), for where the time goes.
  const phasesMs = Object.fromEntries(phases.slice(0, -1).map((e, i) => [e.phase, phases[i + 1].at - e.at]));
  const [user, sys] = err.trim().split('\n').at(-1).split(/\s+/).map((t) => {
    const m = /^(\d+)m([\d.]+)s$/.exec(t);
    return Number(m[1]) * 60 + Number(m[2]);
  });
  // The CLI's own start and exit (Node, the control socket; ~0.5-1 s on a loaded machine) count in the total; the
  // guest's windows are the engine's, from its first event to `done`, so that they hold only migration time.
  return { start, end, activeStart: events[0].at, activeEnd: done.at, switchStart: phase('switchover'), switchEnd: phase('cleanup') ?? done.at, bytesCopied: done.bytesCopied, switchMs: done.downtimeMs, cliCpu: user + sys, phasesMs, passes: done.passes, freezeSteps: freezeSteps(stateDir) };
}

/** The daemon's steps of the last switchover freeze (its log's `switchover freeze` line): where the freeze went. */
function freezeSteps(stateDir) {
  const logs = path.join(stateDir, 'logs');
  const lines = fs.readdirSync(logs).flatMap((f) => fs.readFileSync(path.join(logs, f), 'utf8').split('\n')).filter((l) => l.includes('"switchover freeze"'));
  if (lines.length === 0) return undefined;
  const { frozenMs, drainMs, walkMs, copyMs, copiedBytes, metadataMs, flushMs, reopenMs, commitMs } = JSON.parse(lines.at(-1));
  return { frozenMs, drainMs, walkMs, copyMs, copiedBytes, metadataMs, flushMs, reopenMs, commitMs };
}

/** The guest's writes that overlap [from, to] (host ms): worst latency, p99, MB/s of the writes that started in it. */
function window(trace, guestStart, from, to) {
  const lat = [];
  let bytes = 0;
  for (let i = 0; i < trace.startUs.length; i++) {
    const start = guestStart + trace.startUs[i] / 1000;
    const end = start + trace.latUs[i] / 1000;
    if (end < from || start > to) continue;
    lat.push(trace.latUs[i]);
    if (start >= from) bytes += BS;
  }
  lat.sort((a, b) => a - b);
  const p99 = lat.length ? lat[Math.min(lat.length - 1, Math.floor(0.99 * lat.length))] : NaN;
  return { writes: lat.length, maxMs: (lat.at(-1) ?? NaN) / 1000, p99Ms: p99 / 1000, mbPerS: bytes / 1e6 / ((to - from) / 1000) };
}

/** One guest run, its disk moved by `mover` at BEFORE seconds into the workload. `image` is the base image in
 * `format`, `baseRaw` the same bytes raw (for the golden checksum). */
async function runOnce(format, mover, image, baseRaw, tag) {
  const dir = path.join(work, tag);
  const ds = path.join(dir, 'ds');
  const mnt = path.join(dir, 'mnt');
  const stateDir = path.join(dir, 'state');
  const dest = path.join(dir, 'dest');
  // The VM home: the disk, and what a real VM keeps next to it (ferry moves them too; QEMU's mirror does not).
  const srcHome = mover.id === 'ferry' ? path.join(ds, 'vm') : path.join(dir, 'plain', 'vm');
  fs.mkdirSync(srcHome, { recursive: true });
  const disk = `disk.${format}`;
  execFileSync('cp', ['--sparse=always', image, path.join(srcHome, disk)]);
  fs.writeFileSync(path.join(srcHome, 'vm.cfg'), `name=bench\ndisk=${disk}\nformat=${format}\n`);
  fs.writeFileSync(path.join(srcHome, 'nvram.fd'), Buffer.alloc(128 * 1024, 0x5a));
  fs.writeFileSync(path.join(srcHome, 'vm.log'), 'booted\n');
  const homeFiles = fs.readdirSync(srcHome).length;
  dropCaches();

  let home = srcHome;
  let daemonPid;
  if (mover.id === 'ferry') {
    fs.mkdirSync(mnt);
    mounts.set(mnt, stateDir);
    ferry(stateDir, 'mount', ds, mnt);
    daemonPid = JSON.parse(ferry(stateDir, 'status', mnt, '--json')).pid;
    home = path.join(mnt, 'vm');
  } else {
    fs.mkdirSync(dest);
  }
  const qmpSocket = path.join(dir, 'qmp.sock');
  let qmp;
  let guest;
  try {
    guest = await bootGuest({
      image: path.join(home, disk),
      format,
      cache: 'none',
      params: { seed: SEED, seconds: SECONDS, bs: BS, region: REGION, direct: true, ...(RATE && { rate: RATE }) },
      trace: path.join(dir, 'trace.raw'),
      timeoutMs: (SECONDS + 300) * 1000,
      qemuArgs: ['-name', 'bench,debug-threads=on', '-qmp', `unix:${qmpSocket},server=on,wait=off`],
    });
    qemus.add(guest.child);
    await guest.started;
    const guestStart = Date.now();
    const qemuPid = guest.child.pid;
    // The mover's CPU: ferry's daemon (all of it), or QEMU without its vCPU thread (the main loop, where the
    // mirror job runs, and the I/O worker threads); less what that same process used per second before the
    // migration, when it only served the guest.
    const vcpuTid = fs.readdirSync(`/proc/${qemuPid}/task`).find((t) => fs.readFileSync(`/proc/${qemuPid}/task/${t}/comm`, 'utf8').startsWith('CPU 0/'));
    const moverCpu = () => (mover.id === 'ferry' ? cpuSeconds(daemonPid) : cpuSeconds(qemuPid) - cpuSeconds(qemuPid, vcpuTid));
    if (mover.id !== 'ferry') qmp = await qmpConnect(qmpSocket);
    await new Promise((r) => setTimeout(r, 1000));
    const cpu0 = moverCpu();
    const t0 = Date.now();
    await new Promise((r) => setTimeout(r, (BEFORE - 1) * 1000));
    const cpu1 = moverCpu();
    const m = mover.id === 'ferry'
      ? await ferryMigrate(stateDir, home, dest)
      : await qemuMirror(qmp, path.join(dest, disk), format, mover.id);
    const cpu2 = moverCpu();
    const { report, trace } = await guest.result;

    const guestEnd = guestStart + report.write.elapsed_ms;
    if (m.end > guestEnd - 1000) throw new Error(`the migration ended ${((guestEnd - m.end) / 1000).toFixed(1)} s before the guest stopped writing: raise FERRY_BENCH_SECONDS (now ${SECONDS})`);
    if (report.write.errors || report.dmesg_io_errors) throw new Error(`guest I/O errors: ${report.write.errors} (${report.write.first_error}), dmesg ${report.dmesg_io_errors}`);
    const golden = await goldenChecksum({ seed: SEED, writes: report.write.writes, region: REGION, base: baseRaw });
    if (report.checksum.fnv1a64 !== golden) throw new Error(`guest checksum ${report.checksum.fnv1a64} != golden ${golden} after the ${mover.id} migration`);

    const before = window(trace, guestStart, t0, m.start);
    const during = window(trace, guestStart, m.activeStart, m.activeEnd);
    const atSwitch = window(trace, guestStart, m.switchStart - SWITCH_MARGIN_MS, m.switchEnd + SWITCH_MARGIN_MS);
    const baseline = ((cpu1 - cpu0) / (m.start - t0)) * (m.end - m.start);
    return {
      format,
      mover: mover.id,
      totalS: (m.end - m.start) / 1000,
      activeS: (m.activeEnd - m.activeStart) / 1000,
      bytesCopied: m.bytesCopied,
      destAllocated: allocated(dest),
      moved: `${fs.readdirSync(dest).length} of ${homeFiles} files`,
      switchMs: m.switchMs,
      during,
      atSwitch,
      before,
      moverCpuS: cpu2 - cpu1,
      moverCpuLessBaselineS: cpu2 - cpu1 - baseline,
      cliCpuS: m.cliCpu,
      phasesMs: m.phasesMs,
      freezeSteps: m.freezeSteps,
      passes: m.passes,
      guestWrites: report.write.writes,
    };
  } finally {
    qmp?.close();
    if (guest) {
      guest.kill();
      qemus.delete(guest.child);
    }
    if (mover.id === 'ferry') {
      ferry(stateDir, 'unmount', mnt, '--force');
      mounts.delete(mnt);
    }
    removeTree(dir);
  }
}

const median = (xs) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : NaN;
};
const ms = (x) => `${x.toFixed(x < 10 ? 1 : 0)} ms`;
const mib = (x) => `${(x / MiB).toFixed(0)} MiB`;

try {
  const kvm = fs.existsSync('/dev/kvm') ? '/dev/kvm present, guests run under TCG anyway (the guest kit pins -accel tcg)' : 'no KVM: TCG';
  const qemuVersion = execFileSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' }).split('\n')[0];
  console.log(`machine: ${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM, kernel ${os.release()}, ${qemuVersion}, ${kvm}; load average at start ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  console.log(`disk: ${DISK / MiB} MiB virtual, ${DATA / MiB} MiB of data; guest: O_DIRECT 4 KiB random writes over the first ${REGION / MiB} MiB, QD1, ${RATE ? `paced at ${RATE / MiB} MiB/s` : 'unpaced'}, cache=none, ${SECONDS} s, the migration starting ${BEFORE} s in; ${ROUNDS} rounds, medians`);
  const runs = [];
  for (const format of FORMATS) {
    const baseRaw = path.join(work, 'base.raw');
    if (!fs.existsSync(baseRaw)) makeBase(baseRaw);
    const image = path.join(work, `base.${format}`);
    if (format === 'qcow2') execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', baseRaw, image]);
    for (let round = 0; round < ROUNDS; round++) {
      for (let k = 0; k < MOVERS.length; k++) {
        const mover = MOVERS[(round + k) % MOVERS.length];
        const r = await runOnce(format, mover, image, baseRaw, `${format}-${round}-${mover.id}`);
        runs.push(r);
        console.error(`  ${format} round ${round + 1} ${mover.id}: ${r.totalS.toFixed(1)} s ${JSON.stringify(r.phasesMs)}, stall ${ms(r.during.maxMs)}, p99 ${ms(r.during.p99Ms)}, switch stall ${ms(r.atSwitch.maxMs)}, CPU ${r.moverCpuS.toFixed(2)} s${r.freezeSteps ? `, freeze steps ${JSON.stringify(r.freezeSteps)}` : ''}`);
      }
    }
  }

  console.log('\n| disk | mover | total | bytes copied (mover\'s count) | destination allocated | moved | worst write stall during | p99 write during | worst stall at the switch | p99 at the switch | switch step | guest MB/s before → during | mover CPU s: in the window / less the baseline |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const format of FORMATS) {
    const ferryRuns = runs.filter((r) => r.format === format && r.mover === 'ferry');
    const ferryTotal = median(ferryRuns.map((r) => r.totalS));
    const ferryActive = median(ferryRuns.map((r) => r.activeS));
    for (const mover of MOVERS) {
      const rs = runs.filter((r) => r.format === format && r.mover === mover.id);
      const med = (f) => median(rs.map(f));
      const before = med((r) => r.before.mbPerS);
      const during = med((r) => r.during.mbPerS);
      const total = med((r) => r.totalS);
      const vsFerry = mover.id === 'ferry'
        ? ` (engine ${ferryActive.toFixed(1)} s)`
        : ` (ferry takes ${(ferryTotal / total).toFixed(2)}×, its engine ${(ferryActive / total).toFixed(2)}×)`;
      console.log(`| ${format} | ${mover.label} | ${total.toFixed(1)} s${vsFerry} | ${mib(med((r) => r.bytesCopied))} | ${mib(med((r) => r.destAllocated))} | ${rs[0].moved} | ${ms(med((r) => r.during.maxMs))} | ${ms(med((r) => r.during.p99Ms))} | ${ms(med((r) => r.atSwitch.maxMs))} | ${ms(med((r) => r.atSwitch.p99Ms))} | ${ms(med((r) => r.switchMs))} | ${before.toFixed(2)} → ${during.toFixed(2)} (${(during / before).toFixed(2)}) | ${med((r) => r.moverCpuS).toFixed(2)} / ${med((r) => r.moverCpuLessBaselineS).toFixed(2)}${mover.id === 'ferry' ? `, CLI + ${med((r) => r.cliCpuS).toFixed(2)}` : ''} |`);
    }
  }
  console.log('\nper run (JSON):');
  for (const r of runs) console.log(JSON.stringify(r));
} finally {
  cleanup();
  fs.rmSync(work, { recursive: true, force: true });
}
