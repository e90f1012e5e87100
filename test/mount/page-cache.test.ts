// Page cache for opens without O_DIRECT (the default; `--direct-io` opts out), and when the kernel may keep a
// file's cached pages across opens (src/fs/page-cache.ts). Requests are counted by the daemon's op counters.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { mountFerry, mountsUnder, type TestMount } from '../helpers/mounts.js';
import { ferry, run } from '../helpers/cli.js';
import { findMount } from '../../src/util/mounts.js';

const MiB = 1 << 20;

/** Reads `path` whole through a fresh open and close, and how many READ requests that cost the daemon. */
async function readCounting(m: TestMount, path: string): Promise<{ bytes: Buffer; reads: number }> {
  const before = (await m.status()).ops.read ?? 0;
  const bytes = fs.readFileSync(path);
  return { bytes, reads: ((await m.status()).ops.read ?? 0) - before };
}

/** Stores `data` at `offset` through a MAP_SHARED mapping of `path` (opened with `flags`), then msync. */
function mapWrite(path: string, offset: number, data: Buffer, flags = 'os.O_RDWR') {
  const script = `
import mmap, os, sys
fd = os.open(sys.argv[1], ${flags})
m = mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
data = bytes.fromhex(sys.argv[3])
m[int(sys.argv[2]):int(sys.argv[2]) + len(data)] = data
m.flush()
m.close()
os.close(fd)
`;
  return run('python3', ['-c', script, path, String(offset), data.toString('hex')]);
}

/** The most requests the kernel had sent and the daemon not yet answered, sampled for 1 s while `work` runs. */
async function mostWaiting(m: TestMount, work: () => Promise<{ code: number }>): Promise<number> {
  const { minor } = (await findMount(m.mountpoint))!;
  const connections = '/sys/fs/fuse/connections';
  const mountedHere = fs.readdirSync(connections).length === 0 && (await run('mount', ['-t', 'fusectl', 'fusectl', connections])).code === 0;
  try {
    const running = work();
    await new Promise((r) => setTimeout(r, 1000));
    let most = 0;
    for (const until = Date.now() + 1000; Date.now() < until; ) most = Math.max(most, Number(await fsp.readFile(`${connections}/${minor}/waiting`, 'utf8')));
    expect((await running).code).toBe(0);
    return most;
  } finally {
    if (mountedHere) await run('umount', [connections]);
  }
}

const fio = (file: string, ...extra: string[]) => () =>
  run('fio', ['--name=one-file', `--filename=${file}`, '--rw=randwrite', '--bs=4k', '--numjobs=8', '--thread', '--ioengine=psync',
    '--time_based', '--runtime=3', '--size=16M', '--allow_file_create=0', ...(extra.length > 0 ? extra : ['--output=/dev/null'])]);

