import { createRequire } from 'node:module';
import build from 'pino-abstract-transport';

/** unix-dgram's socket, the part used here (an optional native addon: Node has no Unix datagram sockets). */
interface DgramSocket {
  send(buf: Buffer, offset: number, length: number, path: string, callback: (err?: Error) => void): void;
  close(): void;
  on(event: 'error', listener: (err: Error) => void): void;
}

/**
 * The last stage of the syslog pipeline for a local socket (/dev/log, journald's dev-log): each line that
 * pino-syslog formatted goes out as one datagram, as syslog(3) sends it. A lost datagram is not retried.
 */
export default function dgramTransport(opts: { path: string }) {
  const unix = createRequire(import.meta.url)('unix-dgram') as { createSocket(type: 'unix_dgram'): DgramSocket };
  const socket = unix.createSocket('unix_dgram');
  let warned = false;
  const warn = (err: Error) => {
    if (!warned) process.stderr.write(`ferry: warning: syslog socket ${opts.path}: ${err.message} (log lines are being lost)\n`);
    warned = true;
  };
  socket.on('error', warn);
  return build(
    async (source: AsyncIterable<string>) => {
      for await (const line of source) {
        const buf = Buffer.from(line);
        socket.send(buf, 0, buf.length, opts.path, (err) => err && warn(err));
      }
    },
    // Records arrive formatted by pino-syslog, not as JSON: each line as it is.
    { parse: 'lines', parseLine: (line: string) => line, close: () => socket.close() },
  );
}
