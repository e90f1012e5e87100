import { close, constants as C } from 'node:fs';
import { promisify } from 'node:util';
import type { FerryIo } from 'fuse-native';
import type { Extent } from '../track/dirty-map.js';
import type { CopyWindow } from '../track/copy-window.js';
import { ioError } from '../fs/errno.js';
import { TokenBucket } from './token-bucket.js';
import { reopen } from '../util/beneath-tree.js';

const closeAsync = promisify(close);

/** 4 MiB pieces: large sequential reads keep the source's readahead busy (1 MiB ran at half the speed here). */
export const CHUNK_BYTES = 4 << 20;
/**
 * A rate-limited copy goes in pieces of 1/64 s of its rate (4 KiB-aligned, 16 KiB to 4 MiB), and saves up at most
 * one piece: any second then moves at most the rate and two pieces (one saved, one in flight), about 3% over. With
 * 4 MiB pieces and a second of credit, 10M copied 16 MiB in its first 500 ms (issue 28).
 */
const PIECES_PER_SECOND = 64;
const MIN_PIECE = 16 << 10;

function chunkBytesFor(rateLimit: number): number {
  if (rateLimit <= 0) return CHUNK_BYTES;
  return Math.min(CHUNK_BYTES, Math.max(MIN_PIECE, Math.floor(rateLimit / PIECES_PER_SECOND / 4096) * 4096));
}
/**
 * Requests in flight per file. Kernel copies of small dirty extents want many (random reads of the source).
 * A fresh copy wants two: one chunk's thread waits for its write-behind (the destination's writeback 8 MiB
 * back) while the other reads and writes; alone, each wait stalls the copy (cold 512 MiB: 370-590 MB/s with
 * one, 720-930 with two, 750-900 with three or four, which also spin on the destination's inode lock).
 */
const IN_FLIGHT_KERNEL = 8;
const IN_FLIGHT_FRESH = 2;
const BACKOFF_STEP_MS = 20;
/** The copy still progresses under constant guest load: at most this pause per chunk. */
const BACKOFF_MAX_MS = 200;

/**
 * The source opened again with O_DIRECT (through its fd's /proc link, never a name) for a fresh copy's reads
 * (native/ferry/io.c, copy_sparse); undefined where the filesystem takes no O_DIRECT (EINVAL), as openDirect.
 */
async function directTwin(fd: number): Promise<number | undefined> {
  try {
    return await reopen(fd, C.O_RDONLY | C.O_DIRECT);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EINVAL') return undefined;
    throw err;
  }
}

export class CancelledError extends Error {
  readonly code = 'ECANCELED';
}

/** A copy with I/O frozen that ran past its deadline (the switchover gives up and tries again later). */
export class DeadlineError extends Error {
  readonly code = 'ETIMEDOUT';
}

/**
 * Copies byte ranges between backing files (never through the mount): 4 MiB chunks, each copied in C on the
 * threadpool, with an optional rate limit that can change while it runs. Into a fresh file it copies only the
 * source's data segments (SEEK_DATA), two chunks at a time, and leaves all-zero 4 KiB blocks as holes, as
 * `cp --sparse=always` does, writing behind (a few MiB unwritten at most, so the pass's fsync does not flood the
 * disk the guest uses); otherwise the kernel copies (copy_file_range), several chunks in flight.
 */
export class Mover {
  /** Bytes per second; 0 means unlimited. */
  rateLimit = 0;
  /** Bytes moved since the mover was made (progress reports read it while a pass runs). */
  bytesMoved = 0;
  /** When set and true, guest I/O is heavy: throttled copies pause (up to BACKOFF_MAX_MS per chunk). */
  guestBusy: (() => boolean) | undefined;
  /** Time the copy paused for the guest's I/O since the mover was made (--guest-io-priority). */
  yieldedMs = 0;
  /** Its own, or one shared by the movers of an evacuation (one budget for all its moves). */
  private bucket = new TokenBucket(1, 1);

  constructor(
    private readonly signal: AbortSignal,
    private readonly io: FerryIo,
  ) {}

  /** Paces this mover's throttled chunks through `bucket`, shared with other movers of the same rate. */
  share(bucket: TokenBucket): void {
    this.bucket = bucket;
  }

