import pino, { type Logger } from 'pino';
import pretty from 'pino-pretty';

export type LogFormat = 'json' | 'pretty';

export function createLogger(level: string, format: LogFormat, file: string | undefined): Logger {
  const options = { level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime };
  if (format === 'pretty') {
    const destination = file ? pino.destination({ dest: file, mkdir: true, sync: true }) : 2;
    return pino(options, pretty({ destination, colorize: !file && process.stderr.isTTY, sync: true }));
  }
  return pino(options, pino.destination({ dest: file ?? 2, mkdir: true, sync: true }));
}
