import { ftruncate, write } from 'node:fs';
import type { MirrorJob } from './tracked-file.js';

function writeAll(fd: number, buf: Buffer, length: number, position: number, done: (err: Error | null) => void): void {
  let written = 0;
  const step = (err: Error | null, bytes: number) => {
    if (err) return done(err);
    written += bytes;
    if (written >= length) return done(null);
    write(fd, buf, written, length - written, position + written, step);
  };
  write(fd, buf, 0, length, position, step);
}

/**
 * Applies a guest write to migration destinations before the guest is answered. A failed destination write
 * does not fail the guest (its write reached the source): the window records the failure, which aborts the
 * migration, and the range is marked dirty.
 */
export function mirrorWrites(jobs: MirrorJob[], buf: Buffer, length: number, position: number, done: () => void): void {
  let left = jobs.length;
  const finish = () => {
    if (--left === 0) done();
  };
  for (const job of jobs) {
    const start = process.hrtime.bigint();
    const run = () =>
      writeAll(job.window.fd, buf, length, position, (err) => {
        if (err) {
          job.window.fail(err);
          job.map.mark(position, length);
        } else {
          job.window.recordMirror(Number(process.hrtime.bigint() - start) / 1e6, length);
        }
        finish();
      });
    if (job.settled) job.settled.then(run);
    else run();
  }
}

/** Applies a size change to migration destinations (after the copier's chunks there), as mirrorWrites a write. */
export async function mirrorResize(jobs: MirrorJob[], oldSize: number, newSize: number): Promise<void> {
  const low = Math.min(oldSize, newSize);
  await Promise.all(
    jobs.map(async (job) => {
      await job.settled;
      await new Promise<void>((resolve) =>
        ftruncate(job.window.fd, newSize, (err) => {
          if (err) {
            job.window.fail(err);
            job.map.mark(low, Math.max(oldSize, newSize) - low);
          }
          resolve();
        }),
      );
    }),
  );
}
