#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { mountCommand } from './mount.js';
import { unmountCommand } from './unmount.js';
import { dirtyCommand } from './dirty.js';
import { statusCommand } from './status.js';
import { migrateCommand, cancelCommand } from './migrate.js';
import { demoCommand } from './demo.js';

// Guest I/O and the migration copier share libuv's threadpool: 4 threads would let a copy starve the guest.
process.env.UV_THREADPOOL_SIZE ??= '16';

const program = new Command('ferry')
  .description('live storage migration for running virtual machines')
  .version('0.1.0')
  .exitOverride()
  .configureOutput({ outputError: (text, write) => write(`ferry: ${text.replace(/^error: /, '')}`) });

for (const command of [mountCommand(), unmountCommand(), migrateCommand(), cancelCommand(), statusCommand(), dirtyCommand(), demoCommand()]) {
  program.addCommand(command.exitOverride().configureOutput({ outputError: (text, write) => write(`ferry: ${text.replace(/^error: /, '')}`) }));
}

try {
  await program.parseAsync();
} catch (err) {
  if (err instanceof CommanderError) {
    // Help and version exit 0; any usage error is refused input.
    process.exit(err.exitCode === 0 ? 0 : 2);
  }
  throw err;
}
