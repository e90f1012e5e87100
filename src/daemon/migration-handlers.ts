import type { Handler } from '../control/server.js';
import { ControlError, booleanParam, stringParam } from '../control/protocol.js';
import { Migration, type Mode, type MountServices } from '../migrate/engine.js';
import { RefusedError } from '../migrate/preflight.js';

function numberParam(params: Record<string, unknown>, name: string, fallback: number, min: number): number {
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
    passes: m.passes.length,
    lastPass: m.passes.at(-1),
    result: m.result,
  };
}

export function migrationHandlers(services: MountServices, migrations: Migration[]): Record<string, Handler> {
  const running = (path: string) => migrations.find((m) => m.isRunning && m.options.virtual === path);
  const active = (path: string) => migrations.find((m) => m.isActive && m.options.virtual === path);
  return {
    async migrate(params, emit) {
      const migration = new Migration(
        {
          virtual: virtualParam(params),
          dest: stringParam(params, 'to'),
          mode: modeParam(params),
          guestIoPriority: booleanParam(params, 'guestIoPriority'),
          maxDowntimeMs: numberParam(params, 'maxDowntimeMs', 5000, 1),
          maxIterations: numberParam(params, 'maxIterations', 30, 1),
          rateLimit: numberParam(params, 'rateLimit', 0, 0),
          keepSource: booleanParam(params, 'keepSource'),
        },
        services,
      );
      const detach = booleanParam(params, 'detach');
      if (!detach) migration.onEvent(emit);
      try {
        await migration.preflight();
      } catch (err) {
        if (err instanceof RefusedError) throw new ControlError('EREFUSED', err.message);
        throw err;
      }
      migrations.push(migration);
      const finished = migration.start();
      if (detach) return { id: migration.id, detached: true };
      return finished;
    },

    async resume(params, emit) {
      const path = virtualParam(params);
      const migration = migrations.find((m) => m.interrupted && m.options.virtual === path);
      if (!migration) throw new ControlError('ENOENT', `no interrupted migration of ${path} (see ferry status)`);
      migration.onEvent(emit);
      return migration.resume();
    },

    async cancel(params) {
      const path = virtualParam(params);
      const migration = active(path);
      if (!migration) throw new ControlError('ENOENT', `no migration of ${path} is running`);
      await migration.cancel();
      return summarize(migration);
    },

    async 'set-rate'(params) {
      const path = virtualParam(params);
      const migration = running(path);
      if (!migration) throw new ControlError('ENOENT', `no migration of ${path} is running`);
      migration.setRateLimit(numberParam(params, 'rateLimit', 0, 0));
      return summarize(migration);
    },
  };
}
