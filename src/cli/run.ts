import { DaemonError, UnreachableError } from '../control/client.js';
import { UserError, errorMessage } from '../util/user-error.js';

/** Daemon error codes that mean "your request was wrong", which exit 2 like any refused input. */
const INPUT_CODES = new Set(['EINVAL', 'ENOENT', 'ENOTDIR', 'EBUSY', 'EEXIST', 'EPROTO', 'ENOSYS', 'EREFUSED']);

export function fail(message: string, exitCode: number): never {
  process.stderr.write(`ferry: ${message}\n`);
  process.exit(exitCode);
}

/** One line on stderr that changes neither the outcome nor the exit code. */
export function warn(message: string): void {
  process.stderr.write(`ferry: warning: ${message}\n`);
}

/** Wraps a command action: user errors become one line on stderr and an exit code, never a stack trace. */
export function action<A extends unknown[]>(fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (err) {
      if (err instanceof UserError) fail(err.message, err.exitCode);
      if (err instanceof DaemonError) fail(err.message, INPUT_CODES.has(err.body.code) ? 2 : 1);
      if (err instanceof UnreachableError) fail(err.message, 1);
      if (process.env.FERRY_DEBUG) console.error(err);
      fail(`unexpected error: ${errorMessage(err)} (set FERRY_DEBUG=1 for details)`, 1);
    }
  };
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value) + '\n');
}
