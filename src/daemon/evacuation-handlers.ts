import type { Handler } from '../control/server.js';
import { ControlError, booleanParam, stringParam } from '../control/protocol.js';
import type { Migration, MountServices } from '../migrate/engine.js';
import { RefusedError } from '../migrate/preflight.js';
import { Beneath } from '../util/beneath.js';
import { Evacuation } from '../evacuate/evacuation.js';
import { ORDERS, planEvacuation, type Order } from '../evacuate/plan.js';
import { isWithin } from '../util/paths.js';
import { migrationOptions, numberParam, virtualParam } from './migration-handlers.js';

function orderParam(params: Record<string, unknown>): Order {
  const order = params.order ?? 'name';
  if (!ORDERS.includes(order as Order)) throw new ControlError('EINVAL', `parameter 'order' must be one of ${ORDERS.join(', ')}`);
  return order as Order;
}

/** A list of names or globs. */
function globsParam(params: Record<string, unknown>, name: string): string[] {
  const globs = params[name] ?? [];
  if (!Array.isArray(globs) || globs.some((g) => typeof g !== 'string' || g === '')) throw new ControlError('EINVAL', `parameter '${name}' must be a list of non-empty strings`);
  return globs as string[];
}

/**
 * `evacuate`, and `cancel` / `set-rate` of a directory an evacuation is emptying (any other path goes on to the
 * migration's verbs in `migrations`).
 */
export function evacuationHandlers(services: MountServices, migrations: Migration[], evacuations: Evacuation[], forMigrations: Record<string, Handler>): Record<string, Handler> {
  const at = new Beneath(services.io);
  const active = (path: string) => evacuations.find((e) => e.isActive && e.virtual === path);
  return {
    async evacuate(params, emit) {
      const virtual = virtualParam(params);
      const parallel = numberParam(params, 'parallel', 2, 1);
      if (!Number.isInteger(parallel)) throw new ControlError('EINVAL', "parameter 'parallel' must be a whole number >= 1");
      const options = migrationOptions(params);
      const overlapping = () => {
        const other = evacuations.find((e) => e.isActive && (isWithin(e.virtual, virtual) || isWithin(virtual, e.virtual)));
        if (other) throw new ControlError('EREFUSED', `${virtual} overlaps the ${other.state} evacuation of ${other.virtual} (ferry cancel ${other.virtual} stops it)`);
      };
      overlapping();
      let plan;
      try {
        plan = await planEvacuation(services, at, {
          virtual,
          dest: stringParam(params, 'to'),
          order: orderParam(params),
          orderGiven: params.order !== undefined,
          exclude: globsParam(params, 'exclude'),
          ...(params.only !== undefined && { only: globsParam(params, 'only') }),
          fit: booleanParam(params, 'fit'),
        });
      } catch (err) {
        if (err instanceof RefusedError) throw new ControlError('EREFUSED', err.message);
        throw err;
      }
      if (booleanParam(params, 'dryRun')) return { type: 'plan', ...plan, parallel };
      // Checked again after the plan's awaits, and listed before the next await: two evacuations of overlapping
      // directories never both start.
      overlapping();
      const evacuation = Evacuation.create(plan, parallel, options, services, (m) => migrations.push(m));
      evacuations.push(evacuation);
      const detach = booleanParam(params, 'detach');
      if (!detach) evacuation.onEvent(emit);
      let finished;
      try {
        finished = await evacuation.start();
      } catch (err) {
        // Its record could not be written: nothing started.
        evacuations.splice(evacuations.indexOf(evacuation), 1);
        throw err;
      }
      if (detach) return { id: evacuation.id, detached: true, homes: plan.homes.length };
      return finished;
    },

    async 'evacuate-resume'(params, emit) {
      const virtual = virtualParam(params);
      const evacuation = evacuations.find((e) => e.virtual === virtual && e.state === 'interrupted');
      if (!evacuation) {
        const other = evacuations.find((e) => e.virtual === virtual && e.isActive);
        throw new ControlError(other ? 'ESTATE' : 'ENOENT', other ? `the evacuation of ${virtual} is ${other.state}, not interrupted: nothing to resume` : `no interrupted evacuation of ${virtual} (see ferry status)`);
      }
      const changes = {
        ...(params.parallel !== undefined && { parallel: numberParam(params, 'parallel', 2, 1) }),
        ...(params.rateLimit !== undefined && { rateLimit: numberParam(params, 'rateLimit', 0, 0) }),
      };
      if (changes.parallel !== undefined && !Number.isInteger(changes.parallel)) throw new ControlError('EINVAL', "parameter 'parallel' must be a whole number >= 1");
      const detach = booleanParam(params, 'detach');
      if (!detach) evacuation.onEvent(emit);
      const finished = evacuation.resume(changes);
      if (detach) return { id: evacuation.id, detached: true, homes: evacuation.homes.length };
      return finished;
    },

    async cancel(params, emit) {
      const evacuation = active(virtualParam(params));
      if (!evacuation) return forMigrations.cancel(params, emit);
      return { ...(await evacuation.cancel()), evacuation: evacuation.summary() };
    },

    async 'set-rate'(params, emit) {
      const evacuation = active(virtualParam(params));
      if (!evacuation) return forMigrations['set-rate'](params, emit);
      evacuation.setRateLimit(numberParam(params, 'rateLimit', 0, 0));
      return evacuation.summary();
    },
  };
}
