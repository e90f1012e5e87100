// Types for ferry's fuse-native: upstream 2.2.6 plus ferry's changes, built from native/ (native-notes/fuse-native.md).
declare module 'fuse-native' {
  type Cb = (result: number) => void;
  export interface FuseOps {
    init?(cb: Cb): void;
    getattr?(path: string, cb: (err: number, stat?: object) => void): void;
    fgetattr?(path: string, fh: number, cb: (err: number, stat?: object) => void): void;
    access?(path: string, mode: number, cb: Cb): void;
    statfs?(path: string, cb: (err: number, statfs?: object) => void): void;
    readdir?(path: string, cb: (err: number, names?: string[], stats?: object[]) => void): void;
    /** uid/gid: the caller's (patch 017); pid: the calling thread's id (patch 019). */
    open?(path: string, flags: number, uid: number, gid: number, pid: number, cb: (err: number, fh?: number, openFlags?: number) => void): void;
    create?(path: string, mode: number, flags: number, uid: number, gid: number, pid: number, cb: (err: number, fh?: number, openFlags?: number) => void): void;
    read?(path: string, fh: number, buf: Buffer, len: number, pos: number, cb: Cb): void;
    write?(path: string, fh: number, buf: Buffer, len: number, pos: number, cb: Cb): void;
    flush?(path: string, fh: number, cb: Cb): void;
    fsync?(path: string, datasync: number, fh: number, cb: Cb): void;
    fsyncdir?(path: string, datasync: number, fh: number, cb: Cb): void;
    release?(path: string, fh: number, cb: Cb): void;
    /** A truncate by path, with its caller's uid, gid and thread id (patch 019). */
    truncate?(path: string, size: number, uid: number, gid: number, pid: number, cb: Cb): void;
    ftruncate?(path: string, fh: number, size: number, cb: Cb): void;
    /** fallocate(2) on an open file (patch 018); `mode` as the kernel passes it (KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE). */
    fallocate?(path: string, fh: number, mode: number, offset: number, length: number, cb: Cb): void;
    utimens?(path: string, atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number, cb: Cb): void;
    readlink?(path: string, cb: (err: number, target?: string) => void): void;
    chown?(path: string, uid: number, gid: number, cb: Cb): void;
    chmod?(path: string, mode: number, cb: Cb): void;
    mknod?(path: string, mode: number, dev: number, uid: number, gid: number, cb: Cb): void;
    setxattr?(path: string, name: string, value: Buffer, position: number, flags: number, cb: Cb): void;
    getxattr?(path: string, name: string, position: number, cb: (err: number, value?: Buffer) => void): void;
    listxattr?(path: string, cb: (err: number, names?: string[]) => void): void;
    removexattr?(path: string, name: string, cb: Cb): void;
    unlink?(path: string, cb: Cb): void;
    /**
     * keepSource: libfuse is hiding `from`, the open target of the rename that follows in the same request, at
     * `to` (its hidden name); it does not undo that if that rename fails. ferry's change.
     */
    rename?(from: string, to: string, keepSource: boolean, cb: Cb): void;
    link?(existing: string, newPath: string, cb: Cb): void;
    symlink?(target: string, linkPath: string, uid: number, gid: number, cb: Cb): void;
    mkdir?(path: string, mode: number, uid: number, gid: number, cb: Cb): void;
    rmdir?(path: string, cb: Cb): void;
  }
  export interface FuseOptions {
    timeout?: false | number;
    mountOptions?: string[];
    allowOther?: boolean;
    defaultPermissions?: boolean;
    fsname?: string;
    subtype?: string;
    debug?: boolean;
  }
  export interface FerryIo {
    /**
     * Paths relative to a root directory fd, resolved beneath it and never through a symlink, ".." or a /proc magic
     * link (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS; ELOOP or EXDEV otherwise);
     * "" is the root itself. The last component is never followed.
     */
    openBeneath(root: number, path: string, flags: number, mode: number, cb: (err: number, fd?: number) => void): void;
    getxattr(root: number, path: string, name: string, cb: (err: number, value?: Buffer) => void): void;
    listxattr(root: number, path: string, cb: (err: number, names?: string[]) => void): void;
    setxattr(root: number, path: string, name: string, value: Buffer, flags: number, cb: (err: number) => void): void;
    removexattr(root: number, path: string, name: string, cb: (err: number) => void): void;
    /** mknod(2): `mode` carries the type bits (S_IFIFO, S_IFCHR, S_IFBLK, S_IFSOCK); `rdev` as FUSE passes it. */
    mknodat(root: number, path: string, mode: number, rdev: number, cb: (err: number) => void): void;
    mkdirat(root: number, path: string, mode: number, cb: (err: number) => void): void;
    symlinkat(target: string, root: number, path: string, cb: (err: number) => void): void;
    /** flags: 0, or AT_REMOVEDIR for a directory. */
    unlinkat(root: number, path: string, flags: number, cb: (err: number) => void): void;
    /** renameat2(2); flags as it takes them (RENAME_NOREPLACE, RENAME_EXCHANGE). */
    renameat(root: number, path: string, root2: number, path2: string, flags: number, cb: (err: number) => void): void;
    linkat(root: number, path: string, root2: number, path2: string, cb: (err: number) => void): void;
    readlinkat(root: number, path: string, cb: (err: number, target?: Buffer) => void): void;
    /** uid/gid -1 keeps it; a symlink's own owner. */
    chownat(root: number, path: string, uid: number, gid: number, cb: (err: number) => void): void;
    /** EOPNOTSUPP for a symlink (as Linux >= 6.6 answers): its target is never changed. */
    chmodat(root: number, path: string, mode: number, cb: (err: number) => void): void;
    /** nsec 0..999999999, or UTIME_NOW / UTIME_OMIT passed to the kernel as they are; a symlink's own times. */
    utimensat(root: number, path: string, atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number, cb: (err: number) => void): void;
    seek(fd: number, offset: number, whence: number, cb: (err: number, offset?: number) => void): void;
    copyRange(fdIn: number, offIn: number, fdOut: number, offOut: number, length: number, cb: (err: number, copied?: number) => void): void;
    /**
     * copyRange into a fresh file: all-zero 4 KiB blocks stay holes (cp --sparse=always); cb gets the bytes read.
     * `directFdIn` (-1: none), the source opened again with O_DIRECT, reads the aligned pieces past the page cache.
     */
    copySparse(fdIn: number, directFdIn: number, offIn: number, fdOut: number, offOut: number, length: number, cb: (err: number, copied?: number) => void): void;
    /** fallocate(2) with `mode` as given; the filesystem's errno as is (EOPNOTSUPP for a mode it lacks). */
    fallocate(fd: number, mode: number, offset: number, length: number, cb: (err: number) => void): void;
    /**
     * I/O of a handle with an O_DIRECT twin (native/ferry/direct.h): through `directFd` (the file opened with O_DIRECT)
     * when offset and length are aligned for it, else through `fd` with the fallback (written back, pages dropped).
     */
    directWrite(fd: number, directFd: number, data: Buffer, offset: number, cb: (err: number, written?: number) => void): void;
    directRead(fd: number, directFd: number, length: number, offset: number, cb: (err: number, data?: Buffer) => void): void;
    /** Requests of handles with an O_DIRECT twin that took the fallback since the process started (both data paths). */
    directFallbacks(): number;
    /** fallocate(PUNCH_HOLE | KEEP_SIZE). */
    punchHole(fd: number, offset: number, length: number, cb: (err: number) => void): void;
    readonly SEEK_DATA: number;
    readonly SEEK_HOLE: number;
    readonly XATTR_CREATE: number;
    readonly XATTR_REPLACE: number;
    readonly FALLOC_FL_KEEP_SIZE: number;
    readonly FALLOC_FL_PUNCH_HOLE: number;
    readonly FALLOC_FL_ZERO_RANGE: number;
    readonly AT_REMOVEDIR: number;
  }
  /** An opaque C object: one file's maps as the native data path sees them. */
  export type NativeFileRef = { readonly __nativeFile: unique symbol };
  /** An opaque C object: a migration's copy window on one inode (mirror mode). */
  export type NativeWindowRef = { readonly __nativeWindow: unique symbol };
  /** Mirror writes the native path made through one window. */
  export interface NativeWindowStats {
    ops: number;
    bytes: number;
    /** errno of the first failed destination write, 0 if none. */
    error: number;
    /** Latency of the latest (up to 1024) mirrored writes, µs, including the wait for in-flight chunks. */
    samplesUs: number[];
  }
  /** Counters of the native data path (latency buckets: b counts ops of [2^(b-1), 2^b) µs). */
  export interface FerryDataStats {
    readOps: number;
    readBytes: number;
    readErrors: number;
    readLatencyLog2Us: number[];
    /** The latencies' sum, µs. */
    readLatencySumUs: number;
    writeOps: number;
    writeBytes: number;
    writeErrors: number;
    writeLatencyLog2Us: number[];
    writeLatencySumUs: number;
    /** Ops the native path handed to JavaScript (frozen path, intent not vouched for, map too small). */
    passedOps: number;
    /** Guest writes the native path also wrote to a migration's destination (mirror mode). */
    mirrorOps: number;
    /** Of readOps and writeOps: those the request loop's fast path answered (native/ferry/fast.h). */
    fastPathReads: number;
    fastPathWrites: number;
    /** Requests a polling worker caught, and polls that ended with none. */
    pollCaught: number;
    pollVain: number;
    inflight: number;
  }
  /** What the request loop has seen (native/ferry/loop.c), whichever data path answers. */
  export interface FerryRequestStats {
    /** The largest READ and WRITE request the kernel sent, bytes. */
    largestRead: number;
    largestWrite: number;
    /** INTERRUPT requests the loop dropped unanswered (native/ferry/loop.c). */
    interrupts: number;
  }
  /** ferry's native data path (change 010, native/ferry/data.c). */
  export interface FerryData {
    enable(blockSize: number): void;
    /** On a page-cache miss, fetch the aligned `bytes` around a read (0: off; else a power of two, 4 KiB to 16 MiB). */
    readAround(bytes: number): void;
    /** After answering a request in less than `ns`, a FUSE worker polls for the next one up to `ns` before it sleeps (0: off; at most 1 ms). */
    busyPoll(ns: number): void;
    newFile(): NativeFileRef;
    /** Zeroed bitmap memory owned by C (8-byte multiple). */
    newMap(bytes: number): ArrayBuffer;
    install(file: NativeFileRef, slot: number, map: ArrayBuffer | null, merge: boolean): void;
    /** false: the slot's map is too small for the range (nothing marked). */
    mark(file: NativeFileRef, slot: number, offset: number, length: number): boolean;
    clearFrom(file: NativeFileRef, slot: number, firstBlock: number): void;
    jsWrites(file: NativeFileRef, delta: 1 | -1): void;
    intent(file: NativeFileRef, map: ArrayBuffer | null, regionShift: number): void;
    bytesWritten(file: NativeFileRef): number;
    /** A JS-path write of a windowed file starts: its sequence number, 0 when another write was in flight. */
    orderBegin(file: NativeFileRef): number;
    /** It ended: true when no other write started meanwhile (see TrackedFile.beginWrite). */
    orderEnd(file: NativeFileRef, seq: number): boolean;
    /** false: fh is beyond the native handle table (the handle stays on the JS path). */
    /** unprivileged: opened for writing by a user other than root (its writes to a setuid/setgid file go to JS). */
    /**
     * directFd: the file opened with O_DIRECT (a handle opened with O_DIRECT, or page-cached), else -1. use: how the
     * handle uses the backing file's cache, `NATIVE_USE` of src/fs/backing-io.ts (data.h's FERRY_USE_*): which of
     * its reads take directFd, and whether its writes do.
     */
    open(fh: number, fd: number, directFd: number, file: NativeFileRef | null, unprivileged: boolean, use: number): boolean;
    move(fh: number, fd: number, directFd: number): void;
    close(fh: number): void;
    freeze(prefix: string): void;
    thaw(prefix: string): void;
    drain(cb: () => void): void;
    stats(): FerryDataStats;
    requests(): FerryRequestStats;
    windowNew(fd: number): NativeWindowRef;
    windowAttach(file: NativeFileRef, window: NativeWindowRef | null, slot: number): void;
    /** null: planning (every write is copied again later); arrays: the chunks of the copy, all pending. */
    windowPlan(window: NativeWindowRef, starts: Float64Array | null, lengths: Float64Array | null): void;
    windowState(window: NativeWindowRef, index: number, state: 1 | 2): void;
    windowStats(window: NativeWindowRef): NativeWindowStats;
    readonly MAX_SLOTS: number;
    readonly MAX_HANDLES: number;
  }
  class Fuse {
    constructor(mnt: string, ops: FuseOps, opts?: FuseOptions);
    mount(cb: (err: Error | null) => void): void;
    unmount(cb: (err: Error | null) => void): void;
    static unmount(mnt: string, cb: (err: Error | null) => void): void;
    /** sha256 of the native/ sources the addon was built from (native/source-hash.mjs); undefined: not ferry's build. */
    static readonly SOURCE_HASH: string | undefined;
    static readonly io: FerryIo;
    static readonly data: FerryData;
    static readonly BINDING_PATH: string;
    static readonly UTIME_NOW: number;
    static readonly UTIME_OMIT: number;
    static readonly OPEN_DIRECT_IO: number;
    static readonly OPEN_KEEP_CACHE: number;
    static readonly OPEN_NONSEEKABLE: number;
  }
  export default Fuse;
}
