/** How far a migration's copy has got and how fast it goes, as progress events and `ferry status` report it. */
export interface ProgressFigures {
  /** The pass under way (0 = the bulk copy), or the last one. */
  pass: number;
  /** Data bytes copied so far by the migration, all passes together. */
  copiedBytes: number;
  /** Copied so far plus what is known to be left: the data of the subtree (holes excluded), then its dirty data. */
  totalBytes: number;
  percent: number;
  /** Measured over the last few seconds of copying (known from the first progress event). */
  rateBytesPerSec: number;
  /** Seconds until what is known to be left is copied at that rate; null while no rate is known. */
  etaSeconds: number | null;
}

/** The rate is the bytes copied over this long a window, so a pause or a burst shows within seconds. */
const RATE_WINDOW_MS = 2000;

/**
 * The live figures of one migration. State, JS thread only: changed by its passes (`startPass`, `left`) and by
 * `sample`, which every reader calls (progress events, status).
 */
export class Figures {
  private pass = 0;
  /** Bytes copied when `ahead` was estimated. */
  private base = 0;
  private ahead = 0;
  private finished = false;
  private readonly samples: { at: number; copied: number }[] = [];

  constructor(private readonly copied: () => number) {}

  /** A pass starts that will copy about `bytes` of data. */
  startPass(pass: number, bytes: number): void {
    this.pass = pass;
    this.left(bytes);
  }

  /** About `bytes` of data are left to copy from now on. */
  left(bytes: number): void {
    this.sample();
    this.base = this.copied();
    this.ahead = bytes;
  }

  /** Nothing is left: the migration is done. */
  finish(): void {
    this.left(0);
    this.finished = true;
  }

  snapshot(): ProgressFigures {
    const { at, copied } = this.sample();
    const totalBytes = Math.max(copied, this.base + this.ahead);
    const oldest = this.samples[0];
    const rate = at > oldest.at ? ((copied - oldest.copied) / (at - oldest.at)) * 1000 : 0;
    const rateBytesPerSec = this.finished ? 0 : Math.round(rate);
    return {
      pass: this.pass,
      copiedBytes: copied,
      totalBytes,
      percent: totalBytes > 0 ? Math.floor((100 * copied) / totalBytes) : this.finished ? 100 : 0,
      rateBytesPerSec,
      etaSeconds: totalBytes === copied ? 0 : rateBytesPerSec > 0 ? Math.ceil((totalBytes - copied) / rateBytesPerSec) : null,
    };
  }

  private sample(): { at: number; copied: number } {
    const now = { at: Date.now(), copied: this.copied() };
    this.samples.push(now);
    // Keep one sample older than the window: the rate then spans the whole window. An idle start (a pass walking
    // and opening files) is left out, or the rate of the first seconds reads far below the copy's.
    while (this.samples.length > 2 && (now.at - this.samples[1].at >= RATE_WINDOW_MS || this.samples[1].copied === this.samples[0].copied)) this.samples.shift();
    return now;
  }
}
