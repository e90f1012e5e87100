import net from 'node:net';
import { unlink } from 'node:fs/promises';
import type { Logger } from 'pino';
import { ControlError, MAX_LINE_BYTES, parseRequest, type Reply } from './protocol.js';

export type Handler = (params: Record<string, unknown>, emit: (event: unknown) => void) => Promise<unknown>;

/** Serves the control protocol; a bad message gets an error reply and never disturbs the daemon. */
export class ControlServer {
  private readonly server: net.Server;

  constructor(
    private readonly handlers: Record<string, Handler>,
    private readonly log: Logger,
  ) {
    this.server = net.createServer((socket) => this.serve(socket));
  }

  async listen(socketPath: string): Promise<void> {
    await unlink(socketPath).catch(() => undefined);
    const previous = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        this.server.once('error', reject);
        this.server.listen(socketPath, () => resolve());
      });
    } finally {
      process.umask(previous);
    }
  }

  close(): void {
    this.server.close();
  }

  private serve(socket: net.Socket): void {
    let buffered = '';
    socket.setEncoding('utf8');
    socket.on('error', () => socket.destroy());
    socket.on('data', (chunk: string) => {
      buffered += chunk;
      let newline: number;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        if (line.trim()) void this.handle(line, socket);
      }
      if (Buffer.byteLength(buffered) > MAX_LINE_BYTES) {
        this.send(socket, { id: 0, ok: false, error: { code: 'EPROTO', message: 'request line too long' } });
        socket.end();
        buffered = '';
      }
    });
  }

  private async handle(line: string, socket: net.Socket): Promise<void> {
    let id = 0;
    try {
      const request = parseRequest(line);
      id = request.id;
      const handler = Object.hasOwn(this.handlers, request.method) ? this.handlers[request.method] : undefined;
      if (!handler) throw new ControlError('ENOSYS', `unknown method '${request.method}'`);
      const result = await handler(request.params, (event) => this.send(socket, { id, event }));
      this.send(socket, { id, ok: true, result });
    } catch (err) {
      if (err instanceof ControlError) {
        this.send(socket, { id, ok: false, error: { code: err.code, message: err.message } });
      } else {
        this.log.error({ err }, 'control request failed');
        this.send(socket, { id, ok: false, error: { code: 'EINTERNAL', message: err instanceof Error ? err.message : String(err) } });
      }
    }
  }

  private send(socket: net.Socket, reply: Reply): void {
    if (!socket.destroyed && socket.writable) socket.write(JSON.stringify(reply) + '\n');
  }
}
