import { stat } from 'node:fs/promises';
import { dirname, resolve, sep } from 'node:path';

/**
 * Whether users other than root can reach a backing root (the datastore, a migrated subtree's backing) by its own
 * path, outside the mount. Racing a rename in the backing store against an op through the mount needs exactly
 * that (issue 26, native-notes/security.md); a directory on the way that only root can traverse closes the route
 * for everyone else, whatever lies below it.
 *
 * "Only root can traverse", kept simple and conservative: owned by uid 0, no execute bit for group or other
 * (`mode & 0o011` is 0). A group execute bit counts as open even when no one but root is in the group. It also
 * covers POSIX ACLs: with an ACL the group bits are the mask, and a mask without execute denies execute to every
 * named user and group. Capabilities (CAP_DAC_READ_SEARCH and the like) are root's business. Other routes to the
 * same directory (a bind mount, the filesystem mounted a second time, a process that was already inside before a
 * chmod) are not seen.
 */

export interface OpenRoute {
  /** The root that can be reached. */
  root: string;
  /** Its parent, where the fix most naturally goes: its mode and owner. */
  through: string;
  mode: number;
  uid: number;
}

export interface Exposure {
  /** The roots that can be reached, in the order asked. */
  reachable: string[];
  /** The first one's parent, its mode and owner. */
  through: string;
  mode: number;
  uid: number;
  /** One line, for stderr (after `ferry: warning: `) and the log. */
  message: string;
}

/** A directory that closes the route: root's, and no one else may traverse it. */
function closes(st: { mode: number; uid: number; isDirectory(): boolean }): boolean {
  return st.isDirectory() && st.uid === 0 && (st.mode & 0o011) === 0;
}

/** The directories from `/` to `path`, both included. */
function prefixes(path: string): string[] {
  const parts = path.split(sep).filter(Boolean);
  return ['/', ...parts.map((_, i) => sep + parts.slice(0, i + 1).join(sep))];
}

/** How other users reach `root` (an absolute path, symlinks resolved), or undefined when a directory on the way stops them. */
export async function openRoute(root: string): Promise<OpenRoute | undefined> {
  const path = resolve(root);
  for (const dir of prefixes(path)) {
    if (closes(await stat(dir))) return undefined;
  }
  const through = dirname(path);
  const st = await stat(through);
  return { root: path, through, mode: st.mode & 0o7777, uid: st.uid };
}

export const octal = (mode: number) => (mode & 0o7777).toString(8).padStart(4, '0');

const list = (items: string[]) => (items.length === 1 ? items[0] : `${items.slice(0, -1).join(', ')} and ${items[items.length - 1]}`);

/**
 * Which of `roots` users other than root can reach outside the mount, and what to do about it; undefined when none.
 * A root that cannot be looked at (gone, not accessible) is left out: this check only ever warns.
 */
export async function exposure(roots: readonly string[]): Promise<Exposure | undefined> {
  const open: OpenRoute[] = [];
  for (const root of new Set(roots.map((r) => resolve(r)))) {
    const route = await openRoute(root).catch(() => undefined);
    if (route) open.push(route);
  }
  if (open.length === 0) return undefined;
  const [{ through, mode, uid }] = open;
  const reachable = open.map((r) => r.root);
  const them = reachable.length === 1 ? 'it' : 'them';
  const owner = uid === 0 ? 'root' : `uid ${uid}`;
  // A parent everyone shares ("/", or one anyone may write, like /tmp) is no place to take away other users' access.
  const fix =
    through === '/' || mode & 0o002
      ? `move ${them} into a directory only root can enter (owner root, mode 0700; 0711 is not enough)`
      : `make one root-only, e.g. ${uid === 0 ? '' : `chown root ${through} && `}chmod 0700 ${through} (0711 is not enough), or move ${them} into such a directory`;
  const message =
    `users other than root can reach ${list(reachable)} outside the mount: no directory from / to ${them} is root-only ` +
    `(${through} is ${octal(mode)}, owner ${owner}); to close that route ${fix} (README, "Security")`;
  return { reachable, through, mode, uid, message };
}
