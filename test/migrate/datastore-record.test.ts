// Issue 28 item 2: the datastore knows where its VMs went. Each move leaves a record in the source datastore
// (.ferry/moved.json, never served by the mount), so a mount with another, lost or fresh state dir still serves
// the moved VM, says so, and refuses when record and state dir contradict each other.
import { afterEach, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { mountFerry, mountsUnder, forceUnmount, type TestMount } from '../helpers/mounts.js';
import { migrate, waitFor } from '../helpers/migration.js';
import { ferry, hasExited, run as ferryRun, type Result } from '../helpers/cli.js';
import { bytes, expectBytes, prng } from '../helpers/model.js';

const MiB = 1 << 20;
let mount: TestMount | undefined;
/** State dirs other than the mount's own that a test mounted with: each may hold a daemon to stop. */
let others: string[] = [];
afterEach(async () => {
  if (mount) {
    for (const stateDir of others) await ferry(['unmount', mount.mountpoint, '--force', '--state-dir', stateDir]);
    if ((await mountsUnder(mount.mountpoint)).length > 0) await forceUnmount(mount.mountpoint);
    await mount.stop();
  }
  mount = undefined;
  others = [];
});

interface Moved {
  m: TestMount;
  model: Buffer;
  dest: string;
}

/** vm1 (a disk of seeded bytes and a config file) in the datastore, migrated to <root>/dest/vm1 (absent before). */
async function movedHome(env?: NodeJS.ProcessEnv, seed = 1): Promise<Moved> {
  mount = await mountFerry(env ? { env } : {});
  const m = mount;
  const model = bytes(prng(seed), 2 * MiB);
  await fsp.mkdir(join(m.datastore, 'vm1'));
  await fsp.writeFile(join(m.datastore, 'vm1', 'disk.img'), model);
  await fsp.writeFile(join(m.datastore, 'vm1', 'vm.cfg'), 'cfg');
  await fsp.mkdir(join(m.root, 'dest'));
  return { m, model, dest: join(m.root, 'dest', 'vm1') };
}

async function moveOut(h: Moved): Promise<void> {
  const run = await migrate(h.m, join(h.m.mountpoint, 'vm1'), h.dest).done;
  expect(run.code, run.stderr).toBe(0);
  await expectBytes(join(h.dest, 'disk.img'), h.model, 'destination');
}

const recordPath = (m: TestMount) => join(m.datastore, '.ferry', 'moved.json');
const readRecord = async (m: TestMount) => JSON.parse(await fsp.readFile(recordPath(m), 'utf8'));
const mappingsFile = (stateDir: string) => join(stateDir, 'datastores', fs.readdirSync(join(stateDir, 'datastores'))[0], 'mappings.json');

async function unmount(m: TestMount, stateDir = m.stateDir): Promise<void> {
  const r = await ferry(['unmount', m.mountpoint, '--state-dir', stateDir]);
  expect(r.code, r.stderr).toBe(0);
  expect(await mountsUnder(m.mountpoint)).toEqual([]);
}

/** `ferry mount` of the test's datastore with another state dir (inside the test's root). */
async function mountWith(m: TestMount, name: string): Promise<{ stateDir: string; result: Result }> {
  const stateDir = join(m.root, name);
  others.push(stateDir);
  return { stateDir, result: await ferry(['mount', m.datastore, m.mountpoint, '--state-dir', stateDir]) };
}

describe('the datastore records where its VMs went', () => {
  it('a mount with a fresh state dir serves the moved VM from its destination and says so', async () => {
    const h = await movedHome();
    await moveOut(h);
    await unmount(h.m);
    const { stateDir, result } = await mountWith(h.m, 'fresh-state');
    expect(result.code, result.stderr).toBe(0);
    const said = `${result.stdout}${result.stderr}`.trim().split('\n');
    expect(said).toHaveLength(1);
    expect(said[0]).toContain('/vm1');
    expect(said[0]).toContain(h.dest);
    expect(said[0]).toContain('.ferry/moved.json');
    await expectBytes(join(h.m.mountpoint, 'vm1', 'disk.img'), h.model, 'served with a fresh state dir');
    expect(await fsp.readFile(join(h.m.mountpoint, 'vm1', 'vm.cfg'), 'utf8')).toBe('cfg');
    // The state dir now agrees: the next mount with it is silent.
    expect(JSON.parse(await fsp.readFile(mappingsFile(stateDir), 'utf8'))).toEqual([{ virtual: '/vm1', backing: h.dest }]);
    await unmount(h.m, stateDir);
    const again = await ferry(['mount', h.m.datastore, h.m.mountpoint, '--state-dir', stateDir]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout + again.stderr).toBe('');
    await expectBytes(join(h.m.mountpoint, 'vm1', 'disk.img'), h.model, 'served again');
  });

  it('a mount whose state dir agrees with the record is silent, and the record names the destination', async () => {
    const h = await movedHome();
    await moveOut(h);
    expect(await readRecord(h.m)).toEqual({ version: 1, moved: [{ virtual: '/vm1', backing: h.dest }], pending: [] });
    await unmount(h.m);
    const again = await h.m.remount();
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout + again.stderr).toBe('');
    await expectBytes(join(h.m.mountpoint, 'vm1', 'disk.img'), h.model, 'served');
  });

  it('a move back removes the record entry, and a fresh state dir then serves the VM from the datastore itself', async () => {
    const h = await movedHome();
    await moveOut(h);
    expect((await readRecord(h.m)).moved).toEqual([{ virtual: '/vm1', backing: h.dest }]);
    const back = await migrate(h.m, join(h.m.mountpoint, 'vm1'), join(h.m.datastore, 'vm1')).done;
    expect(back.code, back.stderr).toBe(0);
    expect(fs.existsSync(recordPath(h.m))).toBe(false);
    expect(fs.existsSync(h.dest)).toBe(false);
    await unmount(h.m);
    const { result } = await mountWith(h.m, 'fresh-state');
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout + result.stderr).toBe('');
    await expectBytes(join(h.m.mountpoint, 'vm1', 'disk.img'), h.model, 'served from the datastore');
    await expectBytes(join(h.m.datastore, 'vm1', 'disk.img'), h.model, 'in the datastore');
  });

  it('a state dir naming another destination than the record: the mount is refused with one line naming both, nothing changed', async () => {
    const h = await movedHome();
    await moveOut(h);
    await unmount(h.m);
    const elsewhere = join(h.m.root, 'dest', 'other');
    await fsp.cp(h.dest, elsewhere, { recursive: true });
    const stale = JSON.stringify([{ virtual: '/vm1', backing: elsewhere }]);
    await fsp.writeFile(mappingsFile(h.m.stateDir), stale);
    const record = await fsp.readFile(recordPath(h.m), 'utf8');
    const refused = await h.m.remount();
    expect(refused.code).not.toBe(0);
    const lines = refused.stderr.trim().split('\n');
    expect(lines, refused.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(/^ferry: /);
    expect(lines[0]).toContain(h.dest);
    expect(lines[0]).toContain(elsewhere);
    expect(lines[0]).toContain('/vm1');
    expect(await mountsUnder(h.m.mountpoint)).toEqual([]);
    expect(await fsp.readFile(mappingsFile(h.m.stateDir), 'utf8')).toBe(stale);
    expect(await fsp.readFile(recordPath(h.m), 'utf8')).toBe(record);
  });

  it('a recorded destination missing on this host (a datastore moved to another host): the mount warns with one line', async () => {
    const h = await movedHome();
    await moveOut(h);
    await unmount(h.m);
    const away = join(h.m.root, 'away');
    await fsp.rename(join(h.m.root, 'dest'), away);
    const again = await h.m.remount();
    expect(again.code, again.stderr).toBe(0);
    const lines = again.stderr.trim().split('\n');
    expect(lines, again.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(/^ferry: warning: /);
    expect(lines[0]).toContain(`/vm1 (${h.dest})`);
    // Put back at its recorded path, it is served again.
    await fsp.rename(away, join(h.m.root, 'dest'));
    await expectBytes(join(h.m.mountpoint, 'vm1', 'disk.img'), h.model, 'served once back in place');
  });

  it('a corrupt record refuses the mount with one line', async () => {
    const h = await movedHome();
    await moveOut(h);
    await unmount(h.m);
    await fsp.writeFile(recordPath(h.m), '{"version":1,"moved":[{"virtual":"/vm1"}]}');
    const refused = await h.m.remount();
    expect(refused.code).not.toBe(0);
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    expect(refused.stderr).toContain(recordPath(h.m));
    expect(await mountsUnder(h.m.mountpoint)).toEqual([]);
  });

  it('a record another user could have written refuses the mount with one line: it decides what the mount serves', async () => {
    const h = await movedHome();
    await moveOut(h);
    await unmount(h.m);
    await fsp.chown(recordPath(h.m), 65534, 65534);
    const owned = await h.m.remount();
    expect(owned.code).not.toBe(0);
    expect(owned.stderr.trim().split('\n')).toHaveLength(1);
    expect(owned.stderr).toContain('uid 65534');
    await fsp.chown(recordPath(h.m), 0, 0);
    await fsp.chmod(join(h.m.datastore, '.ferry'), 0o777);
    const writable = await h.m.remount();
    expect(writable.code).not.toBe(0);
    expect(writable.stderr.trim().split('\n')).toHaveLength(1);
    expect(writable.stderr).toContain('writable by other users');
    expect(await mountsUnder(h.m.mountpoint)).toEqual([]);
  });

  it('the record is invisible and its name uncreatable through the mount', async () => {
    const h = await movedHome();
    await moveOut(h);
    const mp = h.m.mountpoint;
    expect(fs.existsSync(recordPath(h.m))).toBe(true);
    expect(await fsp.readdir(mp)).toEqual(['vm1']);
    const errno = (p: Promise<unknown>) => p.then(() => 'ok', (err: NodeJS.ErrnoException) => err.code);
    expect(await errno(fsp.lstat(join(mp, '.ferry')))).toBe('ENOENT');
    expect(await errno(fsp.lstat(join(mp, '.ferry', 'moved.json')))).toBe('ENOENT');
    expect(await errno(fsp.readFile(join(mp, '.ferry', 'moved.json')))).toBe('ENOENT');
    expect(await errno(fsp.rm(join(mp, '.ferry'), { recursive: true }))).toBe('ENOENT');
    await fsp.writeFile(join(mp, 'file'), 'x');
    await fsp.mkdir(join(mp, 'dir'));
    expect(await errno(fsp.mkdir(join(mp, '.ferry')))).toBe('EPERM');
    expect(await errno(fsp.writeFile(join(mp, '.ferry'), 'x'))).toBe('EPERM');
    expect(await errno(fsp.rename(join(mp, 'file'), join(mp, '.ferry')))).toBe('EPERM');
    expect(await errno(fsp.rename(join(mp, 'dir'), join(mp, '.ferry')))).toBe('EPERM');
    expect(await errno(fsp.link(join(mp, 'file'), join(mp, '.ferry')))).toBe('EPERM');
    expect(await errno(fsp.symlink('file', join(mp, '.ferry')))).toBe('EPERM');
    // Deeper down the name is an ordinary one: only the datastore's root holds the record.
    await fsp.mkdir(join(mp, 'dir', '.ferry'));
    // No migration reaches it: neither as a source nor as a destination.
    const asSource = await h.m.cli(['migrate', join(mp, '.ferry'), '--to', join(h.m.root, 'dest', 'record')]);
    expect(asSource.code).not.toBe(0);
    const asDest = await h.m.cli(['migrate', join(mp, 'dir'), '--to', join(h.m.datastore, '.ferry', 'dir')]);
    expect(asDest.code).toBe(2);
    expect(await readRecord(h.m)).toEqual({ version: 1, moved: [{ virtual: '/vm1', backing: h.dest }], pending: [] });
    expect(fs.readdirSync(join(h.m.datastore, '.ferry'))).toEqual(['moved.json']);
  });
});

describe('a crash around the commit leaves a record that agrees with recovery', () => {
  /** kill -9 at `point`, then the mount cleared; the record as the crash left it. */
  async function crashAt(point: string): Promise<Moved> {
    const h = await movedHome({ FERRY_FAULTS: `${point}=crash` }, 7);
    const { pid } = await h.m.status();
    const run = await migrate(h.m, join(h.m.mountpoint, 'vm1'), h.dest).done;
    expect(run.code).toBe(1);
    await waitFor(() => hasExited(pid), 10_000, 'the daemon to die');
    expect((await h.m.cli(['unmount', h.m.mountpoint, '--force'])).code).toBe(0);
    expect(await mountsUnder(h.m.mountpoint)).toEqual([]);
    return h;
  }
  /** Mounted again without faults. */
  const remount = (h: Moved) => h.m.cli(['mount', h.m.datastore, h.m.mountpoint]);

  it('killed after the pending entry, before the commit: the remount drops it; a resume then records the destination', async () => {
    const h = await crashAt('commit-save');
    expect((await readRecord(h.m)).pending).toEqual([expect.objectContaining({ virtual: '/vm1', backing: h.dest })]);
    const again = await remount(h);
    expect(again.code, again.stderr).toBe(0);
    // The interrupted migration is named, the record is not: the remount dropped its pending entry silently.
    expect(again.stdout + again.stderr).toMatch(/^ferry: warning: the migration of \S+\/vm1 to \S+ was interrupted by a crash: resume it with .*\n$/);
    const status = await h.m.status();
    expect(status.migrations).toEqual([expect.objectContaining({ path: '/vm1', interrupted: true })]);
    expect(fs.existsSync(recordPath(h.m))).toBe(false);
    await expectBytes(join(h.m.mountpoint, 'vm1', 'disk.img'), h.model, 'served from the source');
    const resumed = await h.m.cli(['migrate', join(h.m.mountpoint, 'vm1'), '--resume', '--json']);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(await readRecord(h.m)).toEqual({ version: 1, moved: [{ virtual: '/vm1', backing: h.dest }], pending: [] });
    await expectBytes(join(h.m.mountpoint, 'vm1', 'disk.img'), h.model, 'served from the destination');
  });

  it('killed after the commit, before the confirmation: the remount confirms it', async () => {
    const h = await crashAt('commit-saved');
    const again = await remount(h);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout + again.stderr).toBe('');
    expect(await readRecord(h.m)).toEqual({ version: 1, moved: [{ virtual: '/vm1', backing: h.dest }], pending: [] });
    await expectBytes(join(h.m.mountpoint, 'vm1', 'disk.img'), h.model, 'served from the destination');
    expect(fs.existsSync(join(h.m.datastore, 'vm1'))).toBe(false);
  });

  it('killed after the commit of a move back: the remount removes the entry, and a fresh state dir serves the datastore itself', async () => {
    const h = await movedHome({ FERRY_FAULTS: 'commit-saved=crash@2' }, 8);
    await moveOut(h);
    expect((await readRecord(h.m)).moved).toEqual([{ virtual: '/vm1', backing: h.dest }]);
    const { pid } = await h.m.status();
    const back = await migrate(h.m, join(h.m.mountpoint, 'vm1'), join(h.m.datastore, 'vm1')).done;
    expect(back.code).toBe(1);
    await waitFor(() => hasExited(pid), 10_000, 'the daemon to die');
    expect((await h.m.cli(['unmount', h.m.mountpoint, '--force'])).code).toBe(0);
    expect((await readRecord(h.m)).pending).toEqual([expect.objectContaining({ virtual: '/vm1', backing: join(h.m.datastore, 'vm1') })]);
    const again = await remount(h);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout + again.stderr).toBe('');
    expect(fs.existsSync(recordPath(h.m))).toBe(false);
    expect(fs.existsSync(h.dest)).toBe(false);
    await expectBytes(join(h.m.mountpoint, 'vm1', 'disk.img'), h.model, 'served from the datastore');
    await unmount(h.m);
    const { result } = await mountWith(h.m, 'fresh-state');
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout + result.stderr).toBe('');
    await expectBytes(join(h.m.mountpoint, 'vm1', 'disk.img'), h.model, 'served with a fresh state dir');
  });

  it('killed after the pending entry, and the state dir lost: both copies exist, so the mount is refused naming both', async () => {
    const h = await crashAt('commit-save');
    const { result } = await mountWith(h.m, 'fresh-state');
    expect(result.code).not.toBe(0);
    const lines = result.stderr.trim().split('\n');
    expect(lines, result.stderr).toHaveLength(1);
    expect(lines[0]).toContain(join(h.m.datastore, 'vm1'));
    expect(lines[0]).toContain(h.dest);
    expect(await mountsUnder(h.m.mountpoint)).toEqual([]);
  });
});

