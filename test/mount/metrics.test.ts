import { afterEach, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { get } from 'node:http';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { makeRoot, mountFerry, mountsUnder, type TestMount } from '../helpers/mounts.js';
import { ferry, run } from '../helpers/cli.js';
import { migrate, waitFor } from '../helpers/migration.js';
import { vmHome } from '../helpers/vm.js';
import { startWriter } from '../helpers/writer.js';
import { freePort, startPrometheus, type Prometheus } from '../helpers/prometheus.js';

const MiB = 1 << 20;
const native = process.env.FERRY_NATIVE !== '0';
let mounts: TestMount[] = [];
let prometheus: Prometheus | undefined;
let blocker: Server | undefined;
afterEach(async () => {
  await prometheus?.stop();
  prometheus = undefined;
  blocker?.close();
  blocker = undefined;
  for (const m of mounts) await m.stop();
  mounts = [];
});

async function mounted(args: string[] = []): Promise<TestMount> {
  const m = await mountFerry({ args });
  mounts.push(m);
  return m;
}

/** The TCP and UDP sockets a process holds, as `proto local-port state` (from /proc/net: no tool needed). */
async function inetSockets(pid: number): Promise<string[]> {
  const inodes = new Set<string>();
  for (const fd of await fsp.readdir(`/proc/${pid}/fd`)) {
    const link = await fsp.readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    const m = /^socket:\[(\d+)\]$/.exec(link);
    if (m) inodes.add(m[1]);
  }
  const found: string[] = [];
  for (const proto of ['tcp', 'tcp6', 'udp', 'udp6']) {
    const lines = (await fsp.readFile(`/proc/net/${proto}`, 'utf8')).trim().split('\n').slice(1);
    for (const line of lines) {
      const cols = line.trim().split(/\s+/);
      if (inodes.has(cols[9])) found.push(`${proto} ${parseInt(cols[1].split(':')[1], 16)} ${cols[3]}`);
    }
  }
  return found;
}

function getText(options: { socketPath: string } | { port: number }): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    get({ ...options, host: '127.0.0.1', path: '/metrics' }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }));
    }).on('error', reject);
  });
}

/** The names and types the endpoint declares (# TYPE lines). */
function declared(text: string): Map<string, string> {
  return new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1], m[2]]));
}

