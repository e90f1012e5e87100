import type { Command, Option } from 'commander';
import { UserError, errorMessage } from '../util/user-error.js';

/**
 * What fstab, mount(8) and mount.fuse put in -o for any filesystem (mount.fuse adds `dev,suid` for root):
 * not ferry's to act on. A ferry mount is always nosuid,nodev.
 */
const GENERIC = new Set([
  'defaults', 'rw', 'auto', 'noauto', 'user', 'nouser', 'users', 'owner', 'group', 'nofail', '_netdev',
  'dev', 'nodev', 'suid', 'nosuid', 'exec', 'noexec', 'sync', 'async', 'atime', 'noatime', 'relatime',
  'strictatime', 'diratime', 'nodiratime', 'lazytime', 'nolazytime', 'silent', 'loud',
]);
const GENERIC_PREFIXES = ['x-', 'comment='];
/** Where -o's keys come from, to tell them from a long option given on the command line. */
const SOURCE = 'mount -o';

/** mount.fuse runs `ferry <source> <mountpoint> -o <options>`: a command name never starts with '/', a source does. */
export function fromMountHelper(argv: string[]): string[] {
  return argv[2]?.startsWith('/') ? [...argv.slice(0, 2), 'mount', ...argv.slice(2)] : argv;
}

/** `--block-size <size>` is the key `block_size`; `--no-track` is `no_track`. */
function keyOf(option: Option): string {
  return option.long!.slice(2).replaceAll('-', '_');
}

function takesValue(option: Option): boolean {
  return option.required || option.optional;
}

function usage(option: Option): string {
  return takesValue(option) ? `${keyOf(option)}=${option.flags.match(/<[^>]+>/)?.[0] ?? '<value>'}` : keyOf(option);
}

/** A value checked as its long option's would be (--log-level's choices, say). */
function parsed(option: Option, key: string, raw: string): unknown {
  if (!option.parseArg) return raw;
  try {
    return option.parseArg(raw, undefined);
  } catch (err) {
    throw new UserError(`-o ${key}=${raw} is invalid: ${errorMessage(err)}`);
  }
}

/**
 * Sets the command's options from a mount(8)-style list, each long option a key (derived from the command's own
 * definitions, so a new option is a key too): `block_size=64K,allow_other` is `--block-size 64K --allow-other`.
 */
export function applyMountOptions(command: Command, list: string): void {
  const options = command.options.filter((o) => o.long && o.long !== '--options');
  for (const item of list.split(',')) {
    const eq = item.indexOf('=');
    const key = eq < 0 ? item : item.slice(0, eq);
    if (item === '' || GENERIC.has(item) || GENERIC_PREFIXES.some((p) => item.startsWith(p))) continue;
    if (item === 'ro') throw new UserError('-o ro: a ferry mount is read-write (guests and migrations write through it): remove ro');
    const option = options.find((o) => keyOf(o) === key);
    if (!option) throw new UserError(`unknown mount option '${key}' in -o: ferry mount takes ${options.map(usage).join(', ')}`);
    if (takesValue(option) && eq < 0) throw new UserError(`-o ${key} needs a value: ${usage(option)}`);
    if (!takesValue(option) && eq >= 0) throw new UserError(`-o ${key} takes no value: write ${key}`);
    const name = option.attributeName();
    if (command.getOptionValueSource(name) === 'cli') throw new UserError(`${option.long} is given twice (as ${option.long} and as -o ${key}): give it once`);
    command.setOptionValueWithSource(name, takesValue(option) ? parsed(option, key, item.slice(eq + 1)) : !option.negate, SOURCE);
  }
}
