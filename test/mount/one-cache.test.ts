import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { mountFerry, type TestMount } from '../helpers/mounts.js';
import { run } from '../helpers/cli.js';
import { migrate, waitFor } from '../helpers/migration.js';
import { dropCache, resident } from '../helpers/host-cache.js';

// Issue 29 goal 2: a page-cached open's data is cached once, in the FUSE inode's page cache; the daemon reads the
// backing file buffered (its readahead works) and drops each range it read (POSIX_FADV_DONTNEED), so none of it
// stays in the backing file's cache (native-notes/io-routes.md). Both paths.
const mode = process.env.FERRY_NATIVE === '0' ? 'js' : 'native';
const MiB = 1 << 20;

/** Drops `file`'s cached pages, and checks none is left. */
async function dropAll(file: string): Promise<void> {
  await dropCache(file);
  expect(await resident(file)).toBe(0);
}

const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** sha256 of `file` read buffered through the mount with dd (page-cache READs). */
async function readThrough(file: string): Promise<string> {
  const r = await run('sh', ['-c', `dd if=${file} bs=1M status=none | sha256sum`]);
  expect(r.code, r.stderr).toBe(0);
  return r.stdout.split(' ')[0];
}

describe(`one cache: page-cached reads leave nothing in the backing file's cache (${mode})`, () => {
  let m: TestMount;
  beforeAll(async () => {
    m = await mountFerry({ args: ['--mmap'] });
  });
  afterAll(async () => {
    await m?.stop();
  });

  it('a 64 MiB file read twice through the mount: bytes equal, 0 bytes of the backing file cached, no fallback', async () => {
    const backing = join(m.datastore, 'big.img');
    const data = randomBytes(64 * MiB);
    fs.writeFileSync(backing, data);
    await dropAll(backing);
    const fallbacks = (await m.status()).dataPath.directFallback;
    for (let pass = 0; pass < 2; pass++) expect(await readThrough(join(m.mountpoint, 'big.img'))).toBe(sha(data));
    expect(await resident(backing)).toBe(0);
    // Page-cache READs are page-aligned: none fell back.
    expect((await m.status()).dataPath.directFallback).toBe(fallbacks);
  });

  it('a file whose size is not a multiple of 4096: the tail page reads exact, nothing cached', async () => {
    const backing = join(m.datastore, 'tail.img');
    const data = randomBytes(3 * 4096 + 1234);
    fs.writeFileSync(backing, data);
    await dropAll(backing);
    const fallbacks = (await m.status()).dataPath.directFallback;
    expect(fs.readFileSync(join(m.mountpoint, 'tail.img')).equals(data)).toBe(true);
    expect(await resident(backing)).toBe(0);
    expect((await m.status()).dataPath.directFallback).toBe(fallbacks);
  });

  it.runIf(mode === 'native')('a random page-cached reader gets the read-around, and each page it read is dropped', async () => {
    const backing = join(m.datastore, 'around.img');
    const data = randomBytes(4 * MiB);
    fs.writeFileSync(backing, data);
    await dropAll(backing);
    // POSIX_FADV_RANDOM on the mount's file: the kernel sends exactly the 4 KiB asked for, not a readahead window.
    const spots = [MiB + 8192, MiB + 65536];
    const r = await run('python3', ['-c', `import os,sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
for off in map(int, sys.argv[2:]): sys.stdout.write(os.pread(fd, 4096, off).hex() + '\\n')`, join(m.mountpoint, 'around.img'), ...spots.map(String)]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim().split('\n')).toEqual(spots.map((off) => data.subarray(off, off + 4096).toString('hex')));
    // The first read missed: the daemon fetched the 128 KiB around it (the default --read-around); the second was
    // among them. Both read pages went to the mount's cache and were dropped from the backing file's; the other 30
    // stay for the reads that want them (a sequential reader's would have taken the O_DIRECT twin: nothing cached).
    expect(await resident(backing)).toBe(128 * 1024 - 2 * 4096);
  });

  it('a file written through the mount (buffered) reads back exact through a new open', async () => {
    const backing = join(m.datastore, 'written.img');
    const data = randomBytes(4 * MiB);
    fs.writeFileSync(backing, data);
    await dropAll(backing);
    // Unaligned and page-sized writes through a page-cached open: they stay buffered on the backing file, so none
    // of them takes direct.c's fallback.
    const fallbacks = (await m.status()).dataPath.directFallback;
    const fd = fs.openSync(join(m.mountpoint, 'written.img'), 'r+');
    const patches: [number, Buffer][] = [[300, randomBytes(100)], [MiB, randomBytes(65536)], [3 * MiB + 4000, randomBytes(9000)]];
    for (const [offset, bytes] of patches) {
      fs.writeSync(fd, bytes, 0, bytes.length, offset);
      bytes.copy(data, offset);
    }
    fs.closeSync(fd);
    // A new open drops the FUSE inode's pages (no keep_cache): the reads reach the daemon, which reads the dirty
    // backing pages (its drop leaves dirty pages alone).
    expect(await readThrough(join(m.mountpoint, 'written.img'))).toBe(sha(data));
    expect(fs.readFileSync(backing).equals(data)).toBe(true);
    expect((await m.status()).dataPath.directFallback).toBe(fallbacks);
  });
});

