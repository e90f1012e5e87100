import { closeSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { loadFuse, nativeDataPath } from '../fs/fuse.js';
import { raiseReadahead } from '../fs/readahead.js';
import { createOps, type FsContext } from '../fs/ops.js';
import { PathMap } from '../fs/path-map.js';
import { HandleTable } from '../fs/handles.js';
import { IoGate } from '../fs/gate.js';
import { sweepHiddenFiles } from '../fs/hidden-files.js';
import { Counters } from '../fs/counters.js';
import { Tracker } from '../track/tracker.js';
import { ControlServer } from '../control/server.js';
import { ensureStateDir } from '../state/state-dir.js';
import { isAlive, listRecords, mountId, removeRecord, socketPathFor, writeRecord, type MountRecord } from '../state/registry.js';
import { findMount, lazyUnmount } from '../util/mounts.js';
import { watchMount } from './mount-watch.js';
import { UserError, errorMessage } from '../util/user-error.js';
import { checkMountPaths } from './preflight.js';
import { controlHandlers } from './control-handlers.js';
import { createLogger, type LogFormat, type LogTarget } from './logger.js';
import { exposure, octal, type Exposure } from './exposure.js';
import { startWatchdog } from './watchdog.js';
import { migrationHandlers } from './migration-handlers.js';
import { evacuationHandlers } from './evacuation-handlers.js';
import { Evacuation } from '../evacuate/evacuation.js';
import { readRecords as readEvacuationRecords } from '../evacuate/record.js';
import { DatastoreState, HEARTBEAT_MS } from '../state/datastore-state.js';
import { Migration, type MountServices } from '../migrate/engine.js';
import { recoverMigrations } from '../migrate/recovery.js';
import { Claims } from '../migrate/claims.js';
import { CommitQueue } from '../migrate/commits.js';
import { SocketInodes } from '../fs/socket-inodes.js';
import { openReplyFlags } from '../fs/page-cache.js';
import { Beneath } from '../util/beneath.js';
import { DatastoreRecord } from '../state/datastore-record.js';
import { missingBackings, reconcileRecord } from '../migrate/reconcile.js';
import type { MetricsAddress } from '../metrics/address.js';
import { metricsRenderer } from '../metrics/endpoint.js';
import { listenMetrics } from '../metrics/server.js';

export interface DaemonOptions {
  datastore: string;
  mountpoint: string;
  blockSize: number;
  readAround: number;
  /** How long a FUSE worker watches for the next request after a short one (native data path; 0: off). */
  busyPollNs: number;
  stateDir: string;
  allowOther: boolean;
  /** A dead ferry mount at the mount point (a crashed daemon's) is cleared instead of refused. */
  clearDead: boolean;
  /** Every open is direct_io (--direct-io); otherwise opens without O_DIRECT use the page cache. */
  directIo: boolean;
  track: boolean;
  logLevel: string;
  logFormat: LogFormat;
  logTarget: LogTarget;
  logFile?: string;
  syslogAddress?: string;
  /** Where to serve Prometheus metrics (--metrics); none: no port is opened. */
  metrics?: MetricsAddress;
  metricsPerFile: boolean;
}

/**
 * FUSE options: 1 MiB requests instead of 4 KiB writes (max_write is libfuse 2's own cap of 128 KiB, which
 * ferry's request loop raises to 1 MiB in the INIT reply: native/ferry/negotiate.h); inode numbers from the datastore;
 * kernel permission checks whenever other users may enter. Attributes are not cached: libfuse 2.9 gives each
 * name of a hard-linked file its own kernel inode, so a cached link count, ctime or mode would go stale through
 * the other name (guest data I/O asks for none: it opens with O_DIRECT, direct_io). Nor are names: after a
 * refused rename over an open file, libfuse knows that file's node by its hidden name only (change 020), and a
 * name the kernel cached would reach it there, gone once the last handle closes (ENOENT); a fresh lookup finds
 * the name's file. And when other users may enter, the kernel checks a sticky directory (unlink, rename) against
 * the owner it holds for the name without asking. That costs a LOOKUP per path component of each call that
 * resolves a path.
 */
function mountOptions(opts: DaemonOptions): string[] {
  const options = ['big_writes', 'max_write=131072', 'max_read=1048576', 'use_ino', 'attr_timeout=0', 'entry_timeout=0', 'fsname=ferry', 'subtype=ferry'];
  if (opts.allowOther) options.push('allow_other', 'default_permissions');
  return options;
}

/** Tells the launching `ferry mount` (if any) how the start went; a warning is for it to print. */
function notifyParent(message: { type: 'ready'; warnings: string[] } | { type: 'error'; message: string; exitCode: number }): void {
  if (process.send) {
    process.send(message);
    if (message.type === 'ready') process.disconnect();
  }
}

export async function runDaemon(opts: DaemonOptions): Promise<void> {
  const { log, reopen } = createLogger({ level: opts.logLevel, format: opts.logFormat, target: opts.logTarget, file: opts.logFile, syslogAddress: opts.syslogAddress });
  // logrotate moves the file away and sends SIGHUP: the next line goes to a new file.
  if (opts.logTarget === 'file') process.on('SIGHUP', reopen);
  let started: Started;
  try {
    started = await start(opts, log);
  } catch (err) {
    const exitCode = err instanceof UserError ? err.exitCode : 1;
    if (err instanceof UserError) log.error({ reason: err.message }, 'mount refused');
    else log.error({ err }, 'daemon failed to start');
    notifyParent({ type: 'error', message: errorMessage(err), exitCode });
    throw err;
  }
  const exposed = started.exposed;
  if (exposed) log.warn({ reachable: exposed.reachable, through: exposed.through, mode: octal(exposed.mode), owner: exposed.uid }, exposed.message);
  // The record's lines were logged as they were decided.
  const warnings = [...started.notices, ...(exposed ? [exposed.message] : [])];
  // Launched by `ferry mount`, whose stderr is the user's (ours is the log), it prints the lines. In the foreground
  // we do, unless the log is on stderr already.
  if (!process.send && opts.logTarget !== 'stderr') for (const warning of warnings) process.stderr.write(`ferry: warning: ${warning}\n`);
  notifyParent({ type: 'ready', warnings });
  log.info({ mountpoint: started.record.mountpoint, datastore: started.record.datastore }, 'mounted');
  await started.stopped;
}

interface Started {
  record: MountRecord;
  stopped: Promise<void>;
  /** Other users can reach a backing root outside the mount (only looked at with --allow-other). */
  exposed: Exposure | undefined;
  /** The datastore's record overrode the state dir, moved subtrees missing on this host (src/migrate/reconcile.ts). */
  notices: string[];
}

async function start(opts: DaemonOptions, log: Logger): Promise<Started> {
  const { datastore, mountpoint } = await checkMountPaths(opts.datastore, opts.mountpoint, opts.clearDead);
  const Fuse = await loadFuse();
  const native = nativeDataPath(Fuse, opts.blockSize, opts.readAround, opts.busyPollNs);
  log.info({ binding: Fuse.BINDING_PATH, sourceHash: Fuse.SOURCE_HASH, dataPath: native ? 'native' : 'js' }, 'loaded fuse-native');
  await ensureStateDir(opts.stateDir);
  for (const other of await listRecords(opts.stateDir)) {
    if (other.datastore === datastore && isAlive(other.pid)) {
      throw new UserError(`datastore ${datastore} is already served by ferry at ${other.mountpoint}: one mount per datastore`);
    }
  }

  // Every backing path is resolved beneath a root's fd (src/util/beneath.ts), relative paths shorter than the
  // mount's own: no path past PATH_MAX, and no working directory, is needed.
  const at = new Beneath(Fuse.io);
  const state = new DatastoreState(opts.stateDir, datastore);
  await state.init(datastore);
  // Where the datastore's subtrees went, as the datastore itself records it: the state dir is made to agree first.
  const datastoreRecord = new DatastoreRecord(at, datastore);
  for (const name of await datastoreRecord.sweepTemps()) log.info({ name }, "removed a temporary file of the datastore's record that a killed daemon left");
  const recordNotice = await reconcileRecord(datastoreRecord, state, opts.stateDir, at, log);
  const paths = new PathMap(datastore, await state.loadMappings());
  const interrupted = await recoverMigrations(state, paths, at, log);
  // Recovery decided every commit the state dir journals: the record follows (pending entries confirmed or dropped).
  await datastoreRecord.write(paths.list().filter((m) => m.virtual !== '/'));
  const missing = await missingBackings(paths.list().filter((m) => m.virtual !== '/'), at);
  if (missing) log.warn(missing);
  // From here this daemon's own heartbeat: recovery has read the crashed one's (src/migrate/recovery.ts).
  await state.beat();
  const heartbeat = setInterval(() => void state.beat().catch((err: unknown) => log.warn({ err }, 'cannot write the heartbeat')), HEARTBEAT_MS);
  heartbeat.unref();
  const hidden = await sweepHiddenFiles(at, paths);
  if (hidden.length > 0) log.info({ files: hidden }, 'removed files a killed daemon left unlinked-but-open');
  // Without --allow-other only root uses the mount, and the backing store is no route for anyone else through it.
  const exposed = opts.allowOther ? await exposure([datastore, ...paths.list().map((m) => m.backing)]) : undefined;

  // Modes and owners arrive from the kernel already final; the daemon's umask must not change them.
  process.umask(0);
  const fsContext: FsContext = {
    paths,
    handles: new HandleTable(native),
    tracker: new Tracker(opts.blockSize, opts.track, native),
    gate: new IoGate(native, (err) => log.error({ err }, 'an op held by a freeze failed as it started')),
    counters: new Counters(),
    openFlags: (flags, keep) => openReplyFlags(opts.directIo, flags, keep),
    io: Fuse.io,
    native,
    sockets: new SocketInodes(),
  };
  const migrations: Migration[] = [];
  const evacuations: Evacuation[] = [];
  const services: MountServices = {
    mountpoint,
    paths,
    gate: fsContext.gate,
    tracker: fsContext.tracker,
    handles: fsContext.handles,
    state,
    io: Fuse.io,
    native,
    sockets: fsContext.sockets,
    log,
    claims: new Claims(paths),
    commits: new CommitQueue(paths, state, log, datastoreRecord),
    otherMounts: async () => (await listRecords(opts.stateDir)).filter((r) => r.pid !== process.pid && isAlive(r.pid)),
  };
  // Before the mount answers its first op: a write to an interrupted subtree is tracked and intent-logged from the
  // very first one, or a resume would miss it.
  for (const left of interrupted) migrations.push(Migration.interrupted(left, services));
  // Listening first: an address that cannot be used is refused with nothing mounted.
  const metrics = opts.metrics ? await listenMetrics(opts.metrics, (err) => log.warn({ err }, 'a metrics scrape failed')) : undefined;
  // Evacuations a crash left: interrupted, their homes read against what recovery made of their migrations.
  const evacuationRecords = await readEvacuationRecords(state);
  for (const record of evacuationRecords) {
    const evacuation = Evacuation.recover(record, services, migrations, (m) => migrations.push(m));
    evacuations.push(evacuation);
    log.warn({ evacuation: record.id, virtual: record.virtual }, 'evacuation interrupted by a crash: continue it with ferry evacuate --resume, or ferry cancel');
  }
  const fuse = new Fuse(mountpoint, createOps(fsContext), { timeout: false, mountOptions: mountOptions(opts), debug: process.env.FERRY_FUSE_DEBUG === '1' });
  await new Promise<void>((resolve, reject) => {
    fuse.mount((err) => (err ? reject(new UserError(`cannot mount ${mountpoint}: ${err.message}`, 1)) : resolve()));
  }).catch(async (err: unknown) => {
    await metrics?.close();
    throw err;
  });

  // This daemon's entry in the mount table: its session lasts as long as that mount is in use.
  const mounted = await findMount(mountpoint);
  if (mounted) await raiseReadahead(mounted.minor).catch((err: unknown) => log.warn({ err: errorMessage(err) }, 'cannot raise the readahead: page-cached reads stay at 128 KiB requests'));

  const record: MountRecord = {
    id: mountId(mountpoint),
    mountpoint,
    datastore,
    pid: process.pid,
    socket: socketPathFor(opts.stateDir, mountpoint),
    blockSize: opts.blockSize,
    readAround: native ? opts.readAround : 0,
    busyPollNs: native ? opts.busyPollNs : 0,
    startedAt: new Date().toISOString(),
    ...(opts.logFile ? { logFile: opts.logFile } : {}),
  };

  let resolveStopped!: () => void;
  const stopped = new Promise<void>((resolve) => (resolveStopped = resolve));
  let stopping = false;
  const watchdog = startWatchdog(fsContext.gate, log, native);
  const mountWatch = mounted ? watchMount(mounted, () => fsContext.handles.size, () => shutdown('the mount went away')) : undefined;
  const shutdown = (reason: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ reason }, 'unmounting');
    watchdog.stop();
    mountWatch?.stop();
    clearInterval(heartbeat);
    control.close();
    void metrics?.close();
    // Evacuations stop first (no pending home starts); running migrations abort (source intact); interrupted ones
    // keep their partial copy for --resume.
    for (const e of evacuations) if (e.state === 'running') void e.cancel();
    void Promise.all(migrations.filter((m) => m.isRunning).map((m) => m.cancel())).then(() => fuse.unmount((err) => {
      if (err) {
        log.warn({ err: err.message }, 'fusermount failed, detaching lazily');
        void lazyUnmount(mountpoint).catch(() => undefined);
      }
      for (const [, handle] of fsContext.handles.entries()) {
        closeSync(handle.fd);
        if (handle.directFd !== undefined) closeSync(handle.directFd);
      }
      void removeRecord(opts.stateDir, record).finally(() => {
        log.info('unmounted');
        resolveStopped();
      });
    }));
  };

  const view = { record, fs: fsContext, startedAtMs: Date.now(), shutdown, migrations, evacuations, requests: () => Fuse.data.requests() };
  const forMigrations = migrationHandlers(services, migrations);
  const handlers = {
    ...controlHandlers(view),
    ...forMigrations,
    ...evacuationHandlers(services, migrations, evacuations, forMigrations),
  };
  const control = new ControlServer(handlers, log);
  try {
    await control.listen(record.socket);
    metrics?.serve(metricsRenderer(view, opts.metricsPerFile));
    await writeRecord(opts.stateDir, record);
  } catch (err) {
    shutdown('start failed');
    throw err;
  }
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGHUP', () => log.info('SIGHUP ignored'));
  process.on('uncaughtException', (err) => {
    log.fatal({ err }, 'uncaught exception');
    shutdown('crash');
    process.exitCode = 1;
  });
  // Said at the mount, where a boot or a restart after a crash shows it (mount -a, the journal), not found later.
  // A home of an interrupted evacuation is resumed with it, not on its own.
  const inEvacuation = new Set(evacuationRecords.flatMap((r) => r.homes.flatMap((h) => (h.migration ? [h.migration] : []))));
  const left = [
    ...evacuationRecords.map((r) => {
      const path = r.virtual === '/' ? mountpoint : join(mountpoint, r.virtual);
      return `the evacuation of ${path} to ${r.dest} was interrupted by a crash: continue it with \`ferry evacuate ${path} --resume\`, or \`ferry cancel ${path}\``;
    }),
    ...interrupted.filter(({ journal }) => !inEvacuation.has(journal.id)).map(({ journal }) => {
      const path = join(mountpoint, journal.virtual);
      return `the migration of ${path} to ${journal.dest} was interrupted by a crash: resume it with \`ferry migrate ${path} --resume\`, or \`ferry cancel ${path}\``;
    }),
  ];
  return { record, stopped, exposed, notices: [recordNotice, missing, ...left].filter((line) => line !== undefined) };
}
