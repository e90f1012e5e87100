#!/usr/bin/env node
// Modes benchmark (`npm run bench:modes`): for increasing guest write rates (fio, 64 KiB random writes through
// the mount, so the write rate is the dirty rate), one migration per mode with the copy capped at a fixed rate:
// total time, downtime, outcome, and the guest's p99 write latency while the migration ran.
// Env: FERRY_BENCH_DIR (default /var/tmp), FERRY_BENCH_COPY_RATE (MiB/s, default 32).
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const cli = path.join(root, 'dist/cli/main.js');
const MiB = 1 << 20;
const copyRate = Number(process.env.FERRY_BENCH_COPY_RATE ?? 32);
const rates = [4, 16, 32, 48];
const modes = ['iterative', 'mirror', 'auto'];
const work = fs.mkdtempSync(path.join(process.env.FERRY_BENCH_DIR ?? '/var/tmp', 'ferry-bench-modes-'));
const state = path.join(work, 'state');
const ds = path.join(work, 'ds');
const mnt = path.join(work, 'mnt');
const ferry = (...args) => execFileSync(process.execPath, [cli, ...args, '--state-dir', state], { encoding: 'utf8', maxBuffer: 64 * MiB });

function percentile(values, q) {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

async function once(rate, mode, index, extra = []) {
  const latLog = path.join(work, `lat-${index}`);
  const fio = spawn('fio', ['--name=guest', `--filename=${path.join(mnt, 'vm', 'disk.img')}`, '--rw=randwrite', '--bs=64k', '--ioengine=psync', '--direct=1', `--rate=${rate}m`, '--size=256m', '--time_based', '--runtime=300', `--write_lat_log=${latLog}`, '--log_avg_msec=0'], { stdio: 'ignore' });
  const fioStart = Date.now();
  await new Promise((r) => setTimeout(r, 2000));
  const dest = path.join(work, `dest-${index}`);
  let events;
  try {
    events = ferry('migrate', path.join(mnt, 'vm'), '--to', dest, '--json', '--mode', mode, '--rate-limit', `${copyRate}M`, '--max-downtime', '500ms', '--max-iterations', '12', ...extra)
      .trim().split('\n').map((l) => JSON.parse(l));
  } catch (err) {
    events = String(err.stdout ?? '').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
  }
  fio.kill('SIGINT');
  await new Promise((r) => fio.on('exit', r));
  const first = events[0].at - fioStart;
  const last = events.at(-1).at - fioStart;
  const logFile = fs.readdirSync(work).find((n) => n.startsWith(`lat-${index}_lat`) && n.endsWith('.log'));
  const lat = [];
  for (const line of fs.readFileSync(path.join(work, logFile), 'utf8').split('\n')) {
    const [t, ns] = line.split(',').map(Number);
    if (Number.isFinite(ns) && t >= first && t <= last) lat.push(ns / 1e6);
  }
  const end = events.at(-1);
  // Move the home back for the next run (a committed migration moved it).
  if (end.type === 'done') ferry('migrate', path.join(mnt, 'vm'), '--to', path.join(ds, 'vm'), '--json', '--mode', 'mirror');
  return { rate, mode, end, p99: percentile(lat, 0.99), switched: events.find((e) => e.type === 'mode') };
}

try {
  fs.mkdirSync(path.join(ds, 'vm'), { recursive: true });
  fs.mkdirSync(mnt);
  const buf = Buffer.alloc(MiB);
  const fd = fs.openSync(path.join(ds, 'vm', 'disk.img'), 'w');
  for (let i = 0; i < 256; i++) {
    for (let j = 0; j < MiB; j += 4096) buf.writeUInt32LE((Math.random() * 2 ** 32) >>> 0, j);
    fs.writeSync(fd, buf);
  }
  fs.closeSync(fd);
  ferry('mount', ds, mnt);
  console.log(`machine: ${os.cpus().length} cores, kernel ${os.release()}; 256 MiB image; guest: fio 64 KiB random writes (psync, O_DIRECT) at the given rate; copy capped at ${copyRate} MiB/s; --max-downtime 500ms, --max-iterations 12`);
  console.log('\n| guest write rate | mode | outcome | total | downtime | mode switch | guest p99 write latency during the migration |');
  console.log('|---|---|---|---|---|---|---|');
  let index = 0;
  const priorityOnly = process.env.FERRY_BENCH_PRIORITY_ONLY === '1';
  for (const rate of priorityOnly ? [] : rates) {
    for (const mode of modes) {
      const r = await once(rate, mode, index++);
      const outcome = r.end.type === 'done' ? `done (${r.end.passes} passes, ${r.end.mode})` : `aborted: ${r.end.code}`;
      const total = r.end.type === 'done' ? `${(r.end.durationMs / 1000).toFixed(1)} s` : '–';
      const downtime = r.end.type === 'done' ? `${r.end.downtimeMs} ms` : '–';
      console.log(`| ${rate} MiB/s | ${mode} | ${outcome} | ${total} | ${downtime} | ${r.switched ? 'to mirror' : ''} | ${r.p99.toFixed(1)} ms |`);
    }
  }
  // --guest-io-priority: the same migration with the copy uncapped, with and without backing off for the guest.
  console.log('\n| guest write rate | copy | guest p99 write latency during the migration | migration total |');
  console.log('|---|---|---|---|');
  for (const extra of [[], ['--guest-io-priority']]) {
    const r = await once(8, 'auto', index++, ['--rate-limit', '0', ...extra]);
    console.log(`| 8 MiB/s | uncapped${extra.length ? ', --guest-io-priority' : ''} | ${r.p99.toFixed(1)} ms | ${(r.end.durationMs / 1000).toFixed(1)} s |`);
  }
} finally {
  try {
    ferry('unmount', mnt, '--force');
  } catch {
    // already gone
  }
  fs.rmSync(work, { recursive: true, force: true });
}
