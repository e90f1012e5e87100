// Issue 26, item 3: a migration's walk, copy and source removal run as root in the backing store, where the VM's
// owner can swap a directory of the home for a symlink (renameat2 RENAME_EXCHANGE) while they run. Done by path
// (before this change), they went through the symlink: in runs of the race below, the source removal after a
// commit deleted the root-only file outside the datastore, and committed copies lost the user's file or symlink (a
// walk saw one directory under both names, or a readlink that failed dropped the symlink silently). Now every
// walk, copy and removal resolves beneath a root fd, never through a symlink, checks st_dev and st_ino of what it
// opened, and fails on a view of the tree no namespace can be: a swap fails the migration, source intact, nothing
// left at the destination.
//
// The user is `nobody`, who owns the VM home (as libvirt's dynamic ownership makes it); the secret is a root 0600
// file in a root 0700 directory outside the datastore, whose parent (the test root) is 0755 as /srv is.
import { afterEach, beforeAll, afterAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { makeRoot, mountFerry, type TestMount } from '../helpers/mounts.js';
import { migrate, waitFor, type MigrationRun } from '../helpers/migration.js';
import { run } from '../helpers/cli.js';

const NOBODY = 65534;
const AS_NOBODY = [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups'];
/** Migrations raced by the swapper (each a second or so). */
const RACED_RUNS = 20;
/** The user's files beside `sub` and `lnk`, which the swap never touches. */
const TOP_FILES: Record<string, Buffer> = { 'vm.cfg': Buffer.from('memory=1G\n'), 'disk.img': randomBytes(256 << 10) };
/** The user's own file in `sub`, named as the secret is in its directory. */
const USER_FILE = "the user's own f\n";

// swap <dir> <a> <b> <stop file>: exchanges a and b in dir, as fast as it can, until the stop file exists; prints
// "<exchanges made> <exchanges failed>". Through an O_PATH fd of dir: the swap itself never follows anything.
const SWAPPER = `
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif
int main (int argc, char **argv) {
  if (argc != 5) return 2;
  int dir = open(argv[1], O_PATH | O_DIRECTORY);
  if (dir < 0 && errno == ENOENT) { printf("0 0\\n"); return 0; } /* committed and removed before it started */
  if (dir < 0) { perror(argv[1]); return 1; }
  long made = 0, failed = 0;
  while (access(argv[4], F_OK) != 0) {
    for (int i = 0; i < 256; i++) {
      if (syscall(SYS_renameat2, dir, argv[2], dir, argv[3], RENAME_EXCHANGE) == 0) made++;
      else failed++;
    }
  }
  printf("%ld %ld\\n", made, failed);
  return 0;
}
`;

let root: string;
let swapper: string;
let secretDir: string;
let secret: string;
const SECRET = `root-only secret ${randomBytes(16).toString('hex')}\n`;
let mounts: TestMount[] = [];

beforeAll(async () => {
  root = await makeRoot();
  await fsp.chmod(root, 0o755);
  swapper = join(root, 'swap');
  await fsp.writeFile(`${swapper}.c`, SWAPPER);
  const cc = await run('cc', ['-O2', '-Wall', '-o', swapper, `${swapper}.c`]);
  if (cc.code !== 0) throw new Error(`cc swap.c failed: ${cc.stderr}`);
  secretDir = join(root, 'secret');
  await fsp.mkdir(secretDir, { mode: 0o700 });
  secret = join(secretDir, 'f');
  await fsp.writeFile(secret, SECRET, { mode: 0o600 });
});

afterEach(async () => {
  for (const m of mounts) await m.stop();
  mounts = [];
});

afterAll(async () => {
  await fsp.rm(root, { recursive: true, force: true });
});

async function mountIn(dir: string, env?: NodeJS.ProcessEnv): Promise<TestMount> {
  await fsp.mkdir(dir, { mode: 0o755 });
  const m = await mountFerry({ root: dir, env });
  // stop() removes its root: the secret and the swapper live beside, in the shared root.
  mounts.push(m);
  return m;
}

/**
 * A VM home owned by nobody, as in the issue: `sub/f`, the user's own file, and `lnk`, a symlink to the root-only
 * directory (which holds `f` too); beside them the VM's other files.
 */
async function makeHome(home: string): Promise<void> {
  await fsp.mkdir(join(home, 'sub'), { recursive: true });
  await fsp.writeFile(join(home, 'sub/f'), USER_FILE);
  for (const [name, content] of Object.entries(TOP_FILES)) await fsp.writeFile(join(home, name), content);
  await fsp.symlink(secretDir, join(home, 'lnk'));
  for (const p of [home, join(home, 'sub'), join(home, 'sub/f'), ...Object.keys(TOP_FILES).map((n) => join(home, n))]) await fsp.chown(p, NOBODY, NOBODY);
  await fsp.lchown(join(home, 'lnk'), NOBODY, NOBODY);
}

/** The secret is as it was: content, owner, mode, and alone in its directory. */
async function expectSecretUntouched(): Promise<void> {
  const st = await fsp.lstat(secret);
  expect({ uid: st.uid, gid: st.gid, mode: (st.mode & 0o7777).toString(8), nlink: st.nlink }).toEqual({ uid: 0, gid: 0, mode: '600', nlink: 1 });
  expect(await fsp.readFile(secret, 'utf8')).toBe(SECRET);
  expect(await fsp.readdir(secretDir)).toEqual(['f']);
  const dir = await fsp.lstat(secretDir);
  expect({ uid: dir.uid, mode: (dir.mode & 0o7777).toString(8) }).toEqual({ uid: 0, mode: '700' });
}

/** Every entry under `dir` (lstat: nothing followed), relative paths. */
async function entriesUnder(dir: string, rel = ''): Promise<[string, fs.Stats][]> {
  const out: [string, fs.Stats][] = [];
  for (const name of await fsp.readdir(join(dir, rel))) {
    const path = rel === '' ? name : `${rel}/${name}`;
    const st = await fsp.lstat(join(dir, path));
    out.push([path, st]);
    if (st.isDirectory()) out.push(...(await entriesUnder(dir, path)));
  }
  return out;
}

/**
 * The home as its user left it, in either arrangement of the swap: one of `sub`/`lnk` is the directory of the
 * user's files, the other the symlink to the root-only directory; nothing else, nothing of root's.
 */
async function expectUsersHome(dir: string): Promise<void> {
  const top = await fsp.lstat(dir);
  expect(top.uid).toBe(NOBODY);
  const entries = await entriesUnder(dir);
  const link = entries.find(([, st]) => st.isSymbolicLink());
  expect(link, 'a symlink at the top').toBeDefined();
  const [linkName] = link!;
  const dirName = linkName === 'sub' ? 'lnk' : 'sub';
  expect(await fsp.readlink(join(dir, linkName))).toBe(secretDir);
  expect(entries.map(([p]) => p).sort()).toEqual([dirName, linkName, `${dirName}/f`, ...Object.keys(TOP_FILES)].sort());
  for (const [path, st] of entries) expect(st.uid, `owner of ${path}`).toBe(NOBODY);
  expect(await fsp.readFile(join(dir, dirName, 'f'), 'utf8')).toBe(USER_FILE);
  for (const [name, content] of Object.entries(TOP_FILES)) expect((await fsp.readFile(join(dir, name))).equals(content), name).toBe(true);
}

/** No file under `dir` holds the secret, or has its owner and mode. */
async function expectNoSecretIn(dir: string): Promise<void> {
  if (!fs.existsSync(dir)) return;
  for (const [path, st] of await entriesUnder(dir)) {
    if (!st.isFile()) continue;
    expect(await fsp.readFile(join(dir, path), 'utf8'), `${path} holds the secret`).not.toBe(SECRET);
    expect(st.uid === 0 && (st.mode & 0o777) === 0o600, `${path} has the secret's owner and mode`).toBe(false);
  }
}

/** Runs the swapper as nobody on `sub` and `lnk` of `home` until `stop()`; resolves with the exchanges made. */
function swapInBackground(home: string, stopFile: string): { stop: () => Promise<number> } {
  const child = spawn('setpriv', [...AS_NOBODY, swapper, home, 'sub', 'lnk', stopFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  return {
    async stop() {
      await fsp.writeFile(stopFile, '');
      const code = await exited;
      if (code !== 0) throw new Error(`swapper exited ${code}: ${err}`);
      return Number(out.split(' ')[0]);
    },
  };
}

describe('a migration raced by a directory/symlink swap in the backing store (issue 26)', () => {
  it('never copies, reads, chmods or removes the root-only file; each run commits the user\'s own files or fails with the source intact and no copy left', async () => {
    const m = await mountIn(join(root, 'race'));
    const outcomes: string[] = [];
    let flipsInAll = 0;
    for (let i = 0; i < RACED_RUNS; i++) {
      const name = `home${i}`;
      const home = join(m.datastore, name);
      const dest = join(m.root, `dest${i}`);
      await makeHome(home);
      // Even runs race from the preflight on; odd ones from the first copy pass (the preflight's walk done).
      const stopFile = join(m.root, `stop${i}`);
      let swap = i % 2 === 0 ? swapInBackground(home, stopFile) : undefined;
      let result: MigrationRun;
      try {
        result = await migrate(m, join(m.mountpoint, name), dest, [], (e) => {
          if (e.type === 'phase' && e.phase === 'bulk') swap ??= swapInBackground(home, stopFile);
        }).done;
      } finally {
        // A run may end before a swapper started at its first pass made its first swap.
        flipsInAll += (await swap?.stop()) ?? 0;
      }
      await expectSecretUntouched();
      await expectNoSecretIn(dest);
      if (result.code === 0) {
        expect(result.final).toMatchObject({ type: 'done', destination: dest });
        await expectUsersHome(dest);
        outcomes.push('committed');
      } else {
        // Refused by the preflight (one line and its error event, nothing written), or failed later (an error event).
        if (result.final?.code === 'EREFUSED') expect(result.stderr).toMatch(/^ferry: .*(symbolic link|changed while the migration walked it)/);
        else expect(result.final, result.stderr).toMatchObject({ type: 'error', sourceIntact: true });
        expect(fs.existsSync(dest), `a partial copy left at ${dest}`).toBe(false);
        await expectUsersHome(home);
        outcomes.push(result.final?.code === 'EREFUSED' ? 'refused' : `failed (${result.final?.code})`);
      }
    }
    expect(flipsInAll, 'the swapper swapped').toBeGreaterThan(0);
    // What the runs came to, for whoever reads the output (either outcome is correct).
    console.log(`migrations raced by ${flipsInAll} swaps: ${outcomes.join(', ')}`);
  });
});

/** Whether process `pid` has `dir` open (by /proc/<pid>/fd). */
function holdsOpen(pid: number, dir: string): boolean {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).some((fd) => {
      try {
        return fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === dir;
      } catch {
        return false; // closed since the listing
      }
    });
  } catch {
    return false;
  }
}

describe('a migration refuses a directory that turned into a symlink, with a clear message (issue 26)', () => {
  // walk-listed pauses the walk once a directory is listed, before its entries are opened: the test swaps `sub`
  // for a symlink then. @1: the preflight's walk (its first listing, the home's); @3: the first pass's.
  it.each([
    { when: 'the preflight', fault: 'walk-listed=pause:3000@1', phase: 'preflight' },
    { when: 'the first copy pass', fault: 'walk-listed=pause:3000@3', phase: 'bulk' },
  ])('swapped during $when: refused, source intact, nothing at the destination', async ({ fault, phase }) => {
    const m = await mountIn(join(root, `planted-${phase}`), { FERRY_FAULTS: fault });
    const home = join(m.datastore, 'home');
    const dest = join(m.root, 'dest');
    await makeHome(home);
    await fsp.unlink(join(home, 'lnk'));
    let planted: Promise<void> | undefined;
    const plant = async () => {
      await new Promise((r) => setTimeout(r, 500));
      await fsp.rename(join(home, 'sub'), join(home, 'real'));
      await fsp.symlink(secretDir, join(home, 'sub'));
    };
    const daemon = (await m.status()).pid as number;
    const running = migrate(m, join(m.mountpoint, 'home'), dest, [], (e) => {
      if (e.type === 'phase' && e.phase === phase) planted ??= plant();
    });
    // A refused migration shows no phase event (issue 28): the preflight's walk is seen holding the home open.
    if (phase === 'preflight') {
      await waitFor(() => holdsOpen(daemon, home), 10_000, 'the preflight walk paused in the home');
      planted = plant();
    }
    const result = await running.done;
    await planted;
    expect(planted, `phase ${phase} seen`).toBeDefined();
    const message = `${home}/sub is a symbolic link where a directory was listed`;
    expect(result.code).not.toBe(0);
    if (phase === 'preflight') {
      // Refused before anything was written: one line, and with --json one error event, no phase before it.
      expect(result.stderr).toContain(message);
      expect(result.events).toEqual([expect.objectContaining({ type: 'error', code: 'EREFUSED', message: expect.stringContaining(message) })]);
    } else {
      expect(result.final).toMatchObject({ type: 'error', code: 'ELOOP', sourceIntact: true });
      expect(result.final!.message).toContain(message);
    }
    expect(fs.existsSync(dest)).toBe(false);
    await expectSecretUntouched();
    expect(await fsp.readdir(join(home, 'real'))).toEqual(['f']);
    expect(await fsp.readlink(join(home, 'sub'))).toBe(secretDir);
    // The mount still serves the home from the datastore.
    expect(await fsp.readFile(join(m.mountpoint, 'home/real/f'), 'utf8')).toBe(USER_FILE);
  });
});

describe('a symlink whose target cannot be read fails the migration (issue 26: it was dropped from the copy)', () => {
  it('readlink failing in the first pass: the migration fails with its error, source intact, no copy left', async () => {
    // @2: the first pass's readlink (the preflight's walk reads it first).
    const m = await mountIn(join(root, 'readlink'), { FERRY_FAULTS: 'walk-readlink=fail@2' });
    const home = join(m.datastore, 'home');
    const dest = join(m.root, 'dest');
    await makeHome(home);
    const result = await migrate(m, join(m.mountpoint, 'home'), dest).done;
    expect(result.code).toBe(1);
    expect(result.final).toMatchObject({ type: 'error', code: 'EIO', sourceIntact: true });
    expect(result.final!.message).toContain('injected failure at walk-readlink');
    expect(fs.existsSync(dest)).toBe(false);
    await expectUsersHome(home);
  });
});
