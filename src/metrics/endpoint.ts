import type { DaemonView } from '../daemon/control-handlers.js';
import { statusOf } from '../daemon/control-handlers.js';
import type { MetricsAddress } from './address.js';
import { metricsRegistry } from './registry.js';
import { latestMigrations, type Scrape } from './scrape.js';
import { serveMetrics, type MetricsServer } from './server.js';

/** `ferry mount --metrics`: the mount's figures, the same ones `ferry status --json` gives, for Prometheus. */
export async function startMetrics(address: MetricsAddress, perFile: boolean, view: DaemonView, onError: (err: unknown) => void): Promise<MetricsServer> {
  let current: Scrape | undefined;
  const registry = metricsRegistry(() => current!, perFile);
  return serveMetrics(
    address,
    registry,
    async () => {
      const status = await statusOf(view);
      const { fs } = view;
      current = { status, js: fs.counters, native: fs.native?.stats(), frozenSubtrees: fs.gate.frozenCount, migrations: latestMigrations(status.migrations) };
    },
    onError,
  );
}