describe("the record's temporary files", () => {
  it('a killed daemon\'s temporary file is removed at the next mount; a live writer\'s is left', async () => {
    const h = await movedHome();
    await moveOut(h);
    await unmount(h.m);
    const dead = join(h.m.datastore, '.ferry', 'moved.json.tmp-2147483646-3');
    const live = join(h.m.datastore, '.ferry', `moved.json.tmp-${process.pid}-1`);
    await fsp.writeFile(dead, '{"version":1,');
    await fsp.writeFile(live, '{"version":1,');
    const again = await h.m.cli(['mount', h.m.datastore, h.m.mountpoint]);
    expect(again.code, again.stderr).toBe(0);
    expect(fs.existsSync(dead)).toBe(false);
    expect(fs.existsSync(live)).toBe(true);
    await fsp.rm(live);
    expect((await readRecord(h.m)).moved).toEqual([{ virtual: '/vm1', backing: h.dest }]);
  });
});

describe('a move back under way when the state dir was lost', () => {
  it('both copies exist: the mount is refused naming where the VM ran (the other datastore) and the datastore itself', async () => {
    const h = await movedHome({ FERRY_FAULTS: 'commit-save=crash@2' }, 9);
    await moveOut(h);
    const { pid } = await h.m.status();
    const back = await migrate(h.m, join(h.m.mountpoint, 'vm1'), join(h.m.datastore, 'vm1')).done;
    expect(back.code).toBe(1);
    await waitFor(() => hasExited(pid), 10_000, 'the daemon to die');
    expect((await h.m.cli(['unmount', h.m.mountpoint, '--force'])).code).toBe(0);
    const { result } = await mountWith(h.m, 'fresh-state');
    expect(result.code).not.toBe(0);
    const lines = result.stderr.trim().split('\n');
    expect(lines, result.stderr).toHaveLength(1);
    expect(lines[0]).toContain(`from ${h.dest} to ${join(h.m.datastore, 'vm1')}`);
    expect(lines[0]).toContain('both copies exist');
    expect(await mountsUnder(h.m.mountpoint)).toEqual([]);
  });
});

