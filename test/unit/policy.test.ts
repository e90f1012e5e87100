import { describe, expect, it } from 'vitest';
import { FREEZE_STEPS_MS, Steering, TARGET_FREEZE_MS, estimateSwitchoverMs, type PassFigures } from '../../src/migrate/policy.js';

const MiB = 1 << 20;
const RATE = 200 * MiB; // bytes per second the copy achieved
const bulk: PassFigures = { dirtyBytes: 64 * MiB, copiedBytes: 64 * MiB, durationMs: 320 };
// A guest rewriting random 4 KiB blocks over 64 MiB: every pass finds nearly all of its 64 KiB blocks dirty again.
const stuck: PassFigures = { dirtyBytes: 60 * MiB, copiedBytes: 60 * MiB, durationMs: 300 };
const base = { throughput: RATE, maxDowntimeMs: 5000, maxIterations: 30 };
const msFor = (bytes: number) => (bytes / RATE) * 1000;

describe('auto mode and the switchover freeze (issue 29, step 9)', () => {
  it('mirrors, instead of taking a freeze over the target, once the dirty set stops shrinking', () => {
    const steering = new Steering(false, () => true);
    expect(msFor(58 * MiB)).toBeGreaterThan(TARGET_FREEZE_MS);
    const next = steering.next({ ...base, dirtyBytes: 58 * MiB, history: [bulk, stuck] });
    expect(next).toEqual({ action: 'mirror', reason: expect.stringMatching(/stopped shrinking.*freeze of ~305 ms.*50 ms/) });
    expect(steering.mirroring).toBe(true);
    // After a mirrored pass only what raced it is dirty: the switchover copies almost nothing.
    const mirrored: PassFigures = { dirtyBytes: 58 * MiB, copiedBytes: 58 * MiB, durationMs: 290 };
    expect(steering.next({ ...base, dirtyBytes: 256 << 10, history: [bulk, stuck, mirrored] })).toEqual({ action: 'switchover' });
  });

  it('mirrors at --max-iterations too when the freeze would be over the target (auto never aborts, nor freezes long)', () => {
    const steering = new Steering(false, () => true);
    const shrinking = (dirtyBytes: number): PassFigures => ({ dirtyBytes, copiedBytes: dirtyBytes, durationMs: msFor(dirtyBytes) });
    const next = steering.next({ ...base, maxIterations: 2, dirtyBytes: 20 * MiB, history: [bulk, shrinking(60 * MiB), shrinking(40 * MiB)] });
    expect(next).toMatchObject({ action: 'mirror' });
  });

  it("counts the freeze's other steps: a copy that alone fills the target is not a freeze under it", () => {
    // bench:vs-qemu, session 19: 28 MiB estimated at 42 ms of copy switched over, and the freeze took 89 ms (the
    // copy 60, the flush 19, drain, walk, metadata, reopen and commit 10 more).
    const atTarget = Math.floor((TARGET_FREEZE_MS / 1000) * RATE);
    expect(estimateSwitchoverMs(atTarget, RATE)).toBeGreaterThan(TARGET_FREEZE_MS);
    expect(estimateSwitchoverMs(0, RATE)).toBe(0);
    const steering = new Steering(false, () => true);
    expect(steering.next({ ...base, dirtyBytes: atTarget, history: [bulk, { ...stuck, dirtyBytes: 40 * MiB }] })).toEqual({ action: 'copy' });
  });

  it("copies the dirty data once after the bulk pass before any freeze: the bulk's sequential rate is not theirs", () => {
    // bench:vs-qemu, session 19: 18 MiB dirty after the bulk pass, estimated at 28 ms of copy at the bulk's rate,
    // took 38 ms (scattered 64 KiB extents) and 10 ms of flush; the freeze was 63 ms.
    const small = Math.floor(((TARGET_FREEZE_MS - FREEZE_STEPS_MS) / 2 / 1000) * RATE);
    for (const auto of [true, false]) {
      const steering = new Steering(false, () => auto);
      expect(steering.next({ ...base, dirtyBytes: small, history: [bulk] })).toEqual({ action: 'copy' });
      expect(steering.next({ ...base, dirtyBytes: 0, history: [bulk] })).toEqual({ action: 'switchover' });
    }
  });

  it('switches over at once when the freeze fits the target, stalled or not', () => {
    const steering = new Steering(false, () => true);
    const small = Math.floor(((TARGET_FREEZE_MS - FREEZE_STEPS_MS) / 1000) * RATE);
    expect(steering.next({ ...base, dirtyBytes: small, history: [bulk, stuck] })).toEqual({ action: 'switchover' });
    expect(steering.mirroring).toBe(false);
  });

  it('keeps iterating while the passes still shrink the dirty set', () => {
    const steering = new Steering(false, () => true);
    expect(steering.next({ ...base, dirtyBytes: 20 * MiB, history: [bulk, { ...stuck, dirtyBytes: 40 * MiB }] })).toEqual({ action: 'copy' });
  });

  it('iterative mode still switches over within --max-downtime with a long freeze (it honours --max-downtime)', () => {
    const steering = new Steering(false, () => false);
    expect(steering.next({ ...base, dirtyBytes: 58 * MiB, history: [bulk, stuck] })).toEqual({ action: 'switchover' });
    expect(steering.mirroring).toBe(false);
  });
});