  /** Returns the bytes read from the source (the work done, for throughput). */
  /**
   * With a window (mirror mode), the copier reports each chunk as dispatched and done, so the write path
   * knows which guest writes it must mirror.
   */
  async copy(
    srcFd: number,
    dstFd: number,
    wanted: Extent[],
    options: { sparse: boolean; throttle: boolean; window?: CopyWindow; deadline?: number; onProgress?: (doneUpTo: number) => void },
  ): Promise<number> {
    const { window } = options;
    window?.beginPlanning();
    const ranges = options.sparse ? await this.dataIn(srcFd, wanted) : wanted;
    const chunks: Extent[] = [];
    const chunkBytes = options.throttle ? chunkBytesFor(this.rateLimit) : CHUNK_BYTES;
    for (const [offset, length] of ranges) {
      for (let at = offset; at < offset + length; at += chunkBytes) chunks.push([at, Math.min(chunkBytes, offset + length - at)]);
    }
    window?.plan(chunks);
    let next = 0;
    let moved = 0;
    // Everything below the first unfinished chunk is copied: that offset is the progress a checkpoint records.
    const done = new Uint8Array(chunks.length);
    let low = 0;
    const finished = (index: number) => {
      done[index] = 1;
      while (low < chunks.length && done[low]) low++;
      options.onProgress?.(low < chunks.length ? chunks[low][0] : Number.MAX_SAFE_INTEGER);
    };
    // The first failure stops new chunks; it is thrown once every chunk in flight has settled, because the caller
    // closes both fds as soon as this returns and a chunk still copying in C would write through a reused number.
    let failure: { err: unknown } | undefined;
    const worker = async () => {
      while (next < chunks.length && failure === undefined) {
        const index = next++;
        const [offset, length] = chunks[index];
        if (this.signal.aborted) throw new CancelledError('migration cancelled');
        if (options.deadline !== undefined && Date.now() > options.deadline) throw new DeadlineError('the copy overran its deadline');
        if (options.throttle) await this.throttle(length);
        window?.dispatched(index);
        // Not `moved += await …`: that reads `moved` before the await and loses other workers' counts.
        const copied = await this.copyChunk(srcFd, directFd, dstFd, offset, length, options.sparse);
        if (options.throttle) this.refund(length - copied);
        moved += copied;
        this.bytesMoved += copied;
        window?.completed(index);
        finished(index);
      }
    };
    const settle = () => worker().catch((err: unknown) => void (failure ??= { err }));
    let directFd: number | undefined;
    try {
      if (options.sparse && chunks.length > 0) directFd = await directTwin(srcFd);
      await Promise.all(Array.from({ length: Math.min(options.sparse ? IN_FLIGHT_FRESH : IN_FLIGHT_KERNEL, chunks.length) }, settle));
    } finally {
      window?.finish();
      if (directFd !== undefined) await closeAsync(directFd);
    }
    if (failure) throw failure.err;
    return moved;
  }

  /**
   * Copies one chunk in C on the threadpool; returns the bytes read. Into a copy that exists, the chunk may span
   * holes of the source (a file cut down and grown back): its data is copied and its holes punched, so the copy
   * reads the same and stays as sparse as the source. The source is looked at when the chunk is dispatched, so a
   * guest write ahead of the copier is seen as data.
   */
  private async copyChunk(srcFd: number, directFd: number | undefined, dstFd: number, offset: number, length: number, sparse: boolean): Promise<number> {
    if (sparse) {
      return new Promise((resolve, reject) =>
        this.io.copySparse(srcFd, directFd ?? -1, offset, dstFd, offset, length, (err, copied) => (err ? reject(ioError(err, 'copy')) : resolve(copied!))),
      );
    }
    const end = offset + length;
    if (((await this.seek(srcFd, offset, this.io.SEEK_HOLE)) ?? end) >= end) return this.copyRange(this.io.copyRange, srcFd, dstFd, offset, length);
    let read = 0;
    for (let at = offset; at < end; ) {
      const data = Math.min((await this.seek(srcFd, at, this.io.SEEK_DATA)) ?? end, end);
      // A destination filesystem that cannot punch holes gets the zeros written instead.
      if (data > at && !(await this.punchHole(dstFd, at, data - at))) read += await this.copyRange(this.io.copyRange, srcFd, dstFd, at, data - at);
      if (data >= end) break;
      const hole = Math.min((await this.seek(srcFd, data, this.io.SEEK_HOLE)) ?? end, end);
      read += await this.copyRange(this.io.copyRange, srcFd, dstFd, data, hole - data);
      at = hole;
    }
    return read;
  }

