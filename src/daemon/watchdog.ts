import type { Logger } from 'pino';
import type { IoGate } from '../fs/gate.js';

const STUCK_AFTER_MS = 30_000;

/**
 * fuse-native's own per-op timeout is off (it would fail guest I/O with ETIMEDOUT, also during a freeze);
 * instead this ticks the gate's clock and warns when an admitted op runs far too long.
 */
export function startWatchdog(gate: IoGate, log: Logger): { stop(): void } {
  let warned = false;
  const timer = setInterval(() => {
    gate.advance();
    const age = gate.oldestInflightAgeMs();
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
