import type { JobState } from './job.js';
import type { ProgressFigures } from './figures.js';

/** A migration's state as events and status report it (src/migrate/job.ts). */
export type Phase = JobState;

export interface MirrorFigures {
  mirroredBytes: number;
  mirroredWrites: number;
  /** Extra guest write latency caused by mirroring. */
  mirrorLatencyP50Ms: number;
  mirrorLatencyP99Ms: number;
}

export interface PassEvent extends MirrorFigures {
  type: 'pass';
  pass: number;
  mode: 'iterative' | 'mirror';
  dirtyBytes: number;
  copiedBytes: number;
  throughputBytesPerSec: number;
  estimatedSwitchoverMs: number;
  durationMs: number;
  /** How long the pass's copy paused because the guest wrote heavily (--guest-io-priority). */
  yieldedToGuestMs: number;
}

/** Once the preflight has passed: where the subtree is read from and the path it will have. */
export interface PlanEvent {
  type: 'plan';
  source: string;
  destination: string;
}

export interface DoneEvent extends MirrorFigures {
  type: 'done';
  mode: 'iterative' | 'mirror';
  downtimeMs: number;
  passes: number;
  bytesCopied: number;
  /** The final progress figures: copiedBytes equals totalBytes, percent is 100. */
  copiedBytes: number;
  totalBytes: number;
  percent: number;
  durationMs: number;
  source: string;
  destination: string;
  /** The source's root, a mount point: emptied, never removed (a subtree an older ferry mapped onto one). */
  keptMountPoint?: string;
}

export interface ErrorEvent {
  type: 'error';
  code: string;
  message: string;
  sourceIntact: true;
}

/** While a pass runs, every 250 ms: how far the migration has got (src/migrate/figures.ts). */
export interface ProgressEvent extends ProgressFigures {
  type: 'progress';
}

/** A switchover given up with I/O frozen for longer than --max-downtime: I/O thawed, passes go on. */
export interface SwitchoverEvent {
  type: 'switchover';
  attempt: number;
  outcome: 'abandoned';
  frozenMs: number;
  steps: Record<string, number>;
}

export interface ModeEvent {
  type: 'mode';
  mode: 'mirror';
  reason: string;
}

export type MigrationEvent = { type: 'phase'; phase: Phase } | PlanEvent | ModeEvent | ProgressEvent | PassEvent | SwitchoverEvent | DoneEvent | ErrorEvent;
