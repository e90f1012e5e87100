import { Command } from 'commander';
import { request } from '../control/client.js';
import { stateDirFrom } from '../state/state-dir.js';
import { formatBytes } from '../util/size.js';
import { locate } from './locate.js';
import { action, printJson } from './run.js';

interface DirtyReport {
  path: string;
  blockSize: number;
  size: number;
  dirtyBytes: number;
  extents: [number, number][];
  cleared: boolean;
}

export function dirtyCommand(): Command {
  return new Command('dirty')
    .description("show a file's dirty extents (blocks written since tracking started or was last cleared)")
    .argument('<file>', 'a file inside a ferry mount')
    .option('--json', 'print one JSON object')
    .option('--clear', 'report and reset the dirty set in one step (what a backup tool does after an incremental copy)')
    .option('--state-dir <dir>', 'state dir (default $FERRY_STATE_DIR or /var/lib/ferry)')
    .action(
      action(async (file: string, flags: { json?: boolean; clear?: boolean; stateDir?: string }) => {
        const { record, inside, absolute } = await locate(stateDirFrom(flags.stateDir), file);
        const report = (await request(record.socket, 'dirty', { path: inside, clear: !!flags.clear })) as DirtyReport;
        const shown = { ...report, path: absolute };
        if (flags.json) return printJson(shown);
        const verb = report.cleared ? 'cleared' : 'dirty';
        console.log(`${absolute}: ${formatBytes(report.dirtyBytes)} ${verb} of ${formatBytes(report.size)} in ${report.extents.length} extent(s), block ${formatBytes(report.blockSize)}`);
        for (const [offset, length] of report.extents) console.log(`  ${offset}\t+${length}\t(${formatBytes(length)})`);
      }),
    );
}
