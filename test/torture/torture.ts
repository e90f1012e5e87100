// The torture conductor (issue 14): writer processes doing random operations through the mount in three VM
// homes, while concurrent, overlapping and repeated migrations run in random modes and directions, with cancels,
// rate changes and kill -9 of the daemon followed by remount and --resume or cancel. After every round the tree
// served by the mount must equal the writers' models byte for byte, refused migrations must have changed nothing,
// no orphan copy or staging dir may remain, and the path map must survive a remount. Rounds also kill the daemon
// during an abort and during a cleanup, write to the backing store while it is down, open files first after
// --resume, fail the destination (ENOSPC, EROFS, immutable, EIO), reuse inode numbers while migrations mirror and
// fail the walk's readlink (issue 27, item 6; test/torture/faults.ts).
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
import { drawPlan, FaultyDest, writeBehind, type Plan, type Special } from './faults.js';

const WRITER = fileURLToPath(new URL('./writer.mjs', import.meta.url));
const HOMES = ['vm1', 'vm2', 'vm3'];
const MODES = ['iterative', 'mirror', 'auto'];
/** Symlinks in every home, never written: a failed readlink in the walk must not lose one. */
const LINKS: Record<string, string> = { 'cfg-link': 'vm.cfg', 'away-link': '../elsewhere/none' };

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
  killsInAbort: number;
  killsInCleanup: number;
  /** Kills in an abort that came before the cancel was answered. */
  abortsCut: number;
  /** Files changed in the backing store while the daemon was down. */
  writtenBehind: number;
  /** Resumes during which writers first opened their files. */
  lateOpens: number;
  /** Destination faults that took hold, by kind, and migrations that failed under one. */
  enospc: number;
  erofs: number;
  immutable: number;
  eio: number;
  failedByFault: number;
  /** Files created with the inode number of one just unlinked (reuse rounds, mirrored migrations). */
  inodeReuses: number;
  readlinkFails: number;
}

