import type { FerryData, FerryIo } from 'fuse-native';

/** What `ferry status` reports of the data path: which one serves reads and writes, and the native side's figures. */
export interface DataPathStatus {
  mode: 'native' | 'js';
  /** Reads and writes answered in C, and those it handed to JavaScript (frozen subtree, intent not vouched for, map too small). */
  readOps: number;
  writeOps: number;
  passedOps: number;
  mirrorOps: number;
  /** Of readOps and writeOps: those the request loop's fast path answered without libfuse (native/ferry/fast.h). */
  fastPathReads: number;
  fastPathWrites: number;
  /** Requests a polling FUSE worker caught without sleeping, and polls that ended with none. */
  pollCaught: number;
  pollVain: number;
  readBytes: number;
  writeBytes: number;
  errors: number;
  readLatencyP50Us: number;
  readLatencyP99Us: number;
  writeLatencyP50Us: number;
  writeLatencyP99Us: number;
  /**
   * Requests of handles with an O_DIRECT backing fd (O_DIRECT opens; page-cached ones' reads) that could not go
   * through it (unaligned): the fallback.
   */
  directFallback: number;
}

/** The upper bound (µs) of the log2 bucket holding the q-quantile. */
export function quantileUs(buckets: number[], q: number): number {
  const total = buckets.reduce((a, b) => a + b, 0);
  if (total === 0) return 0;
  let seen = 0;
  for (let b = 0; b < buckets.length; b++) {
    seen += buckets[b];
    if (seen >= q * total) return 2 ** b;
  }
  return 2 ** (buckets.length - 1);
}

export function dataPathStatus(native: FerryData | undefined, io: FerryIo): DataPathStatus {
  const directFallback = io.directFallbacks();
  const zero = { readOps: 0, writeOps: 0, passedOps: 0, mirrorOps: 0, fastPathReads: 0, fastPathWrites: 0, pollCaught: 0, pollVain: 0, readBytes: 0, writeBytes: 0, errors: 0, readLatencyP50Us: 0, readLatencyP99Us: 0, writeLatencyP50Us: 0, writeLatencyP99Us: 0 };
  if (!native) return { mode: 'js', ...zero, directFallback };
  const s = native.stats();
  return {
    mode: 'native',
    readOps: s.readOps,
    writeOps: s.writeOps,
    passedOps: s.passedOps,
    mirrorOps: s.mirrorOps,
    fastPathReads: s.fastPathReads,
    fastPathWrites: s.fastPathWrites,
    pollCaught: s.pollCaught,
    pollVain: s.pollVain,
    readBytes: s.readBytes,
    writeBytes: s.writeBytes,
    errors: s.readErrors + s.writeErrors,
    readLatencyP50Us: quantileUs(s.readLatencyLog2Us, 0.5),
    readLatencyP99Us: quantileUs(s.readLatencyLog2Us, 0.99),
    writeLatencyP50Us: quantileUs(s.writeLatencyLog2Us, 0.5),
    writeLatencyP99Us: quantileUs(s.writeLatencyLog2Us, 0.99),
    directFallback,
  };
}
