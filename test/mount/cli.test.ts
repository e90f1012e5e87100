import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { ferry, run, CLI, hasExited } from '../helpers/cli.js';
import { makeRoot, mountFerry, mountsUnder, type TestMount } from '../helpers/mounts.js';

let root: string;
let stateDir: string;
const mount = (args: string[], env?: NodeJS.ProcessEnv) => ferry(['mount', ...args, '--state-dir', stateDir], { env });

/** A refusal: exit 2, one line on stderr naming the problem, nothing mounted, nothing written. */
async function expectRefused(result: Promise<{ code: number; stderr: string; stdout: string }>, pattern: RegExp): Promise<void> {
  const before = await mountsUnder(root);
  const r = await result;
  expect(r.code).toBe(2);
  expect(r.stderr).toMatch(pattern);
  expect(r.stderr.trim().split('\n')).toHaveLength(1);
  expect(r.stderr).not.toMatch(/\n\s+at /);
  expect(await mountsUnder(root)).toEqual(before);
}

beforeAll(async () => {
  root = await makeRoot();
  stateDir = join(root, 'state');
  for (const dir of ['ds', 'mnt', 'full', 'ds/inner']) await fsp.mkdir(join(root, dir), { recursive: true });
  await fsp.writeFile(join(root, 'ds/keep.txt'), 'keep');
  await fsp.writeFile(join(root, 'full/x'), 'x');
  await fsp.writeFile(join(root, 'afile'), 'x');
});
afterAll(async () => {
  await fsp.rm(root, { recursive: true, force: true });
});

describe('ferry mount refuses a state dir another user could tamper with, and changes nothing (issue 15)', () => {
  const modeOf = (path: string) => fs.lstatSync(path).mode & 0o7777;

  it('a state dir writable by group or others', async () => {
    const shared = join(root, 'shared-state');
    await fsp.mkdir(shared);
    await fsp.chmod(shared, 0o1777);
    const r = ferry(['mount', join(root, 'ds'), join(root, 'mnt'), '--state-dir', shared]);
    await expectRefused(r, /state dir .*shared-state is writable by other users \(mode 1777\)/);
    expect(modeOf(shared)).toBe(0o1777);
    expect(fs.readdirSync(shared)).toEqual([]);
  });

  it('a state dir owned by another user', async () => {
    const theirs = join(root, 'their-state');
    await fsp.mkdir(theirs, { mode: 0o700 });
    await fsp.chown(theirs, 65534, 65534);
    await expectRefused(ferry(['mount', join(root, 'ds'), join(root, 'mnt'), '--state-dir', theirs]), /state dir .*their-state is owned by uid 65534/);
    expect(fs.readdirSync(theirs)).toEqual([]);
  });

  it('a state dir that is a symbolic link, or not a directory', async () => {
    await fsp.mkdir(join(root, 'real-state'), { mode: 0o700 });
    await fsp.symlink(join(root, 'real-state'), join(root, 'link-state'));
    await expectRefused(ferry(['mount', join(root, 'ds'), join(root, 'mnt'), '--state-dir', join(root, 'link-state')]), /state dir .*link-state is a symbolic link/);
    await expectRefused(ferry(['mount', join(root, 'ds'), join(root, 'mnt'), '--state-dir', join(root, 'afile')]), /state dir .*afile is not a directory/);
    expect(fs.readdirSync(join(root, 'real-state'))).toEqual([]);
  });

  it('ferry unmount of a live mount registered in another state dir names that state dir and leaves the mount alone', async () => {
    const other = join(root, 'other-state');
    expect((await ferry(['mount', join(root, 'ds'), join(root, 'mnt'), '--state-dir', other])).code).toBe(0);
    try {
      for (const force of [[], ['--force']]) {
        const r = await ferry(['unmount', join(root, 'mnt'), ...force, '--state-dir', join(root, 'third-state')]);
        expect(r.code).toBe(2);
        expect(r.stderr).toMatch(new RegExp(`is served by the ferry daemon pid \\d+ of state dir ${other}, not .*third-state: run \`ferry unmount .*mnt --state-dir ${other}\``));
        expect(await mountsUnder(join(root, 'mnt'))).toEqual([join(root, 'mnt')]);
      }
    } finally {
      expect((await ferry(['unmount', join(root, 'mnt'), '--state-dir', other])).code).toBe(0);
    }
  });

  it('a state dir that does not exist is created, only root may enter it', async () => {
    const fresh = join(root, 'new-parent/new-state');
    const mounted = await ferry(['mount', join(root, 'ds'), join(root, 'mnt'), '--state-dir', fresh]);
    expect(mounted.code, mounted.stderr).toBe(0);
    try {
      expect(modeOf(fresh)).toBe(0o700);
      expect(modeOf(join(fresh, 'mounts'))).toBe(0o700);
    } finally {
      expect((await ferry(['unmount', join(root, 'mnt'), '--state-dir', fresh])).code).toBe(0);
    }
  });
});

