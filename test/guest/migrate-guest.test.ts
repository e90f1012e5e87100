// Unmodified QEMU guests on a ferry mount, migrated live while they write.
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { mountFerry, type TestMount } from '../helpers/mounts.js';
import { migrate, waitFor } from '../helpers/migration.js';
import { bootGuest, createImage, ensureGuestKit, goldenChecksum, imageChecksum } from '../helpers/guest.js';

const MiB = 1 << 20;
const REGION = 48 * MiB;
let mounts: TestMount[] = [];
afterEach(async () => {
  for (const m of mounts) await m.stop();
  mounts = [];
});
beforeAll(async () => {
  await ensureGuestKit();
}, 900_000);

async function vmOnFerry(format: 'raw' | 'qcow2'): Promise<TestMount & { image: string; dest: string }> {
  const m = await mountFerry();
  mounts.push(m);
  await fsp.mkdir(join(m.datastore, 'vm1'));
  await fsp.writeFile(join(m.datastore, 'vm1', 'vm.cfg'), `disk=disk.${format}\n`);
  await createImage(join(m.datastore, 'vm1', `disk.${format}`), format, REGION);
  await fsp.mkdir(join(m.root, 'b'));
  return Object.assign(m, { image: `vm1/disk.${format}`, dest: join(m.root, 'b', 'vm1') });
}

describe.each([
  ['raw', 'writeback'],
  ['raw', 'none'],
  ['qcow2', 'writeback'],
  ['qcow2', 'none'],
] as const)('a %s image, cache=%s', (format, cache) => {
  it('is migrated live mid-workload: zero guest I/O errors, guest checksum = destination = golden', async () => {
    const m = await vmOnFerry(format);
    const seed = format === 'raw' ? 101 : 202;
    const guest = await bootGuest({ evidence: m.evidence, image: join(m.mountpoint, m.image), format, cache, params: { seed, seconds: 8, bs: 4096, region: REGION, fsync: 64, direct: cache === 'none' } });
    await guest.started;
    await new Promise((r) => setTimeout(r, 1000));
    const run = await migrate(m, join(m.mountpoint, 'vm1'), m.dest).done;
    const { report } = await guest.result;
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(report.write.errors).toBe(0);
    expect(report.write.fsync_errors).toBe(0);
    expect(report.dmesg_io_errors).toBe(0);
    // The migration happened while the guest wrote: it kept writing after the switchover.
    const switchedAt = run.events.find((e) => e.type === 'phase' && e.phase === 'cleanup')!.at;
    expect(switchedAt).toBeLessThan(Date.now() - 1000);
    const golden = await goldenChecksum({ seed, writes: report.write.writes, bs: 4096, region: REGION });
    expect(report.checksum.fnv1a64).toBe(golden);
    expect(await imageChecksum(join(m.dest, `disk.${format}`), format, REGION)).toBe(golden);
    expect(await imageChecksum(join(m.mountpoint, m.image), format, REGION)).toBe(golden);
    expect(fs.existsSync(join(m.datastore, 'vm1'))).toBe(false);
    expect(await fsp.readFile(join(m.dest, 'vm.cfg'), 'utf8')).toBe(`disk=disk.${format}\n`);
  });
});

describe('guests and failing destinations', () => {
  it('destination too small: refused up front, or aborted mid-copy; the guest never sees an error', async () => {
    const m = await vmOnFerry('raw');
    const small = join(m.root, 'small');
    await fsp.mkdir(small);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=40m', 'tmpfs', small]);
    try {
      await fsp.writeFile(join(m.datastore, 'vm1', 'big.bin'), Buffer.alloc(36 * MiB, 1));
      const refused = await m.cli(['migrate', join(m.mountpoint, 'vm1'), '--to', join(small, 'vm1')]);
      expect(refused.code).toBe(2);
      expect(refused.stderr).toMatch(/not enough space/);
      await fsp.unlink(join(m.datastore, 'vm1', 'big.bin'));

      // The image is sparse: it passes the space check, then the guest fills it faster than the copy.
      const guest = await bootGuest({ evidence: m.evidence, image: join(m.mountpoint, m.image), params: { seed: 7, seconds: 16, bs: 65536, region: REGION, fsync: 16 } });
      await guest.started;
      await waitFor(async () => (await fsp.stat(join(m.datastore, m.image))).blocks * 512 > 2 * MiB, 20_000, 'guest to allocate');
      // Room for what the guest has allocated so far and 1 MiB more, whatever the load: the guest writes on for
      // seconds while the copy (1 MiB/s) is still at it, so the copy cannot converge before it runs out.
      const allocated = (await fsp.stat(join(m.datastore, m.image))).blocks * 512;
      execFileSync('mount', ['-o', `remount,size=${allocated + MiB}`, small]);
      const run = await migrate(m, join(m.mountpoint, 'vm1'), join(small, 'vm1'), ['--rate-limit', '1M', '--mode', 'iterative']).done;
      const { report } = await guest.result;
      // If the guest outgrew the room before the space check, the migration is refused; else it aborts mid-copy.
      if (run.code === 2) expect(run.stderr).toMatch(/not enough space/);
      else expect(run.final).toMatchObject({ type: 'error', code: 'ENOSPC', sourceIntact: true });
      expect(run.code).not.toBe(0);
      expect(report.write.errors).toBe(0);
      expect(report.write.fsync_errors).toBe(0);
      expect(fs.existsSync(join(small, 'vm1'))).toBe(false);
      const golden = await goldenChecksum({ seed: 7, writes: report.write.writes, bs: 65536, region: REGION });
      expect(report.checksum.fnv1a64).toBe(golden);
      expect(await imageChecksum(join(m.datastore, m.image), 'raw', REGION)).toBe(golden);
    } finally {
      execFileSync('umount', ['-l', small]);
    }
  });

  it('a guest migrated twice (A to B, then back to A) stays correct', async () => {
    const m = await vmOnFerry('qcow2');
    const guest = await bootGuest({ evidence: m.evidence, image: join(m.mountpoint, m.image), format: 'qcow2', params: { seed: 33, seconds: 12, bs: 4096, region: REGION, fsync: 32 } });
    await guest.started;
    await new Promise((r) => setTimeout(r, 500));
    expect((await migrate(m, join(m.mountpoint, 'vm1'), m.dest).done).code).toBe(0);
    await new Promise((r) => setTimeout(r, 1000));
    const back = await migrate(m, join(m.mountpoint, 'vm1'), join(m.datastore, 'vm1')).done;
    expect(back.code).toBe(0);
    const { report } = await guest.result;
    expect(report.write.errors).toBe(0);
    expect(back.events.find((e) => e.type === 'phase' && e.phase === 'cleanup')!.at).toBeLessThan(Date.now() - 500);
    const golden = await goldenChecksum({ seed: 33, writes: report.write.writes, bs: 4096, region: REGION });
    expect(report.checksum.fnv1a64).toBe(golden);
    expect(await imageChecksum(join(m.datastore, m.image), 'qcow2', REGION)).toBe(golden);
    expect(fs.existsSync(m.dest)).toBe(false);
    expect((await m.status()).mappings).toEqual([{ virtual: '/', backing: m.datastore }]);
  });
});
