// The torture conductor (issue 14): writer processes doing random operations through the mount in three VM
// homes, while concurrent, overlapping and repeated migrations run in random modes and directions, with cancels,
// rate changes and kill -9 of the daemon followed by remount and --resume or cancel. After every round the tree
// served by the mount must equal the writers' models byte for byte, refused migrations must have changed nothing,
// no orphan copy or staging dir may remain, and the path map must survive a remount.
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync } from 'node:fs';
import fsp from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { mountFerry, type TestMount } from '../helpers/mounts.js';
import { migrate, waitFor, type MigrationRun } from '../helpers/migration.js';
import { hasExited } from '../helpers/cli.js';
import { threadStates } from '../../src/demo/evidence.js';

const WRITER = fileURLToPath(new URL('./writer.mjs', import.meta.url));
const HOMES = ['vm1', 'vm2', 'vm3'];
const MODES = ['iterative', 'mirror', 'auto'];

export interface TortureStats {
  seed: number;
  rounds: number;
  writerOps: number;
  migrations: number;
  completed: number;
  failed: number;
  refused: number;
  cancels: number;
  rateChanges: number;
  kills: number;
  resumes: number;
  cancelledAfterKill: number;
}

export interface TortureOptions {
  seed: number;
  /** Rounds to run, or until `minutes` have passed, whichever comes first. */
  rounds: number;
  minutes?: number;
  writers?: number;
  /** From this round on, until a kill has happened, kill the daemon 2.5 s into a copy (npm test's short run
   * must exercise --resume; a round whose migrations are refused has no copy to kill). */
  killInCopyFrom?: number;
  /** Where the op log goes (kept on failure). */
  logFile: string;
}

