import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { lstat, unlink } from 'node:fs/promises';
import { UserError, errnoCode, errorMessage } from '../util/user-error.js';
import { formatMetricsAddress, type MetricsAddress } from './address.js';

export interface MetricsServer {
  /** From now on GET /metrics answers with what `render` gives; before, 503 (the mount is not up yet). */
  serve(render: () => Promise<{ contentType: string; text: string }>): void;
  close(): Promise<void>;
}

/** Whether something answers on a Unix socket (a live endpoint is never taken over; a dead one's file is). */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(path, () => {
      socket.destroy();
      resolve(true);
    });
    socket.on('error', () => resolve(false));
  });
}

/** A Unix socket path must be free, or a socket nobody serves: any other file is the user's and stays. */
async function clearSocketPath(path: string, asked: string): Promise<void> {
  const st = await lstat(path).catch(() => undefined);
  if (!st) return;
  if (!st.isSocket()) throw new UserError(`--metrics ${asked}: ${path} exists and is not a socket: name a new path`);
  if (await answers(path)) throw new UserError(`--metrics ${asked}: ${path} is in use by another server: name another path`);
  await unlink(path);
}

/**
 * Listens for GET /metrics. Called before the FUSE mount: a busy or unusable address is refused (exit 2) with
 * nothing mounted; `serve` gives it the figures once the mount is up.
 */
export async function listenMetrics(address: MetricsAddress, onError: (err: unknown) => void): Promise<MetricsServer> {
  const asked = formatMetricsAddress(address);
  let render: (() => Promise<{ contentType: string; text: string }>) | undefined;
  const server: Server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '/').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('ferry serves /metrics only\n');
      return;
    }
    if (!render) {
      res.writeHead(503, { 'content-type': 'text/plain' }).end('the mount is starting\n');
      return;
    }
    render()
      .then(
        ({ contentType, text }) => res.writeHead(200, { 'content-type': contentType }).end(text),
        (err: unknown) => {
          onError(err);
          res.writeHead(500, { 'content-type': 'text/plain' }).end(`${errorMessage(err)}\n`);
        },
      );
  });
  if (address.kind === 'unix') await clearSocketPath(address.path, asked);
  // The daemon runs with umask 0; the endpoint names files in the mount, so the socket is the owner's only.
  const previous = address.kind === 'unix' ? process.umask(0o177) : undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      if (address.kind === 'unix') server.listen(address.path, resolve);
      else server.listen(address.port, address.host, resolve);
    });
  } catch (err) {
    throw new UserError(`--metrics ${asked}: cannot listen there (${errnoCode(err) ?? errorMessage(err)}): choose another address`);
  } finally {
    if (previous !== undefined) process.umask(previous);
  }
  return {
    serve: (given) => (render = given),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
