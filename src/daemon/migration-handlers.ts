import type { Handler } from '../control/server.js';
import { ControlError, booleanParam, stringParam } from '../control/protocol.js';
import { Migration, type MigrationOptions, type Mode, type MountServices } from '../migrate/engine.js';
import { RefusedError } from '../migrate/preflight.js';
import type { Verb } from '../migrate/job.js';
import { isReserved } from '../fs/reserved.js';

export function numberParam(params: Record<string, unknown>, name: string, fallback: number, min: number): number {
  const value = params[name] ?? fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min) throw new ControlError('EINVAL', `parameter '${name}' must be a number >= ${min}`);
  return value;
}

function modeParam(params: Record<string, unknown>): Mode {
  const mode = params.mode ?? 'auto';
  if (mode !== 'iterative' && mode !== 'mirror' && mode !== 'auto') throw new ControlError('EINVAL', "parameter 'mode' must be iterative, mirror or auto");
  return mode;
}

export function virtualParam(params: Record<string, unknown>): string {
  const path = stringParam(params, 'path');
  if (!path.startsWith('/') || path.split('/').some((part) => part === '..' || part === '.')) {
    throw new ControlError('EINVAL', `'${path}' is not an absolute path inside the mount`);
  }
  return path.length > 1 ? path.replace(/\/+$/, '') : path;
}

export function summarize(m: Migration) {
  return {
    id: m.id,
    path: m.options.virtual,
    destination: m.plan?.destRoot ?? m.options.dest,
    phase: m.phase,
    mode: m.options.mode,
    rateLimit: m.rateLimit,
    running: m.isRunning,
    interrupted: m.interrupted,
    startedAt: new Date(m.startedAt).toISOString(),
    endedAt: m.endedAt === undefined ? undefined : new Date(m.endedAt).toISOString(),
    /** Completed copy passes (the bulk copy is the first). */
    passes: m.passes.length,
    progress: m.figures.snapshot(),
    lastPass: m.passes.at(-1),
    result: m.result,
    /** An abort that could not remove the checkpoint: still aborting and tracking; `ferry cancel` retries. */
    stuck: m.stuck,
  };
}

/** Options a resume may change (the journal keeps the rest: destination, source handling). */
function resumeOptions(params: Record<string, unknown>): Partial<MigrationOptions> {
  const changed: Partial<MigrationOptions> = {};
  if (params.mode !== undefined) changed.mode = modeParam(params);
  if (params.maxDowntimeMs !== undefined) changed.maxDowntimeMs = numberParam(params, 'maxDowntimeMs', 5000, 1);
  if (params.maxIterations !== undefined) changed.maxIterations = numberParam(params, 'maxIterations', 30, 1);
  if (params.rateLimit !== undefined) changed.rateLimit = numberParam(params, 'rateLimit', 0, 0);
  if (params.guestIoPriority !== undefined) changed.guestIoPriority = booleanParam(params, 'guestIoPriority');
  return changed;
}

/** The options of a new migration (each move of an evacuation gets them too). */
export function migrationOptions(params: Record<string, unknown>): Omit<MigrationOptions, 'virtual' | 'dest'> {
  return {
    mode: modeParam(params),
    guestIoPriority: booleanParam(params, 'guestIoPriority'),
    maxDowntimeMs: numberParam(params, 'maxDowntimeMs', 5000, 1),
    maxIterations: numberParam(params, 'maxIterations', 30, 1),
    rateLimit: numberParam(params, 'rateLimit', 0, 0),
    keepSource: booleanParam(params, 'keepSource'),
  };
}

export function migrationHandlers(services: MountServices, migrations: Migration[]): Record<string, Handler> {
  /**
   * The migration of `path` a verb is about, asked through its job's verb table (src/migrate/job.ts): the newest
   * one still holding the path, else the newest that ended (so a verb after the end says how it ended).
   */
  const about = (path: string, verb: Verb): Migration => {
    const mine = migrations.filter((m) => m.options.virtual === path);
    const migration = [...mine].reverse().find((m) => m.isActive) ?? mine.at(-1);
    if (!migration) throw new ControlError('ENOENT', verb === 'resume' ? `no interrupted migration of ${path} (see ferry status)` : `no migration of ${path} is running`);
    const answer = migration.job.answer(verb, path);
    if (!answer.accepted) throw new ControlError(answer.exitCode === 2 ? 'EINVAL' : 'ESTATE', answer.reason);
    return migration;
  };
  return {
    async migrate(params, emit) {
      // The preflight looks at the backing store, where the record is: it is not the mount's to move.
      if (isReserved(virtualParam(params))) throw new ControlError('EREFUSED', `no such file or directory in the mount: ${virtualParam(params)}`);
      const migration = new Migration(
        { virtual: virtualParam(params), dest: stringParam(params, 'to'), ...migrationOptions(params) },
        services,
      );
      const detach = booleanParam(params, 'detach');
      // Events wait for the preflight's verdict: a refused migration answers with its error alone.
      let held: unknown[] | undefined = [];
      if (!detach) migration.onEvent((event) => (held ? held.push(event) : emit(event)));
      try {
        await migration.preflight();
      } catch (err) {
        if (err instanceof RefusedError) throw new ControlError('EREFUSED', err.message);
        throw err;
      }
      for (const event of held) emit(event);
      held = undefined;
      migrations.push(migration);
      const finished = migration.start();
      if (detach) return { id: migration.id, detached: true, destination: migration.plan?.destRoot };
      return finished;
    },

    async resume(params, emit) {
      const path = virtualParam(params);
      const migration = about(path, 'resume');
      const detach = booleanParam(params, 'detach');
      if (!detach) migration.onEvent(emit);
      const finished = migration.resume(resumeOptions(params));
      if (detach) return { id: migration.id, detached: true };
      return finished;
    },

    async cancel(params) {
      const path = virtualParam(params);
      const migration = about(path, 'cancel');
      await migration.cancel();
      // The commit may have come first: then the cancel did nothing, and says so.
      if (migration.result?.type === 'done') {
        throw new ControlError('ESTATE', `the migration of ${path} completed before the cancel took effect: the VM runs on ${migration.result.destination}`);
      }
      if (migration.stuck) throw new ControlError('ESTATE', `the cancel could not finish: ${migration.stuck.message}`);
      return summarize(migration);
    },

    async 'set-rate'(params) {
      const path = virtualParam(params);
      const migration = about(path, 'set-rate');
      migration.setRateLimit(numberParam(params, 'rateLimit', 0, 0));
      return summarize(migration);
    },
  };
}
