import { Command, Option } from 'commander';
import { resolve } from 'node:path';
import { action } from './run.js';

export function demoCommand(): Command {
  return new Command('demo')
    .description('boot a guest on a ferry mount, migrate it live mid-workload, verify, and report (needs root)')
    .addOption(new Option('--guest <kind>', 'qemu, host-writer (a process writing through the mount), or auto').choices(['auto', 'qemu', 'host-writer']).default('auto'))
    .option('--keep', 'leave the scratch datastores for inspection')
    .option('--json', 'print the collected facts as JSON instead of the text report')
    .option('--report <file>', 'where to write the HTML report')
    .action(
      action(async (flags: { guest: 'auto' | 'qemu' | 'host-writer'; keep?: boolean; json?: boolean; report?: string }) => {
        const { runDemo, DEFAULT_REPORT } = await import('../demo/demo.js');
        const ok = await runDemo({
          guest: flags.guest,
          keep: !!flags.keep,
          json: !!flags.json,
          report: resolve(flags.report ?? DEFAULT_REPORT),
          log: (line) => process.stderr.write(line + '\n'),
        });
        process.exit(ok ? 0 : 1);
      }),
    );
}
