import type { BigIntStats } from 'node:fs';
import type { FerryRequestStats } from 'fuse-native';
import type { FsContext } from '../fs/ops.js';
import { Beneath } from '../util/beneath.js';
import type { Handler } from '../control/server.js';
import { ControlError, booleanParam } from '../control/protocol.js';
import type { MountRecord } from '../state/registry.js';
import { errnoCode } from '../util/user-error.js';
import type { Migration } from '../migrate/engine.js';
import type { Evacuation } from '../evacuate/evacuation.js';
import { summarize, virtualParam } from './migration-handlers.js';
import { dataPathStatus } from '../fs/native-stats.js';

export interface DaemonView {
  record: MountRecord;
  fs: FsContext;
  startedAtMs: number;
  migrations: Migration[];
  evacuations: Evacuation[];
  /** The request loop's figures (both data paths). */
  requests(): FerryRequestStats;
  shutdown(reason: string): void;
}

const NAMED_OPEN_FILES = 5;

/** The paths of the open files, inside the mount, a few by name (a file opened twice counts once). */
function openPaths(handles: FsContext['handles']): string {
  const paths = [...new Set([...handles.entries()].map(([, h]) => h.file.path))];
  const named = paths.slice(0, NAMED_OPEN_FILES).join(', ');
  return paths.length > NAMED_OPEN_FILES ? `${named} and ${paths.length - NAMED_OPEN_FILES} more` : named;
}

/** What `ferry status --json` reports of a mount; the metrics endpoint reads the same figures (src/metrics/). */
export async function statusOf(view: DaemonView) {
  const { fs } = view;
  const lstat = lstatIn(fs);
  const files = [];
  for (const [path, file] of fs.tracker.entries()) {
    if (file.dirty.isEmpty()) continue;
    const size = await lstat(path).then((st) => Number(st.size), () => 0);
    files.push({ path, size, dirtyBytes: file.dirty.dirtyBytes(size) });
  }
  const openFiles = [...fs.handles.entries()].map(([fh, h]) => ({ fh, path: h.file.path, flags: h.flags }));
  // Ops answered in C count as reads and writes like those answered here; passed ones are counted here.
  const dataPath = dataPathStatus(fs.native, fs.io);
  const ops = { ...fs.counters.ops };
  if (dataPath.readOps) ops.read = (ops.read ?? 0) + dataPath.readOps;
  if (dataPath.writeOps) ops.write = (ops.write ?? 0) + dataPath.writeOps;
  return {
    ...view.record,
    uptimeMs: Date.now() - view.startedAtMs,
    tracking: fs.tracker.enabled,
    dataPath,
    requests: view.requests(),
    ops,
    totalOps: fs.counters.totalOps + dataPath.readOps + dataPath.writeOps,
    errors: fs.counters.errors + dataPath.errors,
    bytesRead: fs.counters.bytesRead + dataPath.readBytes,
    bytesWritten: fs.counters.bytesWritten + dataPath.writeBytes,
    openFiles,
    trackedFiles: files.sort((a, b) => a.path.localeCompare(b.path)),
    dirtyBytes: files.reduce((sum, f) => sum + f.dirtyBytes, 0),
    mappings: fs.paths.list(),
    migrations: view.migrations.map(summarize),
    evacuations: view.evacuations.map((e) => e.summary()),
  };
}

export type MountStatus = Awaited<ReturnType<typeof statusOf>>;

/** lstat of the backing object that serves a mount path, beneath its root and never through a symlink. */
function lstatIn(fs: FsContext): (path: string) => Promise<BigIntStats> {
  const at = new Beneath(fs.io);
  return (path) => {
    const { root, rel } = fs.paths.place(path);
    return root.use(rel, (fd, rel) => at.lstat(fd, rel));
  };
}

export function controlHandlers(view: DaemonView): Record<string, Handler> {
  const { fs } = view;
  const lstat = lstatIn(fs);
  return {
    async ping() {
      return { pid: process.pid };
    },

    async status() {
      return statusOf(view);
    },

    async dirty(params) {
      const path = virtualParam(params);
      const clear = booleanParam(params, 'clear');
      let st;
      try {
        st = await lstat(path);
      } catch (err) {
        throw new ControlError(errnoCode(err) ?? 'EIO', `no such file in the mount: ${path}`);
      }
      if (!st.isFile()) throw new ControlError('EINVAL', `${path} is not a regular file`);
      const file = fs.tracker.find(path);
      // Taking the map and reporting it in one step: a write after this lands in the fresh map.
      const map = file ? (clear ? file.takeDirty() : file.dirty) : undefined;
      const size = Number(st.size);
      const extents = map ? map.extents(size) : [];
      return {
        path,
        blockSize: fs.tracker.blockSize,
        size,
        dirtyBytes: extents.reduce((sum, [, length]) => sum + length, 0),
        extents,
        cleared: clear,
      };
    },

    async unmount(params) {
      const force = booleanParam(params, 'force');
      const migrating = view.migrations.filter((m) => m.isRunning).map((m) => m.options.virtual);
      if (migrating.length > 0 && !force) {
        throw new ControlError('EBUSY', `a migration of ${migrating.join(', ')} is running: cancel it first (ferry cancel), or use --force to cancel and unmount`);
      }
      if (fs.handles.size > 0 && !force) {
        throw new ControlError('EBUSY', `${view.record.mountpoint} is busy: ${fs.handles.size} file(s) open through it: ${openPaths(fs.handles)} (close them, or use --force)`);
      }
      setImmediate(() => view.shutdown('unmount requested'));
      return { pid: process.pid };
    },
  };
}
