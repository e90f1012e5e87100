import type { TrackedFile, TrackingSession } from '../track/tracked-file.js';

/** Guest writes to the subtree above this rate make a --guest-io-priority copy pause. */
const GUEST_BUSY_BYTES_PER_SEC = 2 << 20;

/**
 * The files a migration tracks (its session is attached to each: their writes mark its dirty maps, go through its
 * intent log and, in mirror mode, its windows), and the guest's write load on them.
 *
 * State, JS thread only: files are added by the pass (when it takes a file's map) and by the follower of an
 * interrupted subtree (tracker.follow, on a file's first open); all go at once in `detachAll`, when the migration
 * ends (cleanup after the commit, or an abort that removed its checkpoint).
 */
export class Attachments {
  private readonly files = new Set<TrackedFile>();
  /** Each file's write count when it was attached: guest bytes since are the guest's load. */
  private readonly guestBase = new Map<TrackedFile, number>();
  private sample = { at: Date.now(), bytes: 0, busy: false };

  constructor(private readonly session: TrackingSession) {}

  add(file: TrackedFile): void {
    this.files.add(file);
    if (!this.guestBase.has(file)) this.guestBase.set(file, file.bytesWritten);
  }

  [Symbol.iterator](): IterableIterator<TrackedFile> {
    return this.files.values();
  }

  /** Every file stops reporting to the session (the caller then waits for writes in flight: gate.quiesce). */
  detachAll(): void {
    for (const file of this.files) file.detach(this.session);
    this.files.clear();
    this.guestBase.clear();
  }

  /** Whether the guest writes to the subtree faster than GUEST_BUSY_BYTES_PER_SEC (sampled every 100 ms). */
  guestIsBusy(): boolean {
    const now = Date.now();
    if (now - this.sample.at >= 100) {
      let bytes = 0;
      for (const [file, base] of this.guestBase) bytes += file.bytesWritten - base;
      const rate = ((bytes - this.sample.bytes) / (now - this.sample.at)) * 1000;
      this.sample = { at: now, bytes, busy: rate > GUEST_BUSY_BYTES_PER_SEC };
    }
    return this.sample.busy;
  }
}
