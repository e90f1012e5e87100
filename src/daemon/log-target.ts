import { join } from 'node:path';

/** Where the logs of background mounts go: one file per mount point, kept across mounts. */
export function logsDir(stateDir: string): string {
  return join(stateDir, 'logs');
}

/** A mount point as systemd names its mount unit (`systemd-escape --path`): /srv/vm-a becomes srv-vm\x2da. */
export function escapePath(path: string): string {
  const trimmed = path.replace(/\/+/g, '/').replace(/^\/|\/$/g, '');
  if (trimmed === '') return '-';
  const escaped = [...Buffer.from(trimmed)]
    .map((byte, i) => {
      const ch = String.fromCharCode(byte);
      if (ch === '/') return '-';
      if (/[A-Za-z0-9:_]/.test(ch) || (ch === '.' && i > 0)) return ch;
      return `\\x${byte.toString(16).padStart(2, '0')}`;
    })
    .join('');
  return escaped;
}

/** The default --log-file of a mount: `<state-dir>/logs/<mount point, escaped>.log`. */
export function logFileFor(stateDir: string, mountpoint: string): string {
  return join(logsDir(stateDir), `${escapePath(mountpoint)}.log`);
}
