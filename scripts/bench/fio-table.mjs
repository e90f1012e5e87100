#!/usr/bin/env node
// Turns the raw results of scripts/bench/io.sh into markdown tables.
//   node scripts/bench/fio-table.mjs <results dir>
// The directory holds plan.json ({direct, qd16, rounds, memSize, targets: [{id, label, skip}], jobs: [{id, label,
// warm}]}) and, per job, target and round r, <job>.<target>.r<r>.json (fio --output-format=json), optionally
// <job>.<target>.r<r>.error (why it failed) and, for ferry targets, <job>.<target>.r<r>.before.json / .after.json
// (`ferry status --json` around the run); per target mem.<target>.json or mem.<target>.error (the memory figure).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: fio-table.mjs <results dir>');
  process.exit(2);
}
const plan = JSON.parse(readFileSync(join(dir, 'plan.json'), 'utf8'));
const rounds = plan.rounds ?? 1;

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

const isSeq = (jobId) => jobId.includes('seq'); // seqread, warmseqread, ...
const isWrite = (jobId) => jobId.includes('write');

/** One run: { value (MB/s or IOPS), p50, p99 (µs), ios, runtimeMs } or { error } */
function runResult(jobId, target, round) {
  const base = join(dir, `${jobId}.${target.id}.r${round}`);
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

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** Over the rounds: { value, p50, p99 (medians), min, max, n, runs } or { error } (a failed round fails the cell) */
function result(jobId, target) {
  if (target.skip) return { error: 'n/a' };
  const runs = [];
  for (let r = 1; r <= rounds; r++) runs.push(runResult(jobId, target, r));
  const failed = runs.find((r) => r.error);
  if (failed) return { error: failed.error };
  const values = runs.map((r) => r.value);
  return {
    value: median(values),
    p50: median(runs.map((r) => r.p50)),
    p99: median(runs.map((r) => r.p99)),
    min: Math.min(...values),
    max: Math.max(...values),
    n: runs.length,
    runs,
  };
}

const int = (n) => Math.round(n).toLocaleString('en-US');
const lat = (n) => (n >= 100 ? int(n) : n.toFixed(1));

function cell(jobId, r) {
  if (r.error) return r.error;
  const range = r.n > 1 ? ` [${int(r.min)}–${int(r.max)}]` : '';
  if (isSeq(jobId)) return `${int(r.value)}${range}`;
  return `${int(r.value)} (${lat(r.p50)} / ${lat(r.p99)})${range}`;
}

const byId = Object.fromEntries(plan.targets.map((t) => [t.id, t]));
// [column, numerator target, denominator target, how to print]
const ratios = [];
const times = (a, b) => `${(a / b).toFixed(2)}×`;
if (byId.ferry && byId.bindfs) ratios.push(['ferry/bindfs', 'ferry', 'bindfs', times]);
if (byId.ferry && byId.passthrough_ll) ratios.push(['ferry/passthrough_ll', 'ferry', 'passthrough_ll', times]);
if (byId.ferry && byId['passthrough_ll-nodirect']) ratios.push(['ferry/passthrough_ll-nodirect', 'ferry', 'passthrough_ll-nodirect', times]);
if (byId.ferry && byId['ferry-direct-io']) ratios.push(['ferry/--direct-io', 'ferry', 'ferry-direct-io', times]);
if (byId.ferry && byId['ferry-js']) ratios.push(['native/JS', 'ferry', 'ferry-js', times]);
// How much slower tracking is than the same mount without it (negative: within noise, tracking was faster).
if (byId.ferry && byId['ferry-notrack']) ratios.push(['track cost', 'ferry', 'ferry-notrack', (a, b) => `${((1 - a / b) * 100).toFixed(1)}%`]);

const header = ['job', ...plan.targets.map((t) => t.label), ...ratios.map(([col]) => col)];
const rows = [];
const table = {};
for (const job of plan.jobs) {
  table[job.id] = Object.fromEntries(plan.targets.map((t) => [t.id, result(job.id, t)]));
  const res = table[job.id];
  const row = [job.label, ...plan.targets.map((t) => cell(job.id, res[t.id]))];
  const ok = (id) => res[id] && !res[id].error && res[id].value > 0;
  for (const [, a, b, fmt] of ratios) row.push(ok(a) && ok(b) ? fmt(res[a].value, res[b].value) : '–');
  rows.push(row);
}

function printTable(head, body, align) {
  console.log(`| ${head.join(' | ')} |`);
  console.log(`|${head.map((_, i) => (align(i) === 'r' ? '---:' : ':---')).join('|')}|`);
  for (const r of body) console.log(`| ${r.join(' | ')} |`);
}

const of = rounds > 1 ? `median of ${rounds} rounds [min–max]` : 'one round';
console.log(`### fio: MB/s or IOPS (p50 / p99 latency, µs), ${of}; ${plan.direct ? 'O_DIRECT' : 'buffered'}; 16 in flight = ${plan.qd16}`);
console.log();
printTable(header, rows, (i) => (i === 0 ? 'l' : 'r'));
console.log();
for (const t of plan.targets.filter((x) => x.skip)) console.log(`${t.label}: n/a, skipped: ${t.skip}.`);
if (plan.direct) console.log('No warm rows: with O_DIRECT nothing reads a cache (they are run with buffered I/O only).');
if (plan.jobs.some((j) => j.warm)) {
  console.log('warm: caches dropped, the file read once through the target (dd bs=1M), then the fio job at once with invalidate=0.');
}
const labelOf = (id) => byId[id].label;
for (const [col, a, b] of ratios) {
  if (col === 'track cost') console.log('track cost: how much slower ferry with tracking is than ferry --no-track (1 - track/no-track).');
  else console.log(`${col}: ${labelOf(a)}'s median throughput or IOPS divided by ${labelOf(b)}'s (above 1: ${a} is faster).`);
}

// What ferry was asked to do: op counter deltas from `ferry status --json` around each run.
const ferryTargets = plan.targets.filter((t) => t.id.startsWith('ferry') && !t.skip);
const opRows = [];
for (const t of ferryTargets) {
  for (const job of plan.jobs) {
    const r = table[job.id][t.id];
    if (r.error) continue;
    // summed over the rounds; an unresponsive daemon's status has no counters, so a round without them spoils it
    const delta = {};
    let bytesRead = 0;
    let bytesWritten = 0;
    let ios = 0;
    let runtimeMs = 0;
    let complete = true;
    for (let round = 1; round <= rounds; round++) {
      const base = join(dir, `${job.id}.${t.id}.r${round}`);
      const before = readJson(`${base}.before.json`);
      const after = readJson(`${base}.after.json`);
      if (!before?.ops || !after?.ops) {
        complete = false;
        break;
      }
      for (const [op, n] of Object.entries(after.ops ?? {})) delta[op] = (delta[op] ?? 0) + n - (before.ops?.[op] ?? 0);
      bytesRead += after.bytesRead - before.bytesRead;
      bytesWritten += after.bytesWritten - before.bytesWritten;
      ios += r.runs[round - 1].ios;
      runtimeMs += r.runs[round - 1].runtimeMs;
    }
    if (!complete) continue;
    const reads = delta.read ?? 0;
    const writes = delta.write ?? 0;
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
      ios ? ((reads + writes) / ios).toFixed(2) : '–',
      runtimeMs ? int(total / (runtimeMs / 1000)) : '–',
    ]);
  }
}
if (opRows.length) {
  console.log();
  console.log(`### requests ferry served (\`ferry status --json\` op counter deltas${rounds > 1 ? `, summed over the ${rounds} rounds` : ''})`);
  console.log();
  printTable(
    ['run', 'reads', 'avg read', 'writes', 'avg write', 'getattr+fgetattr', 'other ops', 'data requests per fio I/O', 'ops/s'],
    opRows,
    (i) => (i === 0 || i === 6 ? 'l' : 'r'),
  );
}

