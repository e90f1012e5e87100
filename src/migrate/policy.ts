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
/** A freeze this short is taken at once, even if more passes could shrink it. */
const SMALL_FREEZE_MS = 100;

/**
 * When to switch over, as Storage vMotion does: once the remaining dirty data can be copied within the
 * allowed downtime at the measured copy rate. Below that bound, keep iterating while a pass still halves
 * the dirty set, so the real freeze is as short as the guest's write rate allows.
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
  const previous = history.at(-1);
  if (dirtyBytes === 0) return { action: 'switchover' };
  if (estimateMs <= maxDowntimeMs) {
    const stillHalving = previous !== undefined && dirtyBytes < previous.dirtyBytes / 2;
    if (estimateMs <= SMALL_FREEZE_MS || !stillHalving || history.length >= input.maxIterations) return { action: 'switchover' };
  }
  const iterations = history.length - 1;
  if (iterations >= input.maxIterations) {
    return { action: 'abort', reason: `no convergence after ${iterations} passes: ${rates(dirtyBytes, history, throughput)}` };
  }
  const recent = history.slice(-STALL_PASSES - 1);
  const stalled = recent.length > STALL_PASSES && recent.slice(1).every((p, i) => p.dirtyBytes >= recent[i].dirtyBytes * 0.95);
  if (stalled && iterations >= STALL_PASSES) {
    return { action: 'abort', reason: `the guest writes faster than the copy: dirty data stopped shrinking (${rates(dirtyBytes, history, throughput)})` };
  }
  return { action: 'copy' };
}

export function estimateSwitchoverMs(dirtyBytes: number, throughput: number): number {
  return throughput > 0 ? (dirtyBytes / throughput) * 1000 : Infinity;
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
