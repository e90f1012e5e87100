import { spawn, execFile } from 'node:child_process';
import fsp from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { createHash } from 'node:crypto';
import { bootGuest, createImage, ensureGuestKit, goldenChecksum, imageChecksum, type Guest } from './guest.js';
import { startWriter } from './host-writer.js';
import { htmlReport, textReport, type DemoFacts } from './report.js';

const runFile = promisify(execFile);
const CLI = fileURLToPath(new URL('../cli/main.js', import.meta.url));
const MiB = 1 << 20;
const REGION = 64 * MiB;
const SEED = 2026;

export interface DemoOptions {
  /** auto: QEMU where it can run, else the host writer. */
  guest: 'auto' | 'qemu' | 'host-writer';
  keep: boolean;
  json: boolean;
  report: string;
  log: (line: string) => void;
}

function ferry(stateDir: string, args: string[]): Promise<{ stdout: string; stderr: string }> {
  return runFile(process.execPath, [CLI, ...args, '--state-dir', stateDir]);
}

/** `ferry migrate --json` in its own process, as a user would run it; resolves with every event. */
function migrate(stateDir: string, from: string, to: string): Promise<Record<string, any>[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, 'migrate', from, '--to', to, '--json', '--state-dir', stateDir], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('exit', () => {
      const events = out.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, any>);
      if (events.length === 0) reject(new Error(`ferry migrate printed nothing: ${err.trim()}`));
      else resolve(events);
    });
  });
}

async function qemuUsable(): Promise<string | undefined> {
  try {
    await ensureGuestKit();
    await runFile('qemu-system-x86_64', ['--version']);
    return undefined;
  } catch (err) {
    return `QEMU cannot run here (${String(err instanceof Error ? err.message : err).split('\n')[0]}): a host writer process stands in for the guest`;
  }
}

/**
 * The main job: a scratch source and destination datastore, the source mounted with ferry, a guest with its
 * disk on the mount, a live migration in the middle of the guest's workload, checks, and a report.
 */
export async function runDemo(options: DemoOptions): Promise<boolean> {
  const root = await fsp.mkdtemp(join(process.env.FERRY_DEMO_DIR ?? '/var/tmp', 'ferry-demo-'));
  const source = join(root, 'datastore-a');
  const target = join(root, 'datastore-b');
  const mountpoint = join(root, 'mnt');
  const stateDir = join(root, 'state');
  for (const dir of [join(source, 'vm1'), target, mountpoint]) await fsp.mkdir(dir, { recursive: true });
  const noQemu = options.guest === 'host-writer' ? 'host writer chosen with --guest host-writer' : await qemuUsable();
  if (noQemu && options.guest === 'qemu') throw new Error(noQemu);
  options.log(`demo: scratch datastores in ${root}`);
  await ferry(stateDir, ['mount', source, mountpoint]);
  let guest: Guest | undefined;
  try {
    await fsp.writeFile(join(source, 'vm1', 'vm.cfg'), 'name=vm1\nmemory=256M\ndisk=disk.qcow2\n');
    const startedAt = Date.now();
    const facts: DemoFacts = { guestKind: noQemu ? 'host-writer' : 'qemu', guestNote: noQemu, imageBytes: REGION, startedAt, events: [], marks: [], guest: { ioErrors: 0, writes: 0, bytes: 0 }, checks: [] };
    const check = (label: string, ok: boolean, detail: string) => facts.checks.push({ label, ok, detail });
    const vmDir = join(mountpoint, 'vm1');
    const destDir = join(target, 'vm1');

    if (!noQemu) {
      const image = 'disk.qcow2';
      await createImage(join(source, 'vm1', image), 'qcow2', REGION);
      options.log('demo: booting the guest (QEMU, TCG) with its disk on the ferry mount');
      guest = await bootGuest({ image: join(vmDir, image), format: 'qcow2', cache: 'writeback', params: { seed: SEED, seconds: 10, bs: 4096, region: REGION, fsync: 64, direct: true } });
      await guest.started;
      facts.marks.push({ at: Date.now(), label: 'guest starts writing (O_DIRECT, 4 KiB random)' });
      options.log('demo: guest is writing; migrating its home to datastore-b');
      await new Promise((r) => setTimeout(r, 1500));
      facts.events = await migrate(stateDir, vmDir, destDir);
      const { report } = await guest.result;
      facts.marks.push({ at: Date.now(), label: 'guest finished, checksummed its disk, powered off' });
      guest = undefined;
      facts.guest = { ioErrors: report.write.errors + report.write.fsync_errors + report.dmesg_io_errors, writes: report.write.writes, bytes: report.write.bytes, maxStallMs: report.write.lat_max_us / 1000, checksum: report.checksum.fnv1a64 };
      const golden = await goldenChecksum({ seed: SEED, writes: report.write.writes, bs: 4096, region: REGION });
      const onDest = await imageChecksum(join(destDir, image), 'qcow2', REGION);
      check('guest I/O errors', facts.guest.ioErrors === 0, `${facts.guest.ioErrors}`);
      check("guest's checksum = golden value of its workload", report.checksum.fnv1a64 === golden, `${report.checksum.fnv1a64} vs ${golden}`);
      check('image on the destination = golden value', onDest === golden, onDest);
    } else {
      const image = 'disk.img';
      await fsp.writeFile(join(source, 'vm1', image), Buffer.alloc(REGION));
      const model = join(root, 'writer-model');
      const writer = await startWriter({ file: join(vmDir, image), modelOut: model, seed: 7, maxWrite: 256 * 1024, bytesPerSec: 16 << 20, fsyncEvery: 64 });
      await new Promise((r) => setTimeout(r, 1000));
      facts.events = await migrate(stateDir, vmDir, destDir);
      await new Promise((r) => setTimeout(r, 1000));
      const result = await writer.stop();
      facts.guest = { ioErrors: result.errors.length, writes: result.writes, bytes: result.bytes, maxStallMs: result.maxStallMs };
      const digest = async (path: string) => createHash('sha256').update(await fsp.readFile(path)).digest('hex').slice(0, 16);
      const expected = await digest(model);
      check('writer I/O errors', result.errors.length === 0, `${result.errors.length}`);
      check("image on the destination = the writer's model", (await digest(join(destDir, image))) === expected, expected);
    }
    const done = facts.events.find((e) => e.type === 'done');
    check('migration committed', done !== undefined, done ? `downtime ${done.downtimeMs} ms` : JSON.stringify(facts.events.at(-1)));
    check('source home removed', !(await fsp.stat(join(source, 'vm1')).then(() => true, () => false)), join(source, 'vm1'));
    check('the mount serves the moved home', (await fsp.readdir(vmDir)).includes('vm.cfg'), vmDir);

    await fsp.writeFile(options.report, htmlReport(facts));
    if (options.json) process.stdout.write(JSON.stringify(facts) + '\n');
    else {
      process.stdout.write(textReport(facts) + '\n\n');
      process.stdout.write(`HTML report with charts: ${options.report}\n`);
      if (options.keep) process.stdout.write(`datastores kept: ${source} (source), ${target} (destination)\n`);
    }
    return facts.checks.every((c) => c.ok);
  } finally {
    guest?.kill();
    await ferry(stateDir, ['unmount', mountpoint, '--force']).catch(() => undefined);
    if (!options.keep) await fsp.rm(root, { recursive: true, force: true });
  }
}

export const DEFAULT_REPORT = join(tmpdir(), 'ferry-demo-report.html');
