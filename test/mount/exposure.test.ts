// Issue 26: the escape from the datastore needs a user who can reach the backing store directly, not only the
// mount. `ferry mount --allow-other` says so, in one warning line, when nothing on the way to the datastore stops
// users other than root; the mount goes ahead.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fsp from 'node:fs/promises';
import { join } from 'node:path';
import { makeRoot, mountFerry, mountsUnder, type TestMount } from '../helpers/mounts.js';
import { run } from '../helpers/cli.js';
import { exposure, openRoute } from '../../src/daemon/exposure.js';

const mounts: TestMount[] = [];
const roots: string[] = [];
afterAll(async () => {
  for (const m of mounts) await m.stop();
  for (const root of roots) await fsp.rm(root, { recursive: true, force: true });
});

async function mountIn(rootMode: number, args: string[]): Promise<TestMount> {
  const root = await makeRoot(); // mkdtemp: 0700, owned by root
  await fsp.chmod(root, rootMode);
  const m = await mountFerry({ root, args });
  mounts.push(m);
  return m;
}

const daemonLog = async (m: TestMount) => {
  const dir = join(m.stateDir, 'logs');
  return fsp.readFile(join(dir, (await fsp.readdir(dir)).find((n) => n.endsWith('.log'))!), 'utf8');
};

describe('ferry mount --allow-other warns when users other than root can reach the datastore outside the mount', () => {
  it('a datastore under a 0755 directory: one warning line naming it and the fix; the mount goes ahead', async () => {
    const m = await mountIn(0o755, ['--allow-other']);
    expect(m.mounted.code).toBe(0);
    expect(m.mounted.stdout).toBe('');
    expect(m.mounted.stderr).toBe(
      `ferry: warning: users other than root can reach ${m.datastore} outside the mount: no directory from / to it is ` +
        `root-only (${m.root} is 0755, owner root); to close that route make one root-only, e.g. chmod 0700 ${m.root} ` +
        `(0711 is not enough), or move it into such a directory (README, "Security")\n`,
    );
    expect(await mountsUnder(m.mountpoint)).toEqual([m.mountpoint]);
    // The mount serves other users as usual.
    await fsp.writeFile(join(m.datastore, 'f'), 'data');
    await fsp.chmod(join(m.datastore, 'f'), 0o644);
    expect((await run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'cat', join(m.mountpoint, 'f')])).stdout).toBe('data');
    // And the daemon's log has it too, as a warning.
    const entry = (await daemonLog(m)).split('\n').filter(Boolean).map((l) => JSON.parse(l)).find((e) => e.level === 'warn');
    expect(entry).toMatchObject({ reachable: [m.datastore], through: m.root, mode: '0755', owner: 0 });
    expect(entry.msg).toMatch(/^users other than root can reach .* outside the mount: /);
  });

  it('a datastore whose parent only root can enter (root, 0700): no warning', async () => {
    const m = await mountIn(0o700, ['--allow-other']);
    expect(m.mounted.code).toBe(0);
    expect(m.mounted.stderr).toBe('');
    expect((await daemonLog(m)).split('\n').filter(Boolean).map((l) => JSON.parse(l).level)).not.toContain('warn');
  });

  it('without --allow-other only root uses the mount: no warning under a 0755 directory either', async () => {
    const m = await mountIn(0o755, []);
    expect(m.mounted.code).toBe(0);
    expect(m.mounted.stderr).toBe('');
  });
});

describe('which directories close the route', () => {
  let base: string;
  beforeAll(async () => {
    base = await makeRoot();
    roots.push(base);
    await fsp.chmod(base, 0o755);
  });
  const dir = async (path: string, mode: number, uid = 0) => {
    await fsp.mkdir(join(base, path));
    await fsp.chown(join(base, path), uid, 0);
    await fsp.chmod(join(base, path), mode);
    return join(base, path);
  };

  it('a root-owned ancestor without execute for group and other closes it; 0711, 0750, 0705 and a 0700 of another user do not', async () => {
    await dir('a', 0o700);
    expect(await openRoute(await dir('a/ds', 0o755))).toBeUndefined();
    await dir('b', 0o1700); // sticky changes nothing
    expect(await openRoute(await dir('b/x', 0o777))).toBeUndefined();
    for (const [name, mode, uid] of [['c', 0o711, 0], ['d', 0o750, 0], ['e', 0o705, 0], ['f', 0o700, 65534]] as const) {
      await dir(name, mode, uid);
      const ds = await dir(`${name}/ds`, 0o755);
      expect(await openRoute(ds), name).toEqual({ root: ds, through: join(base, name), mode, uid });
    }
    // The datastore itself counts (though a root-only datastore shows other users nothing through the mount either).
    expect(await openRoute(await dir('ds-closed', 0o700))).toBeUndefined();
  });

  it('names every root the mount serves that is reachable, and the fix that fits the parent', async () => {
    const plain = await dir('plain', 0o755);
    const one = await dir('plain/one', 0o755);
    const two = await dir('plain/two', 0o755);
    await dir('closed', 0o700);
    const hidden = await dir('closed/ds', 0o755);
    expect(await exposure([hidden])).toBeUndefined();
    expect((await exposure([one, hidden, two]))?.message).toBe(
      `users other than root can reach ${one} and ${two} outside the mount: no directory from / to them is root-only ` +
        `(${plain} is 0755, owner root); to close that route make one root-only, e.g. chmod 0700 ${plain} ` +
        `(0711 is not enough), or move them into such a directory (README, "Security")`,
    );
    // A parent another user owns must become root's first.
    const theirs = await dir('theirs', 0o755, 65534);
    const inTheirs = await dir('theirs/ds', 0o755);
    expect((await exposure([inTheirs]))?.message).toContain(`(${theirs} is 0755, owner uid 65534); to close that route make one root-only, e.g. chown root ${theirs} && chmod 0700 ${theirs} (0711`);
    // A parent everyone may write (a /tmp) is no place to lock: move the datastore.
    const shared = await dir('shared', 0o1777);
    const inShared = await dir('shared/ds', 0o755);
    expect((await exposure([inShared]))?.message).toBe(
      `users other than root can reach ${inShared} outside the mount: no directory from / to it is root-only ` +
        `(${shared} is 1777, owner root); to close that route move it into a directory only root can enter ` +
        `(owner root, mode 0700; 0711 is not enough) (README, "Security")`,
    );
  });
});
