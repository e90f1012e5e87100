import { readdir, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { forceUnmount, mountsUnder, TEST_ROOT_PREFIX } from './mounts.js';

/** Whatever happens in the tests, no mount and no scratch directory survives the run. */
async function sweep(): Promise<string[]> {
  const left = await mountsUnder(TEST_ROOT_PREFIX);
  for (const mountpoint of left.reverse()) forceUnmount(mountpoint);
  const parent = dirname(TEST_ROOT_PREFIX);
  for (const name of await readdir(parent)) {
    if (name.startsWith(basename(TEST_ROOT_PREFIX))) await rm(join(parent, name), { recursive: true, force: true }).catch(() => undefined);
  }
  return left;
}

export async function setup(): Promise<void> {
  await sweep();
}

export async function teardown(): Promise<void> {
  const left = await sweep();
  if (left.length > 0) throw new Error(`tests left mounts behind (now cleared): ${left.join(', ')}`);
}
