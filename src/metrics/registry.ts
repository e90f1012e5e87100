import { Counter, Gauge, Registry } from 'prom-client';
import { log2Histogram } from './log2-histogram.js';
import type { Scrape } from './scrape.js';

type Labels = Record<string, string>;
type Sample = [Labels, number];

interface Definition {
  name: string;
  help: string;
  type: 'counter' | 'gauge';
  labels: string[];
  read(scrape: Scrape, mount: Labels): Sample[];
}

type Migration = Scrape['migrations'][number];
const MIGRATION = ['mount', 'migration'];

/** One gauge per migration series (label `migration`: the subtree's path in the mount). */
function perMigration(name: string, help: string, value: (m: Migration) => number | undefined): Definition {
  return {
    name,
    help,
    type: 'gauge',
    labels: MIGRATION,
    read: (s, mount) => s.migrations.flatMap((m): Sample[] => {
      const v = value(m);
      return v === undefined ? [] : [[{ ...mount, migration: m.path }, v]];
    }),
  };
}

const done = (m: Migration) => (m.result?.type === 'done' ? m.result : undefined);
/** Mirror figures are cumulative: the done event has the final ones, each pass the ones so far. */
const mirror = (m: Migration) => done(m) ?? m.lastPass;

const MOUNT_METRICS: Definition[] = [
  {
    name: 'ferry_mount_info',
    help: 'Always 1: the mount, its datastore and the data path serving reads and writes (native or js).',
    type: 'gauge',
    labels: ['mount', 'datastore', 'data_path'],
    read: (s, mount) => [[{ ...mount, datastore: s.status.datastore, data_path: s.status.dataPath.mode }, 1]],
  },
  {
    name: 'ferry_ops_total',
    help: 'FUSE operations answered, by operation and by the data path that answered them (native: in C).',
    type: 'counter',
    labels: ['mount', 'op', 'data_path'],
    read: (s, mount) => [
      ...Object.entries(s.js.ops).map(([op, n]): Sample => [{ ...mount, op, data_path: 'js' }, n]),
      ...(s.native ? [[{ ...mount, op: 'read', data_path: 'native' }, s.native.readOps], [{ ...mount, op: 'write', data_path: 'native' }, s.native.writeOps]] as Sample[] : []),
    ],
  },
  {
    name: 'ferry_io_bytes_total',
    help: 'Bytes read and written through the mount, by operation and data path.',
    type: 'counter',
    labels: ['mount', 'op', 'data_path'],
    read: (s, mount) => [
      [{ ...mount, op: 'read', data_path: 'js' }, s.js.bytesRead],
      [{ ...mount, op: 'write', data_path: 'js' }, s.js.bytesWritten],
      ...(s.native ? [[{ ...mount, op: 'read', data_path: 'native' }, s.native.readBytes], [{ ...mount, op: 'write', data_path: 'native' }, s.native.writeBytes]] as Sample[] : []),
    ],
  },
  {
    name: 'ferry_errors_total',
    help: 'Operations answered with an error, by data path.',
    type: 'counter',
    labels: ['mount', 'data_path'],
    read: (s, mount) => [
      [{ ...mount, data_path: 'js' }, s.js.errors],
      ...(s.native ? [[{ ...mount, data_path: 'native' }, s.native.readErrors + s.native.writeErrors]] as Sample[] : []),
    ],
  },
  {
    name: 'ferry_native_passed_ops_total',
    help: 'Reads and writes the native data path handed to JavaScript (frozen subtree, intent not vouched for, map too small).',
    type: 'counter',
    labels: ['mount'],
    read: (s, mount) => (s.native ? [[mount, s.native.passedOps]] : []),
  },
  {
    name: 'ferry_native_fast_path_ops_total',
    help: "Of the native data path's reads and writes, those the request loop's fast path answered without libfuse (none while a subtree is frozen).",
    type: 'counter',
    labels: ['mount', 'op'],
    read: (s, mount) => (s.native ? [[{ ...mount, op: 'read' }, s.native.fastPathReads], [{ ...mount, op: 'write' }, s.native.fastPathWrites]] : []),
  },
  {
    name: 'ferry_direct_fallbacks_total',
    help: 'Requests of O_DIRECT opens (and reads of page-cached ones) the backing filesystem could not take directly (unaligned): served through its page cache, synced and dropped.',
    type: 'counter',
    labels: ['mount'],
    read: (s, mount) => [[mount, s.status.dataPath.directFallback]],
  },
  { name: 'ferry_open_files', help: 'Files open through the mount (handles).', type: 'gauge', labels: ['mount'], read: (s, mount) => [[mount, s.status.openFiles.length]] },
  { name: 'ferry_dirty_bytes', help: 'Bytes in dirty blocks of all files, clipped to each file size.', type: 'gauge', labels: ['mount'], read: (s, mount) => [[mount, s.status.dirtyBytes]] },
  { name: 'ferry_dirty_files', help: 'Files with dirty blocks.', type: 'gauge', labels: ['mount'], read: (s, mount) => [[mount, s.status.trackedFiles.length]] },
  { name: 'ferry_frozen_subtrees', help: "Subtrees whose I/O the gate holds now (a switchover's freeze).", type: 'gauge', labels: ['mount'], read: (s, mount) => [[mount, s.frozenSubtrees]] },
];

