import fsp from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { TestMount } from './mounts.js';

/**
 * A VM home in the mount's datastore: `vm1/disk.img` of random bytes plus the given small files, and an
 * empty `dest/` beside the mount for the migration to go to (`dest` is `dest/vm1`, absent).
 */
export async function vmHome<M extends TestMount>(m: M, diskMiB: number, files: Record<string, string> = {}): Promise<M & { home: string; dest: string }> {
  const home = join(m.datastore, 'vm1');
  await fsp.mkdir(home);
  await fsp.writeFile(join(home, 'disk.img'), randomBytes(diskMiB << 20));
  for (const [name, content] of Object.entries(files)) await fsp.writeFile(join(home, name), content);
  await fsp.mkdir(join(m.root, 'dest'));
  return Object.assign(m, { home, dest: join(m.root, 'dest', 'vm1') });
}
