import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { mountFerry, type TestMount } from '../helpers/mounts.js';
import { run } from '../helpers/cli.js';
import { migrate, waitFor } from '../helpers/migration.js';
import { dropCache, resident } from '../helpers/host-cache.js';

// Issue 29 goal 3: an O_DIRECT open through the mount reaches the backing file with O_DIRECT (cache=none guests keep
// host memory free); an unaligned request takes the documented fallback (native-notes/io-routes.md). Both paths.
const mode = process.env.FERRY_NATIVE === '0' ? 'js' : 'native';
const MiB = 1 << 20;

/** Drops `file`'s cached pages, and checks none is left. */
async function dropAll(file: string): Promise<void> {
  await dropCache(file);
  expect(await resident(file)).toBe(0);
}

/** One pwrite (or pread, `data` undefined: prints hex) through an O_DIRECT fd, from Python. */
async function directIo(file: string, offset: number, data?: Buffer, length = 0): Promise<string> {
  const script = [
    'import os,sys',
    'fd=os.open(sys.argv[1],os.O_RDWR|os.O_DIRECT)',
    'off=int(sys.argv[2])',
    'if sys.argv[3]: print(os.pwrite(fd,bytes.fromhex(sys.argv[3]),off))',
    'else: print(os.pread(fd,int(sys.argv[4]),off).hex())',
  ].join('\n');
  const r = await run('python3', ['-c', script, file, String(offset), data ? data.toString('hex') : '', String(length)]);
  expect(r.code, r.stderr).toBe(0);
  return r.stdout.trim();
}

describe(`O_DIRECT honoured on the backing file (${mode})`, () => {
  let m: TestMount;
  beforeAll(async () => {
    m = await mountFerry();
  });
  afterAll(async () => {
    await m?.stop();
  });

  it('64 MiB written with dd oflag=direct leaves no page of the backing file in the page cache', async () => {
    const backing = join(m.datastore, 'direct.img');
    const data = randomBytes(64 * MiB);
    fs.writeFileSync(join(m.root, 'source.bin'), data);
    fs.writeFileSync(backing, '');
    await dropAll(backing);
    const r = await run('dd', [`if=${join(m.root, 'source.bin')}`, `of=${join(m.mountpoint, 'direct.img')}`, 'bs=1M', 'oflag=direct', 'conv=notrunc', 'status=none']);
    expect(r.code, r.stderr).toBe(0);
    expect(await resident(backing)).toBe(0);
    expect(fs.readFileSync(backing).equals(data)).toBe(true);
    // Every request was aligned: none fell back.
    expect((await m.status()).dataPath.directFallback).toBe(0);
  });

  it('an unaligned O_DIRECT write (100 bytes at 300) is exact, counted as a fallback, and leaves no page cached', async () => {
    const backing = join(m.datastore, 'unaligned.img');
    const before = randomBytes(16384);
    fs.writeFileSync(backing, before);
    await dropAll(backing);
    const fallbacks = (await m.status()).dataPath.directFallback;
    const data = randomBytes(100);
    expect(await directIo(join(m.mountpoint, 'unaligned.img'), 300, data)).toBe('100');
    expect(await resident(backing)).toBe(0);
    const expected = Buffer.from(before);
    data.copy(expected, 300);
    expect(fs.readFileSync(backing).equals(expected)).toBe(true);
    expect((await m.status()).dataPath.directFallback).toBe(fallbacks + 1);
  });

  it('O_DIRECT reads, aligned and unaligned, return the bytes and leave no page cached', async () => {
    const backing = join(m.datastore, 'read.img');
    const data = randomBytes(16 * MiB);
    fs.writeFileSync(backing, data);
    await dropAll(backing);
    const r = await run('sh', ['-c', `dd if=${join(m.mountpoint, 'read.img')} bs=1M iflag=direct status=none | sha256sum`]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.split(' ')[0]).toBe(createHash('sha256').update(data).digest('hex'));
    expect(await resident(backing)).toBe(0);
    const fallbacks = (await m.status()).dataPath.directFallback;
    expect(await directIo(join(m.mountpoint, 'read.img'), 4097, undefined, 1000)).toBe(data.subarray(4097, 5097).toString('hex'));
    expect(await resident(backing)).toBe(0);
    expect((await m.status()).dataPath.directFallback).toBe(fallbacks + 1);
  });
});