const PER_FILE: Definition = {
  name: 'ferry_file_dirty_bytes',
  help: 'Bytes in dirty blocks of one file (only with --metrics-per-file: one series per dirty file).',
  type: 'gauge',
  labels: ['mount', 'file'],
  read: (s, mount) => s.status.trackedFiles.map((f): Sample => [{ ...mount, file: f.path }, f.dirtyBytes]),
};

const MIGRATION_METRICS: Definition[] = [
  {
    name: 'ferry_migration_info',
    help: 'Always 1: a migration, its destination and its mode (auto until its first pass decides, iterative or mirror).',
    type: 'gauge',
    labels: [...MIGRATION, 'destination', 'mode'],
    read: (s, mount) => s.migrations.map((m): Sample => [{ ...mount, migration: m.path, destination: m.destination, mode: done(m)?.mode ?? m.lastPass?.mode ?? m.mode }, 1]),
  },
  {
    name: 'ferry_migration_state',
    help: "1 for the migration's state now (label state: as ferry status reports its phase).",
    type: 'gauge',
    labels: [...MIGRATION, 'state'],
    read: (s, mount) => s.migrations.map((m): Sample => [{ ...mount, migration: m.path, state: m.phase }, 1]),
  },
  perMigration('ferry_migration_pass', 'The copy pass under way or the last one (0: the bulk copy).', (m) => m.progress.pass),
  perMigration('ferry_migration_copied_bytes', 'Data bytes copied so far, all passes together.', (m) => m.progress.copiedBytes),
  perMigration('ferry_migration_total_bytes', 'Data bytes copied so far plus what is known to be left.', (m) => m.progress.totalBytes),
  perMigration('ferry_migration_dirty_bytes', 'Dirty data the last completed pass found left to copy.', (m) => m.lastPass?.dirtyBytes),
  perMigration('ferry_migration_last_pass_copied_bytes', 'Data bytes the last completed pass copied.', (m) => m.lastPass?.copiedBytes),
  perMigration('ferry_migration_copy_rate_bytes_per_second', 'Copy rate over the last seconds (0 once ended).', (m) => m.progress.rateBytesPerSec),
  perMigration('ferry_migration_estimated_switchover_seconds', "The last pass's estimate of the switchover's I/O freeze.", (m) => (m.lastPass ? m.lastPass.estimatedSwitchoverMs / 1000 : undefined)),
  perMigration('ferry_migration_downtime_seconds', "How long the switchover froze the subtree's I/O (once done).", (m) => { const d = done(m); return d ? d.downtimeMs / 1000 : undefined; }),
  perMigration('ferry_migration_mirrored_writes', 'Guest writes also written to the destination (mirror mode).', (m) => mirror(m)?.mirroredWrites),
  perMigration('ferry_migration_mirror_added_latency_p50_seconds', 'Guest write latency that mirroring added, median.', (m) => { const f = mirror(m); return f ? f.mirrorLatencyP50Ms / 1000 : undefined; }),
  perMigration('ferry_migration_mirror_added_latency_p99_seconds', 'Guest write latency that mirroring added, 99th percentile.', (m) => { const f = mirror(m); return f ? f.mirrorLatencyP99Ms / 1000 : undefined; }),
];

