import { Command } from 'commander';
import { mountCommand } from './mount.js';
import { unmountCommand } from './unmount.js';
import { dirtyCommand } from './dirty.js';
import { statusCommand } from './status.js';
import { migrateCommand, cancelCommand } from './migrate.js';
import { evacuateCommand } from './evacuate.js';
import { demoCommand } from './demo.js';
import { completionCommand } from './completion.js';

const AFTER_HELP = `
Exit status:
  0    done
  1    failed: the daemon or the migration could not do it (the VM keeps running on the source)
  2    refused: a wrong argument or a request that cannot be done as asked; nothing was changed
  130  interrupted: a second Ctrl-C stopped waiting for a migration being cancelled

Signals:
  Ctrl-C (SIGINT) during \`ferry migrate\` cancels the migration; a second one stops waiting.
  SIGHUP of \`ferry migrate\` (a closed terminal or ssh session) lets the migration run on in the daemon:
  follow it with \`ferry status\`, stop it with \`ferry cancel\`. SIGHUP of the mount daemon reopens its log file.

Examples:
  ferry mount /vmstore /mnt/ferry               serve /vmstore at /mnt/ferry (a root daemon)
  ferry migrate /mnt/ferry/vm1 --to /fast/vm1   move vm1's directory live to /fast/vm1
  ferry migrate --domain vm1 --to /fast/vm1     the same, finding vm1's home through libvirt
  ferry status /mnt/ferry                       the daemon, its migrations and its log file
  ferry unmount /mnt/ferry

Logs: <state-dir>/logs/<mount point as systemd-escape --path>.log, JSON lines (see \`ferry mount --help\`).
Manual: man ferry (man/ferry.1). Shell completion: ferry completion bash|zsh.`;

/** Examples under a command's own --help (exit codes: ferry --help): the command, and what it does. */
const EXAMPLES: Record<string, [string, string][]> = {
  mount: [
    ['ferry mount /vmstore /mnt/ferry', 'a background daemon; ferry status names its log'],
    ['ferry mount /vmstore /mnt/ferry --log-target journald', 'log to journald (journalctl -t ferry)'],
    ['ferry mount /vmstore /mnt/ferry --foreground --log-format pretty', 'attached, logs for people on stderr'],
    ['mount -t fuse.ferry /vmstore /mnt/ferry -o allow_other,block_size=64K', 'through mount(8) and mount.fuse, as fstab does'],
  ],
  migrate: [
    ['ferry migrate /mnt/ferry/vm1 --to /fast/vm1 --max-downtime 500ms', 'freeze I/O at most 0.5 s'],
    ['ferry migrate --domain vm1 --to /fast/vm1 --json', 'one JSON object per line, errors too'],
    ['ferry migrate /mnt/ferry/vm1 --set-rate 50M', 'throttle the running migration'],
    ['ferry migrate /mnt/ferry/vm1 --resume', 'after a crash of the daemon'],
  ],
  evacuate: [
    ['ferry evacuate /mnt/ferry --to /slow --dry-run', 'the plan: sizes, refusals, free space'],
    ['ferry evacuate /mnt/ferry/cold --to /slow --parallel 2 --rate-limit 200M', 'two at a time, 200M/s for both'],
    ['ferry evacuate /mnt/ferry --set-rate 50M', 'a new shared budget for the running moves'],
    ['ferry cancel /mnt/ferry', 'running moves abort, moved ones stay'],
  ],
};

function examplesText(examples: [string, string][]): string {
  const width = Math.max(...examples.map(([cmd]) => cmd.length)) + 2;
  const lines = examples.map(([cmd, what]) => `  ${cmd.padEnd(width)}${what}`);
  return `\nExamples:\n${lines.join('\n')}\n\nExit status: 0 done, 1 failed, 2 refused (see ferry --help).`;
}

/** Commander's own messages, ferry's way: one line, and where to read more. */
function styled(command: Command, path: string): Command {
  return command
    .exitOverride()
    .configureOutput({ outputError: (text, write) => write(`ferry: ${text.replace(/^error: /, '')}`) })
    .showHelpAfterError(`(see \`${path} --help\`)`);
}

/** The whole command tree: the CLI runs it, and the man page and shell completion are made from it. */
export function buildProgram(): Command {
  const program = styled(new Command('ferry'), 'ferry')
    .description('live storage migration for running virtual machines')
    .version('0.1.0')
    .addHelpText('after', AFTER_HELP);
  for (const command of [mountCommand(), unmountCommand(), migrateCommand(), evacuateCommand(), cancelCommand(), statusCommand(), dirtyCommand(), demoCommand()]) {
    const examples = EXAMPLES[command.name()];
    if (examples) command.addHelpText('after', examplesText(examples));
    program.addCommand(styled(command, `ferry ${command.name()}`));
  }
  program.addCommand(styled(completionCommand(program), 'ferry completion'));
  return program;
}
