import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { mountFerry, type TestMount } from '../helpers/mounts.js';
import { run } from '../helpers/cli.js';
import { migrate } from '../helpers/migration.js';

// Issue 29 step 6: READ and WRITE requests on native handles are answered by the request loop itself
// (native/ferry/fast.c), not by libfuse's high-level layer; never while a subtree is frozen. The JavaScript path
// registers no native handles, so its fast-path counters stay 0.
const mode = process.env.FERRY_NATIVE === '0' ? 'js' : 'native';
const KiB = 1024;
const MiB = 1 << 20;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Python: O_DIRECT pread of 4 KiB blocks of argv[1] (argv[2] bytes long) in a loop until SIGTERM, checking each against the file read at the start. */
const READER = [
  'import os,sys,signal',
  'path,size=sys.argv[1],int(sys.argv[2])',
  'want=open(path,"rb").read()',
  'fd=os.open(path,os.O_RDONLY|os.O_DIRECT)',
  'stop=[False]',
  'signal.signal(signal.SIGTERM,lambda s,f: stop.__setitem__(0,True))',
  'n=0',
  'while not stop[0]:',
  '  off=(n*4096*7)%size',
  '  if os.pread(fd,4096,off)!=want[off:off+4096]: sys.exit("wrong bytes at %d"%off)',
  '  n+=1',
  'print(n)',
].join('\n');

/**
 * Python: O_DIRECT requests on its own 1 MiB region of argv[1] at argv[3] until SIGTERM: argv[2] 'r' reads and checks
 * 4 KiB blocks against the file as it was at the start, 'w' writes a block and reads it back. SIGINT and SIGUSR1 are
 * caught (counted) and interrupt system calls (no SA_RESTART). Prints requests done and signals caught.
 */
const SIGNALLED = [
  'import os,sys,signal',
  'path,mode,base=sys.argv[1],sys.argv[2],int(sys.argv[3])',
  'want=bytearray(open(path,"rb").read()[base:base+(1<<20)])',
  'fd=os.open(path,os.O_RDWR|os.O_DIRECT)',
  'caught=[0]; stop=[False]',
  'def count(s,f): caught[0]+=1',
  'for s in (signal.SIGINT,signal.SIGUSR1): signal.signal(s,count); signal.siginterrupt(s,True)',
  'signal.signal(signal.SIGTERM,lambda s,f: stop.__setitem__(0,True))',
  'print("ready",flush=True)',
  'n=0',
  'while not stop[0]:',
  '  off=(n*4096*13)%(1<<20)',
  '  if mode=="w":',
  '    block=bytes([n%251])*4096',
  '    if os.pwrite(fd,block,base+off)!=4096: sys.exit("short write")',
  '    want[off:off+4096]=block',
  '  if os.pread(fd,4096,base+off)!=want[off:off+4096]: sys.exit("wrong bytes at %d"%(base+off))',
  '  n+=1',
  'print(n,caught[0])',
].join('\n');

