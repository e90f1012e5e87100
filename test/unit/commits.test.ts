// A commit whose save fails and whose restore fails too (issue 27, "a double fault at commit"): the map on disk
// decides whether the commit stands. Fault points are read when src/util/faults.ts loads, so each case imports
// the modules afresh with its own FERRY_FAULTS.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { mkdtemp, mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';

let dir: string | undefined;
afterEach(async () => {
  vi.unstubAllEnvs();
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

async function queueWith(faults: string) {
  vi.stubEnv('FERRY_FAULTS', faults);
  vi.resetModules();
  const { CommitQueue } = await import('../../src/migrate/commits.js');
  const { PathMap } = await import('../../src/fs/path-map.js');
  const { DatastoreState } = await import('../../src/state/datastore-state.js');
  dir = await mkdtemp(join(tmpdir(), 'ferry-unit-commit-'));
  await mkdir(join(dir, 'ds', 'vm1'), { recursive: true });
  await mkdir(join(dir, 'dest'), { recursive: true });
  const state = new DatastoreState(join(dir, 'state'), join(dir, 'ds'));
  await state.init(join(dir, 'ds'));
  const paths = new PathMap(join(dir, 'ds'));
  return { queue: new CommitQueue(paths, state, pino({ level: 'silent' })), paths, state, dest: join(dir, 'dest') };
}

describe('CommitQueue after a failed save', () => {
  it('a save that failed before it wrote, and a failed restore: the old map is on disk, so the commit fails', async () => {
    const { queue, paths, state, dest } = await queueWith('commit-save=fail,commit-restore=fail');
    await expect(queue.commit('/vm1', dest, 'm1')).rejects.toThrow(/injected failure at commit-save/);
    expect(await state.loadMappings()).toEqual([]);
    expect(paths.resolve('/vm1')).toBe(join(dir!, 'ds', 'vm1'));
  });

  it('a save that landed but reported an error, and a failed restore: the new map is on disk, so the commit stands', async () => {
    const { queue, paths, state, dest } = await queueWith('commit-saved=fail,commit-restore=fail');
    await queue.commit('/vm1', dest, 'm1');
    expect(await state.loadMappings()).toEqual([{ virtual: '/vm1', backing: dest }]);
    expect(paths.resolve('/vm1')).toBe(dest);
  });

  it('a save that landed but reported an error, and a restore that works: the old map is back and the commit fails', async () => {
    const { queue, paths, state, dest } = await queueWith('commit-saved=fail');
    await expect(queue.commit('/vm1', dest, 'm1')).rejects.toThrow(/injected failure at commit-saved/);
    expect(await state.loadMappings()).toEqual([]);
    expect(paths.resolve('/vm1')).toBe(join(dir!, 'ds', 'vm1'));
  });

  it('while the map on disk cannot be read, the commit waits and retries until a restore succeeds', async () => {
    const { queue, paths, state, dest } = await queueWith('commit-saved=fail,commit-restore=fail@1');
    // The first restore fails and the map reads as neither: a corrupt file in place of the new one.
    const { writeFile } = await import('node:fs/promises');
    const mappings = join(state.dir, 'mappings.json');
    const saved = state.saveMappings.bind(state);
    let corrupted = false;
    let saves = 0;
    state.saveMappings = async (m) => {
      saves++;
      await saved(m);
      if (!corrupted) {
        corrupted = true;
        await writeFile(mappings, '{ torn');
      }
    };
    await expect(queue.commit('/vm1', dest, 'm1')).rejects.toThrow(/injected failure at commit-saved/);
    // The new map, then (after the injected failure and a wait) the old one back.
    expect(saves).toBe(2);
    expect(await state.loadMappings()).toEqual([]);
    expect(paths.resolve('/vm1')).toBe(join(dir!, 'ds', 'vm1'));
  });
});
