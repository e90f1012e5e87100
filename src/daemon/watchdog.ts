import type { Logger } from 'pino';
import type { FerryData } from 'fuse-native';
import type { IoGate } from '../fs/gate.js';

const STUCK_AFTER_MS = 30_000;

/**
 * fuse-native's own per-op timeout is off (it would fail guest I/O with ETIMEDOUT, also during a freeze);
 * instead this ticks the gate's clock and warns when an admitted op runs far too long. Native ops are not
 * timed one by one: they count as stuck when some are in flight and none has finished for that long.
 */
export function startWatchdog(gate: IoGate, log: Logger, native?: FerryData): { stop(): void } {
  let warned = false;
  let nativeDone = -1;
  let nativeSince = Date.now();
  const timer = setInterval(() => {
    gate.advance();
    const now = Date.now();
    let age = gate.oldestInflightAgeMs(now);
    if (native) {
      const stats = native.stats();
      const done = stats.readOps + stats.writeOps;
      if (stats.inflight === 0 || done !== nativeDone) nativeSince = now;
      nativeDone = done;
      age = Math.max(age, now - nativeSince);
    }
    if (age > STUCK_AFTER_MS && !warned) {
      warned = true;
      log.warn({ oldestOpMs: age, inflight: gate.inflightCount }, 'an op on the backing storage has been running for a long time');
    } else if (age <= STUCK_AFTER_MS) {
      warned = false;
    }
  }, 1000);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