describe(`fast path (${mode})`, () => {
  let m: TestMount;
  beforeAll(async () => {
    m = await mountFerry();
  });
  afterAll(async () => {
    await m?.stop();
  });

  it('1000 O_DIRECT reads are answered by the fast path (native path; JS: none), byte-exact', async () => {
    const data = randomBytes(4 * MiB);
    fs.writeFileSync(join(m.datastore, 'r.img'), data);
    const before = (await m.status()).dataPath;
    const out = join(m.root, 'r.out');
    const r = await run('dd', [`if=${join(m.mountpoint, 'r.img')}`, `of=${out}`, 'bs=4k', 'count=1000', 'iflag=direct', 'status=none']);
    expect(r.code, r.stderr).toBe(0);
    expect(fs.readFileSync(out).equals(data.subarray(0, 1000 * 4 * KiB))).toBe(true);
    const after = (await m.status()).dataPath;
    if (mode === 'native') {
      expect(after.fastPathReads - before.fastPathReads).toBeGreaterThanOrEqual(1000);
      expect(after.readOps - before.readOps).toBe(after.fastPathReads - before.fastPathReads);
      expect(after.readBytes - before.readBytes).toBe(1000 * 4 * KiB);
    } else {
      expect([after.fastPathReads, after.fastPathWrites]).toEqual([0, 0]);
    }
  });

  it('1000 O_DIRECT writes are answered by the fast path (native path; JS: none), byte-exact and tracked', async () => {
    const data = randomBytes(4 * MiB);
    fs.writeFileSync(join(m.root, 'w.src'), data);
    fs.writeFileSync(join(m.mountpoint, 'w.img'), Buffer.alloc(4 * MiB)); // created and tracked through the mount
    await m.cli(['dirty', join(m.mountpoint, 'w.img'), '--clear']);
    const before = (await m.status()).dataPath;
    const r = await run('dd', [`if=${join(m.root, 'w.src')}`, `of=${join(m.mountpoint, 'w.img')}`, 'bs=4k', 'count=1000', 'oflag=direct', 'conv=notrunc', 'status=none']);
    expect(r.code, r.stderr).toBe(0);
    const back = fs.readFileSync(join(m.datastore, 'w.img'));
    expect(back.subarray(0, 1000 * 4 * KiB).equals(data.subarray(0, 1000 * 4 * KiB))).toBe(true);
    expect(back.subarray(1000 * 4 * KiB).equals(Buffer.alloc(4 * MiB - 1000 * 4 * KiB))).toBe(true);
    const after = (await m.status()).dataPath;
    const report = await m.dirty('w.img');
    expect(report.extents).toEqual([[0, Math.ceil((1000 * 4 * KiB) / report.blockSize) * report.blockSize]]);
    if (mode === 'native') {
      expect(after.fastPathWrites - before.fastPathWrites).toBeGreaterThanOrEqual(1000);
      expect(after.writeOps - before.writeOps).toBe(after.fastPathWrites - before.fastPathWrites);
      expect(after.writeBytes - before.writeBytes).toBe(1000 * 4 * KiB);
    } else {
      expect([after.fastPathReads, after.fastPathWrites]).toEqual([0, 0]);
    }
  });

  it('readers and writers hit by signals mid-request: no hang, right bytes, every INTERRUPT dropped', async () => {
    const data = randomBytes(4 * MiB);
    const file = join(m.mountpoint, 's.img');
    fs.writeFileSync(join(m.datastore, 's.img'), data);
    const before = await m.status();
    const workers = ['r', 'r', 'w', 'w'].map((kind, i) => {
      const p = spawn('python3', ['-c', SIGNALLED, file, kind, String(i * MiB)], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      p.stdout.on('data', (b) => (out += b));
      p.stderr.on('data', (b) => (err += b));
      const exited = new Promise<{ code: number | null; signal: string | null; out: string; err: string }>((res) => p.on('exit', (code, signal) => res({ code, signal, out, err })));
      const ready = new Promise<void>((res) => p.stdout.on('data', () => res()));
      return { p, exited, ready };
    });
    await Promise.all(workers.map((w) => w.ready)); // handlers set
    const until = Date.now() + 3000;
    for (let i = 0; Date.now() < until; i++) {
      for (const w of workers) w.p.kill(i % 2 ? 'SIGINT' : 'SIGUSR1');
      if (i % 8 === 0) await new Promise((r) => setImmediate(r));
    }
    for (const w of workers) w.p.kill('SIGTERM');
    const timeout = new Promise<'hang'>((res) => setTimeout(() => res('hang'), 20_000).unref());
    for (const w of workers) {
      const r = await Promise.race([w.exited, timeout]);
      expect(r, 'a worker hung').not.toBe('hang');
      if (r === 'hang') return;
      expect([r.code, r.signal], r.err).toEqual([0, null]);
      const [requests, caught] = r.out.replace('ready', '').trim().split(' ').map(Number);
      expect(requests).toBeGreaterThan(0);
      expect(caught).toBeGreaterThan(0);
    }
    const after = await m.status();
    expect(after.requests.interrupts - (before.requests.interrupts ?? 0), 'INTERRUPTs dropped').toBeGreaterThan(0);
    // Nothing left waiting in the daemon: the mount still answers, and the file is what the writers left.
    const back = fs.readFileSync(join(m.datastore, 's.img'));
    expect(back.subarray(0, 2 * MiB).equals(data.subarray(0, 2 * MiB))).toBe(true);
    if (mode === 'native') expect(after.dataPath.fastPathReads).toBeGreaterThan(before.dataPath.fastPathReads);
  });

  it('no request takes the fast path while its subtree is frozen; they do again after the switchover', async () => {
    // Each file copied under the freeze is held 3 s (within --max-downtime): long enough for two `ferry status`.
    const t = await mountFerry({ env: { FERRY_FAULTS: 'switchover=pause:3000@1' } });
    try {
      fs.mkdirSync(join(t.mountpoint, 'vm1'));
      const data = randomBytes(4 * MiB);
      fs.writeFileSync(join(t.mountpoint, 'vm1/disk.img'), data);
      fs.mkdirSync(join(t.root, 'd'));
      const reader = spawn('python3', ['-c', READER, join(t.mountpoint, 'vm1/disk.img'), String(data.length)], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      reader.stdout.on('data', (b) => (stdout += b));
      reader.stderr.on('data', (b) => (stderr += b));
      const exited = new Promise<number | null>((res) => reader.on('exit', (code) => res(code)));
      await sleep(300);
      const fast = async () => (await t.status()).dataPath as Record<string, number>;
      const start = await fast();
      let frozen: Promise<{ a: Record<string, number>; b: Record<string, number>; bDone: number }> | undefined;
      let committedAt = 0;
      const r = await migrate(t, join(t.mountpoint, 'vm1'), join(t.root, 'd/vm1'), ['--max-downtime', '10s'], (e) => {
        if (e.type === 'phase' && e.phase === 'committed') committedAt = e.at;
        // The first file of the switchover pass is held with the subtree frozen and drained.
        if (e.type === 'phase' && e.phase === 'switchover' && !frozen) frozen = (async () => {
          await sleep(300);
          const a = await fast();
          await sleep(300);
          return { a, b: await fast(), bDone: Date.now() };
        })();
      }).done;
      expect(r.code, r.stderr).toBe(0);
      expect(frozen, 'the switchover phase was reported').toBeDefined();
      const { a, b, bDone } = await frozen!;
      expect(bDone, 'both samples taken before the commit (a loaded machine: status took too long)').toBeLessThan(committedAt);
      await sleep(300);
      const end = await fast();
      reader.kill('SIGTERM');
      expect(await exited, stderr).toBe(0);
      expect(Number(stdout.trim())).toBeGreaterThan(0);
      if (mode === 'native') {
        expect(a.fastPathReads - start.fastPathReads, 'fast-path reads before the freeze').toBeGreaterThan(0);
        expect(b.fastPathReads - a.fastPathReads, 'fast-path reads while frozen').toBe(0);
        expect(b.passedOps - start.passedOps, 'the read waiting at the freeze was handed to JavaScript').toBeGreaterThan(0);
        expect(end.fastPathReads - b.fastPathReads, 'fast-path reads after the thaw').toBeGreaterThan(0);
      } else {
        expect(end.fastPathReads).toBe(0);
      }
    } finally {
      await t.stop();
    }
  });
});
