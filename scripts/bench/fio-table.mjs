#!/usr/bin/env node
// Turns the raw results of scripts/bench/io.sh into markdown tables.
//   node scripts/bench/fio-table.mjs <results dir>
// The directory holds plan.json ({direct, qd16, targets: [{id, label, skip}], jobs: [{id, label}]}) and, per job
// and target, <job>.<target>.json (fio --output-format=json), optionally <job>.<target>.error (why it failed) and,
// for ferry targets, <job>.<target>.before.json / .after.json (`ferry status --json` around the run).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: fio-table.mjs <results dir>');
  process.exit(2);
}
const plan = JSON.parse(readFileSync(join(dir, 'plan.json'), 'utf8'));

function readJson(file) {
  if (!existsSync(file)) return undefined;
  const text = readFileSync(file, 'utf8');
  const start = text.indexOf('{'); // fio may print warnings ahead of the JSON
  if (start < 0) return undefined;
  try {
    return JSON.parse(text.slice(start));
  } catch {
    return undefined;
  }
}

const isSeq = (jobId) => jobId.startsWith('seq');
const isWrite = (jobId) => jobId.includes('write');

/** { value (MB/s or IOPS), p50, p99 (µs), ios, runtimeMs } or { error } */
function result(jobId, target) {
  const base = join(dir, `${jobId}.${target.id}`);
  if (target.skip) return { error: 'n/a' };
  if (existsSync(`${base}.error`)) {
    const why = readFileSync(`${base}.error`, 'utf8').split('\n')[0].trim();
    return { error: `FAIL (${why})` };
  }
  const fio = readJson(`${base}.json`);
  const job = fio?.jobs?.[0];
  if (!job) return { error: 'FAIL (no fio output)' };
  if (job.error) return { error: `FAIL (fio error ${job.error})` };
  const side = isWrite(jobId) ? job.write : job.read;
  const lat = side.lat_ns?.percentile ?? side.clat_ns?.percentile ?? {};
  return {
    value: isSeq(jobId) ? side.bw_bytes / 1e6 : side.iops,
    p50: lat['50.000000'] / 1000,
    p99: lat['99.000000'] / 1000,
    ios: (job.read?.total_ios ?? 0) + (job.write?.total_ios ?? 0),
    runtimeMs: side.runtime, // wall time of the run (job_runtime sums the threads' times)
  };
}

const int = (n) => Math.round(n).toLocaleString('en-US');
const lat = (n) => (n >= 100 ? int(n) : n.toFixed(1));

function cell(jobId, r) {
  if (r.error) return r.error;
  if (isSeq(jobId)) return int(r.value);
  return `${int(r.value)} (${lat(r.p50)} / ${lat(r.p99)})`;
}

const byId = Object.fromEntries(plan.targets.map((t) => [t.id, t]));
const ratioCols = [];
if (byId.ferry && byId.bindfs) ratioCols.push('ferry/bindfs');
if (byId.ferry && byId['ferry-js']) ratioCols.push('native/JS');
if (byId.ferry && byId['ferry-notrack']) ratioCols.push('track cost');

const header = ['job', ...plan.targets.map((t) => t.label), ...ratioCols];
const rows = [];
const table = {};
for (const job of plan.jobs) {
  table[job.id] = Object.fromEntries(plan.targets.map((t) => [t.id, result(job.id, t)]));
  const res = table[job.id];
  const row = [job.label, ...plan.targets.map((t) => cell(job.id, res[t.id]))];
  const ok = (id) => res[id] && !res[id].error && res[id].value > 0;
  if (ratioCols.includes('ferry/bindfs')) row.push(ok('ferry') && ok('bindfs') ? `${(res.ferry.value / res.bindfs.value).toFixed(2)}×` : '–');
  if (ratioCols.includes('native/JS')) row.push(ok('ferry') && ok('ferry-js') ? `${(res.ferry.value / res['ferry-js'].value).toFixed(2)}×` : '–');
  if (ratioCols.includes('track cost')) {
    // How much slower tracking is than the same mount without it (negative: within noise, tracking was faster).
    row.push(ok('ferry') && ok('ferry-notrack') ? `${((1 - res.ferry.value / res['ferry-notrack'].value) * 100).toFixed(1)}%` : '–');
  }
  rows.push(row);
}

function printTable(head, body, align) {
  console.log(`| ${head.join(' | ')} |`);
  console.log(`|${head.map((_, i) => (align(i) === 'r' ? '---:' : ':---')).join('|')}|`);
  for (const r of body) console.log(`| ${r.join(' | ')} |`);
}

console.log(`### fio: MB/s or IOPS (p50 / p99 latency, µs), ${plan.direct ? 'O_DIRECT' : 'buffered'}; 16 in flight = ${plan.qd16}`);
console.log();
printTable(header, rows, (i) => (i === 0 ? 'l' : 'r'));
console.log();
if (ratioCols.includes('ferry/bindfs')) console.log('ferry/bindfs: ferry native (tracking) throughput or IOPS divided by bindfs\'s (above 1: ferry is faster).');
if (ratioCols.includes('native/JS')) console.log('native/JS: ferry on its native data path divided by ferry on the JavaScript path (both tracking).');
if (ratioCols.includes('track cost')) console.log('track cost: how much slower ferry with tracking is than ferry --no-track (1 - track/no-track).');

// What ferry was asked to do: op counter deltas from `ferry status --json` around each run.
const ferryTargets = plan.targets.filter((t) => t.id.startsWith('ferry') && !t.skip);
const opRows = [];
for (const t of ferryTargets) {
  for (const job of plan.jobs) {
    const base = join(dir, `${job.id}.${t.id}`);
    const before = readJson(`${base}.before.json`);
    const after = readJson(`${base}.after.json`);
    const r = table[job.id][t.id];
    if (!before?.ops || !after?.ops || r.error) continue; // an unresponsive daemon's status has no counters
    const delta = {};
    for (const [op, n] of Object.entries(after.ops ?? {})) delta[op] = n - (before.ops?.[op] ?? 0);
    const reads = delta.read ?? 0;
    const writes = delta.write ?? 0;
    const bytesRead = after.bytesRead - before.bytesRead;
    const bytesWritten = after.bytesWritten - before.bytesWritten;
    const attrs = (delta.getattr ?? 0) + (delta.fgetattr ?? 0);
    const total = Object.values(delta).reduce((a, b) => a + b, 0);
    const other = Object.entries(delta)
      .filter(([op, n]) => n > 0 && !['read', 'write', 'getattr', 'fgetattr'].includes(op))
      .map(([op, n]) => `${op} ${n}`)
      .join(', ');
    const kib = (bytes, n) => (n ? `${(bytes / n / 1024).toFixed(1)} KiB` : '–');
    opRows.push([
      `${t.label}: ${job.label.split(',')[0]}`,
      int(reads),
      kib(bytesRead, reads),
      int(writes),
      kib(bytesWritten, writes),
      int(attrs),
      other || '–',
      r.ios ? ((reads + writes) / r.ios).toFixed(2) : '–',
      r.runtimeMs ? int(total / (r.runtimeMs / 1000)) : '–',
    ]);
  }
}
if (opRows.length) {
  console.log();
  console.log('### requests ferry served per run (`ferry status --json` op counter deltas)');
  console.log();
  printTable(
    ['run', 'reads', 'avg read', 'writes', 'avg write', 'getattr+fgetattr', 'other ops', 'data requests per fio I/O', 'ops/s'],
    opRows,
    (i) => (i === 0 || i === 6 ? 'l' : 'r'),
  );
}
