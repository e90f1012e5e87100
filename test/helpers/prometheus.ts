import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hasExited } from './cli.js';
import { waitFor } from './migration.js';

/** A TCP port nothing listens on now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export interface Prometheus {
  url: string;
  /** An instant query's vector: [labels, value] per series. */
  query(expr: string): Promise<[Record<string, string>, number][]>;
  stop(): Promise<void>;
}

/** Debian's real Prometheus scraping `target` (host:port) every 100 ms, its data in a scratch directory. */
export async function startPrometheus(target: string): Promise<Prometheus> {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-prometheus-'));
  const port = await freePort();
  const config = ['global:', '  scrape_interval: 100ms', '  scrape_timeout: 100ms', 'scrape_configs:', '  - job_name: ferry', '    static_configs:', `      - targets: ['${target}']`].join('\n');
  await writeFile(join(dir, 'prometheus.yml'), `${config}\n`);
  const child: ChildProcess = spawn('prometheus', [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.on('data', (d) => (log = (log + d).slice(-4000)));
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await waitFor(() => hasExited(child.pid!), 20_000, 'prometheus to exit').catch(() => child.kill('SIGKILL'));
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(async () => (await fetch(`${url}/-/ready`).catch(() => undefined))?.ok === true, 30_000, 'prometheus to be ready');
    await waitFor(async () => {
      const body = (await (await fetch(`${url}/api/v1/targets`)).json()) as { data: { activeTargets: { health: string }[] } };
      return body.data.activeTargets.some((t) => t.health === 'up');
    }, 30_000, 'the ferry target to be up');
  } catch (err) {
    await stop();
    throw new Error(`${(err as Error).message}; prometheus said: ${log}`);
  }
  return {
    url,
    async query(expr) {
      const res = await fetch(`${url}/api/v1/query?query=${encodeURIComponent(expr)}`);
      const body = (await res.json()) as { status: string; error?: string; data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
      if (body.status !== 'success') throw new Error(`query ${expr}: ${body.error}`);
      return body.data.result.map((r) => [r.metric, Number(r.value[1])]);
    },
    stop,
  };
}
