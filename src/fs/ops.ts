import fs from 'node:fs';
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
import { faultPoint } from '../migrate/faults.js';
import { reachable } from '../util/long-paths.js';

const BIGINT = { bigint: true } as const;
const NO_ID = 0xffffffff;

/**
 * The kernel already resolved O_APPEND's offset, O_CREAT/O_EXCL and O_TRUNC; the backing fd must write exactly
 * where the kernel said (so tracking sees the real offset) and buffers need no O_DIRECT alignment.
 */
const KERNEL_HANDLED = C.O_APPEND | C.O_DIRECT | C.O_CREAT | C.O_EXCL | C.O_TRUNC | C.O_NOCTTY;

export interface FsContext {
  paths: PathMap;
  handles: HandleTable;
  tracker: Tracker;
  gate: IoGate;
  counters: Counters;
  /** FUSE per-open flags (direct_io, keep_cache) for a regular file opened with these open(2) flags. */
  openFlags: (flags: number) => number;
  /** Syscalls Node lacks (xattrs), from ferry's patched addon. */
  io: FerryIo;
  /** The native data path, when it answers reads and writes of registered handles. */
  native: FerryData | undefined;
  sockets: SocketInodes;
}

type Reply = (result: number) => void;

export function backingFlags(flags: number): number {
  return flags & ~KERNEL_HANDLED;
}

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
 * The kernel leaves this to a FUSE server that writes with direct_io, and on a truncation or fallocate drops only
 * what FUSE's older rule says (setgid only with group execute). Decided when the file is opened for writing: the
 * caller, with its groups read then, stays with the handle.
 */
function unprivilegedWriter(fd: number, flags: number, uid: number, gid: number, pid: number, done: (writer: Caller | undefined) => void): void {
  if (uid === 0 || (flags & O_ACCMODE) === C.O_RDONLY) return done(undefined);
  fs.fstat(fd, (err, st) => {
    if (err || !hasPrivileges(st.mode)) done(undefined);
    else void callerOf(uid, gid, pid).then(done);
  });
}

/**
 * Drops the bits the handle's writer kills, before the change is answered, so that the caller's next stat sees
 * them gone. Never fails: the change it follows is made, and is answered as made.
 */
async function dropPrivileges(handle: Handle): Promise<void> {
  if (!handle.unprivilegedWriter) return;
  try {
    const st = await promisify(fs.fstat)(handle.fd);
    const kill = killedBits(st, handle.unprivilegedWriter);
    if (kill) await promisify(fs.fchmod)(handle.fd, st.mode & 0o7777 & ~kill);
  } catch {
    // The fd is the handle's own: nothing to do about a failure here but keep the answer true.
  }
}

