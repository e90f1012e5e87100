/** One pre-copy pass as the policy sees it. */
export interface PassFigures {
  /** Dirty bytes found when the pass started (what it then copied). */
  dirtyBytes: number;
  copiedBytes: number;
  durationMs: number;
}

export type Decision = { action: 'switchover' } | { action: 'copy' } | { action: 'abort'; reason: string };

/** Passes in a row without a shrinking dirty set before giving up. */
const STALL_PASSES = 4;
/**
 * The freeze auto mode aims for (issue 29: the guest's worst stall under 50 ms). A freeze estimated this short is
 * taken at once in every mode, even if more passes could shrink it. Above it, once passes stop shrinking the dirty
 * set, auto mode mirrors rather than take the long freeze: after a mirrored pass the switchover copies only what
 * raced that pass. 50 ms is issue 29's goal for the guest's worst stall: on a quiet machine the freeze's other steps
 * (drain, walk, flush, commit) took 10-13 ms in bench:guest, which leaves the rest for the copy.
 */
export const TARGET_FREEZE_MS = 50;
/**
 * What a freeze spends besides copying: drain, walk, metadata, reopen and the commit's fsyncs took 7-14 ms in
 * bench:vs-qemu (session 19). The flush is not in it: a pass's rate is measured with its flush, as the freeze's is.
 */
export const FREEZE_STEPS_MS = 15;
/** A pass must leave less than this share of the previous pass's dirty data to count as progress. */
const SHRINK_FACTOR = 0.8;

/**
 * When to switch over, as Storage vMotion does: once the remaining dirty data can be copied within the
 * allowed downtime at the measured copy rate. Below that bound, keep iterating while each pass still shrinks
 * the dirty set clearly, so the real freeze is as short as the guest's write rate allows.
 * `history[0]` is the bulk pass; the others are pre-copy iterations.
 */
export function decide(input: {
  dirtyBytes: number;
  throughput: number;
  maxDowntimeMs: number;
  history: PassFigures[];
  maxIterations: number;
}): Decision {
  const { dirtyBytes, throughput, maxDowntimeMs, history } = input;
  const estimateMs = estimateSwitchoverMs(dirtyBytes, throughput);
  const iterations = history.length - 1;
  const previous = iterations > 0 ? history.at(-1) : undefined;
  const shrinking = previous === undefined || dirtyBytes < previous.dirtyBytes * SHRINK_FACTOR;
  if (dirtyBytes === 0) return { action: 'switchover' };
  // The bulk pass's rate is a sequential copy's; the dirty set is scattered extents, which copy slower (bench:vs-qemu:
  // 18 MiB estimated at 28 ms took 38 ms, and a 10 ms flush). One pass over them first, which also measures theirs.
  if (iterations === 0 && input.maxIterations > 0) return { action: 'copy' };
  if (estimateMs <= TARGET_FREEZE_MS) return { action: 'switchover' };
  if (estimateMs <= maxDowntimeMs && (!shrinking || iterations >= input.maxIterations)) return { action: 'switchover' };
  if (iterations >= input.maxIterations) {
    return { action: 'abort', reason: `no convergence after ${iterations} passes: ${rates(dirtyBytes, history, throughput)}` };
  }
  const recent = history.slice(1).slice(-STALL_PASSES);
  const stalled = recent.length === STALL_PASSES && [...recent.slice(1), { dirtyBytes }].every((p, i) => p.dirtyBytes >= recent[i].dirtyBytes * 0.95);
  if (stalled) {
    return { action: 'abort', reason: `the guest writes faster than the copy: dirty data stopped shrinking (${rates(dirtyBytes, history, throughput)})` };
  }
  return { action: 'copy' };
}

/** The freeze a switchover would take now: the copy of what is dirty at the measured rate, and the other steps. */
export function estimateSwitchoverMs(dirtyBytes: number, throughput: number): number {
  if (dirtyBytes === 0) return 0;
  return throughput > 0 ? (dirtyBytes / throughput) * 1000 + FREEZE_STEPS_MS : Infinity;
}

