import parseFilesize from 'filesize-parser';
import { UserError } from './user-error.js';

/** Parses `64K`, `1M`, `4MiB`, `65536` (binary units) into a whole number of bytes. */
export function parseSize(input: string, what: string): number {
  let bytes: number;
  try {
    bytes = parseFilesize(input.trim(), { base: 2 });
  } catch {
    throw new UserError(`${what}: cannot read size '${input}' (use bytes or a unit, e.g. 65536, 64K, 1M, 4MiB)`);
  }
  if (!Number.isSafeInteger(bytes) || bytes <= 0) {
    throw new UserError(`${what}: '${input}' is not a positive whole number of bytes`);
  }
  return bytes;
}

/** A size that must be a power of two from 4 KiB to 16 MiB. */
function parsePowerOfTwoSize(input: string, flag: string, rule: string): number {
  const bytes = parseSize(input, flag);
  if ((bytes & (bytes - 1)) !== 0 || bytes < 4096 || bytes > 16 * 1024 * 1024) {
    throw new UserError(`${flag}: ${input} must be ${rule}`);
  }
  return bytes;
}

export function parseBlockSize(input: string): number {
  return parsePowerOfTwoSize(input, '--block-size', 'a power of two from 4K to 16M (e.g. 64K)');
}

export function parseReadAround(input: string): number {
  return input.trim() === '0' ? 0 : parsePowerOfTwoSize(input, '--read-around', '0 (off) or a power of two from 4K to 16M (e.g. 128K)');
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function formatBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 2 : 1)} ${UNITS[unit]}`;
}
