import { afterEach, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { mountFerry, mountsUnder, type TestMount } from '../helpers/mounts.js';
import { startWriter, type Writer } from '../helpers/writer.js';
import { migrate } from '../helpers/migration.js';
import { vmHome } from '../helpers/vm.js';

const MiB = 1 << 20;
const sha = (buf: Buffer) => createHash('sha256').update(buf).digest('hex');
let mount: TestMount | undefined;
let writer: Writer | undefined;
afterEach(async () => {
  writer?.child.kill('SIGKILL');
  writer = undefined;
  await mount?.stop();
  mount = undefined;
});

/** kill -9 of the daemon at a named point (FERRY_FAULTS), then a fresh `ferry mount` must finish or undo the migration. */
describe.each([
  ['prepare', false],
  ['bulk', false],
  ['iterate', false],
  ['switchover', false],
  ['before-commit', false],
  ['after-commit', true],
  ['cleanup', true],
])('daemon killed at %s', (point, committed) => {
  it(committed ? 'remounts on the destination and finishes deleting the source' : 'remounts on the source and removes the partial copy', async () => {
    mount = await mountFerry({ env: { FERRY_FAULTS: `${point}=crash` } });
    const m = mount;
    const { home, dest } = await vmHome(m, 24, { 'vm.cfg': 'cfg' });
    const original = sha(await fsp.readFile(join(home, 'disk.img')));
    const extra = point === 'iterate' ? ['--rate-limit', '16M', '--max-downtime', '50ms'] : [];
    if (point === 'iterate') {
      writer = await startWriter({ file: join(m.mountpoint, 'vm1/disk.img'), modelOut: join(m.root, 'model'), seed: 9, maxWrite: 65536, bytesPerSec: 4 * MiB });
    }
    const run = await migrate(m, join(m.mountpoint, 'vm1'), dest, extra).done;
    writer?.child.kill('SIGKILL');
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/closed the connection|cannot reach the daemon/);

    const dead = await m.cli(['status', '--json']);
    expect(JSON.parse(dead.stdout)[0].state).toBe('dead');
    expect((await m.cli(['unmount', m.mountpoint, '--force'])).code).toBe(0);
    expect(await mountsUnder(m.mountpoint)).toEqual([]);
    const remount = await m.cli(['mount', m.datastore, m.mountpoint]);
    expect(remount.code).toBe(0);

    const served = await fsp.readFile(join(m.mountpoint, 'vm1/disk.img'));
    const journals = () => fsp.readdir(join(m.stateDir, 'datastores', fs.readdirSync(join(m.stateDir, 'datastores'))[0], 'migrations'));
    if (committed) {
      expect(await journals()).toEqual([]);
      expect(fs.existsSync(home)).toBe(false);
      expect(sha(await fsp.readFile(join(dest, 'disk.img')))).toBe(original);
      expect(sha(served)).toBe(original);
      expect((await m.status()).mappings).toContainEqual({ virtual: '/vm1', backing: dest });
    } else {
      // The source is authoritative. A migration that had checkpointed waits, interrupted, with its partial copy;
      // one that had not is undone. Cancelling the interrupted one removes the partial copy.
      expect(sha(served)).toBe(sha(await fsp.readFile(join(home, 'disk.img'))));
      if (point !== 'iterate') expect(sha(served)).toBe(original);
      const status = await m.status();
      expect(status.mappings).toEqual([{ virtual: '/', backing: m.datastore }]);
      const waiting = status.migrations.find((x: { interrupted: boolean }) => x.interrupted);
      if (point === 'prepare') expect(waiting).toBeUndefined();
      if (['iterate', 'switchover', 'before-commit'].includes(point)) expect(waiting).toMatchObject({ path: '/vm1', phase: 'interrupted' });
      if (waiting) {
        expect(fs.existsSync(dest)).toBe(true);
        expect((await m.cli(['cancel', join(m.mountpoint, 'vm1')])).code).toBe(0);
        expect((await m.status()).migrations.filter((x: { interrupted: boolean }) => x.interrupted)).toEqual([]);
      }
      expect(fs.existsSync(dest)).toBe(false);
    }
    expect(await journals()).toEqual([]);
    // And the interrupted migration can simply be run again.
    const again = await migrate(m, join(m.mountpoint, 'vm1'), committed ? join(m.root, 'dest', 'again') : dest).done;
    expect(again.code).toBe(0);
  });
});
