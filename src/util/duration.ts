import ms from 'ms';
import { UserError } from './user-error.js';

/** Parses `5s`, `500ms`, `2m`; a bare number means seconds. */
export function parseDuration(input: string, what: string): number {
  const trimmed = input.trim();
  const value = /^\d+(\.\d+)?$/.test(trimmed) ? Number(trimmed) * 1000 : ms(trimmed as ms.StringValue);
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new UserError(`${what}: cannot read duration '${input}' (e.g. 5s, 500ms, 2m)`);
  }
  return value;
}
