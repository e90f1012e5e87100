#!/usr/bin/env node
// Migration benchmark (`npm run bench:migrate`): in one run on one machine,
//  1. ferry migrate of an idle 1 GiB file vs `cp --sparse=always` between the same directories,
//  2. the same for a sparse 8 GiB file holding 1 GiB of data,
//  3. a migration under an fio random-write load through the mount, on the native and on the JS data path:
//     passes, time, freeze, fio's p99 write latency during the bulk copy and its worst latency.
// Env: FERRY_BENCH_DIR (scratch dir on the disk under test, default /var/tmp), FERRY_BENCH_SCALE (1 = sizes above),
// FERRY_BENCH_REPS (rounds of each idle case, default 5; the table shows the median and the range).
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { randomFillSync } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const cli = path.join(root, 'dist/cli/main.js');
function positiveEnv(name, fallback, integer) {
  const value = Number(process.env[name] ?? fallback);
  if (!(value > 0) || (integer && !Number.isInteger(value))) {
    console.error(`bench:migrate: ${name} must be a positive ${integer ? 'whole number' : 'number'}, not '${process.env[name]}'`);
    process.exit(2);
  }
  return value;
}
const scale = positiveEnv('FERRY_BENCH_SCALE', 1, false);
const reps = positiveEnv('FERRY_BENCH_REPS', 5, true);
const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const work = fs.mkdtempSync(path.join(process.env.FERRY_BENCH_DIR ?? '/var/tmp', 'ferry-bench-'));
const state = path.join(work, 'state');
const mounts = [];

function sh(cmd, args, opts = {}) {
  return execFileSync(cmd, args, { encoding: 'utf8', maxBuffer: 256 * MiB, ...opts });
}
function dropCaches() {
  spawnSync('sync');
  fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
}
/** Removes a copy, then lets the disk settle: with `-o discard` the freed GiB is trimmed after the next commit. */
function removeCopy(dir) {
  fs.rmSync(dir, { recursive: true });
  spawnSync('sync');
  spawnSync('sleep', ['2']);
}
function seconds(fn) {
  const t0 = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}
function fill(file, size, dataEvery = 1) {
  // Random bytes (nothing for cp or ferry to leave as a hole) in 64 MiB pieces; with dataEvery > 1 only every
  // n-th piece is written (the rest stays a hole).
  const fd = fs.openSync(file, 'w');
  fs.ftruncateSync(fd, size);
  const piece = 64 * MiB;
  const buf = Buffer.alloc(piece);
  for (let at = 0, i = 0; at < size; at += piece, i++) {
    if (i % dataEvery !== 0) continue;
    randomFillSync(buf);
    fs.writeSync(fd, buf, 0, Math.min(piece, size - at), at);
  }
  fs.fsyncSync(fd);
  fs.closeSync(fd);
}
function mount(datastore, mountpoint, env = {}, stateDir = state) {
  fs.mkdirSync(mountpoint, { recursive: true });
  sh(process.execPath, [cli, 'mount', datastore, mountpoint, '--state-dir', stateDir], { env: { ...process.env, ...env } });
  mounts.push({ mountpoint, stateDir });
}
function unmountAll() {
  for (const { mountpoint, stateDir } of mounts.splice(0)) {
    spawnSync(process.execPath, [cli, 'unmount', mountpoint, '--force', '--state-dir', stateDir]);
  }
}
function migrateJson(from, to, extra = [], stateDir = state) {
  const out = sh(process.execPath, [cli, 'migrate', from, '--to', to, '--json', ...extra, '--state-dir', stateDir]);
  return out.trim().split('\n').map((l) => JSON.parse(l));
}

