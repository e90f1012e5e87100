import { expect } from 'vitest';
import { run } from './cli.js';

/** Bytes of `file` in the host's page cache (fincore). */
export async function resident(file: string): Promise<number> {
  const r = await run('fincore', ['--bytes', '--raw', '--noheadings', '--output', 'RES', file]);
  expect(r.code, r.stderr).toBe(0);
  return Number(r.stdout.trim());
}

/** Writes back and drops `file`'s cached pages (fsync first: dirty pages cannot be dropped). */
export async function dropCache(file: string): Promise<void> {
  const r = await run('python3', ['-c', 'import os,sys\nfd=os.open(sys.argv[1],os.O_RDONLY)\nos.fsync(fd)\nos.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED)', file]);
  expect(r.code, r.stderr).toBe(0);
}
