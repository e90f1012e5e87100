import { afterEach, describe, expect, it } from 'vitest';
import { mkdtemp, mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatastoreState } from '../../src/state/datastore-state.js';

let dir: string | undefined;
afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

async function stateWithJournal(): Promise<{ state: DatastoreState; journals: string }> {
  dir = await mkdtemp(join(tmpdir(), 'ferry-unit-state-'));
  const state = new DatastoreState(dir, '/datastore');
  await state.init('/datastore');
  await state.writeJournal({ id: 'm1' } as never);
  await state.writeSide('m1', 'checkpoint', { at: 1 });
  return { state, journals: join(state.dir, 'migrations') };
}

describe('DatastoreState.removeJournal', () => {
  it('removes the side files and the journal; files already gone are fine', async () => {
    const { state, journals } = await stateWithJournal();
    await state.removeJournal('m1');
    expect(await readdir(journals)).toEqual([]);
    await state.removeJournal('m1');
  });

  it('a side file that cannot be removed fails the call, and the journal stays to name the migration', async () => {
    // It swallowed every error: a checkpoint left behind beside a removed journal, silently.
    const { state, journals } = await stateWithJournal();
    await mkdir(join(journals, 'm1.intent.json'));
    await writeFile(join(journals, 'm1.intent.json', 'x'), '');
    await expect(state.removeJournal('m1')).rejects.toMatchObject({ code: expect.stringMatching(/EISDIR|EPERM/) });
    expect((await readdir(journals)).sort()).toEqual(['m1.intent.json', 'm1.json']);
  });
});

describe('DatastoreState.journals', () => {
  it('a journals directory that cannot be read fails recovery instead of reading as "no migrations"', async () => {
    const { state, journals } = await stateWithJournal();
    expect((await state.journals()).map((j) => j.id)).toEqual(['m1']);
    await rm(journals, { recursive: true });
    expect(await state.journals()).toEqual([]); // never made: nothing to recover
    await writeFile(journals, 'not a directory');
    await expect(state.journals()).rejects.toMatchObject({ code: 'ENOTDIR' });
  });
});

describe('DatastoreState heartbeat', () => {
  it('reads back the last beat, written in place; anything unreadable is no beat at all', async () => {
    const { state } = await stateWithJournal();
    expect(await state.lastBeat()).toBeUndefined();
    await state.beat(1_765_000_000_123);
    await state.beat(9_000);
    expect(await state.lastBeat()).toBe(9_000);
    await writeFile(join(state.dir, 'alive'), 'garbage\n');
    expect(await state.lastBeat()).toBeUndefined();
  });
});