class Random {
  constructor(private state: number) {}
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(list: readonly T[]): T {
    return list[this.int(list.length)];
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
}

export class TortureFailure extends Error {}

interface WriterProc {
  child: ChildProcess;
  out: string;
  exited: Promise<number | null>;
}

interface Model {
  files: Record<string, string>;
  inFlight: { op: string; names: string[] } | null;
  error: string | null;
  ops: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function runTorture(o: TortureOptions): Promise<TortureStats> {
  const rng = new Random(o.seed);
  const stats: TortureStats = { seed: o.seed, rounds: 0, writerOps: 0, migrations: 0, completed: 0, failed: 0, refused: 0, cancels: 0, rateChanges: 0, kills: 0, resumes: 0, cancelledAfterKill: 0 };
  const log = (entry: Record<string, unknown>) => appendFileSync(o.logFile, JSON.stringify({ t: Date.now(), ...entry }) + '\n');
  const fail = (why: string): never => {
    log({ failure: why });
    throw new TortureFailure(`torture seed ${o.seed}, round ${stats.rounds}: ${why}\nop log: ${o.logFile} (replay: npm run torture -- --seed ${o.seed})`);
  };
  // Odd seeds mount with --mmap (page cache for buffered opens), where the writers also store through mappings.
  const mountArgs = o.seed % 2 === 1 ? ['--mmap'] : [];
  const m = await mountFerry({ args: mountArgs });
  const dests = [join(m.root, 'd1'), join(m.root, 'd2')];
  const deadline = o.minutes ? Date.now() + o.minutes * 60_000 : Infinity;
  try {
    for (const d of dests) await fsp.mkdir(d);
    /** vm.cfg and a disk image in each home: never written by the writers (the bulk of each copy), checked every round. */
    const configs = new Map<string, Map<string, Buffer>>();
    for (const home of HOMES) {
      await fsp.mkdir(join(m.datastore, home));
      configs.set(home, new Map([['vm.cfg', randomBytes(1000 + rng.int(5000))], ['disk.img', randomBytes((8 + rng.int(17)) << 20)]]));
      for (const [name, content] of configs.get(home)!) await fsp.writeFile(join(m.datastore, home, name), content);
    }
    log({ start: o.seed, root: m.root, mountArgs });
    for (let round = 1; round <= o.rounds && Date.now() < deadline; round++) {
      stats.rounds = round;
      await runRound(m, rng, round, o, stats, log, fail, dests);
      await verify(m, configs, dests, fail, join(m.root, `models-${round}`), stats);
      await remountAndCompare(m, configs, dests, fail, stats, round);
    }
    return stats;
  } finally {
    // The daemon's log goes with the op log (the mount's root is removed).
    const logs = join(m.stateDir, 'mounts');
    for (const name of await fsp.readdir(logs).catch(() => [])) if (name.endsWith('.log')) await fsp.copyFile(join(logs, name), `${o.logFile}.daemon`).catch(() => undefined);
    await m.stop();
  }
}

function startWriters(m: TestMount, rng: Random, round: number, count: number, log: (e: Record<string, unknown>) => void, logFile: string): Promise<WriterProc[]> {
  // Links across homes make both homes unmovable while they last: only in some rounds.
  const crossLinks = rng.chance(0.25);
  return Promise.all(
    Array.from({ length: count }, async (_, id) => {
      const out = join(m.root, `models-${round}`, `w${id}`);
      await fsp.mkdir(out, { recursive: true });
      const config = { id, seed: rng.int(2 ** 31) + 1, mount: m.mountpoint, homes: HOMES, out, opsLog: `${logFile}.ops`, crossLinks, mmap: m.args.includes('--mmap') };
      log({ round, writer: id, seed: config.seed });
      const child = spawn(process.execPath, [WRITER, JSON.stringify(config)], { stdio: ['ignore', 'pipe', 'pipe'] });
      const proc: WriterProc = { child, out: '', exited: new Promise((r) => child.on('exit', r)) };
      child.stdout!.on('data', (d) => (proc.out += d));
      child.stderr!.on('data', (d) => (proc.out += d));
      await waitFor(() => proc.out.includes('ready') || child.exitCode !== null, 30_000, `writer ${id}`);
      return proc;
    }),
  );
}

/** Where each home lives now, from the daemon's path map. */
async function backings(m: TestMount): Promise<Map<string, string>> {
  const status = await m.status();
  const map = new Map<string, string>();
  const root = (status.mappings as { virtual: string; backing: string }[]).find((e) => e.virtual === '/')!.backing;
  for (const home of HOMES) {
    const own = (status.mappings as { virtual: string; backing: string }[]).find((e) => e.virtual === `/${home}`);
    map.set(home, own?.backing ?? join(root, home));
  }
  return map;
}

/** Every file under the datastore and the destination roots: name, inode, links, size. */
async function listBacking(root: string): Promise<string> {
  const out: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const e of await fsp.readdir(dir, { withFileTypes: true }).catch(() => [])) {
      const p = join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) {
        const st = await fsp.lstat(p).catch(() => undefined);
        if (st) out.push(`${p.slice(root.length + 1)} ${st.ino}/${st.nlink}/${st.size}`);
      }
    }
  };
  for (const d of ['datastore', 'd1', 'd2']) await walk(join(root, d));
  return out.join('\n');
}

async function exists(path: string): Promise<boolean> {
  return fsp.lstat(path).then(() => true, () => false);
}

