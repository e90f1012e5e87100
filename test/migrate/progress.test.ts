import { afterEach, describe, expect, it } from 'vitest';
import fsp from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { mountFerry, type TestMount } from '../helpers/mounts.js';
import { migrate, waitFor } from '../helpers/migration.js';
import { vmHome } from '../helpers/vm.js';
import { CLI, run } from '../helpers/cli.js';

const MiB = 1 << 20;
let mounts: TestMount[] = [];
afterEach(async () => {
  for (const m of mounts) await m.stop();
  mounts = [];
});

async function setup(diskMiB: number): Promise<TestMount & { dest: string; home: string }> {
  const m = await mountFerry();
  mounts.push(m);
  return vmHome(m, diskMiB, { 'vm.cfg': 'memory=1G\n' });
}

type Sample = { at: number; copiedBytes: number };

describe('migration progress (issue 28)', () => {
  it('a thin 1 GiB image with 64 MiB of data: totals in data bytes, copied bytes rising to 100% at done, a rate from the first second, passes right', async () => {
    const m = await setup(0);
    const disk = join(m.home, 'disk.img');
    const fh = await fsp.open(disk, 'r+');
    try {
      await fh.truncate(1024 * MiB);
      // 16 extents of 4 MiB spread over the image: 64 MiB of data, the rest holes.
      for (let i = 0; i < 16; i++) await fh.write(randomBytes(4 * MiB), 0, 4 * MiB, i * 64 * MiB);
    } finally {
      await fh.close();
    }
    const run = await migrate(m, join(m.mountpoint, 'vm1'), m.dest, ['--rate-limit', '32M', '--mode', 'iterative']).done;
    expect(run.code, run.stderr).toBe(0);
    const progress = run.events.filter((e) => e.type === 'progress');
    expect(progress.length).toBeGreaterThanOrEqual(4);
    for (const e of progress) {
      expect(e.totalBytes).toBeGreaterThanOrEqual(64 * MiB);
      expect(e.totalBytes).toBeLessThan(66 * MiB);
      expect(e.copiedBytes).toBeLessThanOrEqual(e.totalBytes);
      expect(e.percent).toBe(Math.floor((100 * e.copiedBytes) / e.totalBytes));
    }
    for (let i = 1; i < progress.length; i++) expect(progress[i].copiedBytes).toBeGreaterThanOrEqual(progress[i - 1].copiedBytes);
    // The rate is measured while the bulk pass runs: known from the first event that saw bytes copied.
    const first = progress.find((e) => e.copiedBytes > 0 && e.at - progress[0].at < 1000)!;
    expect(first).toBeDefined();
    expect(first.rateBytesPerSec).toBeGreaterThan(8 * MiB);
    expect(first.etaSeconds).toBeGreaterThan(0);
    // Halfway through, the bar is about halfway: proportional, not stuck low and jumping at the end.
    const mid = progress.find((e) => e.copiedBytes >= 32 * MiB)!;
    expect(mid.percent).toBeGreaterThanOrEqual(45);
    const passes = run.events.filter((e) => e.type === 'pass');
    expect(passes.map((p) => p.pass)).toEqual(passes.map((_, i) => i));
    // The passes counted at done: those with a pass event, and the last copy, made with I/O frozen.
    expect(run.final).toMatchObject({ type: 'done', passes: passes.length + 1, percent: 100 });
    expect(run.final!.copiedBytes).toBe(run.final!.totalBytes);
    expect(run.final!.copiedBytes).toBeGreaterThanOrEqual(64 * MiB);
    expect(run.final!.copiedBytes).toBeLessThan(66 * MiB);
  });

  it.each([20, 10])('--rate-limit %iM holds: every 1-s window after the first within 5 percent of the limit, the average at least 90 percent', async (limitMiB) => {
    const m = await setup(limitMiB * 8);
    const samples: Sample[] = [];
    let bulkAt = 0;
    const run = await migrate(m, join(m.mountpoint, 'vm1'), m.dest, ['--rate-limit', `${limitMiB}M`, '--mode', 'iterative'], (e) => {
      if (e.type === 'phase' && e.phase === 'bulk') bulkAt = e.at;
      if (e.type === 'progress' && e.pass === 0) samples.push({ at: e.at, copiedBytes: e.copiedBytes });
    }).done;
    expect(run.code, run.stderr).toBe(0);
    const limit = limitMiB * MiB;
    expect(samples.length).toBeGreaterThanOrEqual(10);
    const start = samples[0].at;
    // No second of credit at the start either (10M copied 16 MiB in its first 500 ms).
    const firstSecond = samples.find((s) => s.at - bulkAt >= 1000)!;
    expect((firstSecond.copiedBytes / (firstSecond.at - bulkAt)) * 1000).toBeLessThanOrEqual(1.05 * limit);
    const over: string[] = [];
    for (let i = 0; i < samples.length; i++) {
      if (samples[i].at - start < 1000) continue;
      const j = samples.findIndex((s) => s.at - samples[i].at >= 1000);
      if (j < 0) break;
      const rate = ((samples[j].copiedBytes - samples[i].copiedBytes) / (samples[j].at - samples[i].at)) * 1000;
      if (rate > 1.05 * limit) over.push(`${(rate / MiB).toFixed(2)} MiB/s at +${samples[i].at - start} ms`);
    }
    expect(over).toEqual([]);
    const last = samples.at(-1)!;
    expect((last.copiedBytes / (last.at - start + 250)) * 1000).toBeGreaterThanOrEqual(0.9 * limit);
  });

  it('ferry status follows a detached migration: percent, bytes, rate and ETA in text and JSON', async () => {
    const m = await setup(48);
    const started = await m.cli(['migrate', join(m.mountpoint, 'vm1'), '--to', m.dest, '--detach', '--rate-limit', '8M']);
    expect(started.code, started.stderr).toBe(0);
    let mig: Record<string, any> = {};
    await waitFor(async () => {
      mig = (await m.status()).migrations[0];
      return mig.progress?.copiedBytes >= 8 * MiB;
    }, 20_000, 'the detached migration to copy 8 MiB');
    expect(mig).toMatchObject({ running: true, phase: 'bulk' });
    expect(mig.progress.totalBytes).toBeGreaterThanOrEqual(48 * MiB);
    expect(mig.progress.percent).toBeGreaterThan(0);
    expect(mig.progress.percent).toBeLessThan(100);
    expect(mig.progress.rateBytesPerSec).toBeGreaterThan(6 * MiB);
    expect(mig.progress.rateBytesPerSec).toBeLessThan(10 * MiB);
    expect(mig.progress.etaSeconds).toBeGreaterThan(0);
    const text = await m.cli(['status', m.mountpoint]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/running, bulk copy \(pass 1\): \d+% \(\d+(\.\d+)? MiB of 48(\.\d+)? MiB\), \d+(\.\d+)? MiB\/s, about \d+ s left/);
    expect((await m.cli(['cancel', join(m.mountpoint, 'vm1')])).code).toBe(0);
  });
});

