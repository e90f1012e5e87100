#!/usr/bin/env node
// Guest benchmark (`npm run bench:guest`): an unmodified QEMU guest (TCG) doing O_DIRECT 4 KiB random writes,
//  1. on a plain directory, 2. on a ferry mount, 3. on a ferry mount while its home is migrated live.
// Reports guest-observed write throughput (ratio ferry/plain) and the guest's longest write stall, measured
// from inside the guest, next to the migration's freeze.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const { bootGuest, createImage } = await import(path.join(root, 'dist/demo/guest.js'));
const cli = path.join(root, 'dist/cli/main.js');
const MiB = 1 << 20;
const REGION = 64 * MiB;
const SECONDS = Number(process.env.FERRY_BENCH_SECONDS ?? 10);
const RUNS = Number(process.env.FERRY_BENCH_RUNS ?? 3);
// Only the live-migration rows (the switchover's stall), without the plain-vs-ferry throughput table.
const LIVE_ONLY = process.env.FERRY_BENCH_LIVE_ONLY === '1';
const work = fs.mkdtempSync(path.join(process.env.FERRY_BENCH_DIR ?? '/var/tmp', 'ferry-bench-guest-'));
const state = path.join(work, 'state');
const ferry = (...args) => execFileSync(process.execPath, [cli, ...args, '--state-dir', state], { encoding: 'utf8' });

async function guestRun(dir, cache, during) {
  const image = path.join(dir, 'disk.qcow2');
  await createImage(image, 'qcow2', REGION);
  const guest = await bootGuest({ image, format: 'qcow2', cache, params: { seed: 5, seconds: SECONDS, bs: 4096, region: REGION, direct: true } });
  await guest.started;
  const startedAt = Date.now();
  const extra = during ? await during(startedAt) : undefined;
  const { report } = await guest.result;
  fs.rmSync(image);
  return { write: report.write, startedAt, extra };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
try {
  const plainDir = path.join(work, 'plain');
  const ds = path.join(work, 'ds');
  const mnt = path.join(work, 'mnt');
  for (const d of [plainDir, path.join(ds, 'vm'), mnt]) fs.mkdirSync(d, { recursive: true });
  ferry('mount', ds, mnt);
  console.log(`machine: ${os.cpus().length} cores, kernel ${os.release()}, QEMU TCG (no KVM), qcow2 ${REGION / MiB} MiB, guest O_DIRECT 4 KiB random writes, ${SECONDS} s, median of ${RUNS}`);
  console.log('\n| guest disk | cache | guest MB/s | p50 µs | p99 µs | max µs | ferry/plain |');
  console.log('|---|---|---|---|---|---|---|');
  for (const cache of LIVE_ONLY ? [] : ['writeback', 'none']) {
    const plain = [];
    const onFerry = [];
    for (let i = 0; i < RUNS; i++) {
      plain.push((await guestRun(plainDir, cache)).write);
      onFerry.push((await guestRun(path.join(mnt, 'vm'), cache)).write);
    }
    const row = (label, runs, ratio) =>
      console.log(`| ${label} | ${cache} | ${median(runs.map((w) => w.mb_per_s)).toFixed(2)} | ${median(runs.map((w) => w.lat_p50_us))} | ${median(runs.map((w) => w.lat_p99_us))} | ${median(runs.map((w) => w.lat_max_us))} | ${ratio} |`);
    row('plain directory', plain, '');
    row('ferry mount', onFerry, (median(onFerry.map((w) => w.mb_per_s)) / median(plain.map((w) => w.mb_per_s))).toFixed(2));
  }

  console.log('\n| live migration mid-workload | cache | freeze (ferry) | copied in the freeze | mode at the end | guest longest write stall | when (s after the switchover started) | guest MB/s | migration total |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const cache of ['writeback', 'none']) {
    for (let i = 0; i < RUNS; i++) {
      const dest = path.join(work, `dest-${cache}-${i}`);
      const result = await guestRun(path.join(mnt, 'vm'), cache, async () => {
        await new Promise((r) => setTimeout(r, 2000));
        const out = ferry('migrate', path.join(mnt, 'vm'), '--to', dest, '--json');
        return out.trim().split('\n').map((l) => JSON.parse(l));
      });
      const events = result.extra;
      const done = events.at(-1);
      const switchAt = events.find((e) => e.type === 'phase' && e.phase === 'switchover').at;
      const stallAt = result.startedAt + result.write.lat_max_at_ms;
      // The switchover's copy is the one not reported as a pass event.
      const frozenBytes = done.bytesCopied - events.filter((e) => e.type === 'pass').reduce((sum, e) => sum + e.copiedBytes, 0);
      console.log(`| run ${i + 1} | ${cache} | ${done.downtimeMs} ms | ${(frozenBytes / MiB).toFixed(2)} MiB | ${done.mode} | ${(result.write.lat_max_us / 1000).toFixed(1)} ms | ${((stallAt - switchAt) / 1000).toFixed(2)} | ${result.write.mb_per_s.toFixed(2)} | ${(done.durationMs / 1000).toFixed(2)} s |`);
      // Where the time went: each phase, and each pass (dirty MiB found, copied, ms, mode).
      const phases = events.filter((e) => e.type === 'phase');
      const phasesMs = Object.fromEntries(phases.slice(0, -1).map((e, k) => [e.phase, phases[k + 1].at - e.at]));
      const passes = events.filter((e) => e.type === 'pass').map((e) => `${(e.dirtyBytes / MiB).toFixed(1)}/${(e.copiedBytes / MiB).toFixed(1)} MiB ${e.durationMs} ms ${e.mode}`);
      console.error(`  ${cache} run ${i + 1}: ${JSON.stringify(phasesMs)}; passes: ${passes.join(', ')}`);
      // Move the home back for the next run.
      ferry('migrate', path.join(mnt, 'vm'), '--to', path.join(ds, 'vm'), '--json');
    }
  }
} finally {
  try {
    ferry('unmount', path.join(work, 'mnt'), '--force');
  } catch {
    // already gone
  }
  fs.rmSync(work, { recursive: true, force: true });
}
