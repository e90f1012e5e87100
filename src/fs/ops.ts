import fs from 'node:fs';
import type { BigIntStats } from 'node:fs';
import fsp from 'node:fs/promises';
import { constants as C } from 'node:fs';
import { promisify } from 'node:util';
import type { FuseOps, FerryIo, FerryData } from 'fuse-native';
import type { PathMap } from './path-map.js';
import type { Handle, HandleTable } from './handles.js';
import type { IoGate } from './gate.js';
import type { Counters } from './counters.js';
import type { Tracker } from '../track/tracker.js';
import type { TrackedFile } from '../track/tracked-file.js';
import { E, toErrno } from './errno.js';
import { creationMode, giveToCaller } from './owner.js';
import { callerOf, hasPrivileges, killedBits, type Caller } from './privileges.js';
import { mirrorResize, mirrorWrites } from '../track/mirror-write.js';
import type { SocketInodes } from './socket-inodes.js';
import { faultPoint } from '../util/faults.js';
import { Beneath, procPath } from '../util/beneath.js';
import { RESERVED_NAME, reservedErrno } from './reserved.js';
import { backingFlags, closeBacking, directUse, openDirect, readHandle, writeHandle, type DirectUse } from './backing-io.js';
import { OPEN_DIRECT_IO } from './page-cache.js';

/*
 * Every op reaches its backing object beneath the directory fd of the root that serves its path (the datastore, or
 * a mapping's backing: PathMap.place), never by a path string from the root of the host: the parent is resolved
 * with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS), the last component by the *at call
 * with no-follow semantics, or the object is opened O_PATH | O_NOFOLLOW and acted on by fd (through its
 * /proc/self/fd link where a call has no fd form). A directory swapped for a symlink in the backing store fails
 * the op (ELOOP) instead of leading root out of the datastore. native-notes/security.md says why each op uses
 * which call.
 */
const BIGINT = { bigint: true } as const;
const NO_ID = 0xffffffff;

export interface FsContext {
  paths: PathMap;
  handles: HandleTable;
  tracker: Tracker;
  gate: IoGate;
  counters: Counters;
  /**
   * FUSE per-open flags (direct_io, keep_cache) for a regular file opened with these open(2) flags; `keep`: the
   * kernel's cached pages of the file are still right (page-cache.ts).
   */
  openFlags: (flags: number, keep: boolean) => number;
  /** Syscalls Node lacks (xattrs), from ferry's patched addon. */
  io: FerryIo;
  /** The native data path, when it answers reads and writes of registered handles. */
  native: FerryData | undefined;
  sockets: SocketInodes;
}

type Reply = (result: number) => void;
/** A handle's backing fd, and its O_DIRECT twin (`directUse`). */
type BackingFds = [number, number | undefined];
/** An open's backing fd, its reply flags and its twin's use; `identity`: what the cache record is set to once answered. */
interface Opening {
  fd: number;
  reply: number;
  use: DirectUse;
  identity?: BigIntStats;
}
type Opened = Opening & { directFd: number | undefined };

/**
 * Records the backing inode of a newly opened file (it keys a resumable migration's state) and makes its native
 * maps large enough for it.
 */
function learnFile(fd: number, file: TrackedFile, done: () => void): void {
  if (file.ino !== undefined && !file.native) return done();
  fs.fstat(fd, BIGINT, (err, st) => {
    if (!err) {
      file.ino ??= st.ino;
      file.native?.reserve(Number(st.size));
    }
    done();
  });
}

const O_ACCMODE = 3;

/**
 * A write by anyone but root (who holds CAP_FSETID) drops setuid, and setgid as `killedBits` says, as local
 * filesystems do: otherwise any user allowed to write a setuid-root program could make it run their code as root.
 * The kernel leaves this to the FUSE server: ferry's INIT reply says FUSE_HANDLE_KILLPRIV_V2
 * (native/ferry/negotiate.h), so it drops nothing itself on a write, truncation or fallocate. Every open for
 * writing by a user other than root keeps its caller, with its groups read then, whatever the mode is now: root
 * may set the bits later.
 */
