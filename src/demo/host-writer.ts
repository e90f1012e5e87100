import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const SCRIPT = fileURLToPath(new URL('../../scripts/demo/host-writer.mjs', import.meta.url));

export interface WriterReport {
  writes: number;
  bytes: number;
  errors: string[];
  fsyncs: number;
  maxStallMs: number;
}

export interface WriterOptions {
  file: string;
  /** Where the writer leaves its model of the file's bytes when it stops. */
  modelOut: string;
  seed: number;
  maxWrite: number;
  bytesPerSec?: number;
  fsyncEvery?: number;
  /** Bytes at the start of the file it writes to (default: all of it). */
  span?: number;
}

export interface Writer {
  child: ChildProcess;
  /** Stops the writer; resolves with what it saw once its model is on disk. */
  stop(): Promise<WriterReport>;
}

/**
 * A guest stand-in (the tests', and the demo's where QEMU cannot run): a separate process writing through
 * the mount, never the daemon's own process.
 */
export async function startWriter(opts: WriterOptions): Promise<Writer> {
  const args = [opts.file, opts.modelOut, opts.seed, opts.maxWrite, opts.bytesPerSec ?? 0, opts.fsyncEvery ?? 0, opts.span ?? 0].map(String);
  const child = spawn(process.execPath, [SCRIPT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise<string | number>((resolve) => child.on('exit', (code, signal) => resolve(code ?? `on ${signal}`)));
  for (let i = 0; i < 200 && !out.includes('ready'); i++) await new Promise((r) => setTimeout(r, 25));
  if (!out.includes('ready')) throw new Error(`the writer did not start: ${err.trim()}`);
  return {
    child,
    async stop() {
      child.kill('SIGTERM');
      const code = await exited;
      // A writer whose every write failed (its mount's daemon killed) ends by itself; our SIGTERM can then land as
      // Node, exiting, has put back the signal's default action. Its report is printed only after its model is on
      // disk, so a report line means it finished, whatever ended the process.
      const report = out.trim().split('\n').at(-1) ?? '';
      if (code !== 0 && !report.startsWith('{')) throw new Error(`the writer exited ${code}: ${err.trim()}`);
      return JSON.parse(report) as WriterReport;
    },
  };
}
