import { readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { reachable } from '../util/long-paths.js';

/** libfuse's name for a file unlinked while open (`.fuse_hidden%08x%08x`), kept until its last handle closes. */
const HIDDEN = /^\.fuse_hidden[0-9a-f]{16}$/;

/**
 * Removes the hidden files a killed daemon left behind under `roots` (the backings the mount serves). Run before
 * mounting: no handle of the old mount can still be open, and the files were already unlinked by whoever used them.
 */
export async function sweepHiddenFiles(roots: string[]): Promise<string[]> {
  const removed: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    const entries = await readdir(reachable(dir), { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [];
      throw err;
    });
    for (const entry of entries) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) await walk(path);
      else if (entry.isFile() && HIDDEN.test(entry.name)) {
        // Roots may nest (a subtree migrated back into the datastore): a second visit finds it gone.
        const gone = await unlink(reachable(path)).then(() => true, (err: NodeJS.ErrnoException) => {
          if (err.code === 'ENOENT') return false;
          throw err;
        });
        if (gone) removed.push(path);
      }
    }
  };
  for (const root of new Set(roots)) await walk(root);
  return removed;
}