  private copyRange(copy: FerryIo['copyRange'], srcFd: number, dstFd: number, offset: number, length: number): Promise<number> {
    return new Promise((resolve, reject) =>
      copy(srcFd, offset, dstFd, offset, length, (err, copied) => (err ? reject(ioError(err, 'copy')) : resolve(copied!))),
    );
  }

  /** False when the filesystem has no hole punching (EOPNOTSUPP). */
  private punchHole(fd: number, offset: number, length: number): Promise<boolean> {
    return new Promise((resolve, reject) =>
      this.io.punchHole(fd, offset, length, (err) => (err === -95 ? resolve(false) : err ? reject(ioError(err, 'punch hole')) : resolve(true))),
    );
  }

  private seek(fd: number, offset: number, whence: number): Promise<number | undefined> {
    return new Promise((resolve, reject) =>
      this.io.seek(fd, offset, whence, (err, at) => (err === -6 ? resolve(undefined) : err ? reject(ioError(err, 'seek')) : resolve(at))),
    );
  }

  /**
   * The parts of `ranges` (sorted, as dirty maps and plans give them) that hold data in the source (holes need no
   * copy into a fresh file). What one pair of seeks found, no data in [from, start) and data in [start, stop), is
   * reused for every range it covers: thousands of small dirty ranges in one data segment cost two seeks, not two
   * each (pendingDirtyBytes asks before every decision: 100 ms for a pass's dirty set of a 512 MiB image).
   */
  async dataIn(fd: number, ranges: Extent[]): Promise<Extent[]> {
    const data: Extent[] = [];
    let known = { from: 0, start: 0, stop: 0 };
    for (const [offset, length] of ranges) {
      const end = offset + length;
      let at = offset;
      while (at < end) {
        if (at < known.from || at >= known.stop) {
          const start = (await this.seek(fd, at, this.io.SEEK_DATA)) ?? Infinity;
          // No hole after `start` (the file shrank since): the data runs to this range's end, as far as is known.
          const stop = start === Infinity ? Infinity : ((await this.seek(fd, start, this.io.SEEK_HOLE)) ?? end);
          known = { from: at, start, stop };
        }
        const start = Math.max(at, known.start);
        if (start >= end) break;
        const stop = Math.min(known.stop, end);
        data.push([start, stop - start]);
        at = stop;
      }
    }
    return data;
  }

  /**
   * Gives back the tokens of a chunk's bytes that were holes (punched or skipped, not read): a resumed or regrown
   * sparse file was paced as if its holes were data (64 MiB of holes took 64 s at 1 MiB/s).
   */
  private refund(bytes: number): void {
    if (this.rateLimit > 0 && bytes > 0) this.bucket.giveBack(bytes);
  }

  private async throttle(bytes: number): Promise<void> {
    for (let waited = 0; this.guestBusy?.() && waited < BACKOFF_MAX_MS; waited += BACKOFF_STEP_MS) {
      await new Promise((r) => setTimeout(r, BACKOFF_STEP_MS));
      this.yieldedMs += BACKOFF_STEP_MS;
    }
    // Paced chunk by chunk through a token bucket: chunks in flight together start one after another, so
    // progress shows as they go. Short sleeps, rechecked: a rate changed with --set-rate takes effect within 100 ms.
    for (;;) {
      const rate = this.rateLimit;
      if (rate <= 0) return;
      if (this.bucket.currentRate !== rate) this.bucket.reset(rate, chunkBytesFor(rate));
      const waitMs = this.bucket.take(bytes);
      if (waitMs === 0) return;
      await new Promise((r) => setTimeout(r, Math.min(Math.ceil(waitMs), 100)));
    }
  }
}
