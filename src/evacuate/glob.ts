/**
 * A shell glob on one name (`*`, `?`, `[...]`): enough for --exclude, without node's experimental path.matchesGlob
 * (a warning in the daemon's log on every evacuation).
 */
export function matchesGlob(name: string, glob: string): boolean {
  let pattern = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === '*') pattern += '.*';
    else if (c === '?') pattern += '.';
    else if (c === '[' && glob.indexOf(']', i + 2) > 0) {
      const end = glob.indexOf(']', i + 2);
      const body = glob.slice(i + 1, end);
      pattern += `[${body.startsWith('!') ? '^' + body.slice(1) : body}]`.replace(/\\/g, '\\\\');
      i = end;
    } else pattern += c.replace(/[.+^${}()|\\\]]/g, '\\$&');
  }
  return new RegExp(`^${pattern}$`, 's').test(name);
}
