import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { IllegalTransition, Job, STATES, STATE_TABLE, VERBS, legal, type JobState, type StartState } from '../../src/migrate/job.js';

const STARTS: StartState[] = ['preflight', 'interrupted', 'committed'];

/** A job brought to `state` through legal moves only, from the nearest state a job starts in. */
function jobIn(state: JobState): Job {
  const paths = new Map<JobState, JobState[]>(STARTS.map((s) => [s, [s]]));
  const queue: JobState[] = [...STARTS];
  while (queue.length > 0 && !paths.has(state)) {
    const from = queue.shift()!;
    for (const to of STATES) {
      if (!paths.has(to) && legal(from, to)) {
        paths.set(to, [...paths.get(from)!, to]);
        queue.push(to);
      }
    }
  }
  const path = paths.get(state);
  if (!path) throw new Error(`${state} cannot be reached`);
  const job = new Job(path[0] as StartState);
  for (const next of path.slice(1)) job.transition(next);
  return job;
}

describe('the migration job', () => {
  it('reaches every state, and ends only in done or aborted', () => {
    for (const state of STATES) expect(jobIn(state).state).toBe(state);
    for (const state of STATES) {
      const onward = STATES.filter((to) => legal(state, to));
      expect(onward.length === 0, state).toBe(state === 'done' || state === 'aborted');
    }
  });

  it('takes every legal move and refuses every illegal one, staying where it was', () => {
    for (const from of STATES) {
      for (const to of STATES) {
        const job = jobIn(from);
        if (legal(from, to)) {
          job.transition(to);
          expect(job.state).toBe(to);
        } else {
          expect(() => job.transition(to)).toThrow(IllegalTransition);
          expect(job.state).toBe(from);
        }
      }
    }
    const seen: [JobState, JobState][] = [];
    const job = new Job('preflight', (a, b) => seen.push([a, b]));
    job.transition('prepare');
    expect(() => job.transition('done')).toThrow('illegal migration state change prepare → done');
    expect(seen).toEqual([['preflight', 'prepare']]);
  });

  it('never goes back from a commit to a state where the source is authoritative', () => {
    for (const from of ['committed', 'cleanup', 'done'] as const) {
      for (const to of ['bulk', 'iterate', 'switchover', 'aborting', 'aborted', 'interrupted'] as const) expect(legal(from, to), `${from} → ${to}`).toBe(false);
    }
  });

  it('answers every verb in every state', () => {
    const table: Record<string, string> = {};
    for (const state of STATES) {
      for (const verb of VERBS) {
        const a = jobIn(state).answer(verb, '/vm1');
        table[`${state} ${verb}`] = a.accepted ? 'yes' : `exit ${a.exitCode}: ${a.reason}`;
      }
    }
    for (const state of STATES) expect(table[`${state} status`]).toBe('yes');
    for (const state of ['committed', 'cleanup', 'done'] as const) {
      expect(table[`${state} cancel`]).toBe(`exit 1: the migration of /vm1 has completed (${state}): the VM runs on the destination; nothing to cancel`);
      expect(table[`${state} resume`]).toMatch(/^exit 1: .*completed/);
      expect(table[`${state} set-rate`]).toMatch(/^exit 1: .*completed/);
    }
    expect(table['interrupted resume']).toBe('yes');
    for (const state of ['preflight', 'prepare', 'bulk', 'iterate', 'switchover'] as const) {
      expect(table[`${state} cancel`]).toBe('yes');
      expect(table[`${state} set-rate`]).toBe('yes');
      expect(table[`${state} resume`]).toBe('exit 1: the migration of /vm1 is running, not interrupted: nothing to resume');
    }
    expect([table['interrupted cancel'], table['interrupted set-rate'], table['aborting cancel']]).toEqual(['yes', 'yes', 'yes']);
    expect(table['aborting resume']).toMatch(/^exit 1: .*being aborted/);
    expect(table['aborted cancel']).toMatch(/^exit 1: .*was aborted: the VM runs on the source/);
  });

  it("is README's state table", () => {
    const readme = readFileSync(fileURLToPath(new URL('../../README.md', import.meta.url)), 'utf8');
    const rows = STATES.map((s) => {
      const i = STATE_TABLE[s];
      const from = i.from.length > 0 ? i.from.join(', ') : '—';
      return `| ${s} | ${from} | ${i.enteredBy} | ${i.durable} | ${i.afterCrash} |`;
    });
    const table = ['| State | From | Entered by | Durable on entering | After a crash here, the next mount… |', '|---|---|---|---|---|', ...rows].join('\n');
    expect(readme).toContain(table);
  });
});
