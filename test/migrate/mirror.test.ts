import { afterEach, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { execFileSync, spawn } from 'node:child_process';
import { mountFerry, type TestMount } from '../helpers/mounts.js';
import { startWriter } from '../helpers/writer.js';
import { migrate, waitFor } from '../helpers/migration.js';
import { vmHome } from '../helpers/vm.js';
import { burst, bytes, expectBytes, prng } from '../helpers/model.js';

const MiB = 1 << 20;
const sha = (buf: Buffer) => createHash('sha256').update(buf).digest('hex');
let mounts: TestMount[] = [];
afterEach(async () => {
  for (const m of mounts) await m.stop();
  mounts = [];
});

async function vm(diskMiB: number): Promise<TestMount & { home: string; dest: string }> {
  const m = await mountFerry();
  mounts.push(m);
  return vmHome(m, diskMiB);
}

describe.each(['auto', 'mirror'])('--mode %s with a guest writing faster than the copy', (mode) => {
  it('completes, and the destination equals the writer model', async () => {
    const m = await vm(32);
    const writer = await startWriter({ file: join(m.mountpoint, 'vm1/disk.img'), modelOut: join(m.root, 'model'), seed: 21, maxWrite: 256 * 1024, bytesPerSec: 24 * MiB });
    const run = await migrate(m, join(m.mountpoint, 'vm1'), m.dest, ['--mode', mode, '--rate-limit', '6M', '--max-downtime', '100ms']).done;
    await new Promise((r) => setTimeout(r, 300));
    const report = await writer.stop();
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(report.errors).toEqual([]);
    expect(run.final).toMatchObject({ type: 'done', mode: 'mirror' });
    // Mirrored bytes are guest bytes written once each: never more than the writer wrote (a write over 128 KiB
    // reaches ferry as two requests, so at most two mirrored writes per write).
    expect(run.final!.mirroredWrites).toBeGreaterThan(0);
    expect(run.final!.mirroredBytes).toBeGreaterThanOrEqual(run.final!.mirroredWrites);
    expect(run.final!.mirroredBytes).toBeLessThanOrEqual(report.bytes);
    expect(run.final!.mirroredWrites).toBeLessThanOrEqual(2 * report.writes);
    // On the native path the writer's writes are mirrored in C; with FERRY_NATIVE=0 in JS.
    const dataPath = (await m.status()).dataPath;
    if (process.env.FERRY_NATIVE === '0') expect(dataPath.mirrorOps).toBe(0);
    else expect(dataPath.mirrorOps).toBeGreaterThan(0);
    if (mode === 'auto') {
      const switched = run.events.find((e) => e.type === 'mode');
      expect(switched).toMatchObject({ mode: 'mirror', reason: expect.stringMatching(/faster than the copy|stopped shrinking/) });
      expect(run.events.some((e) => e.type === 'pass' && e.mode === 'iterative')).toBe(true);
    }
    const model = sha(await fsp.readFile(join(m.root, 'model')));
    expect(sha(await fsp.readFile(join(m.dest, 'disk.img')))).toBe(model);
    expect(sha(await fsp.readFile(join(m.mountpoint, 'vm1/disk.img')))).toBe(model);
    expect(fs.existsSync(m.home)).toBe(false);
  });
});

describe('mirror mode counts the guest writes it mirrors', () => {
  // Deterministic: the bulk copy of the one file is over and held (bulk=pause) while the test writes, so each write
  // lies in copied chunks and must be mirrored once; before and after, nothing writes.
  it('mirroredWrites and mirroredBytes equal what the test wrote after the copy, and the destination equals the model', async () => {
    // direct_io: a page-cached write that starts or ends inside a page not in the cache reaches the daemon as
    // two WRITE requests, and the count here is of requests.
    const m = await vmHome(await mountFerry({ args: ['--direct-io'], env: { FERRY_FAULTS: 'bulk=pause:2000@1' } }), 0);
    mounts.push(m);
    const model = bytes(prng(5), 8 * MiB);
    await fsp.writeFile(join(m.home, 'disk.img'), model);
    let trigger!: () => void;
    let missed!: (err: Error) => void;
    const copied = new Promise<void>((resolve, reject) => ((trigger = resolve), (missed = reject)));
    let passDone = false;
    const running = migrate(m, join(m.mountpoint, 'vm1'), m.dest, ['--mode', 'mirror'], (e) => {
      if (e.type === 'progress' && e.pass === 0 && e.copiedBytes >= 8 * MiB) trigger();
      if (e.type === 'pass' && e.pass === 0) {
        passDone = true;
        missed(new Error('the bulk pass ended before the copy was seen complete'));
      }
    });
    void running.done.then(() => missed(new Error('the migration ended before the test wrote')));
    await copied;
    const wrote = await burst(join(m.mountpoint, 'vm1/disk.img'), model, 6, 40);
    expect(passDone, 'the burst ended inside the held bulk pass').toBe(false);
    const run = await running.done;
    expect(run.code, run.stderr).toBe(0);
    expect(run.final).toMatchObject({ type: 'done', mode: 'mirror', mirroredWrites: wrote.writes, mirroredBytes: wrote.bytes });
    await expectBytes(join(m.dest, 'disk.img'), model, 'destination');
    await expectBytes(join(m.mountpoint, 'vm1/disk.img'), model, 'served');
  });
});

describe('mirror mode with writers in parallel on the same blocks', () => {
  // The kernel lets writes to one file reach ferry in parallel: two writes of one block may land on the source
  // and on the mirror in different orders. Such writes must be copied again, or the copy keeps the other bytes.
  it('the copy equals the source', async () => {
    const m = await vm(32);
    const disk = join(m.mountpoint, 'vm1/disk.img');
    // 1 MiB at the start of the disk: the copier passes it first, so most writes there are mirrored.
    // O_DIRECT: the 8 writers overlap in time (page-cached writers of one file are serialized by the kernel).
    const fio = spawn('fio', ['--name=overlap', `--filename=${disk}`, '--rw=randwrite', '--bsrange=4k-64k', '--size=1M', '--numjobs=8', '--thread',
      '--direct=1', '--ioengine=psync', '--time_based', '--runtime=4', '--randrepeat=0', '--allow_file_create=0', '--output-format=json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const fioDone = new Promise<number>((resolve) => fio.on('exit', (code) => resolve(code ?? -1)));
    const run = await migrate(m, join(m.mountpoint, 'vm1'), m.dest, ['--mode', 'mirror', '--rate-limit', '4M', '--keep-source', '--max-downtime', '100ms']).done;
    expect(await fioDone).toBe(0);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.final).toMatchObject({ type: 'done', mode: 'mirror' });
    expect(run.final!.mirroredWrites).toBeGreaterThan(0);
    // fio stopped well before the switchover (the copy alone takes 8 s): the source is the guest's last word.
    expect(sha(await fsp.readFile(join(m.dest, 'disk.img')))).toBe(sha(await fsp.readFile(join(m.home, 'disk.img'))));
  });
});

// Issue 19: a writer that shrinks a file and extends it again, over and over (as a log rotated in place, or a
// tool recreating an image). Its size changes must be mirrored, not dirty the whole file on every pass.
const TRUNCATING_WRITER = `
const fs = require('node:fs');
const [file, modelOut] = process.argv.slice(1);
const fd = fs.openSync(file, 'r+');
const model = fs.readFileSync(file);
const size = model.length;
let seed = 7, stop = false;
const random = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32);
process.on('SIGTERM', () => (stop = true));
process.stdout.write('ready\\n');
(async function loop() {
  while (!stop) {
    const cut = Math.floor(random() * (size / 4096)) * 4096;
    fs.ftruncateSync(fd, cut);
    model.fill(0, cut);
    const data = Buffer.alloc(4096, Math.floor(random() * 255) + 1);
    const at = Math.floor(random() * (size / 4096 - 1)) * 4096;
    fs.writeSync(fd, data, 0, 4096, at);
    data.copy(model, at);
    fs.ftruncateSync(fd, size);
    await new Promise((r) => setTimeout(r, 20));
  }
  fs.writeFileSync(modelOut, model);
  process.exit(0);
})();
`;

describe.each(['mirror', 'auto'])('--mode %s with a writer that truncates and extends its file', (mode) => {
  it('converges in at most 3 passes while the writer runs, and the copy equals the writer model', async () => {
    const m = await vm(24);
    const writer = spawn(process.execPath, ['-e', TRUNCATING_WRITER, join(m.mountpoint, 'vm1/disk.img'), join(m.root, 'model')], { stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = new Promise<number | null>((resolve) => writer.on('exit', resolve));
    await new Promise<void>((resolve) => writer.stdout!.once('data', () => resolve()));
    const run = await migrate(m, join(m.mountpoint, 'vm1'), m.dest, ['--mode', mode, '--rate-limit', '4M']).done;
    const stillWriting = writer.exitCode === null;
    writer.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(stillWriting, 'the migration ended while the writer ran').toBe(true);
    expect(run.final!.passes).toBeLessThanOrEqual(3);
    // The writer writes ~0.2 MB/s of data; the ranges its size changes dirty are holes (nothing to copy there).
    // The slow writer never makes auto mode give up on iterating (a switch would take a pass beyond the 3 allowed:
    // it needs an iteration to judge, then a mirrored one); --mode mirror mirrors from the start, announced by no event.
    expect(run.events.filter((e) => e.type === 'mode')).toEqual([]);
    expect(run.final).toMatchObject({ type: 'done', mode: mode === 'mirror' ? 'mirror' : 'iterative' });
    for (const pass of run.events.filter((e) => e.type === 'pass' && e.pass > 0)) expect(pass.dirtyBytes).toBeLessThan(4 << 20);
    // A pass's dirtyBytes is measured as it starts; it takes each file's dirty map later (after the walk, the
    // namespace sync and the rate-limited copy of the files before it): the writer's writes meanwhile (one 4 KiB write
    // per 20 ms or more, each dirtying at most one 64 KiB block) are copied too. Holes copied as data would be MiBs.
    const lateBlocks = (pass: { durationMs: number }) => (Math.ceil(pass.durationMs / 20) + 1) * (64 << 10);
    for (const pass of run.events.filter((e) => e.type === 'pass')) expect(pass.copiedBytes).toBeLessThanOrEqual(pass.pass === 0 ? 24 << 20 : pass.dirtyBytes + lateBlocks(pass));
    expect(sha(await fsp.readFile(join(m.dest, 'disk.img')))).toBe(sha(await fsp.readFile(join(m.root, 'model'))));
  });
});

describe('mirror mode failures and controls', () => {
  it('a destination write error while mirroring aborts cleanly: the guest saw nothing, the source is whole', async () => {
    const m = await vm(40);
    const small = join(m.root, 'small');
    await fsp.mkdir(small);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', small]);
    try {
      const writer = await startWriter({ file: join(m.mountpoint, 'vm1/disk.img'), modelOut: join(m.root, 'model'), seed: 4, maxWrite: 65536, bytesPerSec: 4 * MiB });
      const running = migrate(m, join(m.mountpoint, 'vm1'), join(small, 'vm1'), ['--mode', 'mirror', '--rate-limit', '8M']);
      await waitFor(() => fs.existsSync(join(small, 'vm1/disk.img')), 10_000, 'copy to start');
      await new Promise((r) => setTimeout(r, 1500));
      await fsp.writeFile(join(small, 'filler'), Buffer.alloc(60 * MiB)).catch(() => undefined);
      const run = await running.done;
      const report = await writer.stop();
      expect(run.code).toBe(1);
      expect(run.final).toMatchObject({ type: 'error', code: 'ENOSPC', sourceIntact: true });
      expect(report.errors).toEqual([]);
      expect(fs.existsSync(join(small, 'vm1'))).toBe(false);
      expect(sha(await fsp.readFile(join(m.home, 'disk.img')))).toBe(sha(await fsp.readFile(join(m.root, 'model'))));
    } finally {
      execFileSync('umount', ['-l', small]);
    }
  });

  it('changes the rate limit of a running migration (--set-rate), and pauses for guest I/O on request', async () => {
    const m = await vm(32);
    // At 64 KiB/s the 32 MiB disk would take over 8 minutes: only the rate set to 0 lets it end within the test.
    const running = migrate(m, join(m.mountpoint, 'vm1'), m.dest, ['--rate-limit', '64K', '--guest-io-priority']);
    await waitFor(() => fs.existsSync(join(m.dest, 'disk.img')), 10_000, 'copy to start');
    const before = (await m.status()).migrations[0];
    expect(before).toMatchObject({ running: true, rateLimit: 64 << 10, mode: 'auto' });
    const changed = await m.cli(['migrate', join(m.mountpoint, 'vm1'), '--set-rate', '0', '--json']);
    expect(changed.code).toBe(0);
    expect(JSON.parse(changed.stdout)).toMatchObject({ rateLimit: 0 });
    const run = await running.done;
    expect(run.code).toBe(0);
    // The verb table (src/migrate/job.ts): a migration that completed takes no rate; one never started is unknown.
    const notRunning = await m.cli(['migrate', join(m.mountpoint, 'vm1'), '--set-rate', '10M']);
    expect([notRunning.code, notRunning.stderr]).toEqual([1, 'ferry: the migration of /vm1 has completed (done): the VM runs on the destination; nothing to rate-limit\n']);
    await fsp.mkdir(join(m.datastore, 'other'));
    const never = await m.cli(['migrate', join(m.mountpoint, 'other'), '--set-rate', '10M']);
    expect([never.code, never.stderr]).toEqual([2, 'ferry: no migration of /other is running\n']);
  });

  it('--guest-io-priority: the copy yields while the guest writes heavily, and only when asked', async () => {
    const yielded: Record<string, number> = {};
    for (const flags of [['--guest-io-priority'], []]) {
      const m = await vm(64);
      const writer = await startWriter({ file: join(m.mountpoint, 'vm1/disk.img'), modelOut: join(m.root, 'model'), seed: 5, maxWrite: 64 * 1024, bytesPerSec: 16 * MiB });
      const run = await migrate(m, join(m.mountpoint, 'vm1'), m.dest, ['--mode', 'mirror', '--rate-limit', '32M', ...flags]).done;
      const report = await writer.stop();
      expect(run.code, run.stderr).toBe(0);
      expect(report.errors).toEqual([]);
      expect(sha(await fsp.readFile(join(m.dest, 'disk.img')))).toBe(sha(await fsp.readFile(join(m.root, 'model'))));
      yielded[flags.join('') || 'none'] = run.events.filter((e) => e.type === 'pass').reduce((sum, e) => sum + e.yieldedToGuestMs, 0);
    }
    expect(yielded.none).toBe(0);
    expect(yielded['--guest-io-priority']).toBeGreaterThan(0);
  });
});