describe('page cache by default', () => {
  let m: TestMount;
  const inMount = (p: string) => join(m.mountpoint, p);
  const inStore = (p: string) => join(m.datastore, p);

  beforeAll(async () => {
    m = await mountFerry();
  });
  afterAll(async () => {
    await m?.stop();
  });

  it('a buffered reread of a file is served from the page cache: no READ requests', async () => {
    const data = randomBytes(4 * MiB);
    await fsp.writeFile(inStore('reread'), data);
    const first = await readCounting(m, inMount('reread'));
    expect(first.bytes.equals(data)).toBe(true);
    expect(first.reads).toBeGreaterThan(0);
    const again = await readCounting(m, inMount('reread'));
    expect(again.bytes.equals(data)).toBe(true);
    expect(again.reads).toBe(0);
  });

  it('a change written straight to the backing file between two opens is seen by the second open; unchanged, the cache is kept', async () => {
    const data = randomBytes(MiB);
    await fsp.writeFile(inStore('outside'), data);
    expect((await readCounting(m, inMount('outside'))).bytes.equals(data)).toBe(true);
    // Same size, one page in the middle: only the identity's times tell.
    const page = randomBytes(4096);
    const fd = fs.openSync(inStore('outside'), 'r+');
    fs.writeSync(fd, page, 0, 4096, 512 * 1024);
    fs.closeSync(fd);
    page.copy(data, 512 * 1024);
    const changed = await readCounting(m, inMount('outside'));
    expect(changed.bytes.equals(data)).toBe(true);
    expect(changed.reads).toBeGreaterThan(0);
    const kept = await readCounting(m, inMount('outside'));
    expect(kept.bytes.equals(data)).toBe(true);
    expect(kept.reads).toBe(0);
  });

  it('a write through another name of a hard-linked file (another kernel inode) is seen through the first name, after a handle of it closed', async () => {
    const data = randomBytes(MiB);
    await fsp.writeFile(inStore('linked'), data);
    await fsp.link(inMount('linked'), inMount('linked2'));
    // Pages of 'linked' cached, through a handle that stays open across the other name's write.
    const fd = fs.openSync(inMount('linked'), 'r');
    expect(fs.readFileSync(fd).equals(data)).toBe(true);
    const page = randomBytes(4096);
    const other = fs.openSync(inMount('linked2'), 'r+');
    fs.writeSync(other, page, 0, 4096, 4096);
    fs.closeSync(other);
    page.copy(data, 4096);
    fs.closeSync(fd);
    expect(fs.readFileSync(inStore('linked')).equals(data)).toBe(true);
    expect(fs.readFileSync(inMount('linked')).equals(data)).toBe(true);
    expect(fs.readFileSync(inMount('linked2')).equals(data)).toBe(true);
  });

  it('a hard-linked file opens direct_io: a write through one name is seen at once through a handle open on the other', async () => {
    const data = randomBytes(MiB);
    await fsp.writeFile(inStore('twins'), data);
    await fsp.link(inStore('twins'), inStore('twins2'));
    const fd = fs.openSync(inMount('twins'), 'r');
    expect(fs.readFileSync(fd).equals(data)).toBe(true);
    const page = randomBytes(4096);
    const other = fs.openSync(inMount('twins2'), 'r+');
    fs.writeSync(other, page, 0, 4096, 8192);
    page.copy(data, 8192);
    // The same handle, still open, reads the page again: stale if the kernel had kept its own copy of it.
    const again = Buffer.alloc(4096);
    expect(fs.readSync(fd, again, 0, 4096, 8192)).toBe(4096);
    expect(again.equals(page)).toBe(true);
    fs.closeSync(other);
    fs.closeSync(fd);
    const reread = await readCounting(m, inMount('twins'));
    expect(reread.bytes.equals(data)).toBe(true);
    expect(reread.reads).toBeGreaterThan(0);
  });

  it('MAP_SHARED stores through the mount land in the backing file after msync (ENODEV before), also on an O_DIRECT open', async () => {
    const data = randomBytes(2 * MiB);
    await fsp.writeFile(inStore('mapped'), data);
    const page = randomBytes(4096);
    expect(await mapWrite(inMount('mapped'), MiB, page)).toEqual({ code: 0, stdout: '', stderr: '' });
    page.copy(data, MiB);
    expect(fs.readFileSync(inStore('mapped')).equals(data)).toBe(true);
    // FUSE_DIRECT_IO_ALLOW_MMAP: a direct_io open maps shared too.
    const other = randomBytes(100);
    expect(await mapWrite(inMount('mapped'), 4096 + 7, other, 'os.O_RDWR | os.O_DIRECT')).toEqual({ code: 0, stdout: '', stderr: '' });
    other.copy(data, 4096 + 7);
    expect(fs.readFileSync(inStore('mapped')).equals(data)).toBe(true);
    expect(fs.readFileSync(inMount('mapped')).equals(data)).toBe(true);
  });

  it('buffered writers of one file are serialized by the kernel (inode lock held across each write), and every write lands', async () => {
    await fsp.writeFile(inStore('serial'), Buffer.alloc(16 * MiB, 1));
    const before = (await m.status()).ops.write ?? 0;
    const report = join(m.root, 'fio.json');
    expect(await mostWaiting(m, fio(inMount('serial'), '--output-format=json', `--output=${report}`))).toBeLessThanOrEqual(1);
    // Write-through: each 4 KiB write(2) was one WRITE request before it returned.
    const jobs: { write: { total_ios: number } }[] = JSON.parse(await fsp.readFile(report, 'utf8')).jobs;
    const written = jobs.reduce((n, j) => n + j.write.total_ios, 0);
    expect(written).toBeGreaterThan(100);
    expect(((await m.status()).ops.write ?? 0) - before).toBe(written);
    expect(fs.readFileSync(inMount('serial')).equals(fs.readFileSync(inStore('serial')))).toBe(true);
  });
});

describe('--direct-io: every open is direct_io, as before', () => {
  let m: TestMount;
  const inMount = (p: string) => join(m.mountpoint, p);
  const inStore = (p: string) => join(m.datastore, p);

  beforeAll(async () => {
    m = await mountFerry({ args: ['-o', 'direct_io'] });
  });
  afterAll(async () => {
    await m?.stop();
  });

  it('(as -o direct_io) a reread is a request again; buffered writers of one file run in parallel', async () => {
    const data = randomBytes(MiB);
    await fsp.writeFile(inStore('reread'), data);
    await readCounting(m, inMount('reread'));
    const again = await readCounting(m, inMount('reread'));
    expect(again.bytes.equals(data)).toBe(true);
    expect(again.reads).toBeGreaterThan(0);
    await fsp.writeFile(inStore('parallel'), Buffer.alloc(16 * MiB, 1));
    expect(await mostWaiting(m, fio(inMount('parallel')))).toBeGreaterThanOrEqual(4);
  });

  it('--direct-io with --mmap: one line, exit 2, nothing mounted', async () => {
    const before = await mountsUnder(m.root);
    const spare = join(m.root, 'spare');
    await fsp.mkdir(spare);
    const r = await ferry(['mount', m.datastore, spare, '--direct-io', '--mmap', '--state-dir', m.stateDir]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--direct-io and --mmap contradict each other/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(await mountsUnder(m.root)).toEqual(before);
  });
});