/** A cache=none guest stand-in: writes 4 KiB blocks through an O_DIRECT fd until SIGTERM, then saves its model. */
const DIRECT_WRITER = `
import os, sys, mmap, signal, random
path, model_out, blocks = sys.argv[1], sys.argv[2], int(sys.argv[3])
fd = os.open(path, os.O_RDWR | os.O_DIRECT)
buf = mmap.mmap(-1, 4096)
model = bytearray(os.pread(os.open(path, os.O_RDONLY), blocks * 4096, 0))
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
rnd = random.Random(7)
writes = 0
print('ready', flush=True)
while not stop:
    b = rnd.randrange(blocks)
    block = rnd.randbytes(4096)
    buf.seek(0); buf.write(block)
    os.pwritev(fd, [buf], b * 4096)
    model[b * 4096:(b + 1) * 4096] = block
    writes += 1
    if writes % 64 == 0:
        with open(model_out + '.count', 'w') as f: f.write(str(writes))
with open(model_out, 'wb') as f: f.write(model)
print(writes, flush=True)
`;

describe(`O_DIRECT through a migration (${mode})`, () => {
  let m: TestMount;
  beforeAll(async () => {
    m = await mountFerry();
  });
  afterAll(async () => {
    await m?.stop();
  });

  it('an O_DIRECT writer keeps writing during the migration; after the switch its writes reach the destination uncached', async () => {
    const blocks = 4096; // 16 MiB
    fs.mkdirSync(join(m.datastore, 'vm'));
    fs.writeFileSync(join(m.datastore, 'vm', 'disk.img'), randomBytes(blocks * 4096));
    const modelOut = join(m.root, 'model.bin');
    const writer = spawn('python3', ['-c', DIRECT_WRITER, join(m.mountpoint, 'vm', 'disk.img'), modelOut, String(blocks)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    writer.stdout.on('data', (d) => (out += d));
    writer.stderr.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((resolve) => writer.on('exit', resolve));
    try {
      await waitFor(() => out.includes('ready'), 10_000, 'the writer');
      const writes = () => Number(fs.readFileSync(`${modelOut}.count`, 'utf8') || 0);
      await waitFor(() => fs.existsSync(`${modelOut}.count`) && writes() >= 64, 10_000, 'writes before the migration');
      const dest = join(m.root, 'dest');
      const migration = await migrate(m, join(m.mountpoint, 'vm'), dest, ['--max-downtime', '10s']).done;
      expect(migration.code, migration.stderr).toBe(0);
      const backing = join(dest, 'disk.img');
      // The copy's own pages (the copier writes through the page cache) go first: what the writer adds after the
      // switch must not bring any back.
      await dropAll(backing);
      const after = writes();
      await waitFor(() => writes() >= after + 256, 20_000, 'writes after the switch');
      expect(await resident(backing)).toBe(0);
      writer.kill('SIGTERM');
      expect(await exited, err).toBe(0);
      expect(fs.existsSync(join(m.datastore, 'vm'))).toBe(false);
      expect(fs.readFileSync(backing).equals(fs.readFileSync(modelOut))).toBe(true);
    } finally {
      writer.kill('SIGKILL');
    }
  });
});

describe(`O_DIRECT twin fails to open (${mode})`, () => {
  let m: TestMount;
  beforeAll(async () => {
    m = await mountFerry({ env: { FERRY_FAULTS: 'open-direct=fail' } });
  });
  afterAll(async () => {
    await m?.stop();
  });

  it('a create with O_DIRECT whose O_DIRECT fd cannot be opened fails with EIO and leaves no file behind', async () => {
    const script = 'import os,sys\ntry:\n  os.open(sys.argv[1],os.O_CREAT|os.O_WRONLY|os.O_DIRECT,0o644)\nexcept OSError as e:\n  print(e.errno)';
    const r = await run('python3', ['-c', script, join(m.mountpoint, 'new.img')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe('5'); // EIO
    expect(fs.existsSync(join(m.datastore, 'new.img'))).toBe(false);
  });
});
