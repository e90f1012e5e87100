import { afterEach, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { join } from 'node:path';
import { mountFerry, mountsUnder, type TestMount } from '../helpers/mounts.js';
import { ferry, hasExited } from '../helpers/cli.js';
import { migrate, waitFor } from '../helpers/migration.js';
import { vmHome } from '../helpers/vm.js';

const MiB = 1 << 20;
let mounts: TestMount[] = [];
afterEach(async () => {
  for (const m of mounts) await m.stop();
  mounts = [];
});

async function mounted(): Promise<TestMount> {
  const m = await mountFerry();
  mounts.push(m);
  return m;
}

describe('ferry status (issue 28)', () => {
  it('exits 3 while a mount is dead (daemon killed), 4 while a migration is interrupted, 0 once all is well', async () => {
    const m = await vmHome(await mounted(), 32);
    expect((await m.cli(['status'])).code).toBe(0);
    let copied = 0;
    const running = migrate(m, join(m.mountpoint, 'vm1'), m.dest, ['--rate-limit', '4M'], (e) => {
      if (e.type === 'progress') copied = e.copiedBytes;
    });
    await waitFor(() => copied >= 4 * MiB, 20_000, 'the bulk copy to start');
    // A checkpoint makes the crashed migration resumable (without one, the next mount undoes it).
    const migrations = join(m.stateDir, 'datastores', fs.readdirSync(join(m.stateDir, 'datastores'))[0], 'migrations');
    await waitFor(() => fs.readdirSync(migrations).some((n) => n.endsWith('.checkpoint.json')), 10_000, 'a checkpoint');
    const { pid } = await m.status();
    process.kill(pid, 'SIGKILL');
    await waitFor(() => hasExited(pid), 5_000, 'the daemon to die');
    expect((await running.done).code).toBe(1);

    const dead = await m.cli(['status']);
    expect(dead.code).toBe(3);
    expect(dead.stdout).toContain(`${m.mountpoint}: DEAD`);
    expect((await m.cli(['status', m.mountpoint])).code).toBe(3);
    const json = await m.cli(['status', '--json']);
    expect(json.code).toBe(3);
    expect(JSON.parse(json.stdout)[0].state).toBe('dead');

    expect((await m.cli(['unmount', m.mountpoint, '--force'])).code).toBe(0);
    expect(await mountsUnder(m.mountpoint)).toEqual([]);
    expect((await m.cli(['mount', m.datastore, m.mountpoint])).code).toBe(0);
    const interrupted = await m.cli(['status']);
    expect(interrupted.code).toBe(4);
    expect(interrupted.stdout).toContain('INTERRUPTED');
    expect((await m.cli(['cancel', join(m.mountpoint, 'vm1')])).code).toBe(0);
    expect((await m.cli(['status'])).code).toBe(0);
  });

  it('shows the path map in text, past migrations with start and end times (the last 5, all with --all), in plain words', async () => {
    const m = await mounted();
    await fsp.mkdir(join(m.root, 'dest'));
    for (let i = 1; i <= 7; i++) {
      await fsp.mkdir(join(m.datastore, `vm${i}`));
      await fsp.writeFile(join(m.datastore, `vm${i}`, 'disk.img'), `disk ${i}\n`);
      const run = await migrate(m, join(m.mountpoint, `vm${i}`), join(m.root, 'dest', `vm${i}`)).done;
      expect(run.code, run.stderr).toBe(0);
    }
    const text = await m.cli(['status', m.mountpoint]);
    expect(text.code, text.stderr).toBe(0);
    const out = text.stdout;
    expect(out).toContain('path map:');
    expect(out).toContain(`/ → ${m.datastore}`);
    for (let i = 1; i <= 7; i++) expect(out).toContain(`/vm${i} → ${join(m.root, 'dest', `vm${i}`)}`);
    const listed = out.split('\n').filter((l) => /migration \w+: \/vm\d/.test(l));
    expect(listed).toHaveLength(5);
    expect(listed[0]).toContain('/vm3');
    expect(listed[4]).toContain('/vm7');
    for (const l of listed) expect(l).toMatch(/done .*started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, ended \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)/);
    expect(out).toContain('2 older migrations not shown (--all)');
    const all = await m.cli(['status', m.mountpoint, '--all']);
    expect(all.stdout.split('\n').filter((l) => /migration \w+: \/vm\d/.test(l))).toHaveLength(7);
    const json = (await m.status()).migrations;
    expect(json).toHaveLength(7);
    for (const mig of json) expect(Date.parse(mig.endedAt)).toBeGreaterThanOrEqual(Date.parse(mig.startedAt));
    expect(out).not.toMatch(/in vain|≤0 µs|p50|p99/);
  });

  it('--state-dir that is not a ferry state dir: one line, exit 2', async () => {
    const m = await mounted();
    for (const dir of ['/etc/passwd', m.root, join(m.root, 'absent')]) {
      const r = await ferry(['status', '--state-dir', dir]);
      expect(r.code, `${dir}: ${r.stdout}`).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toContain(dir);
    }
  });
});