describe('ferry mount refuses bad input', () => {
  it('datastore missing or not a directory', async () => {
    await expectRefused(mount([join(root, 'nope'), join(root, 'mnt')]), /datastore .*nope does not exist/);
    await expectRefused(mount([join(root, 'afile'), join(root, 'mnt')]), /datastore .*afile is not a directory/);
  });

  it('mountpoint missing, not a directory, or not empty', async () => {
    await expectRefused(mount([join(root, 'ds'), join(root, 'nope')]), /mountpoint .*nope does not exist: create it/);
    await expectRefused(mount([join(root, 'ds'), join(root, 'afile')]), /mountpoint .*afile is not a directory/);
    await expectRefused(mount([join(root, 'ds'), join(root, 'full')]), /mountpoint .*full is not empty/);
  });

  it('mountpoint inside the datastore, or the datastore inside the mountpoint', async () => {
    await fsp.mkdir(join(root, 'outer/ds2'), { recursive: true });
    await expectRefused(mount([join(root, 'ds'), join(root, 'ds/inner')]), /mountpoint .*inner is inside the datastore/);
    await expectRefused(mount([join(root, 'outer/ds2'), join(root, 'outer')]), /datastore .*ds2 is inside the mountpoint .*outer: put it outside/);
    await expectRefused(mount([join(root, 'ds'), join(root, 'ds')]), /is inside the datastore/);
  });

  it('block size not a power of two or out of range', async () => {
    for (const bad of ['3K', '2K', '32M', 'lots', '0']) {
      await expectRefused(mount([join(root, 'ds'), join(root, 'mnt'), '--block-size', bad]), /--block-size/);
    }
  });

  it('read-around neither 0 nor a power of two from 4K to 16M', async () => {
    for (const bad of ['3K', '2K', '32M', 'lots', '-1']) {
      await expectRefused(mount([join(root, 'ds'), join(root, 'mnt'), '--read-around', bad]), /^ferry: --read-around: /);
    }
  });

  it('busy poll without a unit, over 1 ms or unreadable', async () => {
    for (const bad of ['50', '2ms', '500ns', 'lots', '-5us', 'us']) {
      await expectRefused(mount([join(root, 'ds'), join(root, 'mnt'), '--busy-poll', bad]), /^ferry: --busy-poll: .* must be 0 \(off\) or from 1us to 1ms/);
    }
  });

  it('a mountpoint that is already a mount', async () => {
    await fsp.mkdir(join(root, 'tmpfs'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', join(root, 'tmpfs')]);
    try {
      await expectRefused(mount([join(root, 'ds'), join(root, 'tmpfs')]), /is already a mount \(tmpfs\)/);
    } finally {
      execFileSync('umount', [join(root, 'tmpfs')]);
    }
  });

  it('no usable /dev/fuse, or libfuse2 missing: says what to install', async () => {
    const inNamespace = (hide: string) =>
      run('unshare', ['-m', 'sh', '-c', `mount --bind /dev/null ${hide} && exec "$0" "$@"`, process.execPath, CLI, 'mount', join(root, 'ds'), join(root, 'mnt'), '--state-dir', stateDir]);
    const devFuse = await inNamespace('/dev/fuse');
    expect(devFuse.code).toBe(2);
    expect(devFuse.stderr.trim()).toMatch(/^ferry: \/dev\/fuse is not usable: load the fuse kernel module/);
    const libfuse = fs.realpathSync('/usr/lib/x86_64-linux-gnu/libfuse.so.2');
    const noLib = await inNamespace(libfuse);
    expect(noLib.code).toBe(2);
    expect(noLib.stderr.trim()).toBe('ferry: libfuse2 is missing: install it with `apt-get install libfuse2 fuse` (or run scripts/setup.sh)');
    expect(await mountsUnder(root)).toEqual([]);
  });

  it('leaves the datastore untouched by any refusal', async () => {
    expect(await fsp.readdir(join(root, 'ds'))).toEqual(['inner', 'keep.txt']);
  });
});

describe('ferry dirty / status on paths outside a mount', () => {
  it('says the path is not under a ferry mount', async () => {
    for (const args of [['dirty', join(root, 'afile')], ['status', join(root, 'ds')]]) {
      const r = await ferry([...args, '--state-dir', stateDir]);
      expect(r.code).toBe(2);
      expect(r.stderr.trim()).toMatch(/^ferry: .* is not under a ferry mount/);
    }
  });

  it('rejects unknown commands and options with exit 2', async () => {
    expect((await ferry(['frobnicate'])).code).toBe(2);
    const r = await ferry(['status', '--bogus']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("unknown option '--bogus'");
  });
});

describe('mount lifecycle', () => {
  let m: TestMount;
  beforeAll(async () => {
    m = await mountFerry();
  });
  afterAll(async () => {
    await m?.stop();
  });

  it('refuses a second mount of the same datastore', async () => {
    await fsp.mkdir(join(m.root, 'mnt2'));
    const r = await m.cli(['mount', m.datastore, join(m.root, 'mnt2')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/already served by ferry at/);
  });

  it('refuses to unmount while files are open, unless forced', async () => {
    const fd = fs.openSync(join(m.mountpoint, 'busy'), 'w');
    try {
      const r = await m.cli(['unmount', m.mountpoint]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/is busy: 1 file\(s\) open/);
      expect(await mountsUnder(m.mountpoint)).toEqual([m.mountpoint]);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('unmounts cleanly: daemon gone, nothing mounted, no record left', async () => {
    const { pid } = await m.status();
    const r = await m.cli(['unmount', m.mountpoint]);
    expect(r.code).toBe(0);
    expect(await mountsUnder(m.mountpoint)).toEqual([]);
    expect(hasExited(pid)).toBe(true);
    expect((await fsp.readdir(join(m.stateDir, 'mounts'))).filter((n) => !n.endsWith('.log'))).toEqual([]);
    const again = await m.cli(['status', '--json']);
    expect(JSON.parse(again.stdout)).toEqual([]);
  });

  it('detects a dead mount after kill -9, explains it, and clears it with --force', async () => {
    await m.cli(['mount', m.datastore, m.mountpoint]);
    const { pid } = await m.status();
    process.kill(pid, 'SIGKILL');
    for (let i = 0; i < 100 && fs.existsSync(`/proc/${pid}`); i++) await new Promise((r) => setTimeout(r, 50));
    const status = await m.cli(['status', '--json']);
    expect(JSON.parse(status.stdout)[0].state).toBe('dead');
    const remount = await m.cli(['mount', m.datastore, m.mountpoint]);
    expect(remount.code).toBe(2);
    expect(remount.stderr.trim()).toBe(`ferry: ${m.mountpoint} is a dead FUSE mount (its daemon is gone): clear it with \`ferry unmount --force ${m.mountpoint}\`, or mount with --clear-dead`);
    const plain = await m.cli(['unmount', m.mountpoint]);
    expect(plain.code).toBe(2);
    expect(plain.stderr).toMatch(/dead mount/);
    const forced = await m.cli(['unmount', m.mountpoint, '--force']);
    expect(forced.code).toBe(0);
    expect(await mountsUnder(m.mountpoint)).toEqual([]);
    const fresh = await m.cli(['mount', m.datastore, m.mountpoint]);
    expect(fresh.code).toBe(0);
  });

  it('stays attached with --foreground and unmounts on SIGTERM', async () => {
    await m.cli(['unmount', m.mountpoint]);
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, [CLI, 'mount', m.datastore, m.mountpoint, '--foreground', '--state-dir', m.stateDir], { stdio: ['ignore', 'ignore', 'pipe'] });
    let logs = '';
    child.stderr.on('data', (d) => (logs += d));
    for (let i = 0; i < 100 && !logs.includes('"mounted"'); i++) await new Promise((r) => setTimeout(r, 50));
    expect(await mountsUnder(m.mountpoint)).toEqual([m.mountpoint]);
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(await mountsUnder(m.mountpoint)).toEqual([]);
    expect(logs).toContain('"msg":"unmounted"');
  });
});
