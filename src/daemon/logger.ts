import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pino, { type Logger } from 'pino';
import pretty from 'pino-pretty';
import { UserError } from '../util/user-error.js';

export type LogFormat = 'json' | 'pretty';
/** Where the daemon's log goes; journald is syslog through journald's own socket. */
export type LogTarget = 'file' | 'stderr' | 'syslog' | 'journald';
export const LOG_TARGETS: readonly LogTarget[] = ['file', 'stderr', 'syslog', 'journald'];
export const DEFAULT_SYSLOG_ADDRESS = '/dev/log';
/** Where journald takes syslog datagrams (what /dev/log links to under systemd). */
const JOURNALD_SOCKET = '/run/systemd/journal/dev-log';

export interface LogOptions {
  level: string;
  format: LogFormat;
  target: LogTarget;
  /** With the file target. */
  file?: string;
  /** With the syslog target: udp://host:port, tcp://host:port, or the path of a Unix datagram socket. */
  syslogAddress?: string;
}

export interface DaemonLog {
  log: Logger;
  /** Reopens the log file (after logrotate moved it away); a no-op for other targets. */
  reopen(): void;
}

/** The socket or URL a syslog or journald target sends to. */
export function syslogAddress(target: 'syslog' | 'journald', given: string | undefined): string {
  return given ?? (target === 'journald' ? JOURNALD_SOCKET : DEFAULT_SYSLOG_ADDRESS);
}

/** Whether the optional unix-dgram addon was built (npm ci builds it; a failed build does not fail the install). */
function unixDgramBuilt(): boolean {
  try {
    return existsSync(join(dirname(createRequire(import.meta.url).resolve('unix-dgram/package.json')), 'build/Release/unix_dgram.node'));
  } catch {
    return false;
  }
}

type Stage = { target: string; options: Record<string, unknown> };

/**
 * The transport pipeline for a syslog address: pino-syslog formats, then pino-socket sends over the network
 * (RFC 5424; a TCP stream frames records by newlines), or, for a local socket, one datagram per record in the
 * RFC 3164 form syslog(3) uses, which journald and rsyslog parse alike.
 */
export function syslogPipeline(address: string): Stage[] {
  const url = /^(udp|tcp):\/\/(\[[^\]]+\]|[^:/]+):(\d+)$/.exec(address);
  if (url) {
    return [
      { target: 'pino-syslog', options: { enablePipelining: true, modern: true, appname: 'ferry', newline: url[1] === 'tcp' } },
      { target: 'pino-socket', options: { mode: url[1], address: url[2].replace(/^\[|\]$/g, ''), port: Number(url[3]), reconnect: url[1] === 'tcp', echo: false } },
    ];
  }
  if (!address.startsWith('/')) {
    throw new UserError(`--syslog-address: '${address}' is neither udp://host:port, tcp://host:port nor the absolute path of a Unix datagram socket`);
  }
  if (!existsSync(address)) throw new UserError(`no syslog socket at ${address}: is a syslog daemon (or journald) running? Or give --syslog-address`);
  // Only the transport's worker may load the addon (nan: once per process), so it is looked for, not loaded.
  if (!unixDgramBuilt()) throw new UserError(`logging to the socket ${address} needs the optional unix-dgram addon, which is not built: run npm rebuild unix-dgram, or give --syslog-address udp://host:port`, 1);
  return [
    { target: 'pino-syslog', options: { enablePipelining: true, modern: false, appname: 'ferry', newline: true } },
    { target: fileURLToPath(new URL('./dgram-transport.js', import.meta.url)), options: { path: address } },
  ];
}

export function createLogger(opts: LogOptions): DaemonLog {
  const base = { level: opts.level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime };
  // Level names, not numbers, for whoever reads the JSON (syslog carries the severity in its own header).
  const named = { ...base, formatters: { level: (label: string) => ({ level: label }) } };
  if (opts.target === 'syslog' || opts.target === 'journald') {
    const address = syslogAddress(opts.target, opts.syslogAddress);
    const transport = pino.transport({ pipeline: syslogPipeline(address) });
    // A syslog that goes away must not take the mount down with it: say so on stderr and serve on.
    transport.on('error', (err: Error) => process.stderr.write(`ferry: warning: syslog at ${address}: ${err.message}\n`));
    // pino-syslog reads epoch milliseconds and the host name; its header carries the time and the level.
    return { log: pino({ ...base, base: { pid: process.pid, hostname: hostname() }, timestamp: pino.stdTimeFunctions.epochTime }, transport), reopen: () => undefined };
  }
  if (opts.format === 'pretty') {
    return { log: pino(base, pretty({ destination: 2, colorize: process.stderr.isTTY, sync: true })), reopen: () => undefined };
  }
  const destination = pino.destination({ dest: opts.target === 'file' ? opts.file! : 2, mkdir: true, sync: true, append: true, mode: 0o600 });
  return { log: pino(named, destination), reopen: () => destination.reopen() };
}
