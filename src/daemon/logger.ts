import { hostname } from 'node:os';
import pino, { type Logger } from 'pino';
import pretty from 'pino-pretty';
import { UserError } from '../util/user-error.js';

export type LogFormat = 'json' | 'pretty';
/** Where the daemon's log goes. journald: run the daemon in the foreground under systemd with `stderr`. */
export type LogTarget = 'file' | 'stderr' | 'syslog';
export const LOG_TARGETS: readonly LogTarget[] = ['file', 'stderr', 'syslog'];
export const DEFAULT_SYSLOG_ADDRESS = 'udp://127.0.0.1:514';

export interface LogOptions {
  level: string;
  format: LogFormat;
  target: LogTarget;
  /** With the file target. */
  file?: string;
  /** With the syslog target: udp://host:port, tcp://host:port, or the path of a Unix stream socket. */
  syslogAddress?: string;
}

export interface DaemonLog {
  log: Logger;
  /** Reopens the log file (after logrotate moved it away); a no-op for other targets. */
  reopen(): void;
}

/** pino-socket's options for a syslog address; a stream needs its records framed by newlines. */
export function socketOptions(address: string): Record<string, unknown> {
  const url = /^(udp|tcp):\/\/(\[[^\]]+\]|[^:/]+):(\d+)$/.exec(address);
  if (url) return { mode: url[1], address: url[2].replace(/^\[|\]$/g, ''), port: Number(url[3]), reconnect: url[1] === 'tcp' };
  if (address.startsWith('/')) return { mode: 'tcp', unixsocket: address, reconnect: true };
  throw new UserError(`--syslog-address: '${address}' is neither udp://host:port, tcp://host:port nor the absolute path of a Unix stream socket`);
}

export function createLogger(opts: LogOptions): DaemonLog {
  const base = { level: opts.level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime };
  // Level names, not numbers, for whoever reads the JSON (syslog carries the severity in its own header).
  const named = { ...base, formatters: { level: (label: string) => ({ level: label }) } };
  if (opts.target === 'syslog') {
    const address = opts.syslogAddress ?? DEFAULT_SYSLOG_ADDRESS;
    const stream: Record<string, unknown> = address.startsWith('udp:') ? {} : { newline: true };
    const transport = pino.transport({
      pipeline: [
        { target: 'pino-syslog', options: { enablePipelining: true, modern: true, appname: 'ferry', ...stream } },
        { target: 'pino-socket', options: { ...socketOptions(address), echo: false } as Record<string, unknown> },
      ],
    });
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