/** `reps` rounds over the same source file; each round times cp, cp + sync and ferry in alternating order. */
function idleCase(label, size, dataEvery, reps) {
  const ds = path.join(work, `${label}-ds`);
  fs.mkdirSync(path.join(ds, 'vm'), { recursive: true });
  const image = path.join(ds, 'vm', 'disk.img');
  fill(image, size, dataEvery);
  const allocated = fs.statSync(image).blocks * 512;
  const cpDir = path.join(work, `${label}-cp`);
  const timeCp = (sync) => {
    fs.mkdirSync(cpDir);
    dropCaches();
    const s = seconds(() => {
      sh('cp', ['--sparse=always', image, path.join(cpDir, 'disk.img')]);
      // ferry's copy is durable before it commits; this is cp made durable too.
      if (sync) sh('sync', ['-f', path.join(cpDir, 'disk.img')]);
    });
    const blocks = fs.statSync(path.join(cpDir, 'disk.img')).blocks * 512;
    removeCopy(cpDir);
    return { s, blocks };
  };
  const timeFerry = (round) => {
    // A fresh state dir per round: the same source file is migrated again, as if for the first time.
    const roundState = `${state}-${label}-${round}`;
    const mnt = path.join(work, `${label}-mnt`);
    const dest = path.join(work, `${label}-dest`);
    mount(ds, mnt, {}, roundState);
    dropCaches();
    let events;
    // --keep-source: cp leaves its source too (deleting 1 GiB takes ~0.7 s here, and is not copying).
    const s = seconds(() => (events = migrateJson(path.join(mnt, 'vm'), dest, ['--keep-source'], roundState)));
    const blocks = fs.statSync(path.join(dest, 'disk.img')).blocks * 512;
    unmountAll();
    fs.rmSync(roundState, { recursive: true });
    removeCopy(dest);
    const done = events.at(-1);
    return { s, blocks, downtimeMs: done.downtimeMs, passes: done.passes };
  };
  const rounds = [];
  for (let round = 0; round < reps; round++) {
    // Alternate the order so that a machine getting slower or faster during the run favours neither.
    if (round % 2 === 0) {
      const cp = timeCp(false), cpSync = timeCp(true), ferry = timeFerry(round);
      rounds.push({ cp, cpSync, ferry });
    } else {
      const ferry = timeFerry(round), cpSync = timeCp(true), cp = timeCp(false);
      rounds.push({ cp, cpSync, ferry });
    }
  }
  const median = (xs) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  };
  const stat = (xs) => ({ median: median(xs), min: Math.min(...xs), max: Math.max(...xs) });
  return {
    label, size, allocated, reps,
    cp: stat(rounds.map((r) => r.cp.s)),
    cpSync: stat(rounds.map((r) => r.cpSync.s)),
    ferry: stat(rounds.map((r) => r.ferry.s)),
    ratio: stat(rounds.map((r) => r.cp.s / r.ferry.s)),
    syncRatio: stat(rounds.map((r) => r.cpSync.s / r.ferry.s)),
    downtimeMs: stat(rounds.map((r) => r.ferry.downtimeMs)),
    passes: stat(rounds.map((r) => r.ferry.passes)),
    cpBlocks: rounds[0].cp.blocks,
    destBlocks: Math.max(...rounds.map((r) => r.ferry.blocks)),
  };
}

