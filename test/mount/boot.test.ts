import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, mkdir, readFile, readlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CLI, ferry, hasExited, run, type Result } from '../helpers/cli.js';
import { makeRoot } from '../helpers/mounts.js';
import { listRecords } from '../../src/state/registry.js';

/**
 * mount(8) runs mount.fuse without PATH, whose /bin/sh then finds `ferry` in the standard PATH only
 * (/usr/local/sbin first). So these tests run mount(8) in a private mount namespace with a directory holding a
 * `ferry` wrapper bound over /usr/local/sbin: the real kernel mount, nothing installed for anyone else.
 */
let root: string;
let ns: ChildProcess;
const inNs = (args: string[]): Promise<Result> => run('nsenter', ['-t', String(ns.pid), '-m', '--', ...args]);
/** The namespace's view of a path, from outside it. */
const seen = (path: string): string => `/proc/${ns.pid}/root${path}`;

async function nsMounts(): Promise<{ mountpoint: string; fstype: string; superOptions: string }[]> {
  const text = await readFile(`/proc/${ns.pid}/mountinfo`, 'utf8');
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [left, right] = line.split(' - ');
      const [fstype, , superOptions] = right.split(' ');
      return { mountpoint: left.split(' ')[4], fstype, superOptions };
    });
}

interface Scene {
  datastore: string;
  mountpoint: string;
  stateDir: string;
}

let scenes = 0;
async function scene(): Promise<Scene> {
  const dir = join(root, `s${scenes++}`);
  const s = { datastore: join(dir, 'ds'), mountpoint: join(dir, 'mnt'), stateDir: join(dir, 'state') };
  await mkdir(s.datastore, { recursive: true });
  await mkdir(s.mountpoint);
  await writeFile(join(s.datastore, 'disk.raw'), 'the bytes of a disk\n');
  return s;
}