type Evacuation = Scrape['evacuations'][number];
const EVACUATION = ['mount', 'evacuation'];
const EVACUATION_STATES = ['running', 'interrupted', 'cancelling', 'done', 'cancelled'] as const;
const HOME_STATES = ['pending', 'running', 'interrupted', 'moved', 'failed', 'cancelled'] as const;
const plannedBytes = (e: Evacuation) => e.homes.reduce((sum, h) => sum + h.bytes, 0);

/** Evacuations (label `evacuation`: the directory emptied, as a path in the mount). */
const EVACUATION_METRICS: Definition[] = [
  {
    name: 'ferry_evacuation_state',
    help: "1 for the evacuation's state now, 0 for the others (running, interrupted, cancelling, done, cancelled).",
    type: 'gauge',
    labels: [...EVACUATION, 'state'],
    read: (s, mount) => s.evacuations.flatMap((e) => EVACUATION_STATES.map((state): Sample => [{ ...mount, evacuation: e.path, state }, Number(e.state === state)])),
  },
  {
    name: 'ferry_evacuation_homes',
    help: 'Homes of the evacuation in each state (pending, running, interrupted, moved, failed, cancelled).',
    type: 'gauge',
    labels: [...EVACUATION, 'state'],
    read: (s, mount) => s.evacuations.flatMap((e) => HOME_STATES.map((state): Sample => [{ ...mount, evacuation: e.path, state }, e.homes.filter((h) => h.state === state).length])),
  },
  {
    name: 'ferry_evacuation_planned_bytes',
    help: 'Allocated bytes of the homes the plan moves.',
    type: 'gauge',
    labels: EVACUATION,
    read: (s, mount) => s.evacuations.map((e): Sample => [{ ...mount, evacuation: e.path }, plannedBytes(e)]),
  },
  {
    name: 'ferry_evacuation_moved_bytes',
    help: 'Allocated bytes (as planned) of the homes moved so far.',
    type: 'gauge',
    labels: EVACUATION,
    read: (s, mount) => s.evacuations.map((e): Sample => [{ ...mount, evacuation: e.path }, e.homes.filter((h) => h.state === 'moved').reduce((sum, h) => sum + h.bytes, 0)]),
  },
  {
    name: 'ferry_evacuation_rate_limit_bytes_per_second',
    help: 'The copy budget all its moves share (absent: unlimited).',
    type: 'gauge',
    labels: EVACUATION,
    read: (s, mount) => s.evacuations.flatMap((e): Sample[] => (e.rateLimit ? [[{ ...mount, evacuation: e.path }, e.rateLimit]] : [])),
  },
];

/**
 * The registry of one mount's metrics. Every value is read at scrape time from the counters the daemon keeps anyway
 * (`scrape()` is called once per request before the registry is asked): the I/O path does no extra work.
 */
export function metricsRegistry(current: () => Scrape, perFile: boolean): Registry {
  const registry = new Registry();
  const mountLabels = (): Labels => ({ mount: current().status.mountpoint });
  for (const def of [...MOUNT_METRICS, ...(perFile ? [PER_FILE] : []), ...MIGRATION_METRICS, ...EVACUATION_METRICS]) {
    const samples = () => def.read(current(), mountLabels());
    if (def.type === 'counter') {
      new Counter({ name: def.name, help: def.help, labelNames: def.labels, registers: [registry], collect() {
        this.reset();
        for (const [labels, value] of samples()) this.inc(labels, value);
      } });
    } else {
      new Gauge({ name: def.name, help: def.help, labelNames: def.labels, registers: [registry], collect() {
        this.reset();
        for (const [labels, value] of samples()) this.set(labels, value);
      } });
    }
  }
  for (const op of ['read', 'write'] as const) {
    log2Histogram(registry, `ferry_${op}_latency_seconds`, `Latency of ${op}s answered by the native data path (buckets: powers of two microseconds).`, () => {
      const native = current().native;
      return native ? [{ labels: mountLabels(), buckets: native[`${op}LatencyLog2Us`], sumUs: native[`${op}LatencySumUs`] }] : [];
    });
  }
  return registry;
}
