import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { IntentLog, covers, fromRegion, type Regions } from '../../src/track/intent-log.js';

const REGION = 4 << 20;
const INO = 7n;
const settle = () => new Promise((r) => setImmediate(r));

/** An intent log whose persists wait until the test completes them, one at a time, in order. */
function heldLog(onFailure?: (err: unknown) => Promise<void>) {
  const held: { content: Regions; trimming: boolean; done: (err?: unknown) => void }[] = [];
  let disk: Regions = new Map();
  const log = new IntentLog(
    REGION,
    (content, trimming) =>
      new Promise<void>((resolve, reject) => {
        held.push({
          content,
          trimming,
          done: (err) => {
            if (err) return reject(err);
            disk = content;
            resolve();
          },
        });
      }),
    undefined,
    onFailure,
  );
  return {
    log,
    held,
    disk: () => disk,
    async complete(err?: unknown) {
      held.shift()!.done(err);
      await settle();
    },
  };
}

function onDisk(disk: Regions, region: number): boolean {
  return disk.get(INO)?.has(region) === true;
}

describe('IntentLog', () => {
  it('a write to a region the trim drops, arriving while the trim is written, waits for a flush that logs it (issue 18)', async () => {
    const t = heldLog();
    const first = t.log.before(INO, 0, 4096);
    expect(first).toBeInstanceOf(Promise);
    await t.complete();
    await first;
    expect(t.log.before(INO, 100, 4096)).toBeUndefined();

    // A checkpoint covers region 0; nothing touches it before the trim starts, so the trim drops it...
    t.log.beginEpoch();
    const trim = t.log.trimToEpoch();
    await settle();
    expect(t.held[0]).toMatchObject({ trimming: true, content: new Map() });
    // ...and a write arriving while that trim is on its way to disk must not pass on the old entry.
    const racing = t.log.before(INO, 8192, 4096);
    expect(racing, 'the write passed on a region the trim is dropping').toBeInstanceOf(Promise);
    await t.complete();
    await trim;
    let passed = false;
    void racing!.then(() => (passed = true));
    await settle();
    expect(passed).toBe(false);
    expect(t.held[0].content.get(INO)).toEqual(new Set([0]));
    await t.complete();
    expect(passed).toBe(true);
    expect(onDisk(t.disk(), 0)).toBe(true);
  });

  it('a failed persist holds writes until the owner stopped counting on the log, then lets them through', async () => {
    let release!: () => void;
    const stopped = new Promise<void>((r) => (release = r));
    const failures: unknown[] = [];
    const t = heldLog(async (err) => {
      failures.push(err);
      await stopped;
    });
    const write = t.log.before(INO, 0, 4096)!;
    let passed = false;
    void write.then(() => (passed = true));
    await t.complete(new Error('EIO'));
    expect(failures).toHaveLength(1);
    expect(passed).toBe(false);
    await expect(t.log.trimToEpoch()).rejects.toThrow('EIO');
    release();
    await settle();
    expect(passed).toBe(true);
    expect(t.log.before(INO, 0, 4096)).toBeUndefined();
  });

  it('a write it cannot key (unknown inode) breaks the log at once: the owner stops counting on it, then the write passes', async () => {
    // It used to log every region of the file up to 2^53 bytes: a 2^31-step loop that ended in a RangeError.
    let release!: () => void;
    const stopped = new Promise<void>((r) => (release = r));
    const failures: { code?: string }[] = [];
    const t = heldLog(async (err) => {
      failures.push(err as { code?: string });
      await stopped;
    });
    const write = t.log.unkeyable('/vm1/disk.img')!;
    let passed = false;
    void write.then(() => (passed = true));
    await settle();
    expect(failures).toEqual([expect.objectContaining({ code: 'EINVARIANT' })]);
    expect(passed).toBe(false);
    expect(t.held).toHaveLength(0);
    release();
    await settle();
    expect(passed).toBe(true);
    expect(t.log.unkeyable('/vm1/disk.img')).toBeUndefined();
  });

  it('a file logged from a region on passes writes there without a flush; a trim keeps only what it is told the checkpoint leaves unproven', async () => {
    const t = heldLog();
    const logged = t.log.vouchFrom(INO, 0);
    expect(t.log.before(INO, 0, 4096), 'a write before the log is durable waits').toBeInstanceOf(Promise);
    await t.complete();
    await logged;
    expect(t.disk().get(INO)).toEqual(new Set([fromRegion(0)]));
    expect(t.log.before(INO, 5 * REGION, 4096)).toBeUndefined();
    await t.complete(); // the flush the early write asked for

    // A checkpoint proves regions 0 and 1 copied: the trim keeps the rest of the file and the regions written since.
    t.log.beginEpoch();
    expect(t.log.before(INO, 3 * REGION, 4096)).toBeUndefined();
    const trim = t.log.trimToEpoch(new Map([[INO, new Set([fromRegion(2)])]]));
    await settle();
    expect(t.held[0].content.get(INO)).toEqual(new Set([3, fromRegion(2)]));
    // While the trim is written, region 0 is already withdrawn; region 7 is still logged by the kept marker.
    expect(t.log.before(INO, 0, 4096)).toBeInstanceOf(Promise);
    expect(t.log.before(INO, 7 * REGION, 4096)).toBeUndefined();
    await t.complete();
    await trim;
    await t.complete();
    expect(covers(t.disk(), INO, 0)).toBe(true);
    expect(covers(t.disk(), INO, 1)).toBe(false);
    expect(covers(t.disk(), INO, 9)).toBe(true);
  });

  /**
   * The crash property, over random interleavings of writes, flush completions and checkpoints: at every instant,
   * each write that passed, is not covered by the last written checkpoint, and lies in a region that checkpoint
   * proves copied, has its region in the log on disk. With `cursor`, the file is being copied: a checkpoint proves
   * the regions below the copier's cursor (a resume copies the rest again) and its trim keeps the rest; otherwise
   * every region is proven and the trim keeps nothing but the epoch's regions.
   */
  async function crashProperty(cursor: boolean): Promise<void> {
    type Op = { kind: 'write'; region: number } | { kind: 'complete' } | { kind: 'checkpoint' } | { kind: 'advance' };
    const kinds: fc.Arbitrary<Op>[] = [
      fc.record({ kind: fc.constant('write' as const), region: fc.integer({ min: 0, max: cursor ? 5 : 3 }) }),
      fc.constant({ kind: 'complete' as const }),
      fc.constant({ kind: 'checkpoint' as const }),
    ];
    if (cursor) kinds.push(fc.constant({ kind: 'advance' as const }));
    await fc.assert(
      fc.asyncProperty(fc.boolean(), fc.array(fc.oneof(...kinds), { minLength: 1, maxLength: 150 }), async (logWhole, ops) => {
        const t = heldLog();
        if (cursor && logWhole) void t.log.vouchFrom(INO, 0);
        let epoch = 0;
        let at = 0;
        let coveredBelow = 0;
        let proven = cursor ? 0 : Infinity;
        const writes: { region: number; epoch: number; passed: boolean }[] = [];
        /** A checkpoint in progress: its epoch, what it proves, and its trim (awaited like the engine does). */
        let checkpoint: { epoch: number; limit: number; trim?: Promise<void> } | undefined;
        const check = () => {
          for (const w of writes) {
            if (w.passed && w.epoch >= coveredBelow && w.region < proven) expect(covers(t.disk(), INO, w.region), `region ${w.region} passed unlogged`).toBe(true);
          }
        };
        const step = async () => {
          // The checkpoint is written once every write admitted before its epoch has passed (the gate's quiesce).
          if (checkpoint && !checkpoint.trim && writes.every((w) => w.epoch >= checkpoint!.epoch || w.passed)) {
            coveredBelow = checkpoint.epoch;
            proven = checkpoint.limit;
            const current = checkpoint;
            const keep: Regions = cursor ? new Map([[INO, new Set([fromRegion(current.limit)])]]) : new Map();
            current.trim = t.log.trimToEpoch(keep).then(() => {
              if (checkpoint === current) checkpoint = undefined;
            });
          }
          await settle();
          check();
        };
        for (const o of ops) {
          if (o.kind === 'write') {
            const w = { region: o.region, epoch, passed: false };
            writes.push(w);
            const wait = t.log.before(INO, o.region * REGION + 512, 4096);
            if (wait) void wait.then(() => (w.passed = true));
            else w.passed = true;
          } else if (o.kind === 'complete') {
            if (t.held.length > 0) await t.complete();
          } else if (o.kind === 'advance') {
            at = Math.min(at + 1, 6);
          } else if (!checkpoint) {
            t.log.beginEpoch();
            epoch++;
            checkpoint = { epoch, limit: cursor ? at : Infinity };
          }
          await step();
        }
        while (t.held.length > 0) {
          await t.complete();
          await step();
        }
      }),
      { numRuns: 400 },
    );
  }

  it('never lets a write pass uncovered by both the checkpoint and the log on disk (random interleavings)', async () => {
    await crashProperty(false);
  });

  it('never lets a write pass uncovered in the part of a file a checkpoint proves copied (random interleavings, copier cursor)', async () => {
    await crashProperty(true);
  });
});
