import { describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runTorture, type TortureStats } from './torture.js';
import type { Special } from './faults.js';

// A short fixed-seed round of the torture (issue 14) runs in npm test; `npm run torture -- --seed N --minutes M`
// runs seed after seed (N, N+1, ...) for M minutes per data path (scripts/torture.mjs sets these variables).
const SEED = Number(process.env.FERRY_TORTURE_SEED ?? 1);
const ROUNDS = Number(process.env.FERRY_TORTURE_ROUNDS ?? 3);
const MINUTES = process.env.FERRY_TORTURE_MINUTES ? Number(process.env.FERRY_TORTURE_MINUTES) : undefined;
const REPORT = process.env.FERRY_TORTURE_REPORT;
/** The short run's rounds: a destination fault, a kill in a copy (then writes behind the daemon's back, and writers
 * that open their files only once --resume runs), a readlink that fails in the walk. The long run draws every kind. */
const SCHEDULE: Special[] = ['dest', 'kill-copy', 'readlink'];

describe('torture', () => {
  const title = MINUTES ? `seeds from ${SEED} for ${MINUTES} min` : `seed ${SEED}, ${ROUNDS} rounds`;
  it(`${title}: writers, overlapping migrations, cancels, rate changes, kill -9, destination faults; the tree equals the model`, async () => {
    const deadline = MINUTES ? Date.now() + MINUTES * 60_000 : 0;
    const runs: TortureStats[] = [];
    for (let seed = SEED; runs.length === 0 || Date.now() < deadline; seed++) {
      const logFile = join(tmpdir(), `ferry-torture-${seed}-${process.pid}.log`);
      const minutes = MINUTES ? Math.max(0.1, (deadline - Date.now()) / 60_000) : undefined;
      runs.push(await runTorture({ seed, rounds: MINUTES ? 6 : ROUNDS, minutes, logFile, schedule: MINUTES ? undefined : SCHEDULE }));
      if (REPORT) writeFileSync(REPORT, JSON.stringify(runs));
      if (!MINUTES) break;
    }
    console.log(`torture ${JSON.stringify(runs)}`);
    expect(runs.reduce((n, r) => n + r.rounds, 0)).toBeGreaterThan(0);
    expect(runs.reduce((n, r) => n + r.migrations, 0)).toBeGreaterThan(0);
    if (!MINUTES) {
      const [r] = runs;
      expect(r.kills).toBeGreaterThan(0);
      expect(r.resumes).toBeGreaterThan(0);
      expect(r.writtenBehind).toBeGreaterThan(0);
      expect(r.lateOpens).toBeGreaterThan(0);
      expect(r.enospc + r.erofs + r.immutable + r.eio).toBeGreaterThan(0);
    }
    // A long run must have exercised both ends of a kill: interrupted migrations resumed, and cancelled.
    if (MINUTES) {
      expect(runs.reduce((n, r) => n + r.resumes, 0)).toBeGreaterThan(0);
      expect(runs.reduce((n, r) => n + r.cancelledAfterKill, 0)).toBeGreaterThan(0);
    }
  }, MINUTES ? MINUTES * 60_000 + 600_000 : 600_000);
});