describe('a datastore that cannot take the record', () => {
  it('fails the migration before it copies, with a line naming the record and the errno; the VM stays on the source, whole', async () => {
    const h = await movedHome();
    // An immutable datastore root: the record's directory cannot be made, as on a full or failing datastore.
    const chattr = (flag: string) => new Promise<number | null>((done) => spawn('chattr', [flag, h.m.datastore]).on('exit', done));
    expect(await chattr('+i')).toBe(0);
    let events: Record<string, any>[];
    try {
      const run = await migrate(h.m, join(h.m.mountpoint, 'vm1'), h.dest).done;
      expect(run.code, run.stderr).toBe(1);
      expect(run.stderr).toContain(`cannot reserve room for the datastore's record ${recordPath(h.m)} (EPERM)`);
      expect(run.stderr).not.toContain('destination');
      events = run.events;
    } finally {
      await chattr('-i');
    }
    // Refused before the first byte was copied, not after the whole copy.
    expect(events.filter((e) => e.type === 'progress' && e.copiedBytes > 0)).toEqual([]);
    expect(fs.existsSync(h.dest)).toBe(false);
    expect(fs.existsSync(recordPath(h.m))).toBe(false);
    await expectBytes(join(h.m.mountpoint, 'vm1', 'disk.img'), h.model, 'served from the source');
    await expectBytes(join(h.m.datastore, 'vm1', 'disk.img'), h.model, 'the source');
  });
});