export interface TortureOptions {
  seed: number;
  /** Rounds to run, or until `minutes` have passed, whichever comes first. */
  rounds: number;
  minutes?: number;
  writers?: number;
  /** What rounds 1, 2, ... do (npm test's short run; the long run draws them). A kill-copy round is repeated until
   * its kill happened (a round whose migrations are refused has no copy to kill), and then resumes. */
  schedule?: Special[];
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
  reuses?: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function runTorture(o: TortureOptions): Promise<TortureStats> {
  const rng = new Random(o.seed);
  const stats: TortureStats = {
    seed: o.seed, rounds: 0, writerOps: 0, migrations: 0, completed: 0, failed: 0, refused: 0, cancels: 0, rateChanges: 0, kills: 0, resumes: 0, cancelledAfterKill: 0,
    killsInAbort: 0, killsInCleanup: 0, abortsCut: 0, writtenBehind: 0, lateOpens: 0, enospc: 0, erofs: 0, immutable: 0, eio: 0, failedByFault: 0, inodeReuses: 0, readlinkFails: 0,
  };
  const log = (entry: Record<string, unknown>) => appendFileSync(o.logFile, JSON.stringify({ t: Date.now(), ...entry }) + '\n');
  const fail = (why: string): never => {
    log({ failure: why });
    throw new TortureFailure(`torture seed ${o.seed}, round ${stats.rounds}: ${why}\nop log: ${o.logFile} (replay: npm run torture -- --seed ${o.seed})`);
  };
  // Every seed mounts with the default page cache for buffered opens, where the writers also store through mappings.
  const mountArgs: string[] = [];
  const planFor = (round: number) => drawPlan(rng, o.schedule?.[Math.min(round, o.schedule.length) - 1]);
  let plan = planFor(1);
  const m = await mountFerry({ args: mountArgs, env: { FERRY_FAULTS: plan.faults } });
  const dests = [join(m.root, 'd1'), join(m.root, 'd2')];
  const deadline = o.minutes ? Date.now() + o.minutes * 60_000 : Infinity;
  let fx: FaultyDest | undefined;
  try {
    for (const d of dests) await fsp.mkdir(d);
    fx = await FaultyDest.create(join(m.root, 'fx'));
    const roots = [...dests, fx.dir, m.datastore];
    /** vm.cfg and a disk image in each home: never written by the writers (the bulk of each copy), checked every round. */
    const configs = new Map<string, Map<string, Buffer>>();
    for (const home of HOMES) {
      await fsp.mkdir(join(m.datastore, home));
      configs.set(home, new Map([['vm.cfg', randomBytes(1000 + rng.int(5000))], ['disk.img', randomBytes((8 + rng.int(17)) << 20)]]));
      for (const [name, content] of configs.get(home)!) await fsp.writeFile(join(m.datastore, home, name), content);
      for (const [name, target] of Object.entries(LINKS)) await fsp.symlink(target, join(m.datastore, home, name));
    }
    log({ start: o.seed, root: m.root, mountArgs });
    const ctx: Ctx = { m, rng, o, stats, log, fail, dests, roots, fx, configs };
    for (let round = 1; round <= o.rounds && Date.now() < deadline; round++) {
      stats.rounds = round;
      log({ round, plan });
      const modelDir = await runRound(ctx, round, plan);
      await verify(ctx, modelDir, stats);
      // A scheduled kill-copy round that found no copy to kill comes again.
      plan = plan.scheduled && plan.special === 'kill-copy' && stats.kills === 0 ? drawPlan(rng, 'kill-copy') : planFor(round + 1);
      await remountAndCompare(ctx, round, modelDir, plan);
    }
    return stats;
  } finally {
    await fx?.close();
    // The daemon's log goes with the op log (the mount's root is removed).
    const logs = join(m.stateDir, 'logs');
    for (const name of await fsp.readdir(logs).catch(() => [])) if (name.endsWith('.log')) await fsp.copyFile(join(logs, name), `${o.logFile}.daemon`).catch(() => undefined);
    await m.stop();
  }
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
  for (const d of ['datastore', 'd1', 'd2', 'fx']) await walk(join(root, d));
  return out.join('\n');
}

async function exists(path: string): Promise<boolean> {
  return fsp.lstat(path).then(() => true, () => false);
}

interface Ctx {
  m: TestMount;
  rng: Random;
  o: TortureOptions;
  stats: TortureStats;
  log: (e: Record<string, unknown>) => void;
  fail: (why: string) => never;
  /** Where plain migrations go, besides the datastore. */
  dests: string[];
  /** Every place a home or a copy may be: those, the faulty destination and the datastore. */
  roots: string[];
  fx: FaultyDest;
  configs: Map<string, Map<string, Buffer>>;
}

/** `ferry mount` again (after an unmount, or a kill), its daemon with these FERRY_FAULTS ('' for none). */
function mountWith(m: TestMount, faults: string) {
  return m.cli(['mount', m.datastore, m.mountpoint, ...m.args], { FERRY_FAULTS: faults });
}

/** Writers whose models go to `dir`; with `reuse`, they often unlink a file and create one at once. */
function startWriters(c: Ctx, dir: string, reuse: boolean, linksAcross = true): Promise<WriterProc[]> {
  const { m, rng, o, log } = c;
  // Links across homes make both homes unmovable while they last: only in some rounds (not where a migration
  // must happen for the round to test anything).
  const crossLinks = rng.chance(0.25) && linksAcross;
  return Promise.all(
    Array.from({ length: o.writers ?? 3 }, async (_, id) => {
      const out = join(dir, `w${id}`);
      await fsp.mkdir(out, { recursive: true });
      const config = { id, seed: rng.int(2 ** 31) + 1, mount: m.mountpoint, homes: HOMES, out, opsLog: `${o.logFile}.ops`, crossLinks, reuse };
      log({ models: dir, writer: id, seed: config.seed });
      const child = spawn(process.execPath, [WRITER, JSON.stringify(config)], { stdio: ['ignore', 'pipe', 'pipe'] });
      const proc: WriterProc = { child, out: '', exited: new Promise((r) => child.on('exit', r)) };
      child.stdout!.on('data', (d) => (proc.out += d));
      child.stderr!.on('data', (d) => (proc.out += d));
      await waitFor(() => proc.out.includes('ready') || child.exitCode !== null, 30_000, `writer ${id}`);
      return proc;
    }),
  );
}

/** SIGTERM, then each writer must have exited cleanly (or, when the daemon was killed under it, with 3). */
async function stopWriters(c: Ctx, writers: WriterProc[], dir: string, killed: boolean): Promise<void> {
  const { m, fail } = c;
  for (const w of writers) w.child.kill('SIGTERM');
  const codes = await Promise.race([Promise.all(writers.map((w) => w.exited)), sleep(30_000).then(() => undefined)]);
  if (!codes) fail(`writers did not stop within 30 s of SIGTERM: an operation is stuck\n${await stallEvidence(m, writers)}`);
  for (const [id, code] of codes!.entries()) {
    if (code === 0 || (killed && code === 3)) continue;
    const model = JSON.parse(await fsp.readFile(join(dir, `w${id}`, 'model.json'), 'utf8').catch(() => '{}')) as Partial<Model>;
    fail(`writer ${id} exited ${code}: ${model.error ?? writers[id].out.trim()}\n--- files under the test root: name ino/nlink/size ---\n${await listBacking(m.root)}`);
  }
}

interface Running {
  home: string;
  dest: string;
  from: string;
  run: Promise<MigrationRun>;
  /** The daemon has started it (a loaded host can take seconds to start the `ferry migrate` process). */
  accepted: boolean;
  /** Since when it copies (bulk or iterate), if it does. */
  copyingSince?: number;
}

/** One round; returns the directory of the models the tree must equal now. */
async function runRound(c: Ctx, round: number, plan: Plan): Promise<string> {
  const { m, rng, stats, log, fail, dests, fx } = c;
  const modelDir = join(m.root, `models-${round}`);
  const where = await backings(m);
  // A home left on the faulty destination (a link across homes refused its move away) would make the writers
  // meet the fault: no destination fault until it has moved.
  if (plan.special === 'dest' && [...where.values()].some((b) => b.startsWith(fx.dir + '/'))) {
    log({ round, plainInstead: 'a home lives on the faulty destination' });
    plan = { ...plan, special: 'plain' };
  }
  const writers = await startWriters(c, modelDir, plan.special === 'reuse', plan.special !== 'dest');
  const { pid } = await m.status();
  const running: Running[] = [];
  // A third of the plain rounds kill the daemon: most while a migration copies (after its first checkpoint, 2 s in,
  // a resume starts from the checkpoint; before it, the remount rolls the copy back), the rest at a random instant.
  const drawn = rng.chance(0.3) ? (rng.chance(0.7) ? { inCopyAfterMs: 500 + rng.int(4000) } : { atMs: 1500 + rng.int(6000) }) : undefined;
  // After the first checkpoint (2 s in): the remount finds an interrupted migration (a plain round's kill may
  // also come before it, and the remount rolls the copy back).
  const inCopy = plan.special === 'kill-copy' ? { inCopyAfterMs: 2200 + rng.int(2500) } : undefined;
  // npm test's run kills late enough in the copy for a checkpoint, and then resumes.
  const forced = plan.scheduled && plan.special === 'kill-copy';
  const kill: { inCopyAfterMs: number } | { atMs: number } | undefined = forced ? { inCopyAfterMs: 2500 } : (inCopy ?? (plan.special === 'plain' ? drawn : undefined));
  // A round that waits for an event of its own (a kill in a copy, an abort or a cleanup, a destination fault): no
  // rate change or cancel may end its migration first.
  const quiet = plan.special === 'kill-copy' || plan.special === 'kill-abort' || plan.special === 'kill-cleanup' || plan.special === 'dest';
  let copyingSince: number | undefined;
  let killed = false;
  let killedAt = 0;
  /** Once the round's loop is over, a kill timed by an event comes too late and is dropped. */
  let closed = false;
  const killNow = (what: string, counter?: 'killsInAbort' | 'killsInCleanup') => {
    if (killed || closed) return;
    log({ round, kill: pid, what, inCopy: copyingSince !== undefined });
    process.kill(pid, 'SIGKILL');
    [killed, killedAt] = [true, Date.now()];
    stats.kills++;
    if (counter) stats[counter]++;
  };
  let cancelling: Promise<unknown> | undefined;
  let faulted: Promise<boolean> | undefined;
  const started = Date.now();
  const launch = async (home: string, victim: boolean) => {
    const from = where.get(home)!;
    // Away from where it is: to another destination root, or back to the datastore (A -> B -> A); a destination
    // fault's victim onto the faulty destination.
    const choices = [...dests, m.datastore].filter((r) => !from.startsWith(r + '/'));
    const dest = victim ? join(fx.dir, home) : join(rng.pick(choices), home);
    // Inode numbers reused while the migration mirrors; a read-only remount needs a moment with no file open for
    // writing there, which only the iterative copy has (between two files).
    const drawnMode = rng.pick(MODES);
    const mode = plan.special === 'reuse' ? 'mirror' : victim && plan.destFault === 'erofs' ? 'iterative' : drawnMode;
    // A round that kills during a copy copies slowly enough for the kill to find one, a fault's victim for the
    // fault to find it, a round that kills in the cleanup fast enough to get there.
    const slow = forced ? [2] : plan.special === 'kill-abort' || (kill && 'inCopyAfterMs' in kill) || victim ? [2, 4] : undefined;
    const rate = `${rng.pick(slow ?? (plan.special === 'kill-cleanup' ? [16, 64] : [2, 4, 8, 16, 64]))}M`;
    log({ round, migrate: home, from, dest, mode, rate });
    stats.migrations++;
    const entry: Running = { home, dest, from, accepted: false, run: Promise.resolve(undefined as never) };
    const onEvent = (e: Record<string, unknown>) => {
      entry.accepted = true;
      if (e.type !== 'phase') return;
      if (e.phase === 'bulk') {
        copyingSince ??= Date.now();
        entry.copyingSince ??= Date.now();
      } else if (e.phase !== 'iterate') {
        [copyingSince, entry.copyingSince] = [undefined, undefined];
        // A fault lands in the copy, never on a destination that has become the home's (the guest would meet it).
        if (victim) void fx.stop();
      }
      // The kills during an abort (our cancel's) and a cleanup (held by FERRY_FAULTS cleanup=pause) follow the
      // event that starts it.
      if (e.phase === 'aborting' && plan.special === 'kill-abort' && cancelling) setTimeout(() => killNow(`aborting ${home}`, 'killsInAbort'), plan.killDelayMs);
      if (e.phase === 'cleanup' && plan.special === 'kill-cleanup') setTimeout(() => killNow(`cleanup of ${home}`, 'killsInCleanup'), plan.killDelayMs);
    };
    entry.run = migrate(m, join(m.mountpoint, home), dest, ['--mode', mode, '--rate-limit', rate, '--max-iterations', '8'], onEvent).done;
    running.push(entry);
  };
  // Two or three actions spread over the round: a migration of an idle home, maybe a second one alongside,
  // an overlapping request for a home already moving (must be refused and change nothing).
  await sleep(300 + rng.int(700));
  await launch(rng.pick(HOMES), plan.special === 'dest');
  if (rng.chance(0.5)) {
    const idle = HOMES.filter((h) => !running.some((r) => r.home === h));
    await launch(rng.pick(idle), false);
  }
  const first = running[0];
  const overlap = rng.chance(0.4) ? first : undefined;
  const movedAgain = new Set<string>();
  // Writers keep writing until every migration has ended (at least a few seconds, at most a minute).
  const minMs = 4000 + rng.int(8000);
  const settled = running.map(() => ({ done: false }));
  running.forEach((r, i) => void r.run.then(() => (settled[i].done = true)));
  let opsLogSize = -1;
  let progressAt = Date.now();
  while (Date.now() - started < 60_000) {
    await sleep(200 + rng.int(600));
    if (killed) break;
    // Writers that stop making progress are a hang: stop here, with the evidence, not at the test's timeout.
    const size = (await fsp.stat(`${c.o.logFile}.ops`).catch(() => ({ size: 0 }))).size;
    if (size !== opsLogSize) [opsLogSize, progressAt] = [size, Date.now()];
    else if (Date.now() - progressAt > 20_000 && !killed) fail(`no writer operation completed for 20 s\n${await stallEvidence(m, writers)}`);
    const due = kill && ('atMs' in kill ? Date.now() - started >= kill.atMs : copyingSince !== undefined && Date.now() - copyingSince >= kill.inCopyAfterMs);
    if (due) {
      killNow('drawn');
      break;
    }
    const intoCopy = first.copyingSince !== undefined && Date.now() - first.copyingSince >= plan.afterMs;
    if (plan.special === 'kill-abort' && intoCopy && !cancelling) {
      cancelling = m.cli(['cancel', join(m.mountpoint, first.home)]).then((r) => {
        log({ round, cancelToKill: first.home, code: r.code, stderr: r.stderr.trim() });
        // Unanswered: the kill cut the abort short (answered: the abort had ended first).
        if (killed && r.code !== 0) stats.abortsCut++;
      });
    }
    if (plan.special === 'dest' && intoCopy && !faulted) {
      faulted = fx.apply(plan.destFault!, first.dest, plan.slack).then((held) => {
        log({ round, destFault: plan.destFault, dest: first.dest, held });
        return held;
      });
    }
    if (overlap && rng.chance(0.3)) {
      const dest = join(rng.pick(dests), `${overlap.home}-again-${round}-${rng.int(1e6)}`);
      const again = await m.cli(['migrate', join(m.mountpoint, overlap.home), '--to', dest]);
      log({ round, overlap: overlap.home, code: again.code, stderr: again.stderr.trim() });
      // Only once the first has ended (or before the daemon has it) may a second migration of the home go ahead.
      const firstRunning = first.accepted && !settled[0].done;
      if (again.code === 0 && firstRunning) fail(`a second migration of /${overlap.home} to ${dest} succeeded while the first was running`);
      if (again.code === 0) movedAgain.add(overlap.home);
      if (again.code === 2 && (await exists(dest))) fail(`a refused migration left ${dest} behind`);
      if (again.code === 2) stats.refused++;
    }
    const live = running[rng.int(running.length)];
    if (!quiet && rng.chance(0.15)) {
      const r = await m.cli(['migrate', join(m.mountpoint, live.home), '--set-rate', `${rng.pick([4, 16, 64])}M`]);
      log({ round, setRate: live.home, code: r.code, stderr: r.stderr.trim() });
      if (r.code === 0) stats.rateChanges++;
    } else if (!quiet && rng.chance(0.08)) {
      const r = await m.cli(['cancel', join(m.mountpoint, live.home)]);
      log({ round, cancel: live.home, code: r.code, stderr: r.stderr.trim() });
      if (r.code === 0) stats.cancels++;
    }
    if (settled.every((x) => x.done) && Date.now() - started > minMs) break;
  }
  closed = true;
  // A cancel still connecting must not reach the daemon the recovery mounts.
  await cancelling;
  await stopWriters(c, writers, modelDir, killed);
  await fx.stop();
  const runs = await Promise.all(running.map((r) => r.run));
  for (const [i, run] of runs.entries()) {
    const { home, dest, from } = running[i];
    log({ round, migrated: home, dest, code: run.code, final: run.final, stderr: run.stderr.trim() });
    if (run.stderr.includes('    at ')) fail(`ferry migrate printed a stack trace: ${run.stderr}`);
    if (plan.special === 'readlink' && run.code !== 0 && /walk-readlink/.test(`${run.stderr} ${JSON.stringify(run.final)}`)) stats.readlinkFails++;
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
      // A failure in preflight (the walk that sizes the subtree: a failed readlink) ends before the job emits an
      // event (its error comes alone, issue 28): then nothing may have been written.
      const inPreflight = !run.events.some((e) => e.type === 'phase') && run.stderr.trim() !== '' && !(await exists(dest));
      if (!killed && !inPreflight && run.final?.sourceIntact !== true) fail(`migration of /${home} failed without sourceIntact: ${JSON.stringify(run.final)} ${run.stderr}`);
    }
  }
  if (plan.special === 'dest') await afterDestFault(c, round, plan, first, runs[0], (await faulted) ?? false);
  if (killed) return recoverAfterKill(c, round, pid, modelDir, killedAt, forced);
  return modelDir;
}