export function createOps(ctx: FsContext): FuseOps {
  const { paths, handles, tracker, gate, counters } = ctx;

  /** Runs a rare op inside the gate: `work` resolves to 0 or a byte count; a thrown fs error becomes its errno. */
  function guarded(op: string, path: string, path2: string | undefined, reply: Reply, work: () => Promise<number>): void {
    counters.count(op);
    gate.admit(path, path2, (ticket) => {
      work().then(
        (result) => {
          gate.leave(ticket);
          reply(result);
        },
        (err: unknown) => {
          gate.leave(ticket);
          counters.errors++;
          reply(toErrno(err));
        },
      );
    });
  }

  // Past PATH_MAX a backing path goes relative to the datastore or to a short link (src/util/long-paths.ts).
  const backingPath = (path: string): string => reachable(paths.resolve(path));

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

  /**
   * libfuse hides the open target of a rename (renames it to its hidden name) before asking for the rename
   * itself, and does not undo that if ferry refuses the rename (EXDEV, EBUSY): the name would be lost, and the
   * file at its last close. The hidden name is made a second link instead; the rename then replaces the first,
   * or fails and leaves it. libfuse unlinks the hidden name at the last close either way.
   */
  function hideRenameTarget(target: string, hiddenPath: string, reply: Reply): void {
    guarded('rename', target, hiddenPath, reply, async () => {
      try {
        await fsp.link(backingPath(target), backingPath(hiddenPath));
        tracker.linked(target, hiddenPath);
      } catch (err) {
        // A filesystem without hard links (or at its link limit): hide by renaming, as libfuse would.
        if (!['EPERM', 'EOPNOTSUPP', 'ENOTSUP', 'EMLINK'].includes((err as NodeJS.ErrnoException).code ?? '')) throw err;
        await fsp.rename(backingPath(target), backingPath(hiddenPath));
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
      counters.count('getattr');
      gate.admit(path, undefined, (ticket) => {
        fs.lstat(backingPath(path), BIGINT, (err, st) => {
          gate.leave(ticket);
          if (err) cb(toErrno(err));
          else cb(0, ctx.sockets.reported(st));
        });
      });
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
        await fsp.access(backingPath(path), mode);
        return 0;
      });
    },

    statfs(path, cb) {
      counters.count('statfs');
      gate.admit(path, undefined, (ticket) => {
        fs.statfs(backingPath(path), (err, st) => {
          gate.leave(ticket);
          if (err) return cb(toErrno(err));
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
        });
      });
    },

    readdir(path, cb) {
      counters.count('readdir');
      gate.admit(path, undefined, (ticket) => {
        fs.readdir(backingPath(path), (err, names) => {
          gate.leave(ticket);
          if (err) return cb(toErrno(err));
          const listed = new Set(names);
          for (const child of paths.mappedChildren(path)) listed.add(child);
          cb(0, ['.', '..', ...listed]);
        });
      });
    },

    open(path, flags, uid, gid, pid, cb) {
      counters.count('open');
      gate.admit(path, undefined, (ticket) => {
        fs.open(backingPath(path), backingFlags(flags), (err, fd) => {
          if (err) {
            gate.leave(ticket);
            return cb(toErrno(err));
          }
          const file = tracker.acquire(path);
          learnFile(fd, file, () => {
            unprivilegedWriter(fd, flags, uid, gid, pid, (writer) => {
              gate.leave(ticket);
              cb(0, handles.add({ fd, flags, file, unprivilegedWriter: writer }), ctx.openFlags(flags));
            });
          });
        });
      });
    },

    create(path, mode, flags, uid, gid, pid, cb) {
      counters.count('create');
      gate.admit(path, undefined, (ticket) => {
        const backing = backingPath(path);
        // Always exclusive: the kernel asks to create only a name its LOOKUP found missing. A file that appeared
        // in the backing since is someone else's: opening it would give it to the caller (the chown below), and
        // a failed chown would remove it. EEXIST then, even without O_EXCL: nothing of it changes.
        const openFlags = backingFlags(flags) | C.O_CREAT | C.O_EXCL;
        void faultPoint('create').then(() => fs.open(backing, openFlags, creationMode(mode, uid, gid), (err, fd) => {
          if (err) {
            gate.leave(ticket);
            return cb(toErrno(err));
          }
          giveToCaller(fd, backing, uid, gid, mode).then(
            () => {
              const file = tracker.acquire(path);
              learnFile(fd, file, () => {
                unprivilegedWriter(fd, flags, uid, gid, pid, (writer) => {
                  gate.leave(ticket);
                  cb(0, handles.add({ fd, flags, file, unprivilegedWriter: writer }), ctx.openFlags(flags));
                });
              });
            },
            (chownErr: unknown) => {
              gate.leave(ticket);
              fs.close(fd, () => fs.unlink(backing, () => cb(toErrno(chownErr))));
            },
          );
        }));
      });
    },

    read(path, fh, buf, len, pos, cb) {
      const handle = handles.get(fh);
      if (!handle) return cb(-E.EBADF);
      counters.count('read');
      gate.admit(path, undefined, (ticket) => {
        fs.read(handle.fd, buf, 0, len, pos, (err, bytes) => {
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
        if (logged) logged.then(() => writeBacking(ticket));
        else writeBacking(ticket);
      });
      function writeBacking(ticket: number): void {
        const file = handle!.file;
        const order = tracker.beginWrite(file);
        fs.write(handle!.fd, buf, 0, len, pos, (err, bytes) => {
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
          const finish = handle!.unprivilegedWriter ? () => void dropPrivileges(handle!).then(reply) : reply;
          const mirrors = tracker.written(file, pos, bytes, order);
          if (mirrors) mirrorWrites(mirrors, buf, bytes, pos, finish);
          else finish();
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
      guarded('fsyncdir', path, undefined, cb, async () => {
        const dir = await fsp.open(backingPath(path), 'r');
        try {
          await (datasync ? dir.datasync() : dir.sync());
        } finally {
          await dir.close();
        }
        return 0;
      });
    },

    release(path, fh, cb) {
      counters.count('release');
      gate.admit(path, undefined, (ticket) => {
        const handle = handles.remove(fh);
        if (!handle) {
          gate.leave(ticket);
          return cb(-E.EBADF);
        }
        fs.close(handle.fd, (err) => {
          gate.leave(ticket);
          cb(err ? toErrno(err) : 0);
        });
      });
    },

    truncate(path, size, uid, gid, pid, cb) {
      guarded('truncate', path, undefined, cb, async () => {
        const backing = backingPath(path);
        const st = await fsp.lstat(backing, BIGINT);
        const file = tracker.acquire(path);
        file.ino ??= st.ino;
        const oldSize = Number(st.size);
        await tracker.beforeWrite(file, Math.min(oldSize, size), Math.abs(oldSize - size));
        await resizeTracked(file, oldSize, size, () => fsp.truncate(backing, size));
        // The kernel's own chmod came first, in the same request; it leaves setgid without group execute.
        const mode = Number(st.mode);
        if (uid !== 0 && hasPrivileges(mode)) {
          const kill = killedBits({ mode, gid: Number(st.gid) }, await callerOf(uid, gid, pid));
          if (kill) await fsp.chmod(backing, mode & 0o7777 & ~kill).catch(() => undefined); // truncated all the same
        }
        return 0;
      });
    },

    ftruncate(path, fh, size, cb) {
      const handle = handles.get(fh);
      if (!handle) return cb(-E.EBADF);
      guarded('ftruncate', path, undefined, cb, async () => {
        const oldSize = (await promisify(fs.fstat)(handle.fd)).size;
        await tracker.beforeWrite(handle.file, Math.min(oldSize, size), Math.abs(oldSize - size), handle.fd);
        await resizeTracked(handle.file, oldSize, size, () => promisify(fs.ftruncate)(handle.fd, size));
        await dropPrivileges(handle);
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
        await tracker.beforeWrite(file, from, end - from);
        // Ordered with the file's writes like a write: a mirrored write it overlaps in time is copied again.
        const order = tracker.beginWrite(file);
        const err = await new Promise<number>((resolve) => io.fallocate(handle.fd, mode, offset, length, resolve));
        // Marked, not mirrored: the next pass, or the switchover, copies the range and punches its holes.
        if (err === 0) tracker.changed(file, from, end - from);
        tracker.endWrite(file, order, from, err === 0 ? end - from : 0);
        if (err === 0) await dropPrivileges(handle);
        // ENOSYS would make the kernel stop sending fallocate for the whole mount.
        return err === -E.ENOSYS ? -E.EOPNOTSUPP : err;
      });
    },

    utimens(path, atimeSec, atimeNsec, mtimeSec, mtimeNsec, cb) {
      // In C: exact nanoseconds, and UTIME_NOW / UTIME_OMIT reach the kernel as they are (nothing read and written back).
      guarded('utimens', path, undefined, cb, () =>
        new Promise<number>((resolve) => ctx.io.utimensat(backingPath(path), atimeSec, atimeNsec, mtimeSec, mtimeNsec, ctx.io.AT_SYMLINK_NOFOLLOW, resolve)),
      );
    },

    readlink(path, cb) {
      counters.count('readlink');
      gate.admit(path, undefined, (ticket) => {
        fs.readlink(backingPath(path), (err, target) => {
          gate.leave(ticket);
          if (err) cb(toErrno(err));
          else cb(0, target);
        });
      });
    },

    chown(path, uid, gid, cb) {
      guarded('chown', path, undefined, cb, async () => {
        await fsp.lchown(backingPath(path), uid === NO_ID ? -1 : uid, gid === NO_ID ? -1 : gid);
        return 0;
      });
    },

    chmod(path, mode, cb) {
      guarded('chmod', path, undefined, cb, async () => {
        await fsp.chmod(backingPath(path), mode);
        return 0;
      });
    },

    mknod(path, mode, dev, uid, gid, cb) {
      guarded('mknod', path, undefined, cb, async () => {
        const backing = backingPath(path);
        const perm = creationMode(mode & 0o7777, uid, gid);
        const type = mode & C.S_IFMT;
        if (type === C.S_IFREG) {
          await (await fsp.open(backing, C.O_CREAT | C.O_EXCL | C.O_WRONLY, perm)).close();
        } else {
          // Node has no mknod(2): FIFOs, devices and Unix sockets (bind() in the mount) through Fuse.io, with
          // the exact mode (the daemon's umask is 0) and the backing filesystem's own errno.
          const err = await new Promise<number>((resolve) => ctx.io.mknod(backing, type | perm, dev, resolve));
          if (err) return err;
        }
        await giveToCaller(backing, backing, uid, gid, mode);
        return 0;
      });
    },

    getxattr(path, name, _position, cb) {
      counters.count('getxattr');
      gate.admit(path, undefined, (ticket) => {
        ctx.io.lgetxattr(backingPath(path), name, (err, value) => {
          gate.leave(ticket);
          if (err) cb(err);
          else cb(0, value);
        });
      });
    },

    setxattr(path, name, value, _position, flags, cb) {
      counters.count('setxattr');
      gate.admit(path, undefined, (ticket) => {
        ctx.io.lsetxattr(backingPath(path), name, value, flags, (err) => {
          gate.leave(ticket);
          cb(err);
        });
      });
    },

    listxattr(path, cb) {
      counters.count('listxattr');
      gate.admit(path, undefined, (ticket) => {
        ctx.io.llistxattr(backingPath(path), (err, names) => {
          gate.leave(ticket);
          if (err) cb(err);
          else cb(0, names);
        });
      });
    },

    removexattr(path, name, cb) {
      counters.count('removexattr');
      gate.admit(path, undefined, (ticket) => {
        ctx.io.lremovexattr(backingPath(path), name, (err) => {
          gate.leave(ticket);
          cb(err);
        });
      });
    },

    unlink(path, cb) {
      guarded('unlink', path, undefined, cb, async () => {
        if (paths.isMappingRoot(path)) return -E.EBUSY;
        await fsp.unlink(backingPath(path));
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
          const st = await fsp.lstat(backingPath(from));
          if (st.isDirectory() || st.nlink > 1) return -E.EXDEV;
        }
        await fsp.rename(backingPath(from), backingPath(to));
        tracker.renamed(from, to);
        return 0;
      });
    },

    link(existing, newPath, cb) {
      guarded('link', existing, newPath, cb, async () => {
        // As across filesystems: a link may not span two mappings, nor the edge of a subtree being migrated.
        if (!sameMapping(existing, newPath) || paths.crossesPinned(existing, newPath)) return -E.EXDEV;
        await fsp.link(backingPath(existing), backingPath(newPath));
        tracker.linked(existing, newPath);
        return 0;
      });
    },

    symlink(target, linkPath, uid, gid, cb) {
      guarded('symlink', linkPath, undefined, cb, async () => {
        const backing = backingPath(linkPath);
        await fsp.symlink(target, backing);
        await giveToCaller(backing, backing, uid, gid);
        return 0;
      });
    },

    mkdir(path, mode, uid, gid, cb) {
      guarded('mkdir', path, undefined, cb, async () => {
        const backing = backingPath(path);
        await fsp.mkdir(backing, { mode });
        await giveToCaller(backing, backing, uid, gid);
        return 0;
      });
    },

    rmdir(path, cb) {
      guarded('rmdir', path, undefined, cb, async () => {
        if (paths.holdsSubtree(path)) return -E.EBUSY;
        await fsp.rmdir(backingPath(path));
        return 0;
      });
    },
  };
}