function unprivilegedWriter(flags: number, uid: number, gid: number, pid: number, done: (writer: Caller | undefined) => void): void {
  if (uid === 0 || (flags & O_ACCMODE) === C.O_RDONLY) return done(undefined);
  void callerOf(uid, gid, pid).then(done);
}

/**
 * Drops the bits the handle's writer kills, before the change is made (as the kernel's file_remove_privs does
 * before a local write): no byte of another user's lands in a file that still runs as its owner. Never fails: the
 * change is made all the same, as the kernel would make it.
 */
async function dropPrivileges(handle: Handle): Promise<void> {
  if (!handle.unprivilegedWriter) return;
  try {
    const st = await promisify(fs.fstat)(handle.fd);
    const kill = killedBits(st, handle.unprivilegedWriter);
    if (kill) await promisify(fs.fchmod)(handle.fd, st.mode & 0o7777 & ~kill);
  } catch {
    // The fd is the handle's own: nothing to do about a failure here but make the change as asked.
  }
}

export function createOps(ctx: FsContext): FuseOps {
  const { paths, handles, tracker, gate, counters } = ctx;
  const at = new Beneath(ctx.io);

  /** Runs an op inside the gate: `answer(value)` when `work` succeeds, `fail(errno)` when it throws. */
  function answered<T>(op: string, path: string, work: () => Promise<T>, answer: (value: T) => void, fail: (errno: number) => void, path2?: string): void {
    counters.count(op);
    const reserved = reservedErrno(op, path, path2);
    if (reserved) return fail(reserved);
    gate.admit(path, path2, (ticket) => {
      work().then(
        (value) => {
          gate.leave(ticket);
          answer(value);
        },
        (err: unknown) => {
          gate.leave(ticket);
          fail(toErrno(err));
        },
      );
    });
  }

  /** A rare op that answers 0 or a byte count (or an errno it returns); a thrown fs error is counted and answered. */
  function guarded(op: string, path: string, path2: string | undefined, reply: Reply, work: () => Promise<number>): void {
    answered(op, path, work, reply, (errno) => {
      counters.errors++;
      reply(errno);
    }, path2);
  }

  /** Runs `work` beneath the root that serves `path` (its fd held open meanwhile), with `path` relative to it. */
  function beneath<T>(path: string, work: (root: number, rel: string) => Promise<T>): Promise<T> {
    const { root, rel } = paths.place(path);
    return root.use(rel, work);
  }

  /** Like `beneath`, with the object at `path` opened O_PATH (never followed) and closed after. */
  function withObject<T>(path: string, work: (fd: number) => Promise<T>): Promise<T> {
    return beneath(path, async (root, rel) => {
      const fd = await at.object(root, rel);
      try {
        return await work(fd);
      } finally {
        fs.closeSync(fd);
      }
    });
  }

  /** The two paths of a rename or link, each beneath its own root. */
  function beneathBoth<T>(a: string, b: string, work: (rootA: number, relA: string, rootB: number, relB: string) => Promise<T>): Promise<T> {
    return beneath(a, (rootA, relA) => beneath(b, (rootB, relB) => work(rootA, relA, rootB, relB)));
  }

  /** A truncate of the backing file, ordered with the file's writes, and mirrored where a migration mirrors it. */
  async function resizeTracked(file: TrackedFile, oldSize: number, size: number, truncate: () => Promise<void>): Promise<void> {
    const low = Math.min(oldSize, size);
    const order = tracker.beginWrite(file);
    try {
      await truncate();
    } catch (err) {
      tracker.endWrite(file, order, low, 0);
      throw err;
    }
    const mirrors = tracker.resized(file, oldSize, size, order);
    if (mirrors) await mirrorResize(mirrors, oldSize, size);
    tracker.endWrite(file, order, low, Math.abs(oldSize - size));
  }

  function sameMapping(a: string, b: string): boolean {
    return paths.mappingOf(a) === paths.mappingOf(b);
  }

  /** An open backing file as a handle of the mount: tracked, its writer known, registered with the data path. */
  function addHandle(path: string, [fd, directFd]: BackingFds, use: DirectUse, flags: number, uid: number, gid: number, pid: number, done: (fh: number) => void): void {
    const file = tracker.acquire(path);
    learnFile(fd, file, () => {
      unprivilegedWriter(flags, uid, gid, pid, (writer) => done(handles.add({ fd, directUse: use, directFd, flags, file, unprivilegedWriter: writer })));
    });
  }

  /**
   * How the kernel is to cache the open of backing `fd` (page-cache.ts), and what the handle's O_DIRECT twin is for.
   * A page-cached open keeps the kernel's pages only where the backing file is, by its identity, the one they were
   * last known to match; otherwise the kernel drops them, so a change made outside the mount between two opens is
   * seen. A hard-linked file is direct_io: libfuse 2.9 gives each of its names a kernel inode of its own, with pages
   * of its own that a write through another name would leave stale.
   */
  async function openReply(path: string, fd: number, flags: number): Promise<Opening> {
    const plain = ctx.openFlags(flags, false);
    if (plain & OPEN_DIRECT_IO) return { fd, reply: plain, use: directUse(flags, plain) };
    const st = await promisify(fs.fstat)(fd, BIGINT);
    if (st.nlink > 1n) return { fd, reply: OPEN_DIRECT_IO, use: 'none' };
    const reply = ctx.openFlags(flags, handles.cacheRecord.matches(path, st));
    return { fd, reply, use: directUse(flags, reply), identity: st };
  }

  /** `fd` with its reply flags and its O_DIRECT twin; the caller closes `fd` if this fails. */
  async function prepareOpen(path: string, fd: number, flags: number): Promise<Opened> {
    const opening = await openReply(path, fd, flags);
    return { ...opening, directFd: await openDirect(fd, flags, opening.use) };
  }

  /**
   * Answers an open or create with a handle on the backing fds `openFd` gives (through `prepareOpen`). The op leaves
   * the gate only once the handle is in the table: a switchover that freezes the path meanwhile must find it there
   * to reopen it. The kernel's pages match the file from the reply on, so that is when the cache record is set.
   */
  function serveOpen(op: string, path: string, flags: number, uid: number, gid: number, pid: number, cb: (err: number, fh?: number, openFlags?: number) => void, openFd: () => Promise<Opened>): void {
    counters.count(op);
    const reserved = reservedErrno(op, path);
    if (reserved) return cb(reserved);
    gate.admit(path, undefined, (ticket) => {
      openFd().then(
        (opened) => addHandle(path, [opened.fd, opened.directFd], opened.use, flags, uid, gid, pid, (fh) => {
          if (opened.identity) handles.cacheRecord.record(path, opened.identity);
          gate.leave(ticket);
          cb(0, fh, opened.reply);
        }),
        (err: unknown) => {
          gate.leave(ticket);
          cb(toErrno(err));
        },
      );
    });
  }

  /**
   * libfuse hides the open target of a rename (renames it to its hidden name) before asking for the rename
   * itself, and does not undo that if ferry refuses the rename (EXDEV, EBUSY): the name would be lost, and the
   * file at its last close. The hidden name is made a second link instead; the rename then replaces the first,
   * or fails and leaves it. libfuse unlinks the hidden name at the last close either way.
   */
  function hideRenameTarget(target: string, hiddenPath: string, reply: Reply): void {
    guarded('rename', target, hiddenPath, reply, async () => {
      try {
        await beneathBoth(target, hiddenPath, (ra, a, rb, b) => at.link(ra, a, rb, b));
        tracker.linked(target, hiddenPath);
      } catch (err) {
        // A filesystem without hard links (or at its link limit): hide by renaming, as libfuse would.
        if (!['EPERM', 'EOPNOTSUPP', 'ENOTSUP', 'EMLINK'].includes((err as NodeJS.ErrnoException).code ?? '')) throw err;
        await beneathBoth(target, hiddenPath, (ra, a, rb, b) => at.rename(ra, a, rb, b));
        tracker.renamed(target, hiddenPath);
      }
      return 0;
    });
  }

  return {
    init(cb) {
      cb(0);
    },

    getattr(path, cb) {
      answered('getattr', path, () => beneath(path, (root, rel) => at.lstat(root, rel)), (st) => cb(0, ctx.sockets.reported(st)), cb);
    },

    fgetattr(path, fh, cb) {
      const handle = handles.get(fh);
      if (!handle) return this.getattr!(path, cb);
      counters.count('fgetattr');
      gate.admit(path, undefined, (ticket) => {
        fs.fstat(handle.fd, BIGINT, (err, st) => {
          gate.leave(ticket);
          if (err) cb(toErrno(err));
          else cb(0, st);
        });
      });
    },

    access(path, mode, cb) {
      guarded('access', path, undefined, cb, async () => {
        await withObject(path, (fd) => fsp.access(procPath(fd), mode));
        return 0;
      });
    },

    statfs(path, cb) {
      answered('statfs', path, () => withObject(path, (fd) => promisify(fs.statfs)(procPath(fd))), (st) => {
        // statvfs travels as 32-bit counts: scale the block size up until the counts fit.
        let { bsize, blocks, bfree, bavail } = st;
        while (blocks > 0xffffffff) {
          bsize *= 2;
          blocks = Math.floor(blocks / 2);
          bfree = Math.floor(bfree / 2);
          bavail = Math.floor(bavail / 2);
        }
        const files = Math.min(st.files, 0xffffffff);
        const ffree = Math.min(st.ffree, 0xffffffff);
        cb(0, { bsize, frsize: bsize, blocks, bfree, bavail, files, ffree, favail: ffree, fsid: 0, flag: 0, namemax: 255 });
      }, cb);
    },

    readdir(path, cb) {
      answered('readdir', path, () => withObject(path, (fd) => fsp.readdir(procPath(fd))), (names) => {
        const listed = new Set(path === '/' ? names.filter((name) => name !== RESERVED_NAME) : names);
        for (const child of paths.mappedChildren(path)) listed.add(child);
        cb(0, ['.', '..', ...listed]);
      }, cb);
    },

    open(path, flags, uid, gid, pid, cb) {
      serveOpen('open', path, flags, uid, gid, pid, cb, () => beneath(path, async (root, rel) => {
        const fd = await at.open(root, rel, backingFlags(flags));
        return prepareOpen(path, fd, flags).catch((err: unknown) => {
          fs.closeSync(fd);
          throw err;
        });
      }));
    },

    create(path, mode, flags, uid, gid, pid, cb) {
      // Always exclusive: the kernel asks to create only a name its LOOKUP found missing. A file that appeared in
      // the backing since is someone else's: opening it would give it to the caller (the chown below), and a
      // failed chown would remove it. EEXIST then, even without O_EXCL: nothing of it changes.
      const openFlags = backingFlags(flags) | C.O_CREAT | C.O_EXCL;
      serveOpen('create', path, flags, uid, gid, pid, cb, () => faultPoint('create').then(() => beneath(path, async (root, rel) => {
        const fd = await at.open(root, rel, openFlags, creationMode(mode, uid, gid) & 0o7777);
        try {
          await giveToCaller(at, root, rel, fd, uid, gid, mode);
          return await prepareOpen(path, fd, flags);
        } catch (err) {
          // A create that fails leaves nothing behind.
          fs.closeSync(fd);
          await at.unlink(root, rel).catch(() => undefined);
          throw err;
        }
      })));
    },

    read(path, fh, buf, len, pos, cb) {
      const handle = handles.get(fh);
      if (!handle) return cb(-E.EBADF);
      counters.count('read');
      gate.admit(path, undefined, (ticket) => {
        readHandle(ctx.io, handle, buf, len, pos, (err, bytes) => {
          gate.leave(ticket);
          if (err) {
            counters.errors++;
            return cb(toErrno(err));
          }
          counters.bytesRead += bytes;
          cb(bytes);
        });
      });
    },

    write(path, fh, buf, len, pos, cb) {
      const handle = handles.get(fh);
      if (!handle) return cb(-E.EBADF);
      counters.count('write');
      gate.admit(path, undefined, (ticket) => {
        let logged: Promise<unknown> | undefined;
        try {
          logged = tracker.beforeWrite(handle.file, pos, len, handle.fd);
        } catch (err) {
          // Unwritten, and answered: a request nobody answers hangs its caller for good.
          gate.leave(ticket);
          counters.errors++;
          return cb(toErrno(err));
        }
        // The privilege bits go before the data lands (alongside the intent log's flush).
        const dropped = handle.unprivilegedWriter ? dropPrivileges(handle) : undefined;
        const ready = logged && dropped ? Promise.all([logged, dropped]) : logged ?? dropped;
        if (ready) ready.then(() => writeBacking(ticket));
        else writeBacking(ticket);
      });
      function writeBacking(ticket: number): void {
        const file = handle!.file;
        const order = tracker.beginWrite(file);
        writeHandle(ctx.io, handle!, buf, len, pos, (err, bytes) => {
          if (err) {
            tracker.endWrite(file, order, pos, 0);
            gate.leave(ticket);
            counters.errors++;
            return cb(toErrno(err));
          }
          // Only after the backing write succeeded, and before the op leaves the gate.
          counters.bytesWritten += bytes;
          const reply = () => {
            tracker.endWrite(file, order, pos, bytes);
            gate.leave(ticket);
            cb(bytes);
          };
          const mirrors = tracker.written(file, pos, bytes, order);
          if (mirrors) mirrorWrites(mirrors, buf, bytes, pos, reply);
          else reply();
        });
      }
    },

    flush(_path, fh, cb) {
      counters.count('flush');
      cb(handles.get(fh) ? 0 : -E.EBADF);
    },

    fsync(path, datasync, fh, cb) {
      const handle = handles.get(fh);
      if (!handle) return cb(-E.EBADF);
      counters.count('fsync');
      gate.admit(path, undefined, (ticket) => {
        const done = (err: NodeJS.ErrnoException | null) => {
          gate.leave(ticket);
          cb(err ? toErrno(err) : 0);
        };
        if (datasync) fs.fdatasync(handle.fd, done);
        else fs.fsync(handle.fd, done);
      });
    },

    fsyncdir(path, datasync, _fh, cb) {
      guarded('fsyncdir', path, undefined, cb, () => beneath(path, async (root, rel) => {
        const fd = await at.open(root, rel, C.O_RDONLY | C.O_DIRECTORY);
        try {
          await promisify(datasync ? fs.fdatasync : fs.fsync)(fd);
        } finally {
          fs.closeSync(fd);
        }
        return 0;
      }));
    },

    release(path, fh, cb) {
      counters.count('release');
      gate.admit(path, undefined, (ticket) => {
        const handle = handles.remove(fh);
        if (!handle) {
          gate.leave(ticket);
          return cb(-E.EBADF);
        }
        closeBacking(handle, (err) => {
          gate.leave(ticket);
          cb(err ? toErrno(err) : 0);
        });
      });
    },

    truncate(path, size, uid, gid, pid, cb) {
      guarded('truncate', path, undefined, cb, () => withObject(path, async (object) => {
        const st = await promisify(fs.fstat)(object, BIGINT);
        if (st.isDirectory()) return -E.EISDIR;
        if (!st.isFile()) return -E.EINVAL;
        // Exactly the inode looked at, never a name again: opened for writing through its O_PATH fd.
        const fd = await promisify(fs.open)(procPath(object), C.O_WRONLY);
        try {
          const file = tracker.acquire(path);
          file.ino ??= st.ino;
          const oldSize = Number(st.size);
          // Before the change, as for a write: with FUSE_HANDLE_KILLPRIV_V2 the kernel drops neither bit itself.
          const mode = Number(st.mode);
          if (uid !== 0 && hasPrivileges(mode)) {
            const kill = killedBits({ mode, gid: Number(st.gid) }, await callerOf(uid, gid, pid));
            if (kill) await promisify(fs.fchmod)(fd, mode & 0o7777 & ~kill).catch(() => undefined); // truncated all the same
          }
          await tracker.beforeWrite(file, Math.min(oldSize, size), Math.abs(oldSize - size));
          await resizeTracked(file, oldSize, size, () => promisify(fs.ftruncate)(fd, size));
        } finally {
          fs.closeSync(fd);
        }
        return 0;
      }));
    },

    ftruncate(path, fh, size, cb) {
      const handle = handles.get(fh);
      if (!handle) return cb(-E.EBADF);
      guarded('ftruncate', path, undefined, cb, async () => {
        const oldSize = (await promisify(fs.fstat)(handle.fd)).size;
        await dropPrivileges(handle);
        await tracker.beforeWrite(handle.file, Math.min(oldSize, size), Math.abs(oldSize - size), handle.fd);
        await resizeTracked(handle.file, oldSize, size, () => promisify(fs.ftruncate)(handle.fd, size));
        return 0;
      });
    },

    fallocate(path, fh, mode, offset, length, cb) {
      const handle = handles.get(fh);
      if (!handle) return cb(-E.EBADF);
      const { io } = ctx;
      // The modes the kernel sends a FUSE server; another (collapse, insert) would move bytes this does not track.
      if (mode & ~(io.FALLOC_FL_KEEP_SIZE | io.FALLOC_FL_PUNCH_HOLE | io.FALLOC_FL_ZERO_RANGE)) return cb(-E.EOPNOTSUPP);
      const end = offset + length;
      if (end > Number.MAX_SAFE_INTEGER) return cb(-E.EFBIG);
      guarded('fallocate', path, undefined, cb, async () => {
        const file = handle.file;
        const oldSize = (await promisify(fs.fstat)(handle.fd)).size;
        // Without KEEP_SIZE the file may grow to `end`: the bytes from the old end on change too.
        const from = mode & io.FALLOC_FL_KEEP_SIZE ? offset : Math.min(offset, oldSize);
        await dropPrivileges(handle);
        await tracker.beforeWrite(file, from, end - from);
        // Ordered with the file's writes like a write: a mirrored write it overlaps in time is copied again.
        const order = tracker.beginWrite(file);
        const err = await new Promise<number>((resolve) => io.fallocate(handle.fd, mode, offset, length, resolve));
        // Marked, not mirrored: the next pass, or the switchover, copies the range and punches its holes.
        if (err === 0) tracker.changed(file, from, end - from);
        tracker.endWrite(file, order, from, err === 0 ? end - from : 0);
        // ENOSYS would make the kernel stop sending fallocate for the whole mount.
        return err === -E.ENOSYS ? -E.EOPNOTSUPP : err;
      });
    },

    utimens(path, atimeSec, atimeNsec, mtimeSec, mtimeNsec, cb) {
      // In C: exact nanoseconds, and UTIME_NOW / UTIME_OMIT reach the kernel as they are (nothing read and written back).
      guarded('utimens', path, undefined, cb, async () => {
        await beneath(path, (root, rel) => at.utimens(root, rel, [atimeSec, atimeNsec], [mtimeSec, mtimeNsec]));
        return 0;
      });
    },

    readlink(path, cb) {
      answered('readlink', path, () => beneath(path, (root, rel) => at.readlink(root, rel)), (target) => cb(0, target), cb);
    },

    chown(path, uid, gid, cb) {
      guarded('chown', path, undefined, cb, async () => {
        await beneath(path, (root, rel) => at.chown(root, rel, uid === NO_ID ? -1 : uid, gid === NO_ID ? -1 : gid));
        return 0;
      });
    },

    chmod(path, mode, cb) {
      guarded('chmod', path, undefined, cb, async () => {
        // Never through a symlink: EOPNOTSUPP for one, as Linux answers for ext4 since 6.6.
        await beneath(path, (root, rel) => at.chmod(root, rel, mode & 0o7777));
        return 0;
      });
    },

    mknod(path, mode, dev, uid, gid, cb) {
      guarded('mknod', path, undefined, cb, () => beneath(path, async (root, rel) => {
        const perm = creationMode(mode & 0o7777, uid, gid);
        const type = mode & C.S_IFMT;
        if (type === C.S_IFREG) {
          const fd = await at.open(root, rel, C.O_CREAT | C.O_EXCL | C.O_WRONLY, perm);
          try {
            await giveToCaller(at, root, rel, fd, uid, gid, mode);
          } finally {
            fs.closeSync(fd);
          }
          return 0;
        }
        // Node has no mknod(2): FIFOs, devices and Unix sockets (bind() in the mount) through Fuse.io, with the
        // exact mode (the daemon's umask is 0) and the backing filesystem's own errno.
        await at.mknod(root, rel, type | perm, dev);
        await giveToCaller(at, root, rel, undefined, uid, gid, mode);
        return 0;
      }));
    },

    getxattr(path, name, _position, cb) {
      answered('getxattr', path, () => beneath(path, (root, rel) => at.getxattr(root, rel, name)), (value) => cb(0, value), cb);
    },

    setxattr(path, name, value, _position, flags, cb) {
      answered('setxattr', path, () => beneath(path, (root, rel) => at.setxattr(root, rel, name, value, flags)), () => cb(0), cb);
    },

    listxattr(path, cb) {
      answered('listxattr', path, () => beneath(path, (root, rel) => at.listxattr(root, rel)), (names) => cb(0, names), cb);
    },

    removexattr(path, name, cb) {
      answered('removexattr', path, () => beneath(path, (root, rel) => at.removexattr(root, rel, name)), () => cb(0), cb);
    },

    unlink(path, cb) {
      guarded('unlink', path, undefined, cb, async () => {
        if (paths.isMappingRoot(path)) return -E.EBUSY;
        await beneath(path, (root, rel) => at.unlink(root, rel));
        tracker.unlinked(path);
        return 0;
      });
    },

    rename(from, to, keepSource, cb) {
      if (keepSource) return hideRenameTarget(from, to, cb);
      guarded('rename', from, to, cb, async () => {
        if (paths.holdsSubtree(from) || paths.holdsSubtree(to)) return -E.EBUSY;
        if (!sameMapping(from, to)) return -E.EXDEV;
        if (paths.crossesPinned(from, to)) {
          // A name of a linked file (or a directory, which may hold some) crossing the edge of a migrating subtree
          // would split the file between the copy and the source at the switchover.
          const st = await beneath(from, (root, rel) => at.lstat(root, rel));
          if (st.isDirectory() || st.nlink > 1n) return -E.EXDEV;
        }
        await beneathBoth(from, to, (ra, a, rb, b) => at.rename(ra, a, rb, b));
        tracker.renamed(from, to);
        return 0;
      });
    },

    link(existing, newPath, cb) {
      guarded('link', existing, newPath, cb, async () => {
        // As across filesystems: a link may not span two mappings, nor the edge of a subtree being migrated.
        if (!sameMapping(existing, newPath) || paths.crossesPinned(existing, newPath)) return -E.EXDEV;
        await beneathBoth(existing, newPath, (ra, a, rb, b) => at.link(ra, a, rb, b));
        tracker.linked(existing, newPath);
        return 0;
      });
    },

    symlink(target, linkPath, uid, gid, cb) {
      guarded('symlink', linkPath, undefined, cb, () => beneath(linkPath, async (root, rel) => {
        await at.symlink(target, root, rel);
        await giveToCaller(at, root, rel, undefined, uid, gid);
        return 0;
      }));
    },

    mkdir(path, mode, uid, gid, cb) {
      guarded('mkdir', path, undefined, cb, () => beneath(path, async (root, rel) => {
        await at.mkdir(root, rel, mode & 0o7777);
        await giveToCaller(at, root, rel, undefined, uid, gid);
        return 0;
      }));
    },

    rmdir(path, cb) {
      guarded('rmdir', path, undefined, cb, async () => {
        if (paths.holdsSubtree(path)) return -E.EBUSY;
        await beneath(path, (root, rel) => at.rmdir(root, rel));
        return 0;
      });
    },
  };
}
