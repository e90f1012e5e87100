/**
 * A migration as a job, in the manner of QEMU's job.c: its states, the moves between them that are legal, what is
 * durable on entering each state and what a crash there leaves, and what each control verb does in each state.
 * Every state change goes through `Job.transition`; an illegal move is a bug in ferry (the engine fails the
 * migration, source intact). Recovery and `ferry status` read these tables; README's state table is checked
 * against STATE_TABLE by test/unit/job.test.ts.
 *
 * State, JS thread only: `state` is changed by its engine alone (the driver, its abort, or recovery creating the
 * job in `interrupted` or `committed`); verbs never change it, they read `answer()` and ask the engine.
 */

export const STATES = ['preflight', 'prepare', 'bulk', 'iterate', 'switchover', 'committed', 'cleanup', 'done', 'aborting', 'aborted', 'interrupted'] as const;
export type JobState = (typeof STATES)[number];

/** States a job object starts in: a new migration, or one a crash left behind (recovery reads its records). */
export type StartState = 'preflight' | 'interrupted' | 'committed';

export interface StateInfo {
  /** The states a job may come from; [] for a state a job only starts in. */
  from: readonly JobState[];
  enteredBy: string;
  durable: string;
  afterCrash: string;
}

export const STATE_TABLE: Record<JobState, StateInfo> = {
  preflight: {
    from: [],
    enteredBy: '`ferry migrate` (the claim is taken before anything is awaited)',
    durable: 'nothing',
    afterCrash: 'finds nothing: the claim was in memory',
  },
  prepare: {
    from: ['preflight'],
    enteredBy: 'the engine, after the checks',
    durable: 'the journal (source, destination, options)',
    afterCrash: 'undoes: removes the partial copy, then the journal',
  },
  bulk: {
    from: ['prepare', 'interrupted'],
    enteredBy: 'the engine (a new migration, or `--resume`)',
    durable: 'checkpoints every 2 s and after each pass (destination flushed first); the intent log before each first write to a region',
    afterCrash: 'with a checkpoint: lists it *interrupted* for `--resume` or `ferry cancel`; without: undoes',
  },
  iterate: {
    from: ['bulk', 'switchover'],
    enteredBy: 'the engine, after the bulk pass or an abandoned switchover',
    durable: 'as in bulk',
    afterCrash: 'as in bulk',
  },
  switchover: {
    from: ['iterate'],
    enteredBy: 'the engine, when the estimate fits `--max-downtime`',
    durable: 'nothing new until the commit',
    afterCrash: 'as in bulk (the source is still authoritative)',
  },
  committed: {
    from: ['switchover'],
    enteredBy: 'the one commit writer',
    durable: 'the path map names the destination',
    afterCrash: 'finishes: serves the destination, deletes the source, drops the journal',
  },
  cleanup: {
    from: ['committed'],
    enteredBy: 'the engine, or recovery for a committed migration',
    durable: 'nothing new',
    afterCrash: 'as in committed',
  },
  done: {
    from: ['cleanup'],
    enteredBy: 'the engine',
    durable: 'the journal is removed',
    afterCrash: 'nothing left to do',
  },
  aborting: {
    from: ['prepare', 'bulk', 'iterate', 'switchover', 'interrupted'],
    enteredBy: 'a failure or `ferry cancel` before the commit',
    durable: 'the checkpoint is removed before tracking stops (if it cannot be, tracking stays on and the abort stops there); then the partial copy, then the journal',
    afterCrash: 'undoes whatever the journal still names (lists it *interrupted* if the checkpoint could not be removed)',
  },
  aborted: {
    from: ['preflight', 'aborting'],
    enteredBy: 'the engine: a refusal in preflight, or the end of an abort',
    durable: 'nothing is left, or a journal without a checkpoint where the partial copy could not be removed',
    afterCrash: 'nothing left to do, or undoes what the journal still names',
  },
  interrupted: {
    from: [],
    enteredBy: 'recovery, at the next mount after a crash, for a migration with a checkpoint',
    durable: 'tracking and intent logging armed before the mount answers its first op; files changed while no daemon ran (ctime past the last heartbeat) marked to be copied whole',
    afterCrash: 'interrupted again',
  },
};

const COMPLETED: readonly JobState[] = ['committed', 'cleanup', 'done'];

export type Verb = 'cancel' | 'resume' | 'set-rate' | 'status';
export const VERBS: readonly Verb[] = ['cancel', 'resume', 'set-rate', 'status'];

/** What a verb does in a state: done by the engine, or refused with an exit code and one line for the user. */
export type Answer = { accepted: true } | { accepted: false; exitCode: number; reason: string };

const ok: Answer = { accepted: true };
const refused = (reason: string): Answer => ({ accepted: false, exitCode: 1, reason });

/** `path` is the migrated path in the mount, for the messages. */
export function answer(state: JobState, verb: Verb, path: string): Answer {
  if (verb === 'status') return ok;
  if (COMPLETED.includes(state)) {
    const done = `the migration of ${path} has completed (${state}): the VM runs on the destination`;
    return refused(verb === 'cancel' ? `${done}; nothing to cancel` : `${done}; nothing to ${verb === 'resume' ? 'resume' : 'rate-limit'}`);
  }
  if (state === 'aborted') return refused(`the migration of ${path} was aborted: the VM runs on the source`);
  if (state === 'aborting') {
    return verb === 'cancel' ? ok : refused(`the migration of ${path} is being aborted: the VM stays on the source`);
  }
  if (verb === 'resume') {
    return state === 'interrupted' ? ok : refused(`the migration of ${path} is running, not interrupted: nothing to resume`);
  }
  return ok; // cancel or set-rate, running or interrupted
}

export class IllegalTransition extends Error {
  constructor(readonly from: JobState, readonly to: JobState) {
    super(`illegal migration state change ${from} → ${to} (a bug in ferry)`);
  }
}

export function legal(from: JobState, to: JobState): boolean {
  return STATE_TABLE[to].from.includes(from);
}

/** One migration's state. `onChange` runs after each legal move (events, logs). */
export class Job {
  private current: JobState;

  constructor(start: StartState, private readonly onChange: (from: JobState, to: JobState) => void = () => undefined) {
    this.current = start;
  }

  get state(): JobState {
    return this.current;
  }

  /** Moves to `to`, or throws IllegalTransition and stays where it is. */
  transition(to: JobState): void {
    const from = this.current;
    if (!legal(from, to)) throw new IllegalTransition(from, to);
    this.current = to;
    this.onChange(from, to);
  }

  is(...states: JobState[]): boolean {
    return states.includes(this.current);
  }

  get committed(): boolean {
    return COMPLETED.includes(this.current);
  }

  answer(verb: Verb, path: string): Answer {
    return answer(this.current, verb, path);
  }
}
