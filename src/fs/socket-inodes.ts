import type { BigIntStats } from 'node:fs';

const key = (st: BigIntStats) => `${st.dev}:${st.ino}`;

/**
 * The inode numbers the mount reports for Unix sockets that a migration moved. A connect() finds the bound socket
 * by its kernel inode in a table hashed by inode number (unix_find_socket_byinode): were the mount to report the
 * destination node's number, the kernel inode the server is bound to would change number and connects would be
 * refused. Written by a switchover once it has committed (the daemon's JS thread); read by getattr.
 */
export class SocketInodes {
  private readonly reportedAs = new Map<string, bigint>();

  /** The socket `from` now lives as `to`: keep reporting the number it had. */
  moved(from: BigIntStats, to: BigIntStats): void {
    this.reportedAs.set(key(to), this.reportedAs.get(key(from)) ?? from.ino);
    this.reportedAs.delete(key(from));
  }

  /** `st` as the mount reports it. */
  reported(st: BigIntStats): BigIntStats {
    if (this.reportedAs.size === 0 || !st.isSocket()) return st;
    const ino = this.reportedAs.get(key(st));
    return ino === undefined ? st : { ...st, ino };
  }
}