async function stallEvidence(m: TestMount, writers: WriterProc[]): Promise<string> {
  const parts = [await m.evidence()];
  for (const [id, w] of writers.entries()) if (w.child.exitCode === null) parts.push(`--- writer ${id} (pid ${w.child.pid}) threads ---\n${await threadStates(w.child.pid)}`);
  const status = await m.cli(['status', m.mountpoint, '--json']);
  parts.push(`--- ferry status (exit ${status.code}) ---\n${status.stdout.slice(0, 6000)}${status.stderr}`);
  return parts.join('\n');
}

/**
 * The faulty destination under a migration: while the fault holds, the partial copy is gone or the failure says the
 * next mount removes it; once lifted and remounted, nothing of it is left, and the destination takes a migration
 * again (the home then moves away: no home lives there between rounds).
 */
async function afterDestFault(c: Ctx, round: number, plan: Plan, victim: Running, run: MigrationRun, held: boolean): Promise<void> {
  const { m, rng, stats, log, fail, fx } = c;
  const said = `${run.stderr} ${JSON.stringify(run.final ?? {})}`;
  const took = plan.destFault === 'eio' ? /injected failure/.test(said) : held;
  if (took) stats[plan.destFault!]++;
  if (took && run.code === 1) stats.failedByFault++;
  if (run.code === 1 && (await exists(victim.dest)) && !/could not be removed/.test(said)) fail(`the failed migration of /${victim.home} left ${victim.dest} behind and did not say so: ${said}`);
  await fx.lift(victim.dest);
  const unmounted = await m.cli(['unmount', m.mountpoint]);
  const mounted = await mountWith(m, '');
  log({ round, lifted: plan.destFault, unmount: unmounted.code, remount: mounted.code, stderr: mounted.stderr.trim() });
  if (unmounted.code !== 0 || mounted.code !== 0) fail(`unmount/remount after lifting ${plan.destFault} failed: ${unmounted.stderr} ${mounted.stderr}`);
  for (const mig of (await m.status()).migrations as { path: string; interrupted: boolean }[]) {
    const r = await m.cli(['cancel', join(m.mountpoint, mig.path)]);
    log({ round, cancelAfterFault: mig.path, code: r.code, stderr: r.stderr.trim() });
    if (r.code !== 0) fail(`cancel of ${mig.path} after lifting ${plan.destFault} failed: ${r.stderr}`);
  }
  const from = (await backings(m)).get(victim.home)!;
  if (!from.startsWith(fx.dir + '/')) {
    if (await exists(victim.dest)) fail(`${victim.dest} is still there once ${plan.destFault} was lifted and the mount recovered`);
    const again = await migrate(m, join(m.mountpoint, victim.home), victim.dest, ['--mode', 'auto']).done;
    log({ round, afterFault: victim.home, dest: victim.dest, code: again.code, stderr: again.stderr.trim() });
    // A hard link across homes that a writer left when it stopped pins the home (refused, as it must be).
    if (again.code === 2 && /hard link/.test(again.stderr)) return;
    if (again.code !== 0) fail(`once ${plan.destFault} was lifted, migrating /${victim.home} to ${victim.dest} failed: ${again.stderr}`);
  }
  const away = join(rng.pick([...c.dests, m.datastore]), victim.home);
  const back = await migrate(m, join(m.mountpoint, victim.home), away, ['--mode', 'auto']).done;
  log({ round, awayFromFaulty: victim.home, dest: away, code: back.code, stderr: back.stderr.trim() });
  if (back.code === 2 && /hard link/.test(back.stderr)) return;
  if (back.code !== 0) fail(`migrating /${victim.home} off the faulty destination to ${away} failed: ${back.stderr}`);
}