/** Mounted by mount(8): the bytes answer through it, and `umount` ends the daemon and leaves nothing. */
async function expectServedThenUnmount(s: Scene, blockSize: number): Promise<void> {
  const mount = (await nsMounts()).find((m) => m.mountpoint === s.mountpoint);
  expect(mount?.fstype).toBe('fuse.ferry');
  expect(mount?.superOptions).toContain('allow_other');
  expect(await readFile(seen(join(s.mountpoint, 'disk.raw')), 'utf8')).toBe('the bytes of a disk\n');
  const [record] = await listRecords(s.stateDir);
  expect(record.blockSize).toBe(blockSize);
  // The daemon serves the namespace's mount: it was started inside it.
  expect(await readlink(`/proc/${record.pid}/ns/mnt`)).toBe(await readlink(`/proc/${ns.pid}/ns/mnt`));

  const unmounted = await inNs(['umount', s.mountpoint]);
  expect(unmounted).toMatchObject({ code: 0, stderr: '' });
  const deadline = Date.now() + 5000;
  while (!hasExited(record.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  expect(hasExited(record.pid)).toBe(true);
  expect((await nsMounts()).some((m) => m.mountpoint === s.mountpoint)).toBe(false);
  expect(await listRecords(s.stateDir)).toEqual([]);
}

async function expectNothingMounted(s: Scene): Promise<void> {
  expect((await nsMounts()).some((m) => m.mountpoint === s.mountpoint)).toBe(false);
  expect(await listRecords(s.stateDir).catch(() => [])).toEqual([]);
}

beforeAll(async () => {
  root = await makeRoot();
  const bin = join(root, 'bin');
  await mkdir(bin);
  // What `npm link` installs, as a wrapper: the shebang's `env node` would not find node without a PATH either.
  await writeFile(join(bin, 'ferry'), `#!/bin/sh\nexec '${process.execPath}' '${CLI}' "$@"\n`);
  await chmod(join(bin, 'ferry'), 0o755);
  ns = spawn('unshare', ['--mount', '--propagation', 'private', 'sleep', '3600'], { stdio: 'ignore' });
  const own = await readlink('/proc/self/ns/mnt');
  const deadline = Date.now() + 5000;
  while ((await readlink(`/proc/${ns.pid}/ns/mnt`).catch(() => own)) === own && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  expect(await inNs(['mount', '--bind', bin, '/usr/local/sbin'])).toMatchObject({ code: 0 });
});

afterAll(async () => {
  if (!ns) return;
  // A failed test's mount dies with its daemon; the namespace with its last process.
  for (const m of (await nsMounts().catch(() => [])).filter((m) => m.mountpoint.startsWith(root) && m.fstype === 'fuse.ferry')) {
    await inNs(['umount', '-l', m.mountpoint]);
  }
  ns.kill('SIGKILL');
});

describe('mount -t fuse.ferry (mount.fuse runs `ferry <source> <mountpoint> -o <options>`)', () => {
  it('mounts with the options mapped, ignores mount(8)\'s generic ones, and umount stops the daemon', async () => {
    const s = await scene();
    const mounted = await inNs(['mount', '-t', 'fuse.ferry', s.datastore, s.mountpoint, '-o', `allow_other,block_size=4K,state_dir=${s.stateDir},nofail,_netdev,noatime,x-systemd.requires=/srv`]);
    expect(mounted).toMatchObject({ code: 0, stdout: '', stderr: '' });
    await expectServedThenUnmount(s, 4096);
  });

  it('refuses an unknown key with one line and exit 2, and mounts nothing', async () => {
    const s = await scene();
    const refused = await inNs(['mount', '-t', 'fuse.ferry', s.datastore, s.mountpoint, '-o', `allow_other,blok_size=4K,state_dir=${s.stateDir}`]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/^ferry: unknown mount option 'blok_size' in -o: ferry mount takes .*block_size=<size>.*allow_other.*\n$/);
    await expectNothingMounted(s);
  });

  it('refuses ro: a ferry mount is read-write', async () => {
    const s = await scene();
    const refused = await inNs(['mount', '-t', 'fuse.ferry', '-o', `ro,state_dir=${s.stateDir}`, s.datastore, s.mountpoint]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/^ferry: .*\bro\b.*read-write.*\n$/);
    await expectNothingMounted(s);
  });
});

describe('fstab: mount -a -T <file>', () => {
  it('mounts the fstab line, and umount stops the daemon', async () => {
    const s = await scene();
    const fstab = join(root, 'fstab-good');
    await writeFile(fstab, `# ferry\n${s.datastore} ${s.mountpoint} fuse.ferry allow_other,block_size=64K,state_dir=${s.stateDir},nofail 0 0\n`);
    const mounted = await inNs(['mount', '-a', '-T', fstab]);
    expect(mounted).toMatchObject({ code: 0, stdout: '', stderr: '' });
    await expectServedThenUnmount(s, 65536);
  });

  it('a line with a bad key fails mount -a with ferry\'s line, and mounts nothing', async () => {
    const s = await scene();
    const fstab = join(root, 'fstab-bad');
    await writeFile(fstab, `${s.datastore} ${s.mountpoint} fuse.ferry allow_other,block_size=64K,colour=blue,state_dir=${s.stateDir} 0 0\n`);
    const refused = await inNs(['mount', '-a', '-T', fstab]);
    // mount -a sums up its failures as 32 ("mount failure"); the helper's reason is on stderr.
    expect(refused.code).toBe(32);
    expect(refused.stderr).toMatch(/^ferry: unknown mount option 'colour' in -o: /m);
    await expectNothingMounted(s);
  });
});

describe('ferry mount -o (the same keys on the command line)', () => {
  const refusals: [string, string[], RegExp][] = [
    ['a value option without its value', ['-o', 'block_size'], /^ferry: -o block_size needs a value: block_size=<size>\n$/],
    ['a flag with a value', ['-o', 'allow_other=yes'], /^ferry: -o allow_other takes no value: write allow_other\n$/],
    ['a key and its long option both', ['--block-size', '4K', '-o', 'block_size=8K'], /^ferry: --block-size is given twice \(as --block-size and as -o block_size\): give it once\n$/],
    ['a bad value, as its long option would be', ['-o', 'log_level=loud'], /^ferry: .*loud.*\n$/],
    ['-o itself', ['-o', 'options=x'], /^ferry: unknown mount option 'options' in -o: /],
  ];
  for (const [what, args, message] of refusals) {
    it(`refuses ${what} (exit 2, nothing mounted)`, async () => {
      const dir = await makeRoot();
      await mkdir(join(dir, 'ds'));
      await mkdir(join(dir, 'mnt'));
      const refused = await ferry(['mount', join(dir, 'ds'), join(dir, 'mnt'), '--state-dir', join(dir, 'state'), ...args]);
      expect(refused.stderr).toMatch(message);
      expect(refused.code).toBe(2);
      expect(await listRecords(join(dir, 'state')).catch(() => [])).toEqual([]);
    });
  }
});
