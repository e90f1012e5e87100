import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const SCRIPT = fileURLToPath(new URL('../../scripts/demo/host-writer.mjs', import.meta.url));

export interface HostWriterResult {
  writes: number;
  bytes: number;
  errors: string[];
  maxStallMs: number;
}

/** The demo's stand-in guest where QEMU cannot run: a separate process writing through the mount. */
export async function startHostWriter(file: string, modelOut: string): Promise<{ stop(): Promise<HostWriterResult> }> {
  const child = spawn(process.execPath, [SCRIPT, file, modelOut, '7', String(256 * 1024), String(16 << 20), '64'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  for (let i = 0; i < 200 && !out.includes('ready'); i++) await new Promise((r) => setTimeout(r, 25));
  if (!out.includes('ready')) throw new Error(`the host writer did not start: ${err.trim()}`);
  return {
    async stop() {
      child.kill('SIGTERM');
      if ((await exited) !== 0) throw new Error(`the host writer failed: ${err.trim()}`);
      return JSON.parse(out.trim().split('\n').at(-1)!) as HostWriterResult;
    },
  };
}
