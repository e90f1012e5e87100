import type { Metric, Registry } from 'prom-client';

/** One histogram series: the native path's log2 latency buckets (b counts ops of [2^(b-1), 2^b) µs) and their sum. */
export interface Log2Series {
  labels: Record<string, string>;
  buckets: number[];
  sumUs: number;
}

/**
 * A histogram whose buckets C already counted: prom-client's Histogram only fills buckets by observe(), one call per
 * op, so this metric hands the registry the counts as they are at scrape time. The registry formats it (the text
 * format stays prom-client's): it takes any metric whose get() gives name, help, type and values.
 */
export function log2Histogram(registry: Registry, name: string, help: string, read: () => Log2Series[]): void {
  const metric = {
    name,
    help,
    type: 'histogram',
    aggregator: 'sum',
    async get() {
      const values = [];
      for (const { labels, buckets, sumUs } of read()) {
        let cumulative = 0;
        // The last bucket holds everything slower (C clamps): it is +Inf.
        for (let b = 0; b < buckets.length - 1; b++) {
          cumulative += buckets[b];
          values.push({ metricName: `${name}_bucket`, labels: { ...labels, le: 2 ** b / 1e6 }, value: cumulative });
        }
        const count = cumulative + (buckets.at(-1) ?? 0);
        values.push({ metricName: `${name}_bucket`, labels: { ...labels, le: '+Inf' }, value: count });
        values.push({ metricName: `${name}_sum`, labels, value: sumUs / 1e6 });
        values.push({ metricName: `${name}_count`, labels, value: count });
      }
      return { name, help, type: 'histogram', aggregator: 'sum', values };
    },
  };
  // prom-client's types name only its own metric classes; its registry asks for get() alone.
  registry.registerMetric(metric as unknown as Metric);
}
