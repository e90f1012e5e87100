import fs from 'node:fs';
import { promisify } from 'node:util';
import type { Extent } from '../track/dirty-map.js';

const read = promisify(fs.read);
const write = promisify(fs.write);

export const CHUNK_BYTES = 1 << 20;
const IN_FLIGHT = 4;
const ZERO = Buffer.alloc(CHUNK_BYTES);

export class CancelledError extends Error {
  readonly code = 'ECANCELED';
}

/**
 * Copies byte ranges between backing files (never through the mount): 1 MiB chunks, several in flight,
 * an optional rate limit that can change while it runs, and all-zero chunks left as holes in a fresh file.
 */
export class Mover {
  /** Bytes per second; 0 means unlimited. */
  rateLimit = 0;
  private windowStart = Date.now();
  private windowBytes = 0;

  constructor(private readonly signal: AbortSignal) {}

  /** Returns the bytes read from the source (the work done, for throughput). */
  async copy(srcFd: number, dstFd: number, ranges: Extent[], options: { sparse: boolean; throttle: boolean }): Promise<number> {
    const chunks: Extent[] = [];
    for (const [offset, length] of ranges) {
      for (let at = offset; at < offset + length; at += CHUNK_BYTES) chunks.push([at, Math.min(CHUNK_BYTES, offset + length - at)]);
    }
    let next = 0;
    let moved = 0;
    const worker = async () => {
      const buffer = Buffer.allocUnsafe(CHUNK_BYTES);
      while (next < chunks.length) {
        const [offset, length] = chunks[next++];
        if (this.signal.aborted) throw new CancelledError('migration cancelled');
        if (options.throttle) await this.throttle(length);
        const { bytesRead } = await read(srcFd, buffer, 0, length, offset);
        if (bytesRead === 0) return; // the file shrank under us: the size is fixed up separately
        moved += bytesRead;
        if (options.sparse && ZERO.compare(buffer, 0, bytesRead, 0, bytesRead) === 0) continue;
        let written = 0;
        while (written < bytesRead) {
          written += (await write(dstFd, buffer, written, bytesRead - written, offset + written)).bytesWritten;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(IN_FLIGHT, chunks.length) }, worker));
    return moved;
  }

  private async throttle(bytes: number): Promise<void> {
    if (this.rateLimit <= 0) return;
    const now = Date.now();
    if (now - this.windowStart > 1000) {
      this.windowStart = now;
      this.windowBytes = 0;
    }
    this.windowBytes += bytes;
    const dueMs = (this.windowBytes / this.rateLimit) * 1000 - (now - this.windowStart);
    if (dueMs > 0) await new Promise((r) => setTimeout(r, dueMs));
  }
}