async function runRound(
  m: TestMount,
  rng: Random,
  round: number,
  o: TortureOptions,
  stats: TortureStats,
  log: (e: Record<string, unknown>) => void,
  fail: (why: string) => never,
  dests: string[],
): Promise<void> {
  const writers = await startWriters(m, rng, round, o.writers ?? 3, log, o.logFile);
  const { pid } = await m.status();
  const where = await backings(m);
  // accepted: the daemon has started it (a loaded host can take seconds to start the `ferry migrate` process).
  const running: { home: string; dest: string; from: string; run: Promise<MigrationRun>; accepted: boolean }[] = [];
  // A third of the rounds kill the daemon: most while a migration copies (after its first checkpoint, 2 s in, a
  // resume starts from the checkpoint; before it, the remount rolls the copy back), the rest at a random instant.
  const drawn = rng.chance(0.3) ? (rng.chance(0.7) ? { inCopyAfterMs: 500 + rng.int(4000) } : { atMs: 1500 + rng.int(6000) }) : undefined;
  const forced = o.killInCopyFrom !== undefined && round >= o.killInCopyFrom && stats.kills === 0;
  const kill = forced ? { inCopyAfterMs: 2500 } : drawn;
  let copyingSince: number | undefined;
  let killed = false;
  const started = Date.now();
  const launch = async (home: string) => {
    const from = where.get(home)!;
    // Away from where it is: to another destination root, or back to the datastore (A -> B -> A).
    const roots = [...dests, m.datastore].filter((r) => !from.startsWith(r + '/'));
    const dest = join(rng.pick(roots), home);
    const mode = rng.pick(MODES);
    // A round that kills during a copy copies slowly enough for the kill to find one.
    const rate = `${forced ? 2 : rng.pick(kill && 'inCopyAfterMs' in kill ? [2, 4] : [2, 4, 8, 16, 64])}M`;
    log({ round, migrate: home, from, dest, mode, rate });
    stats.migrations++;
    const onEvent = (e: Record<string, unknown>) => {
      entry.accepted = true;
      if (e.type !== 'phase') return;
      if (e.phase === 'bulk') copyingSince ??= Date.now();
      else if (e.phase !== 'iterate') copyingSince = undefined;
    };
    const entry = { home, dest, from, accepted: false, run: migrate(m, join(m.mountpoint, home), dest, ['--mode', mode, '--rate-limit', rate, '--max-iterations', '8'], onEvent).done };
    running.push(entry);
  };
  // Two or three actions spread over the round: a migration of an idle home, maybe a second one alongside,
  // an overlapping request for a home already moving (must be refused and change nothing).
  await sleep(300 + rng.int(700));
  await launch(rng.pick(HOMES));
  if (rng.chance(0.5)) {
    const idle = HOMES.filter((h) => !running.some((r) => r.home === h));
    await launch(rng.pick(idle));
  }
  const overlap = rng.chance(0.4) ? running[0] : undefined;
  const movedAgain = new Set<string>();
  // Writers keep writing until every migration has ended (at least a few seconds, at most a minute).
  const minMs = 4000 + rng.int(8000);
  const settled = running.map(() => ({ done: false }));
  running.forEach((r, i) => void r.run.then(() => (settled[i].done = true)));
  let opsLogSize = -1;
  let progressAt = Date.now();
  while (Date.now() - started < 60_000) {
    await sleep(200 + rng.int(600));
    // Writers that stop making progress are a hang: stop here, with the evidence, not at the test's timeout.
    const size = (await fsp.stat(`${o.logFile}.ops`).catch(() => ({ size: 0 }))).size;
    if (size !== opsLogSize) [opsLogSize, progressAt] = [size, Date.now()];
    else if (Date.now() - progressAt > 20_000 && !killed) fail(`no writer operation completed for 20 s\n${await stallEvidence(m, writers)}`);
    const due = kill && ('atMs' in kill ? Date.now() - started >= kill.atMs : copyingSince !== undefined && Date.now() - copyingSince >= kill.inCopyAfterMs);
    if (due && !killed) {
      log({ round, kill: pid, inCopy: copyingSince !== undefined });
      process.kill(pid, 'SIGKILL');
      killed = true;
      stats.kills++;
      break;
    }
    if (overlap && rng.chance(0.3)) {
      const dest = join(rng.pick(dests), `${overlap.home}-again-${round}-${rng.int(1e6)}`);
      const again = await m.cli(['migrate', join(m.mountpoint, overlap.home), '--to', dest]);
      log({ round, overlap: overlap.home, code: again.code, stderr: again.stderr.trim() });
      // Only once the first has ended (or before the daemon has it) may a second migration of the home go ahead.
      const firstRunning = running[0].accepted && !settled[0].done;
      if (again.code === 0 && firstRunning) fail(`a second migration of /${overlap.home} to ${dest} succeeded while the first was running`);
      if (again.code === 0) movedAgain.add(overlap.home);
      if (again.code === 2 && (await exists(dest))) fail(`a refused migration left ${dest} behind`);
      if (again.code === 2) stats.refused++;
    }
    const live = running[rng.int(running.length)];
    // A forced kill waits for its copy: no rate change or cancel may end it first.
    if (!forced && rng.chance(0.15)) {
      const r = await m.cli(['migrate', join(m.mountpoint, live.home), '--set-rate', `${rng.pick([4, 16, 64])}M`]);
      log({ round, setRate: live.home, code: r.code, stderr: r.stderr.trim() });
      if (r.code === 0) stats.rateChanges++;
    } else if (!forced && rng.chance(0.08)) {
      const r = await m.cli(['cancel', join(m.mountpoint, live.home)]);
      log({ round, cancel: live.home, code: r.code, stderr: r.stderr.trim() });
      if (r.code === 0) stats.cancels++;
    }
    if (settled.every((x) => x.done) && Date.now() - started > minMs) break;
  }
  for (const w of writers) w.child.kill('SIGTERM');
  const codes = await Promise.race([Promise.all(writers.map((w) => w.exited)), sleep(30_000).then(() => undefined)]);
  if (!codes) fail(`writers did not stop within 30 s of SIGTERM: an operation is stuck\n${await stallEvidence(m, writers)}`);
  for (const [id, code] of codes.entries()) {
    if (code === 0 || (killed && code === 3)) continue;
    const model = JSON.parse(await fsp.readFile(join(m.root, `models-${round}`, `w${id}`, 'model.json'), 'utf8').catch(() => '{}')) as Partial<Model>;
    fail(`writer ${id} exited ${code}: ${model.error ?? writers[id].out.trim()}\n--- files under the test root: name ino/nlink/size ---\n${await listBacking(m.root)}`);
  }
  const runs = await Promise.all(running.map((r) => r.run));
  for (const [i, run] of runs.entries()) {
    const { home, dest, from } = running[i];
    log({ round, migrated: home, dest, code: run.code, final: run.final, stderr: run.stderr.trim() });
    if (run.stderr.includes('    at ')) fail(`ferry migrate printed a stack trace: ${run.stderr}`);
    if (run.code === 0) {
      stats.completed++;
      // After a kill, or a later migration of the same home, where it lives is checked by verify() alone.
      if (killed || movedAgain.has(home)) continue;
      if (!(await exists(dest))) fail(`migration of /${home} to ${dest} succeeded but ${dest} is missing`);
      if (await exists(from)) fail(`migration of /${home} succeeded but its source ${from} is still there`);
    } else if (run.code === 2) {
      stats.refused++;
      if (await exists(dest)) fail(`a refused migration of /${home} left ${dest} behind`);
    } else {
      stats.failed++;
      if (!killed && run.final?.sourceIntact !== true) fail(`migration of /${home} failed without sourceIntact: ${JSON.stringify(run.final)} ${run.stderr}`);
    }
  }
  if (killed) await recoverAfterKill(m, rng, round, stats, log, fail, pid);
}