/** The guest dirtied `dirtyBytes` while the last pass ran: that is its write rate, at block granularity. */
function rates(dirtyBytes: number, history: PassFigures[], throughput: number): string {
  const last = history.at(-1);
  const writeRate = last && last.durationMs > 0 ? (dirtyBytes / last.durationMs) * 1000 : 0;
  return `write rate ~${mbps(writeRate)}, copy rate ~${mbps(throughput)}`;
}

function mbps(bytesPerSec: number): string {
  return `${(bytesPerSec / 1e6).toFixed(1)} MB/s`;
}

/**
 * Auto mode: why iterating no longer pays off and mirroring should take over (undefined while it still
 * does). Either the guest dirties data faster than it is copied, or two passes in a row barely shrank
 * the dirty set while the switchover still would not fit.
 */
export function mirrorReason(dirtyBytes: number, history: PassFigures[], throughput: number): string | undefined {
  const iterations = history.slice(1);
  const last = iterations.at(-1);
  if (!last) return undefined;
  const writeRate = last.durationMs > 0 ? (dirtyBytes / last.durationMs) * 1000 : 0;
  if (writeRate > throughput) return `the guest dirties data faster than the copy (${rates(dirtyBytes, history, throughput)})`;
  const recent = [...iterations.slice(-2).map((p) => p.dirtyBytes), dirtyBytes];
  const stuck = recent.length === 3 && recent.slice(1).every((d, i) => d >= recent[i] * SHRINK_FACTOR);
  return stuck ? `the dirty set stopped shrinking (${rates(dirtyBytes, history, throughput)})` : undefined;
}

/** Why auto mode mirrors where iterative would switch over: the passes stopped paying off with the freeze still long. */
function longFreeze(estimateMs: number, atMaxIterations: boolean): string {
  const why = atMaxIterations ? 'the passes reached --max-iterations' : 'the dirty set stopped shrinking';
  return `${why} at an estimated freeze of ~${Math.round(estimateMs)} ms, over the ${TARGET_FREEZE_MS} ms target`;
}

/** Passes in mirror mode before switching over whatever the estimate (mirroring keeps the copy in sync). */
const MIRROR_MAX_PASSES = 5;

/**
 * A migration's choice after each pass: iterate, switch over, start mirroring (auto mode), or give up.
 * State, JS thread only: `mirroring` and the mirror passes counted, changed by `next` (the driver, between passes)
 * and by a resume that asks for another mode.
 */
export class Steering {
  private mirrorPasses = 0;

  constructor(
    public mirroring: boolean,
    private readonly auto: () => boolean,
  ) {}

  /** 'mirror' (with why): mirroring starts, and the next pass copies. Throws ENOCONVERGE when giving up. */
  next(input: { dirtyBytes: number; throughput: number; maxDowntimeMs: number; maxIterations: number; history: PassFigures[] }): { action: 'switchover' | 'copy' } | { action: 'mirror'; reason: string } {
    const { dirtyBytes, throughput, history } = input;
    if (this.mirroring) {
      this.mirrorPasses++;
      const estimate = estimateSwitchoverMs(dirtyBytes, throughput);
      return { action: dirtyBytes === 0 || estimate <= input.maxDowntimeMs || this.mirrorPasses > MIRROR_MAX_PASSES ? 'switchover' : 'copy' };
    }
    const decision = decide(input);
    const estimate = estimateSwitchoverMs(dirtyBytes, throughput);
    // Auto mode takes no freeze over the target that mirroring can avoid (iterative honours --max-downtime alone).
    if (decision.action === 'switchover' && !(this.auto() && estimate > TARGET_FREEZE_MS)) return decision;
    const reason =
      decision.action === 'abort' ? decision.reason : decision.action === 'switchover' ? longFreeze(estimate, history.length - 1 >= input.maxIterations) : mirrorReason(dirtyBytes, history, throughput);
    if (this.auto() && reason) {
      this.mirroring = true;
      return { action: 'mirror', reason };
    }
    if (decision.action === 'abort') throw Object.assign(new Error(decision.reason), { code: 'ENOCONVERGE' });
    return { action: 'copy' };
  }
}
