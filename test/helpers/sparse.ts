import { run } from './cli.js';

/** util-linux fallocate(1): the syscall itself, with no fallback that writes zeros (posix_fallocate has one). */
export async function fallocate(file: string, flags: string[], offset: number, length: number): Promise<void> {
  const r = await run('fallocate', [...flags, '-o', String(offset), '-l', String(length), file]);
  if (r.code !== 0) throw new Error(`fallocate ${flags.join(' ')} failed: ${r.stderr.trim()}`);
}

/** lseek(SEEK_DATA) and lseek(SEEK_HOLE) from `offset` in a file outside the mount (-1: ENXIO). */
export async function seekDataHole(path: string, offset: number): Promise<{ data: number; hole: number }> {
  const script = `
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
def seek(whence):
    try: return os.lseek(fd, int(sys.argv[2]), whence)
    except OSError: return -1
print(seek(os.SEEK_DATA), seek(os.SEEK_HOLE))`;
  const r = await run('python3', ['-c', script, path, String(offset)]);
  if (r.code !== 0) throw new Error(r.stderr);
  const [data, hole] = r.stdout.trim().split(' ').map(Number);
  return { data, hole };
}
