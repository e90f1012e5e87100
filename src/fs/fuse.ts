import { createRequire } from 'node:module';
import { access, stat } from 'node:fs/promises';
import { constants } from 'node:fs';
import type FuseClass from 'fuse-native';
import type { FerryData } from 'fuse-native';
import { UserError, errorMessage } from '../util/user-error.js';
import { nativeSourceHash } from '../../native/source-hash.mjs';

export type Fuse = typeof FuseClass;

/** makedev(10, 229): the misc device the kernel's FUSE module registers. */
const FUSE_DEVICE_NUMBER = (10 << 8) | 229;

/** Checks what a FUSE mount needs from the host and loads the fuse-native addon built from native/. */
export async function loadFuse(): Promise<Fuse> {
  const device = '/dev/fuse';
  try {
    const st = await stat(device);
    if (!st.isCharacterDevice() || st.rdev !== FUSE_DEVICE_NUMBER) throw new Error('not the FUSE device');
    await access(device, constants.R_OK | constants.W_OK);
  } catch {
    throw new UserError(`${device} is not usable: load the fuse kernel module (modprobe fuse) or give the container /dev/fuse`);
  }
  const require = createRequire(import.meta.url);
  let fuse: Fuse;
  try {
    fuse = require('fuse-native') as Fuse;
  } catch (err) {
    const message = errorMessage(err);
    if (message.includes('libfuse.so.2')) {
      throw new UserError('libfuse2 is missing: install it with `apt-get install libfuse2 fuse` (or run scripts/setup.sh)');
    }
    throw new UserError(`cannot load fuse-native (${message.split('\n')[0]}): run scripts/setup.sh`);
  }
  // An addon built from other sources (native/ changed since, or not ferry's build at all) is refused.
  if (fuse.SOURCE_HASH !== await nativeSourceHash()) {
    throw new UserError(`fuse-native at ${fuse.BINDING_PATH ?? 'an unknown path'} was not built from this tree's native/ sources: run npm run build:native`);
  }
  return fuse;
}

/**
 * The native data path (reads and writes answered in C on FUSE worker threads), unless FERRY_NATIVE=0 asks for
 * the JavaScript path, which behaves the same.
 */
export function nativeDataPath(fuse: Fuse, blockSize: number, readAround: number, busyPollNs: number): FerryData | undefined {
  if (process.env.FERRY_NATIVE === '0') return undefined;
  fuse.data.enable(blockSize);
  fuse.data.readAround(readAround);
  fuse.data.busyPoll(busyPollNs);
  return fuse.data;
}
