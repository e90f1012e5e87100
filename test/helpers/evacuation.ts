import { runJson } from './migration.js';
import type { TestMount } from './mounts.js';

export interface EvacuationRun {
  code: number;
  events: Record<string, any>[];
  stderr: string;
  /** The evacuation's own `done` (its totals): the one without a home. */
  totals: Record<string, any> | undefined;
}

/** Runs `ferry evacuate --json` to the end, collecting its events (`onEvent` sees each as it comes). */
export function evacuate(m: TestMount, dir: string, dest: string, args: string[] = [], onEvent?: (e: Record<string, any>) => void): { done: Promise<EvacuationRun>; pid: number } {
  const { done, pid } = runJson(m, ['evacuate', dir, '--to', dest, ...args], onEvent);
  return { done: done.then((run) => ({ ...run, totals: run.events.find((e) => e.type === 'done' && e.home === undefined) })), pid };
}

/** The most moves running at once, from the evacuation's `started` and `finished` event times. */
export function mostAtOnce(events: Record<string, any>[]): number {
  const edges = events
    .filter((e) => (e.type === 'started' || e.type === 'finished') && e.home !== undefined)
    .map((e) => ({ at: e.at as number, delta: e.type === 'started' ? 1 : -1 }))
    // A finish and a start at the same ms: the finish first (the worker starts its next home after it).
    .sort((a, b) => a.at - b.at || a.delta - b.delta);
  let now = 0;
  let most = 0;
  for (const { delta } of edges) most = Math.max(most, (now += delta));
  return most;
}