/** A migration under fio's random writes, with the data path given (native, or JS with FERRY_NATIVE=0). */
function loadedCase(dataPath) {
  const size = Math.round(GiB * scale);
  const ds = path.join(work, `load-${dataPath}-ds`);
  fs.mkdirSync(path.join(ds, 'vm'), { recursive: true });
  fill(path.join(ds, 'vm', 'disk.img'), size);
  const mnt = path.join(work, `load-${dataPath}-mnt`);
  mount(ds, mnt, { FERRY_NATIVE: dataPath === 'js' ? '0' : '1' });
  const latLog = path.join(work, `fio-${dataPath}`);
  const fio = spawn('fio', [
    '--name=guest', `--filename=${path.join(mnt, 'vm', 'disk.img')}`, '--rw=randwrite', '--bs=4k', '--ioengine=psync', '--direct=1',
    `--size=${size}`, '--time_based', '--runtime=600', `--write_lat_log=${latLog}`, '--log_avg_msec=0', '--output-format=json',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  const fioStart = Date.now();
  sh('sleep', ['3']);
  let events;
  const total = seconds(() => (events = migrateJson(path.join(mnt, 'vm'), path.join(work, `load-${dataPath}-dest`))));
  sh('sleep', ['2']);
  fio.kill('SIGINT');
  spawnSync('sleep', ['2']);
  const done = events.at(-1);
  const phaseAt = (phase) => events.find((e) => e.type === 'phase' && e.phase === phase).at - fioStart;
  const switchAt = phaseAt('switchover');
  const [bulkFrom, bulkTo] = [phaseAt('bulk'), phaseAt('iterate')];
  const bulkLatencies = [];
  // fio's lat log: msec since fio start, latency in ns, direction, bs, offset.
  const logFile = fs.readdirSync(work).find((n) => n.startsWith(`fio-${dataPath}_lat`) && n.endsWith('.log'));
  let maxLatencyMs = 0;
  let maxAroundSwitchMs = 0;
  if (logFile) {
    for (const line of fs.readFileSync(path.join(work, logFile), 'utf8').split('\n')) {
      const [t, lat] = line.split(',').map(Number);
      if (!Number.isFinite(lat)) continue;
      maxLatencyMs = Math.max(maxLatencyMs, lat / 1e6);
      if (t >= bulkFrom && t <= bulkTo) bulkLatencies.push(lat / 1e6);
      // fio stamps its log from its own start, a little after the spawn: allow half a second either side.
      if (t >= switchAt - 500 && t <= switchAt + done.downtimeMs + 500) maxAroundSwitchMs = Math.max(maxAroundSwitchMs, lat / 1e6);
    }
  }
  unmountAll();
  bulkLatencies.sort((a, b) => a - b);
  const bulkP99Ms = bulkLatencies.length ? bulkLatencies[Math.min(bulkLatencies.length - 1, Math.floor(0.99 * bulkLatencies.length))] : 0;
  return { dataPath, size, total, downtimeMs: done.downtimeMs, passes: done.passes, maxLatencyMs, maxAroundSwitchMs, bulkP99Ms };
}

const fmtS = (s) => `${s.toFixed(2)} s`;
const fmtB = (b) => (b >= GiB ? `${(b / GiB).toFixed(2)} GiB` : `${(b / MiB).toFixed(1)} MiB`);
try {
  const fsType = sh('df', ['--output=fstype', work]).trim().split('\n').at(-1).trim();
  console.log(`machine: ${os.cpus().length} cores, kernel ${os.release()}, scratch ${work} (${fsType}); caches dropped before each copy`);
  const idle = [idleCase('dense', Math.round(GiB * scale), 1, reps), idleCase('sparse', Math.round(8 * GiB * scale), 8, reps)];
  console.log(`\nmedian (min–max) of ${reps} rounds`);
  console.log('\n| idle file | size (allocated) | cp --sparse=always | cp + sync | ferry migrate --keep-source (durable) | cp/ferry | (cp + sync)/ferry | freeze | passes | dest allocated: cp / ferry |');
  console.log('|---|---|---|---|---|---|---|---|---|---|');
  const range = (st, fmt) => `${fmt(st.median)} (${fmt(st.min)}–${fmt(st.max)})`;
  const ratio = (x) => x.toFixed(2);
  for (const r of idle) {
    console.log(`| ${r.label} | ${fmtB(r.size)} (${fmtB(r.allocated)}) | ${range(r.cp, fmtS)} | ${range(r.cpSync, fmtS)} | ${range(r.ferry, fmtS)} | ${range(r.ratio, ratio)} | ${range(r.syncRatio, ratio)} | ${range(r.downtimeMs, (ms) => `${ms} ms`)} | ${range(r.passes, String)} | ${fmtB(r.cpBlocks)} / ${fmtB(r.destBlocks)} |`);
  }
  const loads = [loadedCase('native'), loadedCase('js')];
  console.log('\n| under fio randwrite 4k (psync, direct) | data path | disk | passes | total | freeze (downtime) | fio p99 write latency during the bulk copy | fio max latency, whole run | fio max latency around the switch |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const load of loads) {
    console.log(`| ferry migrate | ${load.dataPath} | ${fmtB(load.size)} | ${load.passes} | ${fmtS(load.total)} | ${load.downtimeMs} ms | ${load.bulkP99Ms.toFixed(2)} ms | ${load.maxLatencyMs.toFixed(1)} ms | ${load.maxAroundSwitchMs.toFixed(1)} ms |`);
  }
} finally {
  unmountAll();
  fs.rmSync(work, { recursive: true, force: true });
}
