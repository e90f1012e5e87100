import { Command } from 'commander';
import { DaemonError, UnreachableError } from '../control/client.js';
import { UserError, errorMessage } from '../util/user-error.js';

/** Daemon error codes that mean "your request was wrong", which exit 2 like any refused input. */
const INPUT_CODES = new Set(['EINVAL', 'ENOENT', 'ENOTDIR', 'EBUSY', 'EEXIST', 'EPROTO', 'ENOSYS', 'EREFUSED']);

/** Set by a command run with --json: its failures are an error event on stdout as well as the stderr line. */
let jsonErrors = false;

export function useJsonErrors(on: boolean): void {
  jsonErrors = on;
}

export function fail(message: string, exitCode: number, code = exitCode === 2 ? 'EINVAL_INPUT' : 'EFAILED'): never {
  if (jsonErrors) printJson({ type: 'error', message, code, exitCode });
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
    const command = args.at(-1);
    if (command instanceof Command && command.opts().json === true) useJsonErrors(true);
    try {
      await fn(...args);
    } catch (err) {
      if (err instanceof UserError) fail(err.message, err.exitCode, err.code);
      if (err instanceof DaemonError) fail(err.message, INPUT_CODES.has(err.body.code) ? 2 : 1, err.body.code);
      if (err instanceof UnreachableError) fail(err.message, 1, 'EUNREACHABLE');
      if (process.env.FERRY_DEBUG) console.error(err);
      fail(`unexpected error: ${errorMessage(err)} (set FERRY_DEBUG=1 for details)`, 1, 'EUNEXPECTED');
    }
  };
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value) + '\n');
}
