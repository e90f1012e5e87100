import { afterEach, describe, expect, it } from 'vitest';
import fsp from 'node:fs/promises';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { mountFerry, type TestMount } from '../helpers/mounts.js';
import { startWriter } from '../helpers/writer.js';
import { migrate } from '../helpers/migration.js';
import { vmHome } from '../helpers/vm.js';

const MiB = 1 << 20;
const sha = (buf: Buffer) => createHash('sha256').update(buf).digest('hex');
let mounts: TestMount[] = [];
afterEach(async () => {
  for (const m of mounts) await m.stop();
  mounts = [];
});

// Issue 29, step 9: a guest rewriting random small blocks over a region dirties nearly every 64 KiB tracking block
// each pass, so the dirty set stops shrinking at about the region's size. Auto mode (the default) must then finish
// through a mirrored pass, not switch over copying the whole region with I/O frozen.
describe('default mode with a guest rewriting random 4 KiB blocks over a region', () => {
  it('mirrors once the dirty set stops shrinking, and the switchover copies little', async () => {
    const SPAN = 8 * MiB;
    const m = await vmHome(await mountFerry(), 32);
    mounts.push(m);
    // Unpaced: thousands of writes per pass over 128 blocks of 64 KiB. The copy's rate limit makes the estimated
    // freeze of those 8 MiB ~250 ms: within --max-downtime (5 s), over the 50 ms target.
    const writer = await startWriter({ file: join(m.mountpoint, 'vm1/disk.img'), modelOut: join(m.root, 'model'), seed: 29, maxWrite: 4096, span: SPAN });
    const run = await migrate(m, join(m.mountpoint, 'vm1'), m.dest, ['--rate-limit', '32M']).done;
    const stillWriting = writer.child.exitCode === null;
    const report = await writer.stop();
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(report.errors).toEqual([]);
    expect(stillWriting, 'the writer ran through the switchover').toBe(true);
    const switched = run.events.filter((e) => e.type === 'mode');
    expect(switched).toEqual([expect.objectContaining({ mode: 'mirror', reason: expect.stringMatching(/stopped shrinking.*over the 50 ms target/) })]);
    expect(run.final).toMatchObject({ type: 'done', mode: 'mirror' });
    // What the switchover copied with I/O frozen: all bytes copied less those of the passes before it.
    const passes = run.events.filter((e) => e.type === 'pass');
    const frozenBytes = run.final!.bytesCopied - passes.reduce((sum, p) => sum + p.copiedBytes, 0);
    expect(passes.at(-1)).toMatchObject({ mode: 'mirror' });
    expect(passes.filter((p) => p.pass > 0 && p.mode === 'iterative').every((p) => p.dirtyBytes > SPAN / 2)).toBe(true);
    expect(frozenBytes).toBeGreaterThanOrEqual(0);
    expect(frozenBytes).toBeLessThan(SPAN / 16);
    const model = sha(await fsp.readFile(join(m.root, 'model')));
    expect(sha(await fsp.readFile(join(m.dest, 'disk.img')))).toBe(model);
    expect(sha(await fsp.readFile(join(m.mountpoint, 'vm1/disk.img')))).toBe(model);
  });
});
