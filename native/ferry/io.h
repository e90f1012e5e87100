// Fuse.io: the syscalls Node's fs lacks (xattrs, lseek SEEK_DATA/SEEK_HOLE, copy_file_range with explicit
// offsets, the migration's sparse bulk copy with write-behind, fallocate), and every path-taking syscall the
// daemon makes for another user, each resolved beneath a root's directory fd (openat2 with RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS for the parent, the *at call with no-follow on the last
// component; native-notes/security.md), as plain C on a request record.
//
// Owns nothing shared: each call works on its own request. Threads: napi-io.c fills a request on the JS
// thread, one of these runs it on a libuv threadpool thread, and the result is read on the JS thread again.
#ifndef FERRY_IO_H
#define FERRY_IO_H

#include <limits.h>
#include <linux/limits.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { FERRY_IO_RES_NONE, FERRY_IO_RES_NUMBER, FERRY_IO_RES_BUFFER, FERRY_IO_RES_NAMES } ferry_io_res_t;

typedef struct {
  ferry_io_res_t res_type;
  int err; // 0 or -errno; set early by argument checks or by the call
  char path[PATH_MAX];
  char name[XATTR_NAME_MAX + 1]; // an xattr name; or the second path of rename/link (rel under root2)
  char path2[PATH_MAX];
  char *data; // xattr value / name list, owned by the request
  size_t len;
  int64_t fd_in, fd_out, whence, flags;
  int64_t fd_direct; // copy_sparse: the source's O_DIRECT twin, or -1
  int64_t root, root2; // directory fds that path / path2 are resolved beneath
  int64_t uid, gid, mode;
  int64_t off_in, off_out, length;
  int64_t sec[2], nsec[2]; // utimensat: atime, mtime
  int64_t result;
} ferry_io_t;

// openat2(root, path, flags | O_NOFOLLOW | O_CLOEXEC, mode) beneath root: result is the fd.
void ferry_io_open_beneath (ferry_io_t *r);
// The object at root/path, never followed: getxattr (res_type BUFFER) or listxattr (NAMES) into data/len.
void ferry_io_xattr_read (ferry_io_t *r);
void ferry_io_setxattr (ferry_io_t *r);
void ferry_io_removexattr (ferry_io_t *r);
// *at calls on the last component of path (and path2) beneath root (and root2).
void ferry_io_mknodat (ferry_io_t *r);    // mode with type bits, off_in = rdev
void ferry_io_mkdirat (ferry_io_t *r);    // mode
void ferry_io_symlinkat (ferry_io_t *r);  // path2 = the link's target (any text), path = the new link
void ferry_io_unlinkat (ferry_io_t *r);   // flags: 0 or AT_REMOVEDIR
void ferry_io_renameat (ferry_io_t *r);   // flags: renameat2's
void ferry_io_linkat (ferry_io_t *r);
void ferry_io_readlinkat (ferry_io_t *r); // BUFFER
void ferry_io_chownat (ferry_io_t *r);    // uid, gid (-1 keeps)
void ferry_io_chmodat (ferry_io_t *r);    // mode; a symlink: EOPNOTSUPP
void ferry_io_utimensat (ferry_io_t *r);
void ferry_io_seek (ferry_io_t *r);
void ferry_io_fallocate (ferry_io_t *r);
void ferry_io_copy_range (ferry_io_t *r);
void ferry_io_copy_sparse (ferry_io_t *r);
// The JS path's I/O on a handle opened with O_DIRECT (direct.h): fd_in the plain fd, fd_out the O_DIRECT one.
// Write: data/len (page-aligned) at off_in, result the bytes written. Read (BUFFER): length bytes at off_in.
void ferry_io_direct_write (ferry_io_t *r);
void ferry_io_direct_read (ferry_io_t *r);

#endif
