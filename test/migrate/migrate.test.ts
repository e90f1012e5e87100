import { afterEach, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes, createHash } from 'node:crypto';
import { execFileSync, spawn } from 'node:child_process';
import net from 'node:net';
import { mountFerry, listTree, type TestMount } from '../helpers/mounts.js';
import { startWriter } from '../helpers/writer.js';
import { migrate, waitFor } from '../helpers/migration.js';
import { vmHome } from '../helpers/vm.js';
import { fallocate, seekDataHole } from '../helpers/sparse.js';
import { run } from '../helpers/cli.js';

const MiB = 1 << 20;
let mounts: TestMount[] = [];
afterEach(async () => {
  for (const m of mounts) await m.stop();
  mounts = [];
});

async function setup(diskMiB = 32, args: string[] = []): Promise<TestMount & { dest: string; home: string }> {
  const m = await mountFerry({ args });
  mounts.push(m);
  return vmHome(m, diskMiB, { 'vm.cfg': 'memory=1G\n', 'vm.log': 'boot\n' });
}

const sha = (buf: Buffer) => createHash('sha256').update(buf).digest('hex');
const fileSha = async (path: string) => sha(await fsp.readFile(path));

describe('ferry migrate: live', () => {
  it('moves a VM home while a writer hammers its disk: destination equals the writer model, source gone, fds keep working', async () => {
    const m = await setup(64);
    const writer = await startWriter({ file: join(m.mountpoint, 'vm1/disk.img'), modelOut: join(m.root, 'model'), seed: 11, maxWrite: 256 * 1024, bytesPerSec: 8 * MiB, fsyncEvery: 50 });
    await new Promise((r) => setTimeout(r, 300));
    const run = await migrate(m, join(m.mountpoint, 'vm1'), m.dest).done;
    // Keep writing through the same fd after the switch.
    await new Promise((r) => setTimeout(r, 500));
    const report = await writer.stop();
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.final).toMatchObject({ type: 'done', source: m.home, destination: m.dest });
    expect(run.events.filter((e) => e.type === 'phase').map((e) => e.phase)).toEqual(['preflight', 'prepare', 'bulk', 'iterate', 'switchover', 'committed', 'cleanup', 'done']);
    expect(report.errors).toEqual([]);
    expect(report.writes).toBeGreaterThan(20);
    expect(fs.existsSync(m.home)).toBe(false);
    const model = await fsp.readFile(join(m.root, 'model'));
    expect(sha(await fsp.readFile(join(m.dest, 'disk.img')))).toBe(sha(model));
    expect(sha(await fsp.readFile(join(m.mountpoint, 'vm1/disk.img')))).toBe(sha(model));
    expect(await fsp.readFile(join(m.dest, 'vm.cfg'), 'utf8')).toBe('memory=1G\n');
    const passes = run.events.filter((e) => e.type === 'pass');
    expect(passes[0]).toMatchObject({ pass: 0, copiedBytes: 64 * MiB + 10 + 5 });
    for (const p of passes) expect(p).toEqual(expect.objectContaining({ dirtyBytes: expect.any(Number), throughputBytesPerSec: expect.any(Number), estimatedSwitchoverMs: expect.any(Number) }));
    expect(run.final!.downtimeMs).toBeLessThan(5000);
    // The path map is durable: a remount serves the destination.
    await m.cli(['unmount', m.mountpoint]);
    expect((await m.cli(['mount', m.datastore, m.mountpoint])).code).toBe(0);
    expect(sha(await fsp.readFile(join(m.mountpoint, 'vm1/disk.img')))).toBe(sha(model));
    expect((await fsp.readdir(m.mountpoint)).sort()).toEqual(['vm1']);
  });

  it('replays creates, appends, renames, truncates, chmod and times made during the migration', async () => {
    const m = await setup(48);
    await fsp.writeFile(join(m.home, 'old-name'), 'renamed');
    await fsp.writeFile(join(m.home, 'doomed'), 'x');
    await fsp.writeFile(join(m.home, 'shrink.img'), randomBytes(MiB));
    await fsp.link(join(m.home, 'vm.cfg'), join(m.home, 'vm.cfg.hardlink'));
    await fsp.symlink('disk.img', join(m.home, 'current'));
    const inMount = (p: string) => join(m.mountpoint, 'vm1', p);
    const running = migrate(m, join(m.mountpoint, 'vm1'), m.dest, ['--rate-limit', '16M']);
    await new Promise((r) => setTimeout(r, 800));
    await fsp.appendFile(inMount('vm.log'), 'running\n');
    await fsp.mkdir(inMount('snapshots'));
    await fsp.writeFile(inMount('snapshots/overlay.qcow2'), 'overlay');
    await fsp.rename(inMount('old-name'), inMount('new-name'));
    await fsp.unlink(inMount('doomed'));
    await fsp.truncate(inMount('shrink.img'), 1000);
    await fsp.chmod(inMount('vm.cfg'), 0o600);
    await fsp.utimes(inMount('vm.cfg'), new Date('2020-01-02T03:04:05Z'), new Date('2021-02-03T04:05:06Z'));
    execFileSync('touch', ['-m', '-d', '2001-02-03 04:05:06.123456789', inMount('new-name')]);
    execFileSync('touch', ['-h', '-m', '-d', '2001-02-03 04:05:06.987654321', inMount('current')]);
    await fsp.appendFile(inMount('vm.log'), 'still running\n');
    const run = await running.done;
    expect(run.code).toBe(0);
    expect(await listTree(m.dest)).toEqual(['current', 'disk.img', 'new-name', 'shrink.img', 'snapshots', 'snapshots/overlay.qcow2', 'vm.cfg', 'vm.cfg.hardlink', 'vm.log']);
    expect(await fsp.readFile(join(m.dest, 'vm.log'), 'utf8')).toBe('boot\nrunning\nstill running\n');
    expect(await fsp.readFile(join(m.dest, 'new-name'), 'utf8')).toBe('renamed');
    expect(await fsp.readFile(join(m.dest, 'snapshots/overlay.qcow2'), 'utf8')).toBe('overlay');
    expect((await fsp.stat(join(m.dest, 'shrink.img'))).size).toBe(1000);
    const cfg = await fsp.stat(join(m.dest, 'vm.cfg'));
    expect(cfg.mode & 0o777).toBe(0o600);
    expect(cfg.mtime.toISOString()).toBe('2021-02-03T04:05:06.000Z');
    expect(cfg.nlink).toBe(2);
    expect((await fsp.stat(join(m.dest, 'vm.cfg.hardlink'))).ino).toBe(cfg.ino);
    expect(await fsp.readlink(join(m.dest, 'current'))).toBe('disk.img');
    // Times to the nanosecond, on files and on symlinks.
    expect((await fsp.stat(join(m.dest, 'new-name'), { bigint: true })).mtimeNs % 1_000_000_000n).toBe(123456789n);
    expect((await fsp.lstat(join(m.dest, 'current'), { bigint: true })).mtimeNs % 1_000_000_000n).toBe(987654321n);
    expect(await listTree(join(m.mountpoint, 'vm1'))).toEqual(await listTree(m.dest));
  });

  it('keeps a sparse file sparse', async () => {
    const m = await setup(1);
    const fd = fs.openSync(join(m.home, 'sparse.img'), 'w');
    fs.ftruncateSync(fd, 256 * MiB);
    for (const at of [0, 100 * MiB, 255 * MiB]) fs.writeSync(fd, randomBytes(MiB), 0, MiB, at);
    fs.closeSync(fd);
    await fsp.writeFile(join(m.home, 'zeros.img'), Buffer.alloc(16 * MiB));
    execFileSync('setfattr', ['-n', 'user.ferry', '-v', 'kept', join(m.home, 'zeros.img')]);
    const before = await fileSha(join(m.home, 'sparse.img'));
    const run = await migrate(m, join(m.mountpoint, 'vm1'), m.dest).done;
    expect(run.code).toBe(0);
    const st = await fsp.stat(join(m.dest, 'sparse.img'));
    expect(st.size).toBe(256 * MiB);
    expect(st.blocks * 512).toBeLessThanOrEqual(4 * MiB);
    expect(await fileSha(join(m.dest, 'sparse.img'))).toBe(before);
    // A file written full of zeros arrives as a hole of the same size, with its extended attributes.
    const zeros = await fsp.stat(join(m.dest, 'zeros.img'));
    expect([zeros.size, zeros.blocks]).toEqual([16 * MiB, 0]);
    expect(execFileSync('getfattr', ['--only-values', '-n', 'user.ferry', join(m.dest, 'zeros.img')], { encoding: 'utf8' })).toBe('kept');
  });

  it.each(['iterative', 'mirror'])('%s: a sparse file truncated down and back up between passes stays sparse and exact (issue 19)', async (mode) => {
    // The bulk copy is held 3 s after its second file (sparse.img): the file changes after its fresh copy, so the
    // next pass copies dirty ranges, not the whole file.
    const m = await vmHome(await mountFerry({ env: { FERRY_FAULTS: 'bulk=pause:3000@2' } }), 1);
    mounts.push(m);
    const sparse = join(m.home, 'sparse.img');
    // The bytes the file must hold, kept outside the mount (after the commit the mount serves the copy itself).
    let model = Buffer.alloc(64 * MiB);
    const fd = fs.openSync(sparse, 'w');
    fs.ftruncateSync(fd, 64 * MiB);
    for (const at of [0, 20 * MiB, 63 * MiB]) {
      const block = randomBytes(64 << 10);
      fs.writeSync(fd, block, 0, block.length, at);
      block.copy(model, at);
    }
    fs.closeSync(fd);
    const inMount = join(m.mountpoint, 'vm1/sparse.img');
    let bulkAt = 0;
    const running = migrate(m, join(m.mountpoint, 'vm1'), m.dest, ['--mode', mode], (e) => {
      if (e.type === 'phase' && e.phase === 'bulk') bulkAt = Date.now();
    });
    await waitFor(() => bulkAt > 0 && Date.now() - bulkAt > 800, 20_000, 'the bulk copy of sparse.img');
    for (let round = 0; round < 3; round++) {
      await fsp.truncate(inMount, MiB);
      await fsp.truncate(inMount, 64 * MiB);
      model = Buffer.concat([model.subarray(0, MiB), Buffer.alloc(63 * MiB)]);
      const block = randomBytes(4096);
      const h = await fsp.open(inMount, 'r+');
      await h.write(block, 0, 4096, (10 + round) * MiB);
      await h.close();
      block.copy(model, (10 + round) * MiB);
    }
    const run = await running.done;
    expect(run.code, run.stderr).toBe(0);
    expect((await fsp.readFile(join(m.dest, 'sparse.img'))).equals(model)).toBe(true);
    expect((await fsp.readFile(inMount)).equals(model)).toBe(true);
    // Allocated like the source (about 1 MiB): not the 63 MiB the extensions span.
    const allocated = (await fsp.stat(join(m.dest, 'sparse.img'))).blocks * 512;
    expect(allocated).toBeLessThanOrEqual(MiB + 64 * 1024);
  });

  it.each(['iterative', 'mirror'])('%s: a disk discarded and zeroed (fallocate) while it is copied arrives exact, its holes holes (issue 15)', async (mode) => {
    const m = await setup(32);
    const disk = join(m.mountpoint, 'vm1/disk.img');
    let copied = 0;
    const running = migrate(m, join(m.mountpoint, 'vm1'), m.dest, ['--mode', mode, '--rate-limit', '8M', '--keep-source', '--max-downtime', '2s'], (e) => {
      if (e.type === 'progress' && e.pass === 0) copied = e.copiedBytes;
    });
    // Behind the copier (copied already: to be copied again) and ahead of it.
    await waitFor(() => copied >= 8 * MiB, 20_000, 'the bulk copy to pass 8 MiB');
    await fallocate(disk, ['-p'], MiB, MiB);
    await fallocate(disk, ['-z', '-n'], 3 * MiB + 4096, 64 * 1024);
    await fallocate(disk, ['-p'], 28 * MiB, MiB);
    const run = await running.done;
    expect(run.code, run.stderr).toBe(0);
    const source = await fsp.readFile(join(m.home, 'disk.img'));
    expect(source.subarray(MiB, 2 * MiB).equals(Buffer.alloc(MiB))).toBe(true);
    expect(sha(await fsp.readFile(join(m.dest, 'disk.img')))).toBe(sha(source));
    for (const at of [MiB, 28 * MiB]) expect(await seekDataHole(join(m.dest, 'disk.img'), at)).toEqual({ data: at + MiB, hole: at });
  });

  it('a rate-limited copy progresses chunk by chunk (issue 19: it waited for the whole rate window of every chunk in flight)', async () => {
    const m = await setup(16);
    const seen = new Map<number, Set<number>>();
    let bulk = false;
    const running = migrate(m, join(m.mountpoint, 'vm1'), m.dest, ['--mode', 'iterative', '--rate-limit', '4M', '--max-downtime', '1s'], (e) => {
      if (e.type === 'phase' && e.phase === 'bulk') bulk = true;
      if (e.type === 'progress' && e.copiedBytes > 0 && e.copiedBytes < e.totalBytes) seen.set(e.pass, (seen.get(e.pass) ?? new Set()).add(e.copiedBytes));
    });
    // Two steps of the bulk copy first: a rewrite at its very start left the walk a truncated file to copy (a
    // race the rate limit's first-second credit used to win, issue 28).
    await waitFor(() => bulk && (seen.get(0)?.size ?? 0) >= 2, 10_000, 'the bulk copy');
    // The whole disk rewritten during the bulk copy: the next pass has 16 MiB of dirty extents to copy.
    await fsp.writeFile(join(m.mountpoint, 'vm1/disk.img'), randomBytes(16 * MiB));
    const run = await running.done;
    expect(run.code, run.stderr).toBe(0);
    // 16 MiB at 4 MiB/s, progress every 0.5 s: the copied bytes show at least two steps on the way, in the bulk
    // copy and in the pass that copies the rewritten disk.
    expect(seen.get(0)?.size ?? 0).toBeGreaterThanOrEqual(2);
    expect(seen.get(1)?.size ?? 0).toBeGreaterThanOrEqual(2);
  });

  it('moves a single file, keeping the rest of the directory where it is', async () => {
    const m = await setup(8);
    const before = await fileSha(join(m.home, 'disk.img'));
    const run = await migrate(m, join(m.mountpoint, 'vm1/disk.img'), join(m.root, 'dest')).done;
    expect(run.code).toBe(0);
    expect(await fileSha(join(m.root, 'dest/disk.img'))).toBe(before);
    expect(await fileSha(join(m.mountpoint, 'vm1/disk.img'))).toBe(before);
    expect((await fsp.readdir(m.home)).sort()).toEqual(['vm.cfg', 'vm.log']);
    expect((await fsp.readdir(join(m.mountpoint, 'vm1'))).sort()).toEqual(['disk.img', 'vm.cfg', 'vm.log']);
  });

  it('a Unix socket bound in the VM home (a QEMU monitor) is still there after each move, and its server still answers (issue 15)', async () => {
    const m = await setup(8);
    const socket = join(m.mountpoint, 'vm1/qmp.sock');
    const serve = `const net = require('net'); net.createServer((c) => c.end('pong')).listen(process.argv[1], () => console.log('listening'));`;
    const server = spawn(process.execPath, ['-e', serve, socket], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise((resolve) => server.stdout.once('data', resolve));
      await fsp.chmod(socket, 0o640);
      const ask = () =>
        new Promise<string>((resolve, reject) => {
          const c = net.connect(socket);
          let got = '';
          c.on('data', (d) => (got += d));
          c.on('end', () => resolve(got));
          c.on('error', reject);
        });
      const ino = fs.lstatSync(socket).ino;
      // There and back again: each move makes a new socket node.
      for (const to of [m.dest, m.home]) {
        expect((await migrate(m, join(m.mountpoint, 'vm1'), to).done).code).toBe(0);
        const st = fs.lstatSync(join(to, 'qmp.sock'));
        expect([st.isSocket(), st.mode & 0o7777]).toEqual([true, 0o640]);
        expect([fs.lstatSync(socket).isSocket(), fs.lstatSync(socket).ino]).toEqual([true, ino]);
        expect(await ask()).toBe('pong');
      }
    } finally {
      server.kill();
    }
  });

  it('a file read before the migration keeps its page cache after the switchover (no READ requests), with the right bytes; a later change at the destination is seen', async () => {
    const m = await setup(8);
    const disk = join(m.mountpoint, 'vm1/disk.img');
    const reads = async () => {
      const before = (await m.status()).ops.read ?? 0;
      const bytes = await fsp.readFile(disk);
      return { sum: sha(bytes), reads: ((await m.status()).ops.read ?? 0) - before };
    };
    const model = await fileSha(join(m.home, 'disk.img'));
    expect((await reads()).sum).toBe(model);
    expect(await reads()).toEqual({ sum: model, reads: 0 });
    expect((await migrate(m, join(m.mountpoint, 'vm1'), m.dest).done).code).toBe(0);
    expect(fs.existsSync(m.home)).toBe(false);
    expect(await reads()).toEqual({ sum: model, reads: 0 });
    // The record followed the file to its new inode; a change made there outside the mount voids it.
    const fd = fs.openSync(join(m.dest, 'disk.img'), 'r+');
    fs.writeSync(fd, Buffer.alloc(4096, 9), 0, 4096, MiB);
    fs.closeSync(fd);
    const changed = await reads();
    expect(changed.sum).toBe(await fileSha(join(m.dest, 'disk.img')));
    expect(changed.sum).not.toBe(model);
    expect(changed.reads).toBeGreaterThan(0);
  });

  it('a writer through a shared mapping (MAP_SHARED, the default page cache) is tracked and copied: mount and destination equal its model (issue 19)', async () => {
    // Random 4 KiB stores into a shared mapping of the disk, msync now and then, until told to stop; the bytes it
    // meant to leave go to the model file.
    const writer = `
import mmap, os, random, signal, sys, time
path, model, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
fd = os.open(path, os.O_RDWR)
size = os.fstat(fd).st_size
m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
print('mapped', flush=True)
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
rng = random.Random(seed)
n = 0
while not stop:
    page = rng.randrange(size // 4096)
    m[page * 4096:(page + 1) * 4096] = rng.randbytes(4096)
    n += 1
    if n % 64 == 0:
        m.flush()
        time.sleep(0.002)
m.flush()
with open(model, 'wb') as f:
    f.write(m[:])
print('writes', n, flush=True)
`;
    const m = await setup(16);
    const disk = join(m.mountpoint, 'vm1/disk.img');
    const child = spawn('python3', ['-c', writer, disk, join(m.root, 'model'), '7'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    await waitFor(() => out.includes('mapped'), 10_000, 'the mapping');
    await new Promise((r) => setTimeout(r, 500));
    const run = await migrate(m, join(m.mountpoint, 'vm1'), m.dest, ['--rate-limit', '8M']).done;
    await new Promise((r) => setTimeout(r, 500));
    child.kill('SIGTERM');
    expect(await new Promise((resolve) => child.on('close', resolve))).toBe(0);
    expect(run.code).toBe(0);
    expect(Number(/writes (\d+)/.exec(out)?.[1])).toBeGreaterThan(1000);
    const model = await fileSha(join(m.root, 'model'));
    expect(await fileSha(join(m.dest, 'disk.img'))).toBe(model);
    expect(await fileSha(disk)).toBe(model);
  });

  it('migrates there and back again (A → B → A)', async () => {
    const m = await setup(8);
    const writer = await startWriter({ file: join(m.mountpoint, 'vm1/disk.img'), modelOut: join(m.root, 'model'), seed: 5, maxWrite: 65536, bytesPerSec: 4 * MiB });
    expect((await migrate(m, join(m.mountpoint, 'vm1'), m.dest).done).code).toBe(0);
    const back = await migrate(m, join(m.mountpoint, 'vm1'), m.home).done;
    expect(back.code).toBe(0);
    const report = await writer.stop();
    expect(report.errors).toEqual([]);
    expect(fs.existsSync(m.dest)).toBe(false);
    expect(await fileSha(join(m.home, 'disk.img'))).toBe(sha(await fsp.readFile(join(m.root, 'model'))));
    expect((await m.status()).mappings).toEqual([{ virtual: '/', backing: m.datastore }]);
  });
});

describe('ferry migrate: paths near PATH_MAX', () => {
  // Issue 15: a mount path of about 4070 bytes is past PATH_MAX (4096 with its NUL) once joined to a backing
  // directory's path: the engine's walk and copy, the ops under a migrated subtree, the sweep of a remount and
  // the removal of a source must reach it relative to a shorter directory, as ext4 users reach it with `cd`.
  const level = (i: number) => `${String(i).padStart(2, '0')}${'d'.repeat(251)}`;
  const levels = Array.from({ length: 16 }, (_, i) => level(i)).join(' '); // /vm1 + 16 x 254 bytes: 4068
  const bash = (dir: string, script: string) => run('bash', ['-c', `set -e; cd "$1"; for d in ${levels}; do [ -d "$d" ] || mkdir "$d"; cd "$d"; done; ${script}`, 'deep', dir]);
  const removeDeep = (dir: string) => run('bash', ['-c', `cd "$1" 2>/dev/null && rm -rf ${level(0)}; true`, 'deep', dir]);

  it('moves a VM home holding them, serves them at the destination, survives a remount and moves them back', async () => {
    const m = await setup(4);
    try {
      const made = await bash(join(m.mountpoint, 'vm1'), 'head -c 3000000 /dev/urandom > f; ln f g; ln -s f s; mkfifo p; sha256sum < f');
      expect(made.stderr).toBe('');
      const digest = made.stdout.split(' ')[0];
      const there = await migrate(m, join(m.mountpoint, 'vm1'), m.dest).done;
      expect(there.stderr).toBe('');
      expect(there.final).toMatchObject({ type: 'done', destination: m.dest });
      expect(there.code).toBe(0);
      const facts = 'echo "$(sha256sum < f | cut -d" " -f1) $(stat -c "%h %F" f) $(readlink s) $(stat -c %F p)"';
      expect((await bash(m.dest, facts)).stdout).toBe(`${digest} 2 regular file f fifo\n`);

      // Through the mount, now under the migrated subtree's mapping.
      const inMount = await bash(join(m.mountpoint, 'vm1'), 'printf new > n; mv n n2; chmod 640 n2; rm g; echo "$(sha256sum < f | cut -d" " -f1) $(stat -c %h f) $(stat -c %a n2) $(readlink s) $(cat n2)"');
      expect(inMount.stderr).toBe('');
      expect(inMount.stdout).toBe(`${digest} 1 640 f new\n`);
      expect((await bash(m.dest, 'cat n2')).stdout).toBe('new');

      // A remount walks every backing it serves (for files a killed daemon left) and serves the mapping again.
      expect((await m.cli(['unmount', m.mountpoint])).code).toBe(0);
      const remounted = await m.cli(['mount', m.datastore, m.mountpoint]);
      expect(remounted.stderr).toBe('');
      expect(remounted.code).toBe(0);
      expect((await bash(join(m.mountpoint, 'vm1'), 'cat n2')).stdout).toBe('new');

      // And back into the datastore: the deep source at the destination is removed.
      const back = await migrate(m, join(m.mountpoint, 'vm1'), m.home).done;
      expect(back.stderr).toBe('');
      expect(back.code).toBe(0);
      expect(fs.existsSync(m.dest)).toBe(false);
      expect((await bash(m.home, 'sha256sum < f | cut -d" " -f1; cat n2')).stdout).toBe(`${digest}\nnew`);
    } finally {
      await removeDeep(m.home);
      await removeDeep(m.dest);
    }
  });
});

describe('ferry migrate: clean aborts (VM stays on the source, partial copy removed)', () => {
  it('destination runs out of space mid-copy', async () => {
    const m = await setup(40);
    const small = join(m.root, 'small');
    await fsp.mkdir(small);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', small]);
    try {
      const before = await fileSha(join(m.home, 'disk.img'));
      const running = migrate(m, join(m.mountpoint, 'vm1'), join(small, 'vm1'), ['--rate-limit', '8M']);
      await waitFor(() => fs.existsSync(join(small, 'vm1/disk.img')), 10_000, 'copy to start');
      await fsp.writeFile(join(small, 'filler'), Buffer.alloc(40 * MiB)).catch(() => undefined);
      const run = await running.done;
      expect(run.code).toBe(1);
      expect(run.final).toMatchObject({ type: 'error', code: 'ENOSPC', sourceIntact: true });
      expect(run.final!.message).toMatch(/ran out of space/);
      expect(fs.existsSync(join(small, 'vm1'))).toBe(false);
      expect(await fileSha(join(m.home, 'disk.img'))).toBe(before);
      expect(await fileSha(join(m.mountpoint, 'vm1/disk.img'))).toBe(before);
    } finally {
      execFileSync('umount', ['-l', small]);
    }
  });

  it('a writer faster than the rate-limited copy: no convergence, with both rates named', async () => {
    // 16 MiB at 4M/s: every pass takes ~4 s and the writer redirties the whole disk within it.
    const m = await setup(16);
    const writer = await startWriter({ file: join(m.mountpoint, 'vm1/disk.img'), modelOut: join(m.root, 'model'), seed: 3, maxWrite: 512 * 1024, bytesPerSec: 24 * MiB });
    const run = await migrate(m, join(m.mountpoint, 'vm1'), m.dest, ['--mode', 'iterative', '--rate-limit', '4M', '--max-downtime', '100ms', '--max-iterations', '6']).done;
    const report = await writer.stop();
    expect(run.code).toBe(1);
    expect(run.final).toMatchObject({ type: 'error', code: 'ENOCONVERGE', sourceIntact: true });
    expect(run.final!.message).toMatch(/write rate ~[\d.]+ MB\/s, copy rate ~[\d.]+ MB\/s/);
    expect(report.errors).toEqual([]);
    expect(fs.existsSync(m.dest)).toBe(false);
    expect(await fileSha(join(m.home, 'disk.img'))).toBe(sha(await fsp.readFile(join(m.root, 'model'))));
  });

  it('ferry cancel mid-copy, and Ctrl-C on an attached migrate', async () => {
    const m = await setup(64);
    const running = migrate(m, join(m.mountpoint, 'vm1'), m.dest, ['--rate-limit', '8M']);
    await waitFor(() => fs.existsSync(join(m.dest, 'disk.img')), 10_000, 'copy to start');
    const cancelled = await m.cli(['cancel', join(m.mountpoint, 'vm1')]);
    expect(cancelled.code).toBe(0);
    const run = await running.done;
    expect(run.code).toBe(1);
    expect(run.final).toMatchObject({ type: 'error', code: 'ECANCELED', sourceIntact: true });
    expect(fs.existsSync(m.dest)).toBe(false);

    const again = migrate(m, join(m.mountpoint, 'vm1'), m.dest, ['--rate-limit', '8M']);
    await waitFor(() => fs.existsSync(join(m.dest, 'disk.img')), 10_000, 'copy to start');
    process.kill(again.pid, 'SIGINT');
    const interrupted = await again.done;
    expect(interrupted.code).toBe(1);
    expect(interrupted.final).toMatchObject({ type: 'error', code: 'ECANCELED' });
    expect(fs.existsSync(m.dest)).toBe(false);
    expect((await m.status()).mappings).toHaveLength(1);
  });
});

describe('ferry migrate: preflight refusals change nothing', () => {
  it('refuses each bad request with exit 2 and one line', async () => {
    const m = await setup(1);
    await fsp.mkdir(join(m.root, 'full'));
    await fsp.writeFile(join(m.root, 'full/vm1'), 'x');
    await fsp.mkdir(join(m.root, 'tiny'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', join(m.root, 'tiny')]);
    try {
      const cases: [string, string, RegExp][] = [
        ['vm1', join(m.mountpoint, 'elsewhere'), /inside the ferry mount/],
        ['vm1', join(m.root, 'full'), /full\/vm1 already exists/],
        ['vm1', join(m.root, 'no/such/parent'), /parent directory .* does not exist/],
        ['vm1', join(m.home, 'inner'), /inside the source tree/],
        ['vm1', join(m.datastore, 'other'), /inside .*which this mount serves/],
        ['vm1', join(m.root, 'tiny/vm1'), /not enough space/],
        ['nope', join(m.root, 'dest/x'), /no such file or directory in the mount/],
        ['', join(m.root, 'dest/x'), /cannot migrate the root/],
      ];
      for (const [path, dest, error] of cases) {
        const r = await m.cli(['migrate', join(m.mountpoint, path), '--to', dest]);
        expect(r.code, `${path} → ${dest}`).toBe(2);
        expect(r.stderr).toMatch(error);
        expect(r.stderr.trim().split('\n')).toHaveLength(1);
      }
      for (const [flag, value] of [['--max-downtime', 'soon'], ['--rate-limit', 'fast'], ['--max-iterations', '0']]) {
        const r = await m.cli(['migrate', join(m.mountpoint, 'vm1'), '--to', m.dest, flag, value]);
        expect(r.code).toBe(2);
        expect(r.stderr).toMatch(new RegExp(flag));
      }
      expect(await listTree(join(m.root, 'dest'))).toEqual([]);
      expect(await fsp.readdir(join(m.root, 'tiny'))).toEqual([]);
      expect((await fsp.readdir(m.home)).sort()).toEqual(['disk.img', 'vm.cfg', 'vm.log']);
    } finally {
      execFileSync('umount', ['-l', join(m.root, 'tiny')]);
    }
  });

  it('refuses a migration overlapping a running one, and one on a --no-track mount', async () => {
    const m = await setup(32);
    const running = migrate(m, join(m.mountpoint, 'vm1'), m.dest, ['--rate-limit', '4M']);
    await waitFor(() => fs.existsSync(join(m.dest, 'disk.img')), 10_000, 'copy to start');
    for (const path of ['vm1', 'vm1/disk.img']) {
      const r = await m.cli(['migrate', join(m.mountpoint, path), '--to', join(m.root, 'dest', 'other')]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/overlaps the running migration of \/vm1/);
    }
    const status = await m.status();
    expect(status.migrations[0]).toMatchObject({ path: '/vm1', running: true });
    await m.cli(['cancel', join(m.mountpoint, 'vm1')]);
    await running.done;

    const untracked = await mountFerry({ args: ['--no-track'] });
    mounts.push(untracked);
    await fsp.mkdir(join(untracked.datastore, 'vm'));
    const r = await untracked.cli(['migrate', join(untracked.mountpoint, 'vm'), '--to', join(untracked.root, 'd')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--no-track/);
  });
});