describe('the progress bar on a terminal (issue 28)', () => {
  it('shows data bytes of the total, a rate during the bulk copy, the switchover estimate in seconds, and the passes at done', async () => {
    const m = await setup(24);
    // `script` gives the CLI a terminal, as a user at a shell has.
    const cmd = [process.execPath, CLI, 'migrate', join(m.mountpoint, 'vm1'), '--to', m.dest, '--rate-limit', '8M', '--state-dir', m.stateDir].join(' ');
    const r = await run('script', ['-qfec', cmd, '/dev/null']);
    expect(r.code, r.stdout).toBe(0);
    const frames = r.stdout.split(/\x1b\[1G/);
    const bulk = frames.filter((f) => f.startsWith('bulk copy, pass 1 '));
    expect(bulk.some((f) => /\| \d+% [\d.]+ MiB of 24\.0 MiB, [\d.]+ [KM]iB\/s, ~\d+ s left/.test(f))).toBe(true);
    expect(r.stdout).not.toMatch(/-\/s|pass 0/);
    for (const f of frames.filter((f) => f.includes('switchover ~'))) expect(f).toMatch(/switchover ~\d+(\.\d)? s/);
    expect(frames.some((f) => f.startsWith('done, 2 passes |') && f.includes('100% 24.0 MiB of 24.0 MiB'))).toBe(true);
    expect(r.stdout).toMatch(/migrated \/vm1 to .*: 2 passes, 24\.0 MiB copied/);
  });
});
