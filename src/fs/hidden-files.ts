import type { Beneath } from '../util/beneath.js';
import { listDir, withEntry, withObject } from '../util/beneath-tree.js';
import type { PathMap } from './path-map.js';

/** libfuse's name for a file unlinked while open (`.fuse_hidden%08x%08x`), kept until its last handle closes. */
const HIDDEN = /^\.fuse_hidden[0-9a-f]{16}$/;

/**
 * Removes the hidden files a killed daemon left behind in the backings the mount serves. Run before mounting: no
 * handle of the old mount can still be open, and the files were already unlinked by whoever used them. Each
 * backing is walked beneath its root's fd, directory fd by directory fd, never through a symlink and never into
 * another filesystem (a backing there is swept from its own root).
 */
export async function sweepHiddenFiles(at: Beneath, paths: PathMap): Promise<string[]> {
  const removed: string[] = [];
  const sweep = async (dir: number, dev: bigint, shown: string): Promise<void> => {
    for (const entry of await listDir(dir)) {
      const path = `${shown}/${entry.name}`;
      if (entry.isFile() && HIDDEN.test(entry.name)) {
        // Roots may nest (a subtree migrated back into the datastore): a second visit finds it gone.
        // By name, never followed: a directory renamed there since the listing stays (EISDIR).
        const gone = await at.unlink(dir, entry.name).then(() => true, (err: NodeJS.ErrnoException) => {
          if (err.code === 'ENOENT' || err.code === 'EISDIR') return false;
          throw err;
        });
        if (gone) removed.push(path);
      } else if (entry.isDirectory()) {
        // Opened without following: what the listing showed as a directory may be a symlink by now.
        await withEntry(at, dir, entry.name, async (child, st) => {
          if (st.isDirectory() && st.dev === dev) await sweep(child, dev, path);
        });
      }
    }
  };
  for (const mapping of paths.list()) {
    const { root, rel } = paths.place(mapping.virtual);
    await root.use(rel, (fd, path) =>
      withObject(at, fd, path, async (object, st) => {
        // A one-file mapping holds no hidden file of its own.
        if (st.isDirectory()) await sweep(object, st.dev, mapping.backing);
      }),
    ).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }
  return removed;
}
