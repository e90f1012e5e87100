import net from 'node:net';
import type { ErrorBody, Reply } from './protocol.js';

/** A request the daemon answered with an error. */
export class DaemonError extends Error {
  constructor(readonly body: ErrorBody) {
    super(body.message);
  }
}

/** The daemon could not be reached at all. */
export class UnreachableError extends Error {}

export async function request(
  socketPath: string,
  method: string,
  params: Record<string, unknown> = {},
  options: { onEvent?: (event: unknown) => void; timeoutMs?: number } = {},
): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(socketPath);
    let buffered = '';
    let settled = false;
    const finish = (fn: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      fn();
    };
    const timer = options.timeoutMs
      ? setTimeout(() => finish(() => reject(new UnreachableError(`daemon did not answer within ${options.timeoutMs} ms`))), options.timeoutMs)
      : undefined;
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(JSON.stringify({ id: 1, method, params }) + '\n'));
    socket.on('error', (err) => finish(() => reject(new UnreachableError(`cannot reach the daemon at ${socketPath}: ${err.message}`))));
    socket.on('close', () => finish(() => reject(new UnreachableError('the daemon closed the connection without answering'))));
    socket.on('data', (chunk: string) => {
      buffered += chunk;
      let newline: number;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const reply = JSON.parse(buffered.slice(0, newline)) as Reply;
        buffered = buffered.slice(newline + 1);
        if ('event' in reply) options.onEvent?.(reply.event);
        else if (reply.ok) return finish(() => resolve(reply.result));
        else return finish(() => reject(new DaemonError(reply.error)));
      }
    });
  });
}