/** A page-cached reader that keeps its handle: rereads the whole file (dropping the mount's pages first) until SIGTERM. */
const READER = `
import os, sys, signal, hashlib
path, out = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDONLY)
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
passes = 0
bad = 0
expected = sys.argv[3]
print('ready', flush=True)
while not stop:
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    h = hashlib.sha256()
    off = 0
    while True:
        b = os.pread(fd, 1 << 20, off)
        if not b: break
        h.update(b)
        off += len(b)
    passes += 1
    if h.hexdigest() != expected: bad += 1
    with open(out + '.tmp', 'w') as f: f.write(f'{passes} {bad}')
    os.rename(out + '.tmp', out)
print(passes, bad, flush=True)
`;

describe(`one cache through a migration (${mode})`, () => {
  let m: TestMount;
  beforeAll(async () => {
    m = await mountFerry({ args: ['--mmap'] });
  });
  afterAll(async () => {
    await m?.stop();
  });

  it('a page-cached reader keeps its handle over the switch: the destination stays uncached, bytes right', async () => {
    fs.mkdirSync(join(m.datastore, 'vm'));
    const data = randomBytes(8 * MiB);
    fs.writeFileSync(join(m.datastore, 'vm', 'disk.img'), data);
    const progress = join(m.root, 'reader.progress');
    const reader = spawn('python3', ['-c', READER, join(m.mountpoint, 'vm', 'disk.img'), progress, sha(data)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    reader.stdout.on('data', (d) => (out += d));
    reader.stderr.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((resolve) => reader.on('exit', resolve));
    const state = () => (fs.existsSync(progress) ? fs.readFileSync(progress, 'utf8').split(' ').map(Number) : [0, 0]);
    try {
      await waitFor(() => out.includes('ready') && state()[0] >= 1, 20_000, 'the reader');
      const dest = join(m.root, 'dest');
      const migration = await migrate(m, join(m.mountpoint, 'vm'), dest, ['--max-downtime', '10s']).done;
      expect(migration.code, migration.stderr).toBe(0);
      const backing = join(dest, 'disk.img');
      // The copier's own pages go first: the reader's passes after the switch must not bring any back.
      await dropCache(backing);
      const after = state()[0];
      await waitFor(() => state()[0] >= after + 3, 30_000, 'passes after the switch');
      expect(await resident(backing)).toBe(0);
      reader.kill('SIGTERM');
      expect(await exited, err).toBe(0);
      expect(state()[1]).toBe(0);
      expect(fs.existsSync(join(m.datastore, 'vm'))).toBe(false);
      expect(fs.readFileSync(backing).equals(data)).toBe(true);
    } finally {
      reader.kill('SIGKILL');
    }
  });
});
