import { copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../helpers/cli.js';
import { mountFerry } from '../helpers/mounts.js';
import { waitFor } from '../helpers/migration.js';
import { bootGuest, createImage, ensureGuestKit, goldenChecksum, imageChecksum, qemuMaxCpus, type GuestParams } from '../helpers/guest.js';

// The kit itself, on plain files (no FUSE): whatever the guest wrote is what the host computes it should have.
// None of it depends on ferry's data path: the JS path's pass of the suite skips it.
const kitPass = process.env.FERRY_NATIVE !== '0';
const MiB = 1 << 20;
const REGION = 16 * MiB;

let dir: string;

beforeAll(async () => {
  // The first build installs QEMU and downloads a kernel.
  await ensureGuestKit();
  dir = await mkdtemp(join(tmpdir(), 'ferry-test-'));
}, 900_000);

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function runAndCheck(name: string, format: 'raw' | 'qcow2', cache: 'writeback' | 'none', params: GuestParams & { seed: number }, preseed = false) {
  const image = join(dir, `${name}.${format}`);
  await createImage(image, format, 32 * MiB);
  let base: string | undefined;
  if (preseed) {
    // Earlier content under the writes, kept aside as the golden computation's starting point.
    const { workloadHost } = await ensureGuestKit();
    expect((await run(workloadHost, ['simulate', image, '99', '3000', '4096', String(REGION)])).code).toBe(0);
    base = join(dir, `${name}.base`);
    await copyFile(image, base);
  }
  const guest = await bootGuest({ image, format, cache, params: { region: REGION, ...params }, timeoutMs: 90_000 });
  await guest.started;
  expect(qemuMaxCpus(guest.child.pid!)).toBeGreaterThan(1);
  const { report, timing } = await guest.result;
  expect(timing.readyMs).toBeLessThanOrEqual(timing.startedMs);
  expect(report.write.errors).toBe(0);
  expect(report.write.fsync_errors).toBe(0);
  expect(report.dmesg_io_errors).toBe(0);
  if (params.writes !== undefined) expect(report.write.writes).toBe(params.writes);
  expect(report.write.bytes).toBe(report.write.writes * (params.bs ?? 4096));
  // A timed run is reproduced by its reported count: write i does not depend on how the run is bounded.
  const golden = await goldenChecksum({ seed: params.seed, writes: report.write.writes, bs: params.bs, region: REGION, base });
  expect(report.checksum.fnv1a64).toBe(golden);
  expect(await imageChecksum(image, format, REGION)).toBe(golden);
  return report;
}

describe.skipIf(!kitPass)('guest kit', () => {
  it('raw image with earlier content, cache=writeback: guest checksum = golden = image', async () => {
    await runAndCheck('raw', 'raw', 'writeback', { seed: 1, writes: 1500 }, true);
  });

  it('qcow2 image', async () => {
    await runAndCheck('qcow2', 'qcow2', 'writeback', { seed: 2, writes: 1500 });
  });

  it('O_DIRECT in the guest, cache=none on the host', async () => {
    const report = await runAndCheck('direct', 'raw', 'none', { seed: 3, writes: 1500, direct: true });
    expect(report.write.direct).toBe(1);
  });

  it('timed run with periodic fsync and 8 KiB writes', async () => {
    const report = await runAndCheck('timed', 'raw', 'writeback', { seed: 4, seconds: 2, fsync: 16, bs: 8192 });
    expect(report.write.writes).toBeGreaterThan(0);
    expect(report.write.fsyncs).toBe(Math.floor(report.write.writes / 16) + 1);
  });

  it('a traced run: every write with its start and latency, on the second disk', async () => {
    const image = join(dir, 'traced.raw');
    await createImage(image, 'raw', 32 * MiB);
    const guest = await bootGuest({ image, trace: join(dir, 'trace.raw'), params: { seed: 6, seconds: 2, region: REGION }, timeoutMs: 90_000 });
    const { report, trace } = await guest.result;
    expect(report.write.errors).toBe(0);
    expect(trace!.latUs.length).toBe(report.write.writes);
    const worst = trace!.latUs.reduce((a, b) => Math.max(a, b), 0);
    expect(worst).toBe(report.write.lat_max_us);
    expect(trace!.latUs.indexOf(worst)).toBe(report.write.lat_max_index);
    expect(Math.abs(trace!.startUs[report.write.lat_max_index] / 1000 - report.write.lat_max_at_ms)).toBeLessThanOrEqual(0.1);
    expect(trace!.startUs.every((start, i) => i === 0 || start >= trace!.startUs[i - 1])).toBe(true);
    expect(report.checksum.fnv1a64).toBe(await goldenChecksum({ seed: 6, writes: report.write.writes, region: REGION }));
  });

  it('golden values depend on seed, count and base image', async () => {
    const a = await goldenChecksum({ seed: 9, writes: 100, region: MiB });
    expect(await goldenChecksum({ seed: 9, writes: 100, region: MiB })).toBe(a);
    expect(await goldenChecksum({ seed: 10, writes: 100, region: MiB })).not.toBe(a);
    expect(await goldenChecksum({ seed: 9, writes: 101, region: MiB })).not.toBe(a);
    const base = join(dir, 'base.raw');
    await createImage(base, 'raw', 2 * MiB);
    expect(await goldenChecksum({ seed: 9, writes: 100, region: MiB, base })).toBe(a);
    await writeFile(base, Buffer.alloc(MiB, 0xa5));
    expect(await goldenChecksum({ seed: 9, writes: 100, region: MiB, base })).not.toBe(a);
  });
});

describe.skipIf(!kitPass)('a guest that times out', () => {
  it('leaves its evidence in the error: heartbeats, QEMU threads, QMP and the virtqueue, and what the caller adds', async () => {
    const image = join(dir, 'slow.raw');
    await createImage(image, 'raw', 8 * MiB);
    const guest = await bootGuest({ image, params: { seed: 5, seconds: 120, delay_us: 1000 }, timeoutMs: 30_000, evidence: async () => '--- caller evidence ---' });
    const error: Error = await guest.result.then(() => new Error('no timeout'), (e: Error) => e);
    expect(error.message).toMatch(/timed out after 30000 ms/);
    expect(error.message).toMatch(/FERRY-TICK up=\S+ state=\w wchan=\S* inflight=\d+,\d+/);
    expect(error.message).toMatch(/--- QEMU \(pid \d+\) threads ---\n  \d+ qemu-system-x86 \w wchan=/);
    expect(error.message).toMatch(/query-status: \{"return": \{.*"status": "running"/);
    expect(error.message).toMatch(/query-blockstats: \[\{"device":"virtio0","rd_operations":\d+/);
    // The disk's virtqueue: avail and used indices, requests in QEMU's hands, the pending interrupt.
    expect(error.message).toMatch(/x-query-virtio-status \{"path":"[^"]+"\}: \{"name":"virtio-blk","isr":\d+/);
    expect(error.message).toMatch(/x-query-virtio-queue-status \{"path":"[^"]+","queue":0\}: \{"return": \{.*"last-avail-idx": \d+/);
    // The ring words as the guest's memory holds them, read through the monitor.
    expect(error.message).toMatch(/ring words: avail\.idx@\d+ used_event@\d+ used\.idx@\d+ avail_event@\d+/);
    expect(error.message).toMatch(/xp \/1hu \d+"\}: \{"return": "[0-9a-f]+: +\d+/);
    expect(error.message).toContain('--- caller evidence ---');
  });
});

describe('a disk that stops answering for a while', () => {
  // The kit's stall handling does not depend on ferry's data path: one pass of the suite is enough.
  it.skipIf(!kitPass)('is reported by the guest with where its block layer holds the requests, nudged, and the run completes', async () => {
    const m = await mountFerry();
    try {
      await createImage(join(m.datastore, 'disk.raw'), 'raw', REGION);
      const guest = await bootGuest({ evidence: m.evidence, image: join(m.mountpoint, 'disk.raw'), params: { seed: 4, seconds: 40, region: REGION, direct: true } });
      await guest.started;
      await new Promise((r) => setTimeout(r, 1000));
      // The daemon stopped until the guest has tried both nudges: QEMU's write waits in FUSE, the guest's request
      // stays in flight.
      const { pid } = await m.status();
      process.kill(pid, 'SIGSTOP');
      await waitFor(async () => guest.console().includes('FERRY-STALL poke: read'), 60_000, 'the second nudge').finally(() => process.kill(pid, 'SIGCONT'));
      const { report, stalls } = await guest.result;
      expect(report.write.errors).toBe(0);
      expect(stalls).toContainEqual(expect.stringMatching(/^FERRY-STALL sched\/owned_by_driver: 0 1 0$/));
      expect(stalls).toContainEqual(expect.stringMatching(/^FERRY-STALL hctx0\/busy: \S+/));
      expect(stalls).toContain('FERRY-STALL poke: queues');
      expect(stalls).toContain('FERRY-STALL poke: read');
      // Neither nudge ended it (the request was held below the guest); the daemon's return did.
      expect(stalls.at(-1)).toBe('FERRY-STALL over after poke: read');
      expect(report.checksum.fnv1a64).toBe(await goldenChecksum({ seed: 4, writes: report.write.writes, region: REGION }));
    } finally {
      await m.stop();
    }
  });
});
