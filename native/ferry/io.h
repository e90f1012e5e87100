// Fuse.io: the syscalls Node's fs lacks (l*xattr, lseek SEEK_DATA/SEEK_HOLE, copy_file_range with explicit
// offsets, the migration's sparse bulk copy with write-behind, fallocate, utimensat, mknod), as plain C on a
// request record.
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
  char name[XATTR_NAME_MAX + 1];
  char *data; // xattr value / name list, owned by the request
  size_t len;
  int64_t fd_in, fd_out, whence, flags;
  int64_t off_in, off_out, length;
  int64_t sec[2], nsec[2]; // utimensat: atime, mtime
  int64_t result;
} ferry_io_t;

// lgetxattr (res_type BUFFER) or llistxattr (NAMES) into data/len.
void ferry_io_xattr_read (ferry_io_t *r);
void ferry_io_lsetxattr (ferry_io_t *r);
void ferry_io_lremovexattr (ferry_io_t *r);
void ferry_io_seek (ferry_io_t *r);
void ferry_io_fallocate (ferry_io_t *r);
void ferry_io_utimensat (ferry_io_t *r);
void ferry_io_copy_range (ferry_io_t *r);
void ferry_io_copy_sparse (ferry_io_t *r);
void ferry_io_mknod (ferry_io_t *r);

#endif