describe('a datastore that fills up while its VM moves away', () => {
  /** A datastore on a tmpfs of `size` (no blocks reserved for root, unlike ext4), in the test's root. */
  async function smallDatastore(size: string): Promise<{ m: TestMount; model: Buffer; dest: string; fill: () => Promise<void>; release: () => Promise<void> }> {
    const root = await fsp.mkdtemp(join(process.env.TMPDIR ?? '/tmp', 'ferry-full-'));
    const datastore = join(root, 'datastore');
    await fsp.mkdir(datastore);
    const tmpfs = await ferryRun('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', datastore]);
    expect(tmpfs.code, tmpfs.stderr).toBe(0);
    mount = await mountFerry({ root, datastore });
    const m = mount;
    const model = bytes(prng(7), 2 * MiB);
    await fsp.mkdir(join(datastore, 'vm1'));
    await fsp.writeFile(join(datastore, 'vm1', 'disk.img'), model);
    await fsp.mkdir(join(root, 'dest'));
    // The guest's neighbours take every block left (written beside the mount, as another VM's disk would grow).
    const fill = async () => {
      const dd = await ferryRun('dd', ['if=/dev/zero', `of=${join(datastore, 'filler')}`, 'bs=64k']);
      expect(dd.stderr).toContain('No space left on device');
    };
    // The tmpfs goes after ferry's mount and before the test root is removed (stop() removes the root).
    const release = async () => {
      await m.cli(['unmount', m.mountpoint, '--force']);
      if ((await mountsUnder(m.mountpoint)).length > 0) await forceUnmount(m.mountpoint);
      expect((await ferryRun('umount', [datastore])).code).toBe(0);
      await m.stop();
      mount = undefined;
    };
    return { m, model, dest: join(root, 'dest', 'vm1'), fill, release };
  }

  it('still commits: the room for the record was taken when the migration started', async () => {
    const h = await smallDatastore('16m');
    try {
      let filled: Promise<void> | undefined;
      // Slow enough that the datastore fills while the copy runs, long before the commit.
      const run = await migrate(h.m, join(h.m.mountpoint, 'vm1'), h.dest, ['--rate-limit', '1M'], (e) => {
        if (e.type === 'progress' && e.copiedBytes > 0) filled ??= h.fill();
      }).done;
      await filled;
      expect(filled).toBeDefined();
      expect(run.code, run.stderr).toBe(0);
      await expectBytes(join(h.dest, 'disk.img'), h.model, 'destination');
      expect(await readRecord(h.m)).toEqual({ version: 1, moved: [{ virtual: '/vm1', backing: h.dest }], pending: [] });
      // Nothing of ferry's but the record is left in the datastore.
      expect(fs.readdirSync(join(h.m.datastore, '.ferry'))).toEqual(['moved.json']);
    } finally {
      await h.release();
    }
  });

  it('already full when the migration starts: it fails at once, naming the record and ENOSPC, not the destination', async () => {
    const h = await smallDatastore('16m');
    try {
      await h.fill();
      const run = await migrate(h.m, join(h.m.mountpoint, 'vm1'), h.dest).done;
      expect(run.code).toBe(1);
      expect(run.stderr).toContain(`cannot reserve room for the datastore's record ${recordPath(h.m)} (ENOSPC)`);
      expect(run.stderr).not.toContain('destination ran out of space');
      expect(fs.existsSync(h.dest)).toBe(false);
      expect(fs.existsSync(join(h.m.datastore, '.ferry'))).toBe(false);
      await expectBytes(join(h.m.mountpoint, 'vm1', 'disk.img'), h.model, 'served from the source');
    } finally {
      await h.release();
    }
  });
});