// Goal 2 of issue 29 (one cache): what reading a file twice through each target left in memory.
if (plan.memSize) {
  const mib = (bytes) => `${(bytes / 1048576).toFixed(1)}`;
  const memRows = [];
  const totals = {};
  for (const t of plan.targets) {
    const base = join(dir, `mem.${t.id}`);
    if (existsSync(`${base}.error`)) {
      memRows.push([t.label, `FAIL (${readFileSync(`${base}.error`, 'utf8').split('\n')[0].trim()})`, '', '', '', '', '']);
      continue;
    }
    const m = readJson(`${base}.json`);
    if (!m) continue;
    const backing = /^\d+$/.test(m.backing) ? Number(m.backing) : undefined;
    const cached = m.cachedDeltaKb * 1024;
    const rss = /^\d+$/.test(m.rssKb) ? Number(m.rssKb) * 1024 : undefined;
    // the one figure compared (io-routes.md, goal 2): page cache grown + the serving daemon's RSS
    const total = cached + (rss ?? 0);
    totals[t.id] = total;
    memRows.push([
      t.label,
      mib(cached),
      backing === undefined ? m.backing : mib(backing),
      backing === undefined ? '–' : mib(Math.max(0, cached - backing)),
      rss === undefined ? '–' : mib(rss),
      mib(total),
      t.id,
    ]);
  }
  for (const row of memRows) {
    const id = row.pop();
    row.push(totals[id] !== undefined && totals.bindfs ? times(totals[id], totals.bindfs) : '–');
  }
  console.log();
  console.log(`### memory after reading a ${mib(plan.memSize)} MiB file twice through the target (MiB; issue 29, goal 2)`);
  console.log();
  printTable(
    ['target', '/proc/meminfo Cached growth', 'of it the backing file (fincore)', 'the rest (FUSE side, others)', 'daemon RSS', 'Cached growth + RSS', "÷ bindfs's"],
    memRows,
    (i) => (i === 0 ? 'l' : 'r'),
  );
  console.log();
  console.log('Caches dropped first, then `dd bs=1M` read the file twice through the target, buffered. Cached growth: /proc/meminfo');
  console.log('Cached after minus before, machine-wide (only meaningful on a quiet machine); the backing file\'s share is fincore on');
  console.log('it; the rest is mostly the FUSE inode\'s own copy (fincore cannot see it: its open drops the pages of a file opened');
  console.log('without keep_cache). Daemon RSS: VmRSS of the serving process. Issue 29 (goal 2) asks ferry ≤ 1.1× bindfs.');
}
