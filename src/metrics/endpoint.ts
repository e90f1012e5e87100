import type { DaemonView } from '../daemon/control-handlers.js';
import { statusOf } from '../daemon/control-handlers.js';
import { metricsRegistry } from './registry.js';
import { latestEvacuations, latestMigrations, type Scrape } from './scrape.js';

/**
 * `ferry mount --metrics`: one scrape of the mount's figures, the same ones `ferry status --json` gives, in
 * Prometheus's text format. The figures are taken once per scrape; the registry's metrics read them.
 */
export function metricsRenderer(view: DaemonView, perFile: boolean): () => Promise<{ contentType: string; text: string }> {
  let current: Scrape | undefined;
  const registry = metricsRegistry(() => current!, perFile);
  return async () => {
    const status = await statusOf(view);
    const { fs } = view;
    current = { status, js: fs.counters, native: fs.native?.stats(), frozenSubtrees: fs.gate.frozenCount, migrations: latestMigrations(status.migrations), evacuations: latestEvacuations(status.evacuations) };
    return { contentType: registry.contentType, text: await registry.metrics() };
  };
}
