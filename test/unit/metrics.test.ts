import { describe, expect, it } from 'vitest';
import { formatMetricsAddress, parseMetricsAddress } from '../../src/metrics/address.js';
import { MIGRATION_SERIES, latestMigrations } from '../../src/metrics/scrape.js';

describe('--metrics addresses (issue 31)', () => {
  it('reads a port alone as localhost, host:port, [v6]:port and unix:/path, and writes them back the same', () => {
    const cases: [string, unknown, string][] = [
      ['9464', { kind: 'tcp', host: '127.0.0.1', port: 9464 }, '127.0.0.1:9464'],
      ['0.0.0.0:1', { kind: 'tcp', host: '0.0.0.0', port: 1 }, '0.0.0.0:1'],
      ['localhost:65535', { kind: 'tcp', host: 'localhost', port: 65535 }, 'localhost:65535'],
      ['[::1]:9464', { kind: 'tcp', host: '::1', port: 9464 }, '[::1]:9464'],
      ['unix:/run/ferry/m.sock', { kind: 'unix', path: '/run/ferry/m.sock' }, 'unix:/run/ferry/m.sock'],
    ];
    for (const [text, address, formatted] of cases) {
      expect(parseMetricsAddress(text)).toEqual(address);
      expect(formatMetricsAddress(parseMetricsAddress(text))).toBe(formatted);
      expect(parseMetricsAddress(formatted)).toEqual(address);
    }
  });

  it('refuses anything else with what to give instead', () => {
    for (const text of ['', '0', '65536', 'host:', ':9464', 'a b:1', 'http://x:1', 'unix:', 'unix:rel', 'unix:/dir/', '[::1]']) {
      expect(() => parseMetricsAddress(text), text).toThrow(/^--metrics .*(not an address|absolute file path).*give host:port/);
    }
  });
});

describe('migration series (issue 31)', () => {
  const migration = (path: string, startedAt: string, running: boolean) => ({ path, startedAt, running }) as Parameters<typeof latestMigrations>[0][number];

  it('keeps the newest migration of each subtree, running ones first, at most MIGRATION_SERIES', () => {
    const all = [migration('/a', '2026-01-01T00:00:00Z', false), migration('/b', '2026-01-02T00:00:00Z', false), migration('/a', '2026-01-03T00:00:00Z', false), migration('/c', '2026-01-01T12:00:00Z', true)];
    expect(latestMigrations(all).map((m) => [m.path, m.startedAt])).toEqual([
      ['/c', '2026-01-01T12:00:00Z'],
      ['/a', '2026-01-03T00:00:00Z'],
      ['/b', '2026-01-02T00:00:00Z'],
    ]);
    const many = Array.from({ length: 50 }, (_, i) => migration(`/vm${i}`, new Date(Date.UTC(2026, 0, 1, 0, i)).toISOString(), i === 3));
    const kept = latestMigrations(many);
    expect(kept).toHaveLength(MIGRATION_SERIES);
    expect(kept[0].path).toBe('/vm3');
    expect(kept.slice(1).map((m) => m.path)).toEqual(Array.from({ length: MIGRATION_SERIES - 1 }, (_, i) => `/vm${49 - i}`));
  });
});