async function stallEvidence(m: TestMount, writers: WriterProc[]): Promise<string> {
  const parts = [await m.evidence()];
  for (const [id, w] of writers.entries()) if (w.child.exitCode === null) parts.push(`--- writer ${id} (pid ${w.child.pid}) threads ---\n${await threadStates(w.child.pid)}`);
  const status = await m.cli(['status', m.mountpoint, '--json']);
  parts.push(`--- ferry status (exit ${status.code}) ---\n${status.stdout.slice(0, 6000)}${status.stderr}`);
  return parts.join('\n');
}

async function recoverAfterKill(m: TestMount, rng: Random, round: number, stats: TortureStats, log: (e: Record<string, unknown>) => void, fail: (why: string) => never, pid: number): Promise<void> {
  await waitFor(() => hasExited(pid), 30_000, 'the killed daemon to exit');
  const unmounted = await m.cli(['unmount', m.mountpoint, '--force']);
  const mounted = await m.remount();
  log({ round, remount: mounted.code, unmount: unmounted.code, stderr: mounted.stderr.trim() });
  if (mounted.code !== 0) fail(`remount after kill -9 failed: ${mounted.stderr}`);
  const status = await m.status();
  for (const mig of status.migrations as { path: string; interrupted: boolean; running: boolean }[]) {
    if (mig.running) fail(`after a remount, ${mig.path} shows a running migration`);
    const path = join(m.mountpoint, mig.path);
    if (rng.chance(0.7)) {
      const r = await m.cli(['migrate', path, '--resume', '--json']);
      log({ round, resume: mig.path, code: r.code, stderr: r.stderr.trim() });
      // A resume can fail like any migration (not converging), but only with the source intact.
      if (r.code !== 0 && !/"sourceIntact":true/.test(r.stdout)) fail(`resume of ${mig.path} failed: ${r.stderr} ${r.stdout.slice(-500)}`);
      stats.resumes++;
    } else {
      const r = await m.cli(['cancel', path]);
      log({ round, cancelInterrupted: mig.path, code: r.code, stderr: r.stderr.trim() });
      if (r.code !== 0) fail(`cancel of interrupted ${mig.path} failed: ${r.stderr}`);
      stats.cancelledAfterKill++;
    }
  }
  const left = (await m.status()).migrations.filter((x: { running: boolean; interrupted: boolean }) => x.running || x.interrupted);
  if (left.length > 0) fail(`migrations left after resume/cancel: ${JSON.stringify(left)}`);
}

