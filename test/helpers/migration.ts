import { spawn } from 'node:child_process';
import fsp from 'node:fs/promises';
import { CLI } from './cli.js';
import type { TestMount } from './mounts.js';

export interface MigrationRun {
  code: number;
  events: Record<string, any>[];
  stderr: string;
  final: Record<string, any> | undefined;
}

export interface JsonRun {
  code: number;
  events: Record<string, any>[];
  stderr: string;
}

/** Runs a `ferry ... --json` command of the mount to the end, collecting its events (`onEvent` sees each as it comes). */
export function runJson(m: TestMount, args: string[], onEvent?: (e: Record<string, any>) => void): { done: Promise<JsonRun>; pid: number } {
  const child = spawn(process.execPath, [CLI, ...args, '--json', '--state-dir', m.stateDir], { stdio: ['ignore', 'pipe', 'pipe'] });
  const events: Record<string, any>[] = [];
  let buffered = '';
  let stderr = '';
  child.stdout.on('data', (d) => {
    buffered += d;
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const event = JSON.parse(buffered.slice(0, nl));
      buffered = buffered.slice(nl + 1);
      events.push(event);
      onEvent?.(event);
    }
  });
  child.stderr.on('data', (d) => (stderr += d));
  const done = new Promise<JsonRun>((resolve) => child.on('exit', (code) => resolve({ code: code ?? 1, events, stderr })));
  return { done, pid: child.pid! };
}

/** Runs `ferry migrate --json` to the end, collecting its events. */
export function migrate(m: TestMount, path: string, dest: string, args: string[] = [], onEvent?: (e: Record<string, any>) => void): { done: Promise<MigrationRun>; pid: number } {
  const { done, pid } = runJson(m, ['migrate', path, '--to', dest, ...args], onEvent);
  return { done: done.then((run) => ({ ...run, final: run.events.filter((e) => e.type === 'done' || e.type === 'error').at(-1) })), pid };
}

export async function waitFor(predicate: () => boolean | Promise<boolean>, timeoutMs = 30_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await predicate()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Writes `bytes` at `offset` through the mount and fsyncs; once acknowledged, the same bytes go into `model`. */
export async function writeThrough(path: string, model: Buffer, offset: number, bytes: Buffer): Promise<void> {
  const handle = await fsp.open(path, 'r+');
  try {
    await handle.write(bytes, 0, bytes.length, offset);
    await handle.sync();
  } finally {
    await handle.close();
  }
  bytes.copy(model, offset);
}
