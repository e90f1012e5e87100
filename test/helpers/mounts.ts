import { mkdtemp, mkdir, rm, writeFile, readdir, readFile } from 'node:fs/promises';
import { fuseWaiting, threadStates } from '../../src/demo/evidence.js';
import { mountId } from '../../src/state/registry.js';
import { mountsDir } from '../../src/state/state-dir.js';
import { logFileFor } from '../../src/daemon/log-target.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { abortFuseConnection, lazyUnmount, listMounts } from '../../src/util/mounts.js';
import { ferry, type Result } from './cli.js';

export const TEST_ROOT_PREFIX = join(tmpdir(), 'ferry-test-');

export interface TestMount {
  root: string;
  datastore: string;
  mountpoint: string;
  stateDir: string;
  /** The options `ferry mount` was given (beyond the datastore and mount point). */
  args: readonly string[];
  /** What the `ferry mount` that made this mount printed (its exit code is 0). */
  mounted: Result;
  /** Runs the ferry CLI against this mount's state dir. */
  cli(args: string[], env?: NodeJS.ProcessEnv): Promise<Result>;
  /** Daemon status, as `ferry status --json` reports it. */
  status(): Promise<Record<string, any>>;
  dirty(path: string): Promise<{ size: number; dirtyBytes: number; extents: [number, number][]; blockSize: number }>;
  stop(): Promise<void>;
  /** `ferry mount` again, with the same options (after an unmount, or a kill). */
  remount(): Promise<Result>;
  /** For a failure message: the daemon's threads and log tail, and FUSE requests unanswered. */
  evidence(): Promise<string>;
}

/** Mounts whose mount point lies under `prefix`. */
export async function mountsUnder(prefix: string): Promise<string[]> {
  return (await listMounts()).map((m) => m.mountpoint).filter((mp) => mp.startsWith(prefix));
}

/** Last-resort cleanup, with ferry's own code: abort the FUSE connection (a hung server ignores all else), detach. */
export async function forceUnmount(mountpoint: string): Promise<void> {
  await abortFuseConnection(mountpoint);
  await lazyUnmount(mountpoint).catch(() => undefined);
}

export async function makeRoot(): Promise<string> {
  return mkdtemp(TEST_ROOT_PREFIX);
}

export async function mountFerry(options: { args?: string[]; root?: string; datastore?: string; env?: NodeJS.ProcessEnv } = {}): Promise<TestMount> {
  const root = options.root ?? (await makeRoot());
  const datastore = options.datastore ?? join(root, 'datastore');
  const mountpoint = join(root, 'mnt');
  const stateDir = join(root, 'state');
  await mkdir(datastore, { recursive: true });
  await mkdir(mountpoint, { recursive: true });
  const cli = (args: string[], env?: NodeJS.ProcessEnv) => ferry([...args, '--state-dir', stateDir], { env });
  const mounted = await cli(['mount', datastore, mountpoint, ...(options.args ?? [])], options.env);
  if (mounted.code !== 0) throw new Error(`ferry mount failed (${mounted.code}): ${mounted.stderr}`);
  const mount: TestMount = {
    root,
    datastore,
    mountpoint,
    stateDir,
    args: options.args ?? [],
    mounted,
    cli,
    remount: () => cli(['mount', datastore, mountpoint, ...(options.args ?? [])], options.env),
    async status() {
      const r = await cli(['status', mountpoint, '--json']);
      // 4: a migration is interrupted or stuck, which some tests set out to make.
      if (r.code !== 0 && r.code !== 4) throw new Error(`status failed (${r.code}): ${r.stderr}`);
      return JSON.parse(r.stdout);
    },
    async dirty(path: string) {
      const r = await cli(['dirty', join(mountpoint, path), '--json']);
      if (r.code !== 0) throw new Error(`dirty failed: ${r.stderr}`);
      return JSON.parse(r.stdout);
    },
    async evidence() {
      const id = mountId(mountpoint);
      const record = JSON.parse(await readFile(join(mountsDir(stateDir), `${id}.json`), 'utf8').catch(() => '{}'));
      const log = await readFile(logFileFor(stateDir, mountpoint), 'utf8').catch((e) => `(${e.code})`);
      return [
        `--- FUSE requests waiting on ${mountpoint}: ${await fuseWaiting(mountpoint)}`,
        `--- daemon (pid ${record.pid}) threads ---\n${await threadStates(record.pid)}`,
        `--- daemon log tail ---\n${log.split('\n').slice(-30).join('\n')}`,
      ].join('\n');
    },
    async stop() {
      await cli(['unmount', mountpoint, '--force']);
      if ((await mountsUnder(mountpoint)).length > 0) await forceUnmount(mountpoint);
      await rm(root, { recursive: true, force: true });
    },
  };
  return mount;
}

export async function writeTree(base: string, files: Record<string, string | Buffer>): Promise<void> {
  for (const [rel, content] of Object.entries(files)) {
    const path = join(base, rel);
    await mkdir(join(path, '..'), { recursive: true });
    await writeFile(path, content);
  }
}

export async function listTree(base: string): Promise<string[]> {
  const entries = await readdir(base, { recursive: true });
  return entries.sort();
}
