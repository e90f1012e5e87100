import fs from 'node:fs';
import { basename, dirname } from 'node:path';
import { promisify } from 'node:util';
import type { FerryIo } from 'fuse-native';
import { E, ioError } from '../fs/errno.js';

const BIGINT = { bigint: true } as const;
/** O_PATH on Linux (every architecture Node runs on but alpha/parisc/sparc). */
export const O_PATH = 0o10000000;
const fstat = promisify(fs.fstat);

/**
 * A directory that the daemon resolves paths beneath (the datastore, a mapping's backing, a migration's source or
 * destination): an O_PATH fd opened once, so that what it names cannot change under the daemon, and that no path
 * string from a user ever reaches a syscall on its own. `prefix` is prepended to every relative path: a mapping of
 * one file is rooted at the file's parent, with the file's name as prefix.
 *
 * State, JS thread only: `users` counts calls in flight on `fd`; `retire` (the mapping is gone) closes the fd when
 * the last of them ends, so an fd number is never reused while a call still resolves beneath it.
 */
export class Root {
  private fd: number | undefined;
  private users = 0;
  private retired = false;

  constructor(readonly dir: string, readonly prefix = '') {
    try {
      this.fd = fs.openSync(dir, O_PATH | fs.constants.O_DIRECTORY);
    } catch {
      // Opened on first use instead (a destination made later, or gone: its ops fail with the errno then).
    }
  }

  /** Runs `call` with the root's fd and `rel` made relative to it; the fd stays open until `call` settles. */
  async use<T>(rel: string, call: (fd: number, rel: string) => Promise<T>): Promise<T> {
    if (this.retired) throw ioError(-E.ENOENT, `${this.dir}: no longer served`);
    this.fd ??= fs.openSync(this.dir, O_PATH | fs.constants.O_DIRECTORY);
    this.users++;
    try {
      return await call(this.fd, this.prefix === '' ? rel : rel === '' ? this.prefix : `${this.prefix}/${rel}`);
    } finally {
      if (--this.users === 0 && this.retired) this.close();
    }
  }

  retire(): void {
    this.retired = true;
    if (this.users === 0) this.close();
  }

  private close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
  }
}

/** A root for `backing`, a directory or a file: a file is rooted at its parent, its name the prefix. */
export function rootOf(backing: string): Root {
  let isDirectory = true;
  try {
    isDirectory = fs.statSync(backing).isDirectory();
  } catch {
    // Missing: served as a directory, and its ops fail until it exists.
  }
  return isDirectory ? new Root(backing) : new Root(dirname(backing), basename(backing));
}

function call<T = void>(what: string, start: (cb: (err: number, value?: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) =>
    start((err, value) => (err ? reject(ioError(err, what)) : resolve(value as T))),
  );
}

/**
 * Syscalls beneath a root fd (Fuse.io: openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS for
 * the parent, the *at call on the last component, never followed). A failure rejects with an Error carrying
 * `errno` (negative) and `code`, as Node's fs errors do. `rel` is relative to the root, '' for the root itself.
 */
export class Beneath {
  constructor(readonly io: FerryIo) {}

  open(root: number, rel: string, flags: number, mode = 0): Promise<number> {
    return call(`open ${rel}`, (cb) => this.io.openBeneath(root, rel, flags, mode, cb));
  }

  /** The object itself (a symlink is not followed), as an O_PATH fd the caller closes. */
  object(root: number, rel: string): Promise<number> {
    return this.open(root, rel, O_PATH);
  }

  /** lstat beneath the root. */
  async lstat(root: number, rel: string): Promise<fs.BigIntStats> {
    const fd = await this.object(root, rel);
    try {
      return await fstat(fd, BIGINT);
    } finally {
      fs.closeSync(fd);
    }
  }

  mknod(root: number, rel: string, mode: number, rdev: number): Promise<void> {
    return call(`mknod ${rel}`, (cb) => this.io.mknodat(root, rel, mode, rdev, cb));
  }

  mkdir(root: number, rel: string, mode: number): Promise<void> {
    return call(`mkdir ${rel}`, (cb) => this.io.mkdirat(root, rel, mode, cb));
  }

  symlink(target: string, root: number, rel: string): Promise<void> {
    return call(`symlink ${rel}`, (cb) => this.io.symlinkat(target, root, rel, cb));
  }

  unlink(root: number, rel: string): Promise<void> {
    return call(`unlink ${rel}`, (cb) => this.io.unlinkat(root, rel, 0, cb));
  }

  rmdir(root: number, rel: string): Promise<void> {
    return call(`rmdir ${rel}`, (cb) => this.io.unlinkat(root, rel, this.io.AT_REMOVEDIR, cb));
  }

  rename(root: number, rel: string, root2: number, rel2: string, flags = 0): Promise<void> {
    return call(`rename ${rel}`, (cb) => this.io.renameat(root, rel, root2, rel2, flags, cb));
  }

  link(root: number, rel: string, root2: number, rel2: string): Promise<void> {
    return call(`link ${rel}`, (cb) => this.io.linkat(root, rel, root2, rel2, cb));
  }

  async readlink(root: number, rel: string): Promise<string> {
    return (await call<Buffer>(`readlink ${rel}`, (cb) => this.io.readlinkat(root, rel, cb))).toString();
  }

  chown(root: number, rel: string, uid: number, gid: number): Promise<void> {
    return call(`chown ${rel}`, (cb) => this.io.chownat(root, rel, uid, gid, cb));
  }

  chmod(root: number, rel: string, mode: number): Promise<void> {
    return call(`chmod ${rel}`, (cb) => this.io.chmodat(root, rel, mode, cb));
  }

  utimens(root: number, rel: string, atime: [number, number], mtime: [number, number]): Promise<void> {
    return call(`utimens ${rel}`, (cb) => this.io.utimensat(root, rel, atime[0], atime[1], mtime[0], mtime[1], cb));
  }

  getxattr(root: number, rel: string, name: string): Promise<Buffer> {
    return call(`getxattr ${rel}`, (cb) => this.io.getxattr(root, rel, name, cb));
  }

  listxattr(root: number, rel: string): Promise<string[]> {
    return call(`listxattr ${rel}`, (cb) => this.io.listxattr(root, rel, cb));
  }

  setxattr(root: number, rel: string, name: string, value: Buffer, flags = 0): Promise<void> {
    return call(`setxattr ${rel}`, (cb) => this.io.setxattr(root, rel, name, value, flags, cb));
  }

  removexattr(root: number, rel: string, name: string): Promise<void> {
    return call(`removexattr ${rel}`, (cb) => this.io.removexattr(root, rel, name, cb));
  }
}

/** `/proc/self/fd/N`: the kernel resolves it to exactly the fd's object, and never follows that further. */
export function procPath(fd: number): string {
  return `/proc/self/fd/${fd}`;
}
