#!/usr/bin/env node
// Writes man/ferry.1 from the CLI's command tree (dist/cli/program.js: run `npm run build` first).
// --check: exit 1 when man/ferry.1 differs from what the commands say (the test suite runs it).
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const { buildProgram } = await import(new URL('../dist/cli/program.js', import.meta.url).href);
const target = fileURLToPath(new URL('../man/ferry.1', import.meta.url));

/** roff text: backslashes and hyphens escaped, no line starting with a control character. */
const roff = (text) => text.replace(/\\/g, '\\e').replace(/-/g, '\\-').replace(/^([.'])/gm, '\\&$1');

function commandSection(command) {
  const help = command.createHelp();
  const lines = ['.SS ' + roff(`${command.name()} ${help.commandUsage(command).replace(/^ferry \S+ ?/, '')}`.trim())];
  if (command.aliases().length) lines.push(roff(`Alias: ${command.aliases().join(', ')}.`), '.br');
  lines.push(roff(command.description()));
  for (const arg of help.visibleArguments(command)) lines.push('.TP', `.I ${roff(help.argumentTerm(arg))}`, roff(help.argumentDescription(arg)));
  for (const option of help.visibleOptions(command)) lines.push('.TP', `.B ${roff(help.optionTerm(option))}`, roff(help.optionDescription(option)));
  const examples = afterHelp(command, '\nExamples:');
  if (examples) lines.push('.PP', 'Examples:', '.nf', ...examples.split('\n').slice(1).map((l) => roff(l.replace(/^ {2}/, ''))), '.fi');
  return lines;
}


function render(program) {
  const tail = afterHelp(program, '\nExit status:');
  const sections = tail.split(/\n(?=\S[^\n]*:\n)/).filter((s) => s.trim());
  const out = [
    '.\\" Made by scripts/gen-man.mjs from the ferry command definitions: edit those, then run npm run build.',
    '.TH FERRY 1 "" "ferry ' + program.version() + '" "ferry manual"',
    '.SH NAME',
    'ferry \\- ' + roff(program.description()),
    '.SH SYNOPSIS',
    '.B ferry',
    '.I command',
    '[options] [arguments]',
    '.SH COMMANDS',
    ...program.commands.flatMap(commandSection),
  ];
  for (const section of sections) {
    const [title, ...body] = section.split('\n');
    out.push('.SH ' + roff(title.replace(/:$/, '').toUpperCase()), '.nf', ...body.map((l) => roff(l.replace(/^ {2}/, ''))), '.fi');
  }
  return out.join('\n') + '\n';
}

/** What a command prints after its options (addHelpText('after')), from the line that starts with `from`. */
function afterHelp(command, from) {
  let text = '';
  command.configureOutput({ writeOut: (s) => (text += s) });
  command.outputHelp();
  const start = text.indexOf(from);
  return start < 0 ? '' : text.slice(start + 1).trimEnd();
}

const text = render(buildProgram());
if (process.argv.includes('--check')) {
  let current = '';
  try {
    current = readFileSync(target, 'utf8');
  } catch {}
  if (current !== text) {
    process.stdout.write('man/ferry.1 is out of date: run npm run build (or node scripts/gen-man.mjs) and commit it\n');
    process.exit(1);
  }
} else {
  writeFileSync(target, text);
}
