import { Argument, Command } from 'commander';
import { UserError } from '../util/user-error.js';

const q = (words: string[]) => words.join(' ');

/** One command's options: all flags, the ones that take a value, and the values of those with choices. */
function optionCases(command: Command, name: string): string[] {
  const options = command.options;
  const flags = [...options.flatMap((o) => [o.long, o.short].filter((f): f is string => !!f)), '--help'];
  const lines = [`    ${name}) opts='${q(flags)}' ;;`];
  for (const o of options.filter((o) => o.required || o.optional)) {
    // Paths complete as files; a size, a duration or a name has nothing to offer.
    const values = o.argChoices ? `compgen -W '${q(o.argChoices)}' -- "$cur"` : /<(dir|file|dest|path)>/.test(o.flags) ? 'compgen -f -- "$cur"' : '';
    for (const flag of [o.long, o.short].filter(Boolean)) lines.unshift(`    ${name}:${flag}) COMPREPLY=($(${values})); return ;;`);
  }
  return lines;
}

/** A bash completion script made from the command tree: new commands and options complete without edits here. */
export function bashCompletion(program: Command): string {
  const commands = program.commands.flatMap((c) => [c.name(), ...c.aliases()]);
  const valueCases: string[] = [];
  const optCases: string[] = [];
  for (const command of program.commands) {
    for (const name of [command.name(), ...command.aliases()]) {
      const [opts, ...values] = optionCases(command, name).reverse();
      valueCases.push(...values.filter((l) => l.includes(':')));
      optCases.push(opts);
    }
  }
  return `# bash completion for ferry (made by \`ferry completion bash\`)
_ferry() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" prev="\${COMP_WORDS[COMP_CWORD-1]}" cmd="" opts="" i
  for ((i = 1; i < COMP_CWORD; i++)); do
    case "\${COMP_WORDS[i]}" in -*) ;; *) cmd="\${COMP_WORDS[i]}"; break ;; esac
  done
  if [[ -z $cmd ]]; then
    COMPREPLY=($(compgen -W '${q([...commands, '--help', '--version'])}' -- "$cur"))
    return
  fi
  case "$cmd:$prev" in
${valueCases.join('\n')}
  esac
  case "$cmd" in
${optCases.join('\n')}
  esac
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  else
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}
complete -o filenames -o bashdefault -F _ferry ferry
`;
}

export function completionCommand(program: Command): Command {
  return new Command('completion')
    .description('print a shell completion script: eval "$(ferry completion bash)", or save it as /etc/bash_completion.d/ferry')
    .addArgument(new Argument('<shell>', 'the shell').choices(['bash', 'zsh']))
    .action((shell: string) => {
      if (shell !== 'bash' && shell !== 'zsh') throw new UserError(`no completion for ${shell}`);
      // zsh runs the bash script through its bashcompinit layer.
      const prefix = shell === 'zsh' ? '# zsh completion for ferry (made by `ferry completion zsh`)\nautoload -U +X bashcompinit && bashcompinit\n' : '';
      process.stdout.write(prefix + bashCompletion(program));
    });
}