async function readModels(dir: string): Promise<{ files: Map<string, string>; uncertain: Set<string>; ops: number }> {
  const files = new Map<string, string>();
  const uncertain = new Set<string>();
  let ops = 0;
  for (const w of await fsp.readdir(dir)) {
    const model = JSON.parse(await fsp.readFile(join(dir, w, 'model.json'), 'utf8')) as Model;
    ops += model.ops;
    for (const [name, key] of Object.entries(model.files)) files.set(name, join(dir, w, `${key.replace(/\//g, '_')}.bin`));
    for (const name of model.inFlight?.names ?? []) uncertain.add(name);
  }
  return { files, uncertain, ops };
}

/** The tree served by the mount equals the models; no copy, staging dir or source is left where it should not be. */
async function verify(m: TestMount, configs: Map<string, Map<string, Buffer>>, dests: string[], fail: (why: string) => never, modelDir: string, stats: TortureStats): Promise<void> {
  const { files, uncertain, ops } = await readModels(modelDir);
  stats.writerOps += ops;
  for (const home of HOMES) {
    const entries = (await fsp.readdir(join(m.mountpoint, home))).sort();
    for (const entry of entries) {
      const name = `${home}/${entry}`;
      const fixed = configs.get(home)!.get(entry);
      if (fixed) {
        if (!(await fsp.readFile(join(m.mountpoint, name))).equals(fixed)) fail(`${name} changed`);
        continue;
      }
      if (uncertain.has(name)) continue;
      const model = files.get(name);
      if (!model) fail(`${name} is served but no writer has it (entries: ${entries.join(' ')})`);
      const [actual, expected] = await Promise.all([fsp.readFile(join(m.mountpoint, name)), fsp.readFile(model!)]);
      if (!actual.equals(expected)) {
        let at = 0;
        while (at < Math.min(actual.length, expected.length) && actual[at] === expected[at]) at++;
        fail(`${name}: ${actual.length} bytes served, ${expected.length} in the model, first difference at ${at}`);
      }
    }
    for (const fixed of configs.get(home)!.keys()) if (!entries.includes(fixed)) fail(`${home}/${fixed} is gone`);
    for (const name of files.keys()) if (name.startsWith(`${home}/`) && !uncertain.has(name) && !entries.includes(name.slice(home.length + 1))) fail(`${name} is in the model but not served`);
  }
  // Every home lives in exactly one place; nothing else is in the destination roots or the datastore.
  const where = await backings(m);
  const expected = new Set([...where.values()]);
  for (const root of [...dests, m.datastore]) {
    for (const entry of await fsp.readdir(root)) {
      const path = join(root, entry);
      if (!expected.has(path)) fail(`${path} is left behind (homes live at ${[...expected].join(', ')})`);
    }
  }
}

async function remountAndCompare(m: TestMount, configs: Map<string, Map<string, Buffer>>, dests: string[], fail: (why: string) => never, stats: TortureStats, round: number): Promise<void> {
  const before = await backings(m);
  const unmounted = await m.cli(['unmount', m.mountpoint]);
  if (unmounted.code !== 0) fail(`unmount after round ${round} failed: ${unmounted.stderr}`);
  const mounted = await m.remount();
  if (mounted.code !== 0) fail(`remount after round ${round} failed: ${mounted.stderr}`);
  const after = await backings(m);
  if (JSON.stringify([...before]) !== JSON.stringify([...after])) fail(`the path map changed across a remount: ${JSON.stringify([...before])} -> ${JSON.stringify([...after])}`);
  await verify(m, configs, dests, fail, join(m.root, `models-${round}`), { ...stats });
}
