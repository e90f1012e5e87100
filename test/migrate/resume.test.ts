import { afterEach, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { mountFerry, type TestMount } from '../helpers/mounts.js';
import { startWriter } from '../helpers/writer.js';
import { migrate, waitFor } from '../helpers/migration.js';
import { hasExited } from '../helpers/cli.js';
import { vmHome } from '../helpers/vm.js';

const MiB = 1 << 20;
const sha = (buf: Buffer) => createHash('sha256').update(buf).digest('hex');
let mount: TestMount | undefined;
afterEach(async () => {
  await mount?.stop();
  mount = undefined;
});

async function checkpointedUpTo(m: TestMount): Promise<number> {
  const dir = join(m.stateDir, 'datastores', fs.readdirSync(join(m.stateDir, 'datastores'))[0], 'migrations');
  const file = fs.readdirSync(dir).find((n) => n.endsWith('.checkpoint.json'));
  if (!file) return 0;
  const checkpoint = JSON.parse(await fsp.readFile(join(dir, file), 'utf8').catch(() => '{}'));
  return checkpoint.partial?.copiedUpTo ?? 0;
}

async function crashMidCopy(): Promise<{ m: TestMount; dest: string; home: string; copiedUpTo: number }> {
  mount = await mountFerry();
  const m = mount;
  const { home, dest } = await vmHome(m, 48, { 'vm.cfg': 'cfg' });
  const before = await startWriter({ file: join(m.mountpoint, 'vm1/disk.img'), modelOut: join(m.root, 'model-a'), seed: 1, maxWrite: 65536, bytesPerSec: 2 * MiB, span: 4 * MiB });
  const running = migrate(m, join(m.mountpoint, 'vm1'), dest, ['--rate-limit', '8M']);
  // Past a checkpoint (every 2 s) that recorded at least a third of the file, well before the bulk copy ends.
  await waitFor(async () => (await checkpointedUpTo(m)) >= 16 * MiB, 20_000, 'a checkpoint');
  expect((await before.stop()).errors).toEqual([]);
  const copiedUpTo = await checkpointedUpTo(m);
  const { pid } = await m.status();
  process.kill(pid, 'SIGKILL');
  expect((await running.done).code).toBe(1);
  await waitFor(() => hasExited(pid), 10_000, 'daemon to die');
  expect((await m.cli(['unmount', m.mountpoint, '--force'])).code).toBe(0);
  expect((await m.cli(['mount', m.datastore, m.mountpoint])).code).toBe(0);
  return { m, dest, home, copiedUpTo };
}

describe('a migration interrupted by kill -9 of the daemon', () => {
  it('is listed as interrupted, keeps tracking writes, and resumes without recopying everything', async () => {
    const { m, dest, home, copiedUpTo } = await crashMidCopy();
    const status = await m.status();
    expect(status.migrations).toEqual([expect.objectContaining({ path: '/vm1', phase: 'interrupted', interrupted: true, running: false })]);
    expect(fs.existsSync(join(dest, 'disk.img'))).toBe(true);
    const human = await m.cli(['status']);
    expect(human.stdout).toMatch(/INTERRUPTED by a crash: `ferry migrate --resume` continues it/);
    // The guest runs on, on the source, between the remount and the resume: those writes must reach the copy.
    const after = await startWriter({ file: join(m.mountpoint, 'vm1/disk.img'), modelOut: join(m.root, 'model-b'), seed: 2, maxWrite: 65536, bytesPerSec: 4 * MiB, span: 4 * MiB });
    await new Promise((r) => setTimeout(r, 1000));
    expect((await after.stop()).errors).toEqual([]);
    const overlapping = await m.cli(['migrate', join(m.mountpoint, 'vm1'), '--to', join(m.root, 'dest', 'other')]);
    expect(overlapping.code).toBe(2);

    const resumed = await m.cli(['migrate', join(m.mountpoint, 'vm1'), '--resume', '--json']);
    expect(resumed.code, resumed.stderr).toBe(0);
    const events = resumed.stdout.trim().split('\n').map((l) => JSON.parse(l));
    const done = events.at(-1);
    expect(done).toMatchObject({ type: 'done', destination: dest });
    // Only the tail past the checkpoint, plus at most the 4 MiB the writers touch (intent log and dirty blocks).
    expect(done.bytesCopied).toBeLessThanOrEqual(48 * MiB - copiedUpTo + 4 * MiB + 3);
    expect(sha(await fsp.readFile(join(dest, 'disk.img')))).toBe(sha(await fsp.readFile(join(m.root, 'model-b'))));
    expect(await fsp.readFile(join(dest, 'vm.cfg'), 'utf8')).toBe('cfg');
    expect(fs.existsSync(home)).toBe(false);
    expect((await m.status()).migrations.filter((x: { running: boolean; interrupted: boolean }) => x.running || x.interrupted)).toEqual([]);
  });

  it('ferry cancel drops the partial copy and the source stays authoritative', async () => {
    const { m, dest, home } = await crashMidCopy();
    const cancelled = await m.cli(['cancel', join(m.mountpoint, 'vm1')]);
    expect(cancelled.code).toBe(0);
    expect(fs.existsSync(dest)).toBe(false);
    expect(sha(await fsp.readFile(join(home, 'disk.img')))).toBe(sha(await fsp.readFile(join(m.root, 'model-a'))));
    const resumed = await m.cli(['migrate', join(m.mountpoint, 'vm1'), '--resume']);
    expect([resumed.code, resumed.stderr]).toEqual([1, 'ferry: the migration of /vm1 was aborted: the VM runs on the source\n']);
  });
});

describe('a sparse file interrupted mid-copy by kill -9 (issue 19)', () => {
  it('is resumed sparse: the destination allocates what the source does, not the holes past the checkpoint', async () => {
    mount = await mountFerry();
    const m = mount;
    const { home, dest } = await vmHome(m, 1);
    // 256 MiB apparent, 64 KiB of data every 4 MiB (4 MiB in all): at 1 MiB/s a checkpoint falls inside it.
    const sparse = join(home, 'a-sparse.img');
    const fd = fs.openSync(sparse, 'w');
    fs.ftruncateSync(fd, 256 * MiB);
    for (let at = 0; at < 256 * MiB; at += 4 * MiB) fs.writeSync(fd, Buffer.alloc(64 << 10, (at >> 22) + 1), 0, 64 << 10, at);
    fs.closeSync(fd);
    const sourceSha = sha(await fsp.readFile(sparse));
    const sourceAllocated = (await fsp.stat(sparse)).blocks * 512;
    const running = migrate(m, join(m.mountpoint, 'vm1'), dest, ['--rate-limit', '1M']);
    await waitFor(async () => (await checkpointedUpTo(m)) > 0, 20_000, 'a checkpoint inside the sparse file');
    const copiedUpTo = await checkpointedUpTo(m);
    const { pid } = await m.status();
    process.kill(pid, 'SIGKILL');
    expect((await running.done).code).toBe(1);
    await waitFor(() => hasExited(pid), 10_000, 'daemon to die');
    expect(copiedUpTo).toBeLessThan(256 * MiB);
    expect((await m.cli(['unmount', m.mountpoint, '--force'])).code).toBe(0);
    expect((await m.cli(['mount', m.datastore, m.mountpoint])).code).toBe(0);

    const resumed = await m.cli(['migrate', join(m.mountpoint, 'vm1'), '--resume', '--json']);
    expect(resumed.code, resumed.stderr).toBe(0);
    const copy = join(dest, 'a-sparse.img');
    expect(sha(await fsp.readFile(copy))).toBe(sourceSha);
    expect((await fsp.stat(copy)).blocks * 512).toBeLessThanOrEqual(sourceAllocated + MiB);
  });
});

describe('the write-intent log of a file being copied', () => {
  it('logs the whole file as its copy starts, then only from the checkpointed offset on and what was written', async () => {
    mount = await mountFerry();
    const m = mount;
    const { home, dest } = await vmHome(m, 128);
    // Nothing writes to the disk: its bytes before the migration are what the copy must hold.
    const model = sha(await fsp.readFile(join(home, 'disk.img')));
    const ino = String((await fsp.stat(join(home, 'disk.img'), { bigint: true })).ino);
    const dir = join(m.stateDir, 'datastores', fs.readdirSync(join(m.stateDir, 'datastores'))[0], 'migrations');
    const logged = async (): Promise<number[]> => {
      const file = fs.readdirSync(dir).find((n) => n.endsWith('.intent.json'));
      if (!file) return [];
      const entries: [string, number[]][] = JSON.parse(await fsp.readFile(join(dir, file), 'utf8').catch(() => '[]'));
      return entries.find(([i]) => i === ino)?.[1] ?? [];
    };
    let bulk = false;
    const running = migrate(m, join(m.mountpoint, 'vm1'), dest, ['--rate-limit', '16M'], (e) => {
      if (e.type === 'phase' && e.phase === 'bulk') bulk = true;
    });
    await waitFor(() => bulk, 30_000, 'the bulk copy');
    // Before any checkpoint: the marker for "every region from 0 on", so the guest's writes wait for no flush.
    await waitFor(async () => (await logged()).includes(-1), 5_000, 'the whole file in the intent log');
    // After a checkpoint: from the first region wholly past the checkpointed offset (-(k + 1) stands for k).
    await waitFor(async () => (await logged()).some((r) => r < -1), 10_000, 'the log trimmed to the unproven part');
    const from = -Math.min(...(await logged())) - 1;
    expect(from).toBeGreaterThan(0);
    expect(from * 4 * MiB).toBeLessThanOrEqual(128 * MiB);
    const run = await running.done;
    expect(run.code, run.stderr).toBe(0);
    expect(sha(await fsp.readFile(join(dest, 'disk.img')))).toBe(model);
  });
});