/**
 * After a kill -9: maybe files changed in the backing store while no daemon runs, then a remount, the models
 * checked, and --resume or cancel of what was interrupted; during some resumes, writers open their files for the
 * first time. Returns the directory of the models the tree must equal now.
 */
async function recoverAfterKill(c: Ctx, round: number, pid: number, modelDir: string, killedAt: number, forced: boolean): Promise<string> {
  const { m, rng, stats, log, fail } = c;
  await waitFor(() => hasExited(pid), 30_000, 'the killed daemon to exit');
  if (forced || rng.chance(0.5)) {
    const changed = await writeBehind({ stateDir: m.stateDir, datastore: m.datastore, homes: HOMES, modelDir, killedAt, configs: c.configs }, rng, (e) => log({ round, ...e }));
    stats.writtenBehind += changed;
  }
  const unmounted = await m.cli(['unmount', m.mountpoint, '--force']);
  const mounted = await mountWith(m, '');
  log({ round, remount: mounted.code, unmount: unmounted.code, stderr: mounted.stderr.trim() });
  if (mounted.code !== 0) fail(`remount after kill -9 failed: ${mounted.stderr}`);
  // Before anything resumes: the models hold (the writes behind the daemon's back included).
  await verifyTree(c, modelDir, { ...stats });
  const resumes: string[] = [];
  for (const mig of (await m.status()).migrations as { path: string; interrupted: boolean; running: boolean }[]) {
    if (mig.running) fail(`after a remount, ${mig.path} shows a running migration`);
    const path = join(m.mountpoint, mig.path);
    // A run must show both ends of a kill: a seed's first interrupted migration is resumed (even seeds) or
    // cancelled (odd), its second gets the other, the rest are drawn.
    const drawn = rng.chance(0.7);
    const resumeFirst = c.o.seed % 2 === 0;
    const [resumed, cancelled] = [stats.resumes + resumes.length > 0, stats.cancelledAfterKill > 0];
    const resume = !resumed && !cancelled ? resumeFirst : !resumed || !cancelled ? !resumed : drawn;
    if (forced || resume) resumes.push(path);
    else {
      const r = await m.cli(['cancel', path]);
      log({ round, cancelInterrupted: mig.path, code: r.code, stderr: r.stderr.trim() });
      if (r.code !== 0) fail(`cancel of interrupted ${mig.path} failed: ${r.stderr}`);
      stats.cancelledAfterKill++;
    }
  }
  // Files first opened after --resume has started: writers that start only then, at a rate that lets them in.
  const lateOpen = resumes.length > 0 && (forced || rng.chance(0.5));
  let done = false;
  const results = Promise.all(resumes.map((path) => m.cli(['migrate', path, '--resume', '--json', ...(lateOpen ? ['--rate-limit', '8M'] : [])]))).finally(() => (done = true));
  let finalDir = modelDir;
  if (lateOpen) {
    await waitFor(async () => done || (await m.status()).migrations.some((x: { running: boolean }) => x.running), 30_000, 'a resume to start');
    finalDir = join(m.root, `models-${round}-resumed`);
    const writers = await startWriters(c, finalDir, false);
    log({ round, lateOpen: finalDir, resumeDone: done });
    stats.lateOpens++;
    await results;
    await stopWriters(c, writers, finalDir, false);
  }
  for (const [i, r] of (await results).entries()) {
    log({ round, resume: resumes[i], code: r.code, stderr: r.stderr.trim() });
    // A resume can fail like any migration (not converging), but only with the source intact.
    if (r.code !== 0 && !/"sourceIntact":true/.test(r.stdout)) fail(`resume of ${resumes[i]} failed: ${r.stderr} ${r.stdout.slice(-500)}`);
    stats.resumes++;
  }
  const left = (await m.status()).migrations.filter((x: { running: boolean; interrupted: boolean }) => x.running || x.interrupted);
  if (left.length > 0) fail(`migrations left after resume/cancel: ${JSON.stringify(left)}`);
  return finalDir;
}

