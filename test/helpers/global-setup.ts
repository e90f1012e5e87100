import { readdir, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { lazyUnmount, listMounts } from '../../src/util/mounts.js';
import { forceUnmount, mountsUnder, TEST_ROOT_PREFIX } from './mounts.js';

const FUSECTL = '/sys/fs/fuse/connections';
let fusectlBefore = false;

async function fusectlMounted(): Promise<boolean> {
  return (await listMounts()).some((m) => m.mountpoint === FUSECTL);
}

/** Whatever happens in the tests, no mount and no scratch directory survives the run. */
async function sweep(): Promise<string[]> {
  const left = await mountsUnder(TEST_ROOT_PREFIX);
  for (const mountpoint of left.reverse()) await forceUnmount(mountpoint);
  const parent = dirname(TEST_ROOT_PREFIX);
  for (const name of await readdir(parent)) {
    if (name.startsWith(basename(TEST_ROOT_PREFIX))) await rm(join(parent, name), { recursive: true, force: true }).catch(() => undefined);
  }
  return left;
}

export async function setup(): Promise<void> {
  await sweep();
  fusectlBefore = await fusectlMounted();
}

export async function teardown(): Promise<void> {
  const left = await sweep();
  if (left.length > 0) throw new Error(`tests left mounts behind (now cleared): ${left.join(', ')}`);
  // Aborting a hung connection may mount fusectl; whoever mounts it must unmount it again.
  if (!fusectlBefore && (await fusectlMounted())) {
    await lazyUnmount(FUSECTL).catch(() => undefined);
    throw new Error(`tests left ${FUSECTL} (fusectl) mounted (now cleared)`);
  }
}
