import { close } from 'node:fs';
import type { FerryData } from 'fuse-native';
import { CopyWindow } from '../track/copy-window.js';
import type { MirrorFigures } from './events.js';

/** Latency samples kept for the mirror percentiles. */
const MAX_SAMPLES = 100_000;

/**
 * The copy windows of a migration in mirror mode: per destination copy, the fd that guest writes are mirrored
 * through (by JS or by C), and what mirroring has cost.
 *
 * A window belongs to one destination file, not to an inode number: when the pass places a source inode afresh
 * (its number now names another file, or its copy was removed and made again), the old window is retired, never
 * reused, so no write of the new file can land in the old copy. A retired window's fd stays open until the end
 * (`closeAll`): a write through an old handle may still be mirroring through it.
 *
 * State, JS thread only: `windows` and `retired` change in `windowFor` (the pass) and `closeAll` (the driver, after
 * a quiesce); the counts grow with each JS mirror write (`record`, from the write path).
 */
export class Mirrors {
  private readonly windows = new Map<bigint, CopyWindow>();
  private readonly retired: CopyWindow[] = [];
  private samples: number[] = [];
  private bytes = 0;
  private writes = 0;

  constructor(private readonly native: FerryData | undefined) {}

  /** The window of inode `ino`'s copy; `fresh`: that copy was just made, so any window on an older one retires. */
  async windowFor(ino: bigint, fresh: boolean, open: () => Promise<number>): Promise<CopyWindow> {
    let window = this.windows.get(ino);
    if (window && fresh) {
      this.retired.push(window);
      this.windows.delete(ino);
      window = undefined;
    }
    if (!window) {
      window = new CopyWindow(await open(), (ms, bytes) => this.record(ms, bytes), this.native);
      this.windows.set(ino, window);
    }
    return window;
  }

  /** A destination write failed while mirroring: the migration cannot finish. */
  check(): void {
    for (const window of [...this.windows.values(), ...this.retired]) if (window.failure) throw window.failure;
  }

  private record(ms: number, bytes: number): void {
    this.bytes += bytes;
    this.writes++;
    if (this.samples.length < MAX_SAMPLES) this.samples.push(ms);
    else this.samples[Math.floor(Math.random() * MAX_SAMPLES)] = ms;
  }

  /** Mirrors made so far: by JS, by C through windows already closed (folded in), and through open ones. */
  figures(): MirrorFigures {
    const { bytes, writes, samples } = this.totals();
    const sorted = samples.sort((a, b) => a - b);
    const at = (q: number) => (sorted.length ? Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] * 1000) / 1000 : 0);
    return { mirroredBytes: bytes, mirroredWrites: writes, mirrorLatencyP50Ms: at(0.5), mirrorLatencyP99Ms: at(0.99) };
  }

  private totals(): { bytes: number; writes: number; samples: number[] } {
    const totals = { bytes: this.bytes, writes: this.writes, samples: [...this.samples] };
    for (const window of [...this.windows.values(), ...this.retired]) {
      const native = window.nativeStats();
      if (!native) continue;
      totals.bytes += native.bytes;
      totals.writes += native.ops;
      for (const us of native.samplesUs) totals.samples.push(us / 1000);
    }
    return totals;
  }

  /** Once no write can still be mirroring (the caller quiesced the mount): C's counts are folded in, fds closed. */
  closeAll(): void {
    const totals = this.totals();
    this.bytes = totals.bytes;
    this.writes = totals.writes;
    this.samples = totals.samples;
    for (const window of [...this.windows.values(), ...this.retired]) close(window.fd, () => undefined);
    this.windows.clear();
    this.retired.length = 0;
  }
}
