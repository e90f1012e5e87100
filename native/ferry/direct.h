// O_DIRECT honoured on the backing file (issue 29 goal 3, native-notes/io-routes.md "Landed: O_DIRECT honoured"):
// a handle opened with O_DIRECT through the mount has a second backing fd opened with O_DIRECT. A request aligned
// to the file's direct I/O offset alignment goes through it, from the caller's buffer when that is aligned in
// memory too, else through a per-thread aligned bounce buffer. Any other request (offset or length unaligned, or
// refused by the filesystem with EINVAL) falls back to the plain fd: a write is then written back and waited for
// (sync_file_range) and its pages dropped (POSIX_FADV_DONTNEED), a read's pages dropped; each is counted.
//
// Owns the fallback counter and each thread's bounce buffer. Threads: any (FUSE workers on the native path,
// libuv threadpool threads for the JS path's Fuse.io calls).
#ifndef FERRY_DIRECT_H
#define FERRY_DIRECT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct {
  int fd;              // the plain (buffered) backing fd
  int direct_fd;       // the same file opened with O_DIRECT
  uint32_t mem_align;  // buffer address alignment for direct_fd
  uint32_t off_align;  // offset and length alignment for direct_fd
} ferry_direct_t;

// Requests that took the fallback, since the process started.
extern _Atomic uint64_t ferry_direct_fallbacks;

// Fills d for the two fds: alignment from statx(STATX_DIOALIGN) of direct_fd, or 4096 for both when the
// filesystem does not report it (or reports that it takes no direct I/O: then every request falls back).
void ferry_direct_init (ferry_direct_t *d, int fd, int direct_fd);
// pwrite/pread of the whole request: bytes, or -errno.
ssize_t ferry_direct_pwrite (const ferry_direct_t *d, const char *buf, size_t len, off_t offset);
ssize_t ferry_direct_pread (const ferry_direct_t *d, char *buf, size_t len, off_t offset);
// Drops fd's cached pages of the range, rounded out to whole pages; dirty or locked pages stay (nothing is lost).
void ferry_drop_pages (int fd, off_t offset, size_t len);

#endif
