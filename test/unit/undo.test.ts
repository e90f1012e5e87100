// The order of an abort's undo (issue 27, case 2): a checkpoint that cannot be removed stops everything, so that
// tracking stays on for a correct resume; a partial copy that cannot be removed keeps the journal for the next mount.
import { describe, expect, it } from 'vitest';
import { undo, type UndoSteps } from '../../src/migrate/undo.js';

function steps(failing?: keyof UndoSteps): { steps: UndoSteps; done: string[] } {
  const done: string[] = [];
  const step = (name: keyof UndoSteps) => async () => {
    if (name === failing) throw Object.assign(new Error(`${name} failed`), { code: 'EPERM' });
    done.push(name);
  };
  return { steps: { barCheckpoints: step('barCheckpoints'), detach: step('detach'), removeCopy: step('removeCopy'), removeJournal: step('removeJournal') }, done };
}

describe('undo', () => {
  it('bars checkpoints while still tracking, then detaches, removes the copy, and the journal last', async () => {
    const { steps: s, done } = steps();
    expect(await undo(s)).toEqual({ outcome: 'undone' });
    expect(done).toEqual(['barCheckpoints', 'detach', 'removeCopy', 'removeJournal']);
  });

  it('a checkpoint that cannot be removed: stuck, nothing detached, nothing removed', async () => {
    const { steps: s, done } = steps('barCheckpoints');
    const result = await undo(s);
    expect(result.outcome).toBe('stuck');
    expect((result as { err: Error }).err.message).toBe('barCheckpoints failed');
    expect(done).toEqual([]);
  });

  it('a partial copy that cannot be removed: the journal stays for the next mount', async () => {
    const { steps: s, done } = steps('removeCopy');
    expect((await undo(s)).outcome).toBe('leftover');
    expect(done).toEqual(['barCheckpoints', 'detach']);
  });
});
