#!/usr/bin/env node
import { CommanderError } from 'commander';
import { buildProgram } from './program.js';
import { printJson } from './run.js';
import { fromMountHelper } from './mount-options.js';

// Guest I/O and the migration copier share libuv's threadpool: 4 threads would let a copy starve the guest.
process.env.UV_THREADPOOL_SIZE ??= '16';
// mount(8) runs its helpers (mount.fuse, which runs us) without PATH: fusermount and the rest are found where sh finds them.
process.env.PATH ??= '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

try {
  await buildProgram().parseAsync(fromMountHelper(process.argv));
} catch (err) {
  if (err instanceof CommanderError) {
    // Help and version exit 0; any usage error is refused input (with --json, an error event too).
    if (err.exitCode !== 0 && process.argv.includes('--json')) printJson({ type: 'error', message: err.message.replace(/^error: /, ''), code: err.code, exitCode: 2 });
    process.exit(err.exitCode === 0 ? 0 : 2);
  }
  throw err;
}