/** Each metric's type and help text, as `type: help`. */
function described(text: string): Map<string, string> {
  const help = new Map([...text.matchAll(/^# HELP (\S+) (.*)$/gm)].map((m) => [m[1], m[2]]));
  return new Map([...declared(text)].map(([name, type]) => [name, `${type}: ${help.get(name)}`]));
}

/** The dashboard's PromQL, its Grafana variables given values Prometheus takes. */
async function dashboardExprs(): Promise<string[]> {
  const dashboard = JSON.parse(await fsp.readFile(fileURLToPath(new URL('../../contrib/grafana/ferry.json', import.meta.url)), 'utf8'));
  const exprs: string[] = [];
  JSON.stringify(dashboard, (key, value) => {
    if (key === 'expr') exprs.push(value);
    return value;
  });
  return exprs;
}

/** One sample's value, by metric name and exact label set (as the endpoint prints it). */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** promtool's lint of the exposition: metric names, units, counters' _total, help text. */
async function lint(text: string): Promise<string> {
  const dir = await makeRoot();
  try {
    await fsp.writeFile(join(dir, 'metrics.txt'), text);
    const r = await run('sh', ['-c', `promtool check metrics < ${join(dir, 'metrics.txt')}`]);
    return `${r.code} ${r.stdout}${r.stderr}`.trim();
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

describe('ferry mount --metrics (issue 31)', () => {
  it('without --metrics the daemon opens no port; with it, exactly the one asked for', async () => {
    const plain = await mounted();
    expect(await inetSockets((await plain.status()).pid)).toEqual([]);
    const port = await freePort();
    const m = await mounted(['--metrics', String(port)]);
    expect(await inetSockets((await m.status()).pid)).toEqual([`tcp ${port} 0A`]);
    const scraped = await getText({ port });
    expect(scraped.status).toBe(200);
    expect(scraped.type).toMatch(/^text\/plain; version=0\.0\.4/);
  });

  it('a bad --metrics is one line on stderr, exit 2, and nothing mounted', async () => {
    const root = await makeRoot();
    try {
      await fsp.mkdir(join(root, 'ds'));
      await fsp.mkdir(join(root, 'mnt'));
      await fsp.writeFile(join(root, 'notes.txt'), 'keep me');
      blocker = createServer();
      const busy = await freePort();
      await new Promise<void>((resolve) => blocker!.listen(busy, '127.0.0.1', resolve));
      const cases: [string[], string][] = [
        [['--metrics', 'nonsense'], 'ferry: --metrics nonsense: not an address (give host:port, a port alone (on 127.0.0.1), or unix:/absolute/path; ports 1-65535)'],
        [['--metrics', 'localhost:99999'], 'ferry: --metrics localhost:99999: not an address (give host:port, a port alone (on 127.0.0.1), or unix:/absolute/path; ports 1-65535)'],
        [['--metrics', 'unix:relative.sock'], 'ferry: --metrics unix:relative.sock: a Unix socket needs an absolute file path (give host:port, a port alone (on 127.0.0.1), or unix:/absolute/path)'],
        [['--metrics-per-file'], 'ferry: --metrics-per-file goes with --metrics <address>'],
        [['--metrics', `unix:${join(root, 'notes.txt')}`], `ferry: --metrics unix:${join(root, 'notes.txt')}: ${join(root, 'notes.txt')} exists and is not a socket: name a new path`],
        [['--metrics', `127.0.0.1:${busy}`], `ferry: --metrics 127.0.0.1:${busy}: cannot listen there (EADDRINUSE): choose another address`],
      ];
      for (const [args, line] of cases) {
        const r = await ferry(['mount', join(root, 'ds'), join(root, 'mnt'), '--state-dir', join(root, 'state'), ...args]);
        expect({ args, code: r.code, stderr: r.stderr }).toEqual({ args, code: 2, stderr: `${line}\n` });
        expect(await mountsUnder(join(root, 'mnt'))).toEqual([]);
      }
      expect(await fsp.readFile(join(root, 'notes.txt'), 'utf8')).toBe('keep me');
      // Refused before the FUSE mount, not mounted and taken down again (which raced `ferry mount`'s exit).
      const fg = await ferry(['mount', join(root, 'ds'), join(root, 'mnt'), '--state-dir', join(root, 'state'), '--foreground', '--metrics', `127.0.0.1:${busy}`]);
      expect(fg.code).toBe(2);
      const logged = fg.stderr.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l).msg);
      expect(logged).toEqual(['loaded fuse-native', 'mount refused']);
    } finally {
      await fsp.rm(root, { recursive: true, force: true });
    }
  });

  it("Prometheus scrapes the I/O counters, the migration's bytes and downtime: the same as ferry status --json and the done event", async () => {
    const port = await freePort();
    const m = await vmHome(await mounted(['--metrics', `127.0.0.1:${port}`]), 24);
    prometheus = await startPrometheus(`127.0.0.1:${port}`);
    const disk = join(m.mountpoint, 'vm1/disk.img');
    const handle = await fsp.open(disk, 'r+');
    for (let i = 0; i < 64; i++) await handle.write(randomBytes(4096), 0, 4096, i * 65536);
    for (let i = 0; i < 32; i++) await handle.read(Buffer.alloc(4096), 0, 4096, i * 4096);
    await handle.close();
    // A guest writing during the copy: the switchover has dirty data to copy while I/O is frozen.
    const writer = await startWriter({ file: disk, modelOut: join(m.root, 'model'), seed: 31, maxWrite: 65536, bytesPerSec: 4 * MiB });
    const run = await migrate(m, join(m.mountpoint, 'vm1'), m.dest).done;
    await writer.stop();
    expect(run.code, run.stderr).toBe(0);
    const done = run.final!;
    expect(done.type).toBe('done');
    expect(done.downtimeMs).toBeGreaterThan(0);
    const status = await m.status();
    const mount = `mount="${m.mountpoint}"`;
    const expected = {
      reads: status.ops.read,
      writes: status.ops.write,
      readBytes: status.bytesRead,
      writtenBytes: status.bytesWritten,
      errors: status.errors,
      copied: done.copiedBytes,
      downtime: done.downtimeMs / 1000,
      done: 1,
      dirty: status.dirtyBytes,
      latencyCount: native ? status.dataPath.writeOps : undefined,
      fastPath: native ? status.dataPath.fastPathReads + status.dataPath.fastPathWrites : undefined,
    };
    expect(status.migrations[0].progress.copiedBytes).toBe(done.copiedBytes);
    const one = async (expr: string) => (await prometheus!.query(expr))[0]?.[1];
    let got: Record<string, number | undefined> = {};
    await waitFor(async () => {
      got = {
        reads: await one(`sum(ferry_ops_total{${mount},op="read"})`),
        writes: await one(`sum(ferry_ops_total{${mount},op="write"})`),
        readBytes: await one(`sum(ferry_io_bytes_total{${mount},op="read"})`),
        writtenBytes: await one(`sum(ferry_io_bytes_total{${mount},op="write"})`),
        errors: await one(`sum(ferry_errors_total{${mount}})`),
        copied: await one(`ferry_migration_copied_bytes{${mount},migration="/vm1"}`),
        downtime: await one(`ferry_migration_downtime_seconds{${mount},migration="/vm1"}`),
        done: await one(`ferry_migration_state{${mount},migration="/vm1",state="done"}`),
        dirty: await one(`ferry_dirty_bytes{${mount}}`),
        latencyCount: await one(`ferry_write_latency_seconds_count{${mount}}`),
        fastPath: await one(`sum(ferry_native_fast_path_ops_total{${mount}})`),
      };
      return JSON.stringify(got) === JSON.stringify(expected);
    }, 15_000, 'Prometheus to have the final figures').catch(() => undefined);
    expect(got).toEqual(expected);
    expect(expected.writes).toBeGreaterThanOrEqual(64);
    expect(expected.reads).toBeGreaterThanOrEqual(32);
    if (native) expect(expected.fastPath).toBeGreaterThan(0);
    // Every dashboard query is PromQL that Prometheus takes, and the migration panels have data.
    for (const expr of await dashboardExprs()) {
      const result = await prometheus.query(expr.replaceAll('$mount', '.*').replaceAll('$__rate_interval', '5s'));
      if (/copied_bytes|downtime|ferry_dirty_bytes|ferry_ops_total/.test(expr)) expect(result.length, expr).toBeGreaterThan(0);
    }
    // The exposition passes Prometheus's own lint (names, units, _total on counters).
    expect(await lint((await getText({ port })).body)).toBe('0');
  });

  it('a migration in mirror mode: its progress while it runs, then its mode, pass, mirrored writes and added latency as status and the done event have them', async () => {
    const port = await freePort();
    const m = await vmHome(await mounted(['--metrics', String(port)]), 16);
    const writer = await startWriter({ file: join(m.mountpoint, 'vm1/disk.img'), modelOut: join(m.root, 'model'), seed: 7, maxWrite: 65536, bytesPerSec: 4 * MiB });
    let copied = 0;
    const running = migrate(m, join(m.mountpoint, 'vm1'), m.dest, ['--mode', 'mirror', '--rate-limit', '8M'], (e) => {
      if (e.type === 'progress') copied = e.copiedBytes;
    });
    await waitFor(() => copied >= 2 * MiB, 20_000, 'the bulk copy to be under way');
    const labels = `mount="${m.mountpoint}",migration="/vm1"`;
    const during = (await getText({ port })).body;
    expect(sample(during, `ferry_migration_state{${labels},state="bulk"}`)).toBe(1);
    expect(sample(during, `ferry_migration_copied_bytes{${labels}}`)).toBeGreaterThanOrEqual(2 * MiB);
    expect(sample(during, `ferry_migration_copy_rate_bytes_per_second{${labels}}`)).toBeGreaterThan(0);
    expect(sample(during, `ferry_migration_downtime_seconds{${labels}}`)).toBeUndefined();
    const run = await running.done;
    await writer.stop();
    expect(run.code, run.stderr).toBe(0);
    const done = run.final!;
    expect(done).toMatchObject({ type: 'done', mode: 'mirror' });
    expect(done.mirroredWrites).toBeGreaterThan(0);
    const last = (await m.status()).migrations[0];
    const after = (await getText({ port })).body;
    expect({
      info: sample(after, `ferry_migration_info{${labels},destination="${m.dest}",mode="mirror"}`),
      state: sample(after, `ferry_migration_state{${labels},state="done"}`),
      pass: sample(after, `ferry_migration_pass{${labels}}`),
      copied: sample(after, `ferry_migration_copied_bytes{${labels}}`),
      total: sample(after, `ferry_migration_total_bytes{${labels}}`),
      lastPassCopied: sample(after, `ferry_migration_last_pass_copied_bytes{${labels}}`),
      dirty: sample(after, `ferry_migration_dirty_bytes{${labels}}`),
      estimate: sample(after, `ferry_migration_estimated_switchover_seconds{${labels}}`),
      rate: sample(after, `ferry_migration_copy_rate_bytes_per_second{${labels}}`),
      downtime: sample(after, `ferry_migration_downtime_seconds{${labels}}`),
      mirrored: sample(after, `ferry_migration_mirrored_writes{${labels}}`),
      p50: sample(after, `ferry_migration_mirror_added_latency_p50_seconds{${labels}}`),
      p99: sample(after, `ferry_migration_mirror_added_latency_p99_seconds{${labels}}`),
    }).toEqual({
      info: 1,
      state: 1,
      pass: last.progress.pass,
      copied: done.copiedBytes,
      total: done.totalBytes,
      lastPassCopied: last.lastPass.copiedBytes,
      dirty: last.lastPass.dirtyBytes,
      estimate: last.lastPass.estimatedSwitchoverMs / 1000,
      rate: 0,
      downtime: done.downtimeMs / 1000,
      mirrored: done.mirroredWrites,
      p50: done.mirrorLatencyP50Ms / 1000,
      p99: done.mirrorLatencyP99Ms / 1000,
    });
  });

  it("shows the switchover's frozen subtree while it holds I/O, and its downtime after", async () => {
    const port = await freePort();
    const m = await mountFerry({ args: ['--metrics', String(port)], env: { FERRY_FAULTS: 'before-commit=pause:1500' } });
    mounts.push(m);
    await vmHome(m, 4);
    const labels = `mount="${m.mountpoint}",migration="/vm1"`;
    let switching = false;
    const running = migrate(m, join(m.mountpoint, 'vm1'), m.dest, ['--max-downtime', '10s'], (e) => {
      if (e.type === 'phase' && e.phase === 'switchover') switching = true;
    });
    await waitFor(() => switching, 20_000, 'the switchover');
    let during = '';
    await waitFor(async () => {
      during = (await getText({ port })).body;
      return sample(during, `ferry_frozen_subtrees{mount="${m.mountpoint}"}`) === 1;
    }, 1_400, 'the freeze to show').catch(() => undefined);
    expect(sample(during, `ferry_frozen_subtrees{mount="${m.mountpoint}"}`)).toBe(1);
    expect(sample(during, `ferry_migration_state{${labels},state="switchover"}`)).toBe(1);
    const run = await running.done;
    expect(run.code, run.stderr).toBe(0);
    const after = (await getText({ port })).body;
    expect(sample(after, `ferry_frozen_subtrees{mount="${m.mountpoint}"}`)).toBe(0);
    expect(run.final!.downtimeMs).toBeGreaterThanOrEqual(1500);
    expect(sample(after, `ferry_migration_downtime_seconds{${labels}}`)).toBe(run.final!.downtimeMs / 1000);
  });

  it('serves a Unix socket (the owner only) with --metrics-per-file one series per dirty file; without it, no file label', async () => {
    const root = await makeRoot();
    const socket = join(root, 'metrics.sock');
    const m = await mountFerry({ root, args: ['--metrics', `unix:${socket}`, '--metrics-per-file'] });
    mounts.push(m);
    expect(fs.statSync(socket).mode & 0o777).toBe(0o600);
    await fsp.writeFile(join(m.mountpoint, 'a.img'), randomBytes(100_000));
    await fsp.writeFile(join(m.mountpoint, 'b.img'), randomBytes(3000));
    const status = await m.status();
    const text = (await getText({ socketPath: socket })).body;
    for (const f of status.trackedFiles) expect(sample(text, `ferry_file_dirty_bytes{mount="${m.mountpoint}",file="${f.path}"}`)).toBe(f.dirtyBytes);
    expect(status.trackedFiles.map((f: { path: string }) => f.path)).toEqual(['/a.img', '/b.img']);
    expect(sample(text, `ferry_dirty_files{mount="${m.mountpoint}"}`)).toBe(2);
    expect(await lint(text)).toBe('0');
    // A socket someone serves is not taken over: another mount asking for it is refused.
    const other = join(root, 'other');
    await fsp.mkdir(join(other, 'ds'), { recursive: true });
    await fsp.mkdir(join(other, 'mnt'));
    const taken = await ferry(['mount', join(other, 'ds'), join(other, 'mnt'), '--state-dir', join(other, 'state'), '--metrics', `unix:${socket}`]);
    expect({ code: taken.code, stderr: taken.stderr }).toEqual({ code: 2, stderr: `ferry: --metrics unix:${socket}: ${socket} is in use by another server: name another path\n` });
    expect(await mountsUnder(join(other, 'mnt'))).toEqual([]);
    expect((await getText({ socketPath: socket })).status).toBe(200);

    const port = await freePort();
    const plain = await mounted(['--metrics', String(port)]);
    await fsp.writeFile(join(plain.mountpoint, 'a.img'), randomBytes(100_000));
    const plainText = (await getText({ port })).body;
    expect(plainText).not.toMatch(/file="/);
    expect(declared(plainText).has('ferry_file_dirty_bytes')).toBe(false);

    expect((await m.cli(['unmount', m.mountpoint])).code).toBe(0);
    expect(fs.existsSync(socket)).toBe(false);
    // A socket file nobody serves (a killed daemon's) is replaced.
    await run('python3', ['-c', `import socket; socket.socket(socket.AF_UNIX).bind(${JSON.stringify(socket)})`]);
    expect(fs.statSync(socket).isSocket()).toBe(true);
    expect((await m.remount()).code).toBe(0);
    expect((await getText({ socketPath: socket })).status).toBe(200);
  });

  it("an evacuation: its state, its homes by state and its bytes, as ferry status --json has them", async () => {
    const root = await makeRoot();
    const socket = join(root, 'metrics.sock');
    const m = await mountFerry({ root, args: ['--metrics', `unix:${socket}`] });
    mounts.push(m);
    await fsp.mkdir(join(m.datastore, 'cold'));
    for (const [name, size] of [['vm1', 2 * MiB], ['vm2', 3 * MiB]] as const) {
      await fsp.mkdir(join(m.datastore, 'cold', name));
      await fsp.writeFile(join(m.datastore, 'cold', name, 'disk.raw'), randomBytes(size));
    }
    await fsp.mkdir(join(root, 'slow'));
    const evacuated = await m.cli(['evacuate', join(m.mountpoint, 'cold'), '--to', join(root, 'slow'), '--json']);
    expect(evacuated.code, evacuated.stderr).toBe(0);
    const status = JSON.parse((await m.cli(['status', m.mountpoint, '--json'])).stdout);
    const evacuation = status.evacuations.find((e: { path: string }) => e.path === '/cold');
    expect(evacuation.state).toBe('done');
    const text = (await getText({ socketPath: socket })).body;
    const labels = `mount="${m.mountpoint}",evacuation="/cold"`;
    expect(sample(text, `ferry_evacuation_state{${labels},state="done"}`)).toBe(1);
    expect(sample(text, `ferry_evacuation_homes{${labels},state="moved"}`)).toBe(2);
    expect(sample(text, `ferry_evacuation_homes{${labels},state="pending"}`)).toBe(0);
    const planned = evacuation.homes.reduce((sum: number, h: { bytes: number }) => sum + h.bytes, 0);
    expect(planned).toBeGreaterThanOrEqual(5 * MiB);
    expect(sample(text, `ferry_evacuation_planned_bytes{${labels}}`)).toBe(planned);
    expect(sample(text, `ferry_evacuation_moved_bytes{${labels}}`)).toBe(planned);
  });

  it('README lists every metric with its type, and the Grafana dashboard queries only metrics that exist', async () => {
    const root = await makeRoot();
    const m = await mountFerry({ root, args: ['--metrics', `unix:${join(root, 'metrics.sock')}`, '--metrics-per-file'] });
    mounts.push(m);
    const text = (await getText({ socketPath: join(root, 'metrics.sock') })).body;
    const served = declared(text);
    const readme = await fsp.readFile(fileURLToPath(new URL('../../README.md', import.meta.url)), 'utf8');
    const section = readme.slice(readme.indexOf('\n## Metrics'), readme.indexOf('\n## ', readme.indexOf('\n## Metrics') + 1));
    const documented = new Map([...section.matchAll(/^\| `(ferry_[a-z_0-9]+)(?:\{[^`]*\})?` \| (counter|gauge|histogram) \| (.*) \|$/gm)].map((r) => [r[1], `${r[2]}: ${r[3]}`]));
    expect(documented).toEqual(described(text));

    const exprs = await dashboardExprs();
    expect(exprs.length).toBeGreaterThan(10);
    const series = new Set([...served].flatMap(([name, type]) => (type === 'histogram' ? [`${name}_bucket`, `${name}_sum`, `${name}_count`] : [name])));
    for (const expr of exprs) for (const name of expr.match(/ferry_[a-z_0-9]+/g) ?? []) expect(series, `${name} in ${expr}`).toContain(name);
  });
});
