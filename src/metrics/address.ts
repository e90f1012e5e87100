import { isAbsolute } from 'node:path';
import { UserError } from '../util/user-error.js';

/** Where the metrics endpoint listens: a TCP address (localhost unless a host is named) or a Unix socket. */
export type MetricsAddress = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

const HINT = 'give host:port, a port alone (on 127.0.0.1), or unix:/absolute/path';

/** `9464`, `127.0.0.1:9464`, `[::1]:9464`, `0.0.0.0:9464` or `unix:/run/ferry/metrics.sock`. */
export function parseMetricsAddress(text: string): MetricsAddress {
  if (text.startsWith('unix:')) {
    const path = text.slice('unix:'.length);
    if (!isAbsolute(path) || path.endsWith('/')) throw new UserError(`--metrics ${text}: a Unix socket needs an absolute file path (${HINT})`);
    return { kind: 'unix', path };
  }
  const match = /^(?:(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):)?(\d{1,5})$/.exec(text);
  const port = match ? Number(match[2]) : NaN;
  if (!match || port < 1 || port > 65535) throw new UserError(`--metrics ${text}: not an address (${HINT}; ports 1-65535)`);
  const host = match[1] ? match[1].replace(/^\[|\]$/g, '') : '127.0.0.1';
  return { kind: 'tcp', host, port };
}

/** The address as `--metrics` takes it again (the daemon gets it from `ferry mount`). */
export function formatMetricsAddress(address: MetricsAddress): string {
  if (address.kind === 'unix') return `unix:${address.path}`;
  return address.host.includes(':') ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}