async function readModels(dir: string): Promise<{ files: Map<string, string>; uncertain: Set<string>; ops: number; reuses: number }> {
  const files = new Map<string, string>();
  const uncertain = new Set<string>();
  let [ops, reuses] = [0, 0];
  for (const w of await fsp.readdir(dir)) {
    const model = JSON.parse(await fsp.readFile(join(dir, w, 'model.json'), 'utf8')) as Model;
    ops += model.ops;
    reuses += model.reuses ?? 0;
    for (const [name, key] of Object.entries(model.files)) files.set(name, join(dir, w, `${key.replace(/\//g, '_')}.bin`));
    for (const name of model.inFlight?.names ?? []) uncertain.add(name);
  }
  return { files, uncertain, ops, reuses };
}

/** The tree served by the mount equals the models; the fixed files and the symlinks are as they were made. */
async function verifyTree(c: Ctx, modelDir: string, stats: TortureStats): Promise<void> {
  const { m, configs, fail } = c;
  const { files, uncertain, ops, reuses } = await readModels(modelDir);
  stats.writerOps += ops;
  stats.inodeReuses += reuses;
  for (const home of HOMES) {
    const entries = (await fsp.readdir(join(m.mountpoint, home))).sort();
    for (const entry of entries) {
      const name = `${home}/${entry}`;
      if (entry in LINKS) {
        const target = await fsp.readlink(join(m.mountpoint, name)).catch((e: NodeJS.ErrnoException) => `(${e.code})`);
        if (target !== LINKS[entry]) fail(`${name} points to ${target}, not ${LINKS[entry]}`);
        continue;
      }
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
        fail(`${name}: ${actual.length} bytes served, ${expected.length} in the model, first difference at ${at}${await sameInode(m.mountpoint, home, entries, entry)}${await lookalikes(m.root, actual)}`);
      }
    }
    for (const fixed of [...configs.get(home)!.keys(), ...Object.keys(LINKS)]) if (!entries.includes(fixed)) fail(`${home}/${fixed} is gone`);
    for (const name of files.keys()) if (name.startsWith(`${home}/`) && !uncertain.has(name) && !entries.includes(name.slice(home.length + 1))) fail(`${name} is in the model but not served`);
  }
}

