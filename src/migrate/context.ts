import type { Logger } from 'pino';
import type { FerryData, FerryIo } from 'fuse-native';
import type { PathMap } from '../fs/path-map.js';
import type { IoGate } from '../fs/gate.js';
import type { HandleTable } from '../fs/handles.js';
import type { Tracker } from '../track/tracker.js';
import type { DatastoreState } from '../state/datastore-state.js';
import type { SocketInodes } from '../fs/socket-inodes.js';
import type { Claims } from './claims.js';
import type { CommitQueue } from './commits.js';
import { CancelledError } from './mover.js';

export type Mode = 'iterative' | 'mirror' | 'auto';

export interface MigrationOptions {
  virtual: string;
  dest: string;
  mode: Mode;
  maxDowntimeMs: number;
  maxIterations: number;
  rateLimit: number;
  keepSource: boolean;
  /** Pause the (throttled) copy while the guest writes heavily to the subtree. */
  guestIoPriority: boolean;
}

/** What the engine needs from the mount: narrow handles on the write path, never the other way round. */
export interface MountServices {
  mountpoint: string;
  paths: PathMap;
  gate: IoGate;
  tracker: Tracker;
  handles: HandleTable;
  state: DatastoreState;
  io: FerryIo;
  /** The native data path, if it serves this mount (copy windows then get a C twin). */
  native?: FerryData;
  /** Inode numbers reported for moved sockets (their servers stay reachable). */
  sockets: SocketInodes;
  log: Logger;
  /** What running and interrupted migrations own; a migration releases its claim when it ends. */
  claims: Claims;
  /** The path map's one writer. */
  commits: CommitQueue;
  /** Datastores and mountpoints of the other ferry mounts on this host (a destination must be outside them). */
  otherMounts(): Promise<{ datastore: string; mountpoint: string }[]>;
}

/** The errno-style code an error event carries. */
export function errorCode(err: unknown): string {
  if (err instanceof CancelledError) return 'ECANCELED';
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' ? code : 'EIO';
}
