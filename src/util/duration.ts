import parse from 'parse-duration';
import { UserError } from './user-error.js';

/** Parses `5s`, `500ms`, `2m`; a bare number means seconds. */
export function parseDuration(input: string, what: string): number {
  const trimmed = input.trim();
  const value = /^\d+(\.\d+)?$/.test(trimmed) ? Number(trimmed) * 1000 : parse(trimmed);
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new UserError(`${what}: cannot read duration '${input}' (e.g. 5s, 500ms, 2m)`);
  }
  if (value === 0) throw new UserError(`${what} must be > 0 (e.g. 5s, 500ms, 2m)`);
  return value;
}

const BUSY_POLL_MAX_NS = 1_000_000;

/** `--busy-poll`: 0 (off) or a wait of up to 1 ms with its unit (`50us`, `0.2ms`), in whole nanoseconds. */
export function parseBusyPoll(input: string): number {
  const trimmed = input.trim();
  if (/^0+(\.0+)?$/.test(trimmed)) return 0;
  const ns = /^\d/.test(trimmed) && !/^\d+(\.\d+)?$/.test(trimmed) ? parse(trimmed, 'ns') : null;
  if (typeof ns !== 'number' || !Number.isFinite(ns) || ns < 1000 || ns > BUSY_POLL_MAX_NS) {
    throw new UserError(`--busy-poll: '${input}' must be 0 (off) or from 1us to 1ms, with its unit (e.g. 50us)`);
  }
  return Math.round(ns);
}