/** For a failure message: the served name's inode, and the other names of the home that have it. */
async function sameInode(mountpoint: string, home: string, entries: string[], entry: string): Promise<string> {
  const st = await fsp.stat(join(mountpoint, home, entry));
  const others: string[] = [];
  for (const e of entries) if (e !== entry && (await fsp.lstat(join(mountpoint, home, e)).catch(() => undefined))?.ino === st.ino) others.push(e);
  return `; served as inode ${st.ino} with ${st.nlink} link(s)${others.length > 0 ? `, also named ${others.join(', ')}` : ''}`;
}

/** For a failure message: which files of any model of the run hold what was served instead. */
async function lookalikes(root: string, actual: Buffer): Promise<string> {
  const found: string[] = [];
  for (const dir of (await fsp.readdir(root)).filter((d) => d.startsWith('models-'))) {
    for (const w of await fsp.readdir(join(root, dir))) {
      for (const bin of (await fsp.readdir(join(root, dir, w))).filter((f) => f.endsWith('.bin'))) {
        const content = await fsp.readFile(join(root, dir, w, bin));
        if (content.length >= 4096 && actual.length >= 4096 && content.subarray(0, 4096).equals(actual.subarray(0, 4096))) found.push(`${dir}/${w}/${bin}`);
      }
    }
  }
  return found.length > 0 ? `; its first 4 KiB are those of ${found.join(', ')}` : '';
}

