// One test per numbered change ferry made to fuse-native (native/, native-notes/fuse-native.md): each fails on
// upstream fuse-native.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import { spawn } from 'node:child_process';
import net from 'node:net';
import fsp from 'node:fs/promises';
import { join } from 'node:path';
import { mountFerry, type TestMount } from '../helpers/mounts.js';
import { run } from '../helpers/cli.js';
import { findMount } from '../../src/util/mounts.js';
import { nativeSourceHash } from '../../native/source-hash.mjs';

let m: TestMount;
const inMount = (p: string) => join(m.mountpoint, p);
const inStore = (p: string) => join(m.datastore, p);
const asNobody = (...cmd: string[]) => run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', ...cmd]);

beforeAll(async () => {
  m = await mountFerry({ args: ['--allow-other'] });
  await fsp.chmod(m.root, 0o755);
  await fsp.chmod(m.datastore, 0o777);
});
afterAll(async () => {
  await m?.stop();
});

describe('fuse-native changes', () => {
  it('001 mount options: a 1 MiB write arrives as one request (with the loop\'s INIT reply), not 256 of 4 KiB', async () => {
    await fsp.writeFile(inMount('big'), '');
    const before = (await m.status()).ops.write ?? 0;
    const fd = fs.openSync(inMount('big'), 'r+');
    fs.writeSync(fd, Buffer.alloc(1 << 20, 1), 0, 1 << 20, 0);
    fs.closeSync(fd);
    // 1, or 2 when the user buffer is not page-aligned (the kernel splits requests at page boundaries).
    expect((await m.status()).ops.write - before).toBeGreaterThanOrEqual(1);
    expect((await m.status()).ops.write - before).toBeLessThanOrEqual(2);
  });

  it('002 stat: nanosecond timestamps and the datastore inode number', async () => {
    await fsp.writeFile(inStore('ns'), 'x');
    await run('touch', ['-d', '2001-02-03 04:05:06.123456789', inStore('ns')]);
    const [viaMount, direct] = [fs.statSync(inMount('ns'), { bigint: true }), fs.statSync(inStore('ns'), { bigint: true })];
    expect(viaMount.mtimeNs).toBe(direct.mtimeNs);
    expect(viaMount.mtimeNs % 1_000_000_000n).toBe(123456789n);
    expect(viaMount.ino).toBe(direct.ino);
  });

  it('016 mknod: Unix sockets can be bound in the mount by any user (owned by them), connected to, and renamed, linked, chmodded and removed like files (issue 15)', async () => {
    // A server as another user binds a socket in the mount (what QEMU's monitor and libvirt do next to a disk).
    const serve = `const net = require('net'); const s = net.createServer((c) => c.end('pong')); s.listen(process.argv[1], () => console.log('listening'));`;
    const server = spawn('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', serve, inMount('mon.sock')], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    server.stdout.on('data', (d) => (out += d));
    server.stderr.on('data', (d) => (out += d));
    try {
      for (let i = 0; i < 100 && !out.includes('listening'); i++) await new Promise((r) => setTimeout(r, 50));
      expect(out).toContain('listening');
      const st = fs.lstatSync(inStore('mon.sock'));
      expect([st.isSocket(), st.uid, st.gid]).toEqual([true, 65534, 65534]);
      expect(fs.lstatSync(inMount('mon.sock')).isSocket()).toBe(true);
      const reply = await new Promise<string>((resolve, reject) => {
        const c = net.connect(inMount('mon.sock'));
        let got = '';
        c.on('data', (d) => (got += d));
        c.on('end', () => resolve(got));
        c.on('error', reject);
      });
      expect(reply).toBe('pong');
    } finally {
      server.kill();
    }
    await fsp.chmod(inMount('mon.sock'), 0o600);
    expect(fs.lstatSync(inStore('mon.sock')).mode & 0o7777).toBe(0o600);
    await fsp.link(inMount('mon.sock'), inMount('mon.sock.link'));
    await fsp.rename(inMount('mon.sock'), inMount('qmp.sock'));
    expect(fs.lstatSync(inStore('qmp.sock')).nlink).toBe(2);
    await fsp.unlink(inMount('qmp.sock'));
    await fsp.unlink(inMount('mon.sock.link'));
    expect(fs.existsSync(inStore('qmp.sock'))).toBe(false);
    // And the other node types still come out exact.
    expect((await run('mknod', ['-m', '640', inMount('null2'), 'c', '1', '3'])).code).toBe(0);
    const dev = fs.lstatSync(inStore('null2'));
    expect([dev.isCharacterDevice(), dev.rdev, dev.mode & 0o7777]).toEqual([true, fs.statSync('/dev/null').rdev, 0o640]);
  });

  it('017 open credentials: a write by another user drops setuid and setgid, as on a local filesystem; root\'s write keeps them (issue 15)', async () => {
    for (const [mode, after] of [
      [0o4777, 0o777],
      [0o2777, 0o777],
      [0o6777, 0o777],
      [0o2767, 0o767], // setgid without group execute too: nobody is not in the file's group (Linux 6.2+, as ext4)
    ]) {
      await fsp.writeFile(inMount('suid'), 'x');
      await fsp.chmod(inMount('suid'), mode);
      expect((await asNobody('sh', '-c', `echo more >> ${inMount('suid')}`)).code).toBe(0);
      expect([mode.toString(8), fs.statSync(inStore('suid')).mode & 0o7777]).toEqual([mode.toString(8), after]);
      await fsp.unlink(inMount('suid'));
    }
    await fsp.writeFile(inMount('suid'), 'x');
    await fsp.chmod(inMount('suid'), 0o6755);
    await fsp.appendFile(inMount('suid'), 'by root');
    expect(fs.statSync(inStore('suid')).mode & 0o7777).toBe(0o6755);
  });

  it("019 caller pid: a truncate by path says who, and the calling thread's groups decide a setgid without group execute", async () => {
    for (const [groups, after] of [['--clear-groups', 0o767], ['--groups=4321', 0o2767]] as const) {
      await fsp.writeFile(inMount('sgid'), 'x');
      await fsp.chown(inMount('sgid'), 0, 4321);
      await fsp.chmod(inMount('sgid'), 0o2767);
      const r = await run('setpriv', ['--reuid=65534', '--regid=65534', groups, 'truncate', '-s', '0', inMount('sgid')]);
      expect(r.stderr).toBe('');
      expect([groups, fs.statSync(inStore('sgid')).mode & 0o7777]).toEqual([groups, after]);
      await fsp.unlink(inMount('sgid'));
    }
  });

  it('003 utimens: both times with sub-millisecond precision, one time alone (UTIME_OMIT), now (UTIME_NOW)', async () => {
    await fsp.writeFile(inMount('times'), 'x');
    await run('touch', ['-d', '2001-02-03 04:05:06.123456789', inMount('times')]);
    let st = fs.statSync(inStore('times'), { bigint: true });
    expect(st.mtimeNs / 1000n).toBe(981173106123456n);
    expect(st.atimeNs / 1000n).toBe(981173106123456n);
    await run('touch', ['-m', '-d', '2010-01-01 00:00:00', inMount('times')]);
    st = fs.statSync(inStore('times'), { bigint: true });
    expect(new Date(Number(st.mtimeNs / 1_000_000n)).toISOString()).toBe('2010-01-01T00:00:00.000Z');
    expect(st.atimeNs / 1000n).toBe(981173106123456n);
    await run('touch', [inMount('times')]);
    st = fs.statSync(inStore('times'), { bigint: true });
    expect(Math.abs(Number(st.mtimeNs / 1_000_000n) - Date.now())).toBeLessThan(10_000);
  });

  it('004 caller credentials: what another user creates is theirs, and a setgid directory keeps its group', async () => {
    expect((await asNobody('sh', '-c', `echo hi > ${inMount('by-nobody')} && mkdir ${inMount('dir-by-nobody')} && ln -s target ${inMount('link-by-nobody')} && mkfifo ${inMount('fifo-by-nobody')}`)).code).toBe(0);
    for (const name of ['by-nobody', 'dir-by-nobody', 'link-by-nobody', 'fifo-by-nobody']) {
      const st = fs.lstatSync(inStore(name));
      expect([name, st.uid, st.gid]).toEqual([name, 65534, 65534]);
    }
    expect(fs.lstatSync(inStore('fifo-by-nobody')).isFIFO()).toBe(true);
    await fsp.mkdir(inMount('shared'), { mode: 0o2777 });
    await fsp.chown(inMount('shared'), 0, 4321);
    await fsp.chmod(inMount('shared'), 0o2777);
    expect((await asNobody('sh', '-c', `echo hi > ${inMount('shared/f')}`)).code).toBe(0);
    expect([fs.statSync(inStore('shared/f')).uid, fs.statSync(inStore('shared/f')).gid]).toEqual([65534, 4321]);
    // The creator can reopen what it created: the point of the patch for QEMU running as its own user.
    expect((await asNobody('sh', '-c', `cat ${inMount('by-nobody')}`)).stdout).toBe('hi\n');
  });

  it('004 create flags: open files are recorded with the flags they were created with', async () => {
    const fd = fs.openSync(inMount('flags'), fs.constants.O_CREAT | fs.constants.O_WRONLY | fs.constants.O_APPEND, 0o644);
    try {
      const open = (await m.status()).openFiles.find((f: { path: string }) => f.path === '/flags');
      expect(open.flags & 3).toBe(fs.constants.O_WRONLY);
      expect(open.flags & fs.constants.O_APPEND).toBe(fs.constants.O_APPEND);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('005 open results: file handle 0 is a real handle', async () => {
    await fsp.writeFile(inStore('zero'), 'handle zero');
    const fd = fs.openSync(inMount('zero'), 'r');
    try {
      const open = (await m.status()).openFiles;
      expect(open).toEqual([{ fh: 0, path: '/zero', flags: expect.any(Number) }]);
      expect(open[0].flags & 3).toBe(fs.constants.O_RDONLY);
      const buf = Buffer.alloc(11);
      fs.readSync(fd, buf, 0, 11, 0);
      expect(buf.toString()).toBe('handle zero');
    } finally {
      fs.closeSync(fd);
    }
  });

  it('006 fgetattr: a new file\'s attributes come from its handle', async () => {
    // libfuse asks for the attributes of a file it just created through the new handle (fgetattr);
    // upstream fuse-native sent that to getattr by path instead.
    const before = (await m.status()).ops.fgetattr ?? 0;
    const fd = fs.openSync(inMount('fstat'), 'w+');
    fs.closeSync(fd);
    expect((await m.status()).ops.fgetattr).toBe(before + 1);
    expect(fs.statSync(inMount('fstat')).size).toBe(0);
  });

  it('007 + 009 xattrs: passed through, with exact sizes for a value larger than the first buffer', async () => {
    await fsp.writeFile(inMount('xa'), 'x');
    const value = 'v'.repeat(300);
    const py = (code: string) => run('python3', ['-c', code]);
    expect((await py(`import os; os.setxattr('${inMount('xa')}', 'user.big', b'${value}'); os.setxattr('${inMount('xa')}', 'user.small', b'1')`)).code).toBe(0);
    const read = await py(`import os; print(len(os.getxattr('${inMount('xa')}', 'user.big')), sorted(os.listxattr('${inMount('xa')}')))`);
    expect(read.stdout.trim()).toBe("300 ['user.big', 'user.small']");
    const direct = await py(`import os; print(os.getxattr('${inStore('xa')}', 'user.big').decode())`);
    expect(direct.stdout.trim()).toBe(value);
    const create = await py(`import os\ntry:\n  os.setxattr('${inMount('xa')}', 'user.small', b'2', os.XATTR_CREATE)\nexcept OSError as e: print(e.errno)`);
    expect(create.stdout.trim()).toBe('17');
    expect((await py(`import os; os.removexattr('${inMount('xa')}', 'user.small'); print(os.listxattr('${inMount('xa')}'))`)).stdout.trim()).toBe("['user.big']");
  });

  it('011 worker pool: under 16 concurrent readers no FUSE worker thread ends (libfuse 2.9 ended ~90 a second)', async () => {
    const { pid } = await m.status();
    await fsp.writeFile(inMount('pool'), Buffer.alloc(16 << 20, 7));
    const threads = () => new Set(fs.readdirSync(`/proc/${pid}/task`));
    const fio = run('fio', ['--name=pool', `--filename=${inMount('pool')}`, '--rw=randread', '--bs=4k', '--numjobs=16', '--thread',
      '--direct=1', '--ioengine=psync', '--time_based', '--runtime=4', '--size=16M', '--allow_file_create=0', '--output=/dev/null']);
    await new Promise((r) => setTimeout(r, 1500));
    const early = threads();
    await new Promise((r) => setTimeout(r, 2000));
    const late = threads();
    expect((await fio).code).toBe(0);
    expect([...early].filter((tid) => !late.has(tid))).toEqual([]);
    // The pool's cap (256 workers) plus Node's own threads.
    expect(late.size).toBeLessThan(300);
  });

  it('013 parallel writes: 8 O_DIRECT writers of one file have several writes in flight at once (libfuse 2.9 sends them one at a time)', async () => {
    await fsp.writeFile(inStore('parallel'), Buffer.alloc(16 << 20, 1));
    const { minor } = (await findMount(m.mountpoint))!;
    const connections = '/sys/fs/fuse/connections';
    const mountedHere = fs.readdirSync(connections).length === 0 && (await run('mount', ['-t', 'fusectl', 'fusectl', connections])).code === 0;
    try {
      const fio = run('fio', ['--name=parallel', `--filename=${inMount('parallel')}`, '--rw=randwrite', '--bs=4k', '--numjobs=8', '--thread',
        '--ioengine=psync', '--direct=1', '--time_based', '--runtime=3', '--size=16M', '--allow_file_create=0', '--output=/dev/null']);
      await new Promise((r) => setTimeout(r, 1000));
      // Requests the kernel has sent and the daemon not yet answered: with serialized writes, at most one. O_DIRECT:
      // page-cached writes to one file are serialized by the kernel whatever the flag (page-cache.test.ts).
      let most = 0;
      for (const until = Date.now() + 1000; Date.now() < until; ) most = Math.max(most, Number(await fsp.readFile(`${connections}/${minor}/waiting`, 'utf8')));
      expect((await fio).code).toBe(0);
      expect(most).toBeGreaterThanOrEqual(4);
    } finally {
      if (mountedHere) await run('umount', [connections]);
    }
  });

  it('008 identity: the daemon logs which addon it loaded, the hash of the sources it was built from, and its data path (010)', async () => {
    const log = await fsp.readFile(join(m.stateDir, 'logs', (await fsp.readdir(join(m.stateDir, 'logs'))).find((n) => n.endsWith('.log'))!), 'utf8');
    const line = log.split('\n').find((l) => l.includes('loaded fuse-native'))!;
    expect(JSON.parse(line)).toMatchObject({ binding: expect.stringMatching(/native\/fuse-native\/build\/Release\/fuse\.node$/),
      sourceHash: await nativeSourceHash(),
      dataPath: process.env.FERRY_NATIVE === '0' ? 'js' : 'native',
    });
  });
});
