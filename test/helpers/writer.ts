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

export interface Writer {
  child: ChildProcess;
  /** Stops the writer; resolves with what it saw once its model is on disk. */
  stop(): Promise<WriterReport>;
}

/** Starts a writer process (never the test process itself: the mount is driven from outside the daemon). */
export async function startWriter(opts: { file: string; modelOut: string; seed: number; maxWrite: number; bytesPerSec?: number; fsyncEvery?: number; span?: number }): Promise<Writer> {
  const child = spawn(process.execPath, [SCRIPT, opts.file, opts.modelOut, String(opts.seed), String(opts.maxWrite), String(opts.bytesPerSec ?? 0), String(opts.fsyncEvery ?? 0), String(opts.span ?? 0)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  for (let i = 0; i < 200 && !out.includes('ready'); i++) await new Promise((r) => setTimeout(r, 25));
  if (!out.includes('ready')) throw new Error(`writer did not start: ${err}`);
  return {
    child,
    async stop() {
      child.kill('SIGTERM');
      const code = await exited;
      const last = out.trim().split('\n').at(-1)!;
      if (code !== 0) throw new Error(`writer exited ${code}: ${err}`);
      return JSON.parse(last) as WriterReport;
    },
  };
}