/**
 * verifyTree, and every home lives in exactly one place: no copy, staging dir or source is left anywhere else. The
 * datastore's record (.ferry/moved.json) exists exactly while a home lives elsewhere, and names exactly those.
 */
async function verify(c: Ctx, modelDir: string, stats: TortureStats): Promise<void> {
  await verifyTree(c, modelDir, stats);
  const where = await backings(c.m);
  const expected = new Set(where.values());
  const elsewhere = [...where].filter(([home, backing]) => backing !== join(c.m.datastore, home));
  for (const root of c.roots) {
    for (const entry of await fsp.readdir(root)) {
      const path = join(root, entry);
      if (root === c.m.datastore && entry === '.ferry' && elsewhere.length > 0) continue;
      if (!expected.has(path)) c.fail(`${path} is left behind (homes live at ${[...expected].join(', ')})`);
    }
  }
  if (elsewhere.length > 0) await verifyRecord(c, elsewhere.map(([home, backing]) => ({ virtual: `/${home}`, backing })));
}

/** The datastore's record names `moved` and nothing pending (settled right after each commit: given a moment). */
async function verifyRecord(c: Ctx, moved: { virtual: string; backing: string }[]): Promise<void> {
  const sorted = (list: { virtual: string; backing: string }[]) => JSON.stringify(list.map(({ virtual, backing }) => [virtual, backing]).sort());
  const dir = join(c.m.datastore, '.ferry');
  let found = '';
  for (let tries = 0; tries < 20; tries++) {
    const entries = await fsp.readdir(dir).catch(() => [] as string[]);
    const record = JSON.parse(await fsp.readFile(join(dir, 'moved.json'), 'utf8').catch(() => 'null')) as { moved: typeof moved; pending: unknown[] } | null;
    found = `${JSON.stringify(entries)} ${JSON.stringify(record)}`;
    if (entries.length === 1 && record && record.pending.length === 0 && sorted(record.moved) === sorted(moved)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  c.fail(`the datastore's record disagrees with the path map ${sorted(moved)}: ${found}`);
}

/** Unmount and mount again (the daemon with the next round's FERRY_FAULTS): the path map and the tree are the same. */
async function remountAndCompare(c: Ctx, round: number, modelDir: string, next: Plan): Promise<void> {
  const { m, fail } = c;
  const before = await backings(m);
  const unmounted = await m.cli(['unmount', m.mountpoint]);
  if (unmounted.code !== 0) fail(`unmount after round ${round} failed: ${unmounted.stderr}`);
  const mounted = await mountWith(m, next.faults);
  if (mounted.code !== 0) fail(`remount after round ${round} failed: ${mounted.stderr}`);
  const after = await backings(m);
  if (JSON.stringify([...before]) !== JSON.stringify([...after])) fail(`the path map changed across a remount: ${JSON.stringify([...before])} -> ${JSON.stringify([...after])}`);
  await verify(c, modelDir, { ...c.stats });
}
