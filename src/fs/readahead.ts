import { writeFile } from 'node:fs/promises';

/**
 * The FUSE mount's readahead, KiB: page-cached sequential reads then arrive as 1 MiB requests, the largest the
 * request loop negotiates (native/ferry/negotiate.h). The INIT reply can only lower the kernel's default of
 * 128 KiB, which keeps them at 128 KiB.
 */
export const READ_AHEAD_KB = 1024;

/** Sets the readahead of the mount whose device minor is `minor` (its bdi is 0:minor; sysfs, not the mount). */
export async function raiseReadahead(minor: string): Promise<void> {
  await writeFile(`/sys/class/bdi/0:${minor}/read_ahead_kb`, `${READ_AHEAD_KB}\n`);
}
