// What ferry's request loop negotiates with the kernel beyond libfuse 2.9 (native/ferry/negotiate.h,
// native-notes/io-routes.md): the size of the requests and how many arrive at once. Each case counts requests
// (the daemon's op counters and the loop's largest request) and compares bytes; none times anything.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { mountFerry, type TestMount } from '../helpers/mounts.js';
import { run } from '../helpers/cli.js';
import { findMount } from '../../src/util/mounts.js';

const MiB = 1 << 20;

describe('requests (direct_io opens)', () => {
  let m: TestMount;
  const inMount = (p: string) => join(m.mountpoint, p);
  const inStore = (p: string) => join(m.datastore, p);

  beforeAll(async () => {
    m = await mountFerry();
  });
  afterAll(async () => {
    await m?.stop();
  });

  it('1 MiB requests: a 1 MiB O_DIRECT write and read each arrive as one request of 1048576 bytes', async () => {
    const data = randomBytes(MiB);
    await fsp.writeFile(join(m.root, 'src'), data);
    const before = await m.status();
    const w = await run('dd', [`if=${join(m.root, 'src')}`, `of=${inMount('big')}`, 'bs=1M', 'count=1', 'oflag=direct', 'status=none']);
    expect(w).toEqual({ code: 0, stdout: '', stderr: '' });
    const written = await m.status();
    expect([written.ops.write - (before.ops.write ?? 0), written.requests?.largestWrite]).toEqual([1, MiB]);
    expect(fs.readFileSync(inStore('big')).equals(data)).toBe(true);

    const r = await run('dd', [`if=${inMount('big')}`, `of=${join(m.root, 'back')}`, 'bs=1M', 'count=1', 'iflag=direct', 'status=none']);
    expect(r).toEqual({ code: 0, stdout: '', stderr: '' });
    const read = await m.status();
    expect([read.ops.read - (written.ops.read ?? 0), read.requests?.largestRead]).toEqual([1, MiB]);
    expect(fs.readFileSync(join(m.root, 'back')).equals(data)).toBe(true);
  });

  it('async direct I/O: one submitter with 16 O_DIRECT writes queued (libaio) has at least 8 in flight (libfuse 2.9: 1)', async () => {
    const data = randomBytes(16 * MiB);
    await fsp.writeFile(inStore('aio'), data);
    const { minor } = (await findMount(m.mountpoint))!;
    const connections = '/sys/fs/fuse/connections';
    const mountedHere = fs.readdirSync(connections).length === 0 && (await run('mount', ['-t', 'fusectl', 'fusectl', connections])).code === 0;
    try {
      const fio = run('fio', ['--name=aio', `--filename=${inMount('aio')}`, '--rw=randwrite', '--bs=4k', '--ioengine=libaio', '--iodepth=16',
        '--direct=1', '--time_based', '--runtime=3', '--size=16M', '--allow_file_create=0', '--output=/dev/null']);
      await new Promise((r) => setTimeout(r, 1000));
      // Requests the kernel has sent and the daemon not yet answered.
      let most = 0;
      for (const until = Date.now() + 1000; Date.now() < until; ) most = Math.max(most, Number(await fsp.readFile(`${connections}/${minor}/waiting`, 'utf8')));
      expect((await fio).code).toBe(0);
      expect(most).toBeGreaterThanOrEqual(8);
      expect(fs.readFileSync(inMount('aio')).equals(fs.readFileSync(inStore('aio')))).toBe(true);
    } finally {
      if (mountedHere) await run('umount', [connections]);
    }
  });
});

describe('requests (page-cached opens, --mmap)', () => {
  let m: TestMount;
  const inMount = (p: string) => join(m.mountpoint, p);
  const inStore = (p: string) => join(m.datastore, p);

  const asNobody = (...cmd: string[]) => run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', ...cmd]);

  beforeAll(async () => {
    m = await mountFerry({ args: ['--mmap', '--allow-other'] });
    await fsp.chmod(m.root, 0o755);
    await fsp.chmod(m.datastore, 0o777);
  });
  afterAll(async () => {
    await m?.stop();
  });

  it("sequential reads arrive as 1 MiB requests: the FUSE bdi's readahead is raised to 1 MiB", async () => {
    const { minor } = (await findMount(m.mountpoint))!;
    const data = randomBytes(16 * MiB);
    await fsp.writeFile(inStore('seq'), data);
    const r = await run('dd', [`if=${inMount('seq')}`, `of=${join(m.root, 'seq')}`, 'bs=1M', 'status=none']);
    expect(r).toEqual({ code: 0, stdout: '', stderr: '' });
    expect(fs.readFileSync(join(m.root, 'seq')).equals(data)).toBe(true);
    expect((await m.status()).requests.largestRead).toBe(MiB);
    expect(fs.readFileSync(`/sys/class/bdi/0:${minor}/read_ahead_kb`, 'utf8').trim()).toBe('1024');
  });

  it('1000 buffered 4 KiB writes cost at most one getxattr (the kernel leaves suid/sgid to ferry: HANDLE_KILLPRIV_V2)', async () => {
    await fsp.writeFile(inStore('buffered'), Buffer.alloc(4 * MiB));
    const before = await m.status();
    const w = await run('dd', ['if=/dev/urandom', `of=${inMount('buffered')}`, 'bs=4k', 'count=1000', 'conv=notrunc', 'status=none']);
    expect(w).toEqual({ code: 0, stdout: '', stderr: '' });
    const after = await m.status();
    expect(after.ops.write - (before.ops.write ?? 0)).toBe(1000);
    expect((after.ops.getxattr ?? 0) - (before.ops.getxattr ?? 0)).toBeLessThanOrEqual(1);
    expect(fs.readFileSync(inMount('buffered')).equals(fs.readFileSync(inStore('buffered')))).toBe(true);
  });

  it("a buffered write by another user drops setuid and setgid, as ext4 does; root's keeps them", async () => {
    for (const [mode, after] of [
      [0o4777, 0o777],
      [0o2777, 0o777],
      [0o6777, 0o777],
      [0o2767, 0o767], // setgid without group execute too: nobody is not in the file's group
    ]) {
      await fsp.writeFile(inMount('suid'), 'x');
      await fsp.chmod(inMount('suid'), mode);
      expect((await asNobody('sh', '-c', `echo more >> ${inMount('suid')}`)).code).toBe(0);
      expect([mode.toString(8), fs.statSync(inStore('suid')).mode & 0o7777]).toEqual([mode.toString(8), after]);
      expect(fs.readFileSync(inStore('suid'), 'utf8')).toBe('xmore\n');
      await fsp.unlink(inMount('suid'));
    }
    await fsp.writeFile(inMount('suid'), 'x');
    await fsp.chmod(inMount('suid'), 0o6755);
    await fsp.appendFile(inMount('suid'), 'by root');
    expect(fs.statSync(inStore('suid')).mode & 0o7777).toBe(0o6755);
  });

  it('a truncate or O_TRUNC open by another user drops setuid and setgid, as ext4 does', async () => {
    for (const cmd of [['truncate', '-s', '0'], ['sh', '-c', 'printf y > "$0"']]) {
      await fsp.writeFile(inMount('trunc'), 'x');
      await fsp.chmod(inMount('trunc'), 0o6777);
      const r = await asNobody(...cmd, inMount('trunc'));
      expect([cmd[0], r.code, r.stderr]).toEqual([cmd[0], 0, '']);
      expect([cmd[0], fs.statSync(inStore('trunc')).mode & 0o7777]).toEqual([cmd[0], 0o777]);
      await fsp.unlink(inMount('trunc'));
    }
  });
});
