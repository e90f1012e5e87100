#ifndef _GNU_SOURCE
#define _GNU_SOURCE // copy_file_range, fallocate, SEEK_DATA/SEEK_HOLE, sync_file_range
#endif
// Fuse.io's syscalls (see io.h). Results: r->err (0 or -errno) and r->result / r->data.
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#define IO_COPY_BUF (1 << 20)

// lgetxattr/llistxattr: size query, then read. A value that grew in between
// gives ERANGE, so ask again (bounded). The buffer is one byte larger than the
// size so that a value that grew from empty cannot pass as a size query.
void ferry_io_xattr_read (ferry_io_t *r) {
  if (r->err) return;
  for (int tries = 0; tries < 16; tries++) {
    ssize_t size = r->res_type == FERRY_IO_RES_NAMES
      ? llistxattr(r->path, NULL, 0)
      : lgetxattr(r->path, r->name, NULL, 0);
    if (size < 0) { r->err = -errno; return; }
    free(r->data);
    r->data = malloc(size + 1);
    if (r->data == NULL) { r->err = -ENOMEM; return; }
    ssize_t n = r->res_type == FERRY_IO_RES_NAMES
      ? llistxattr(r->path, r->data, size + 1)
      : lgetxattr(r->path, r->name, r->data, size + 1);
    if (n >= 0) { r->len = n; return; }
    if (errno != ERANGE) { r->err = -errno; return; }
  }
  r->err = -ERANGE;
}

// lsetxattr: flags (XATTR_CREATE / XATTR_REPLACE) are passed through.
void ferry_io_lsetxattr (ferry_io_t *r) {
  if (r->err == 0 && lsetxattr(r->path, r->name, r->data, r->len, (int) r->flags) < 0) r->err = -errno;
}

// lremovexattr: does not follow symlinks, like the other l*xattr calls.
void ferry_io_lremovexattr (ferry_io_t *r) {
  if (r->err == 0 && lremovexattr(r->path, r->name) < 0) r->err = -errno;
}

// lseek for SEEK_DATA / SEEK_HOLE (ENXIO: no data at or after the offset). Moves the fd's position.
void ferry_io_seek (ferry_io_t *r) {
  off_t off = lseek((int) r->fd_in, (off_t) r->off_in, (int) r->whence);
  if (off < 0) r->err = -errno;
  else r->result = off;
}

// fallocate(2) with the mode as given (index.js's punchHole is PUNCH_HOLE | KEEP_SIZE); the filesystem's own
// errno comes back, e.g. EOPNOTSUPP for a mode it lacks.
void ferry_io_fallocate (ferry_io_t *r) {
  int res;
  do {
    res = fallocate((int) r->fd_in, (int) r->flags, (off_t) r->off_in, (off_t) r->length);
  } while (res < 0 && errno == EINTR);
  if (res < 0) r->err = -errno;
}

// utimensat(AT_FDCWD, path, times, flags): nanoseconds exact; UTIME_NOW and UTIME_OMIT go to the kernel as they
// are, so "now" is the kernel's clock and an omitted time is never read and written back.
void ferry_io_utimensat (ferry_io_t *r) {
  struct timespec ts[2] = {
    { .tv_sec = (time_t) r->sec[0], .tv_nsec = (long) r->nsec[0] },
    { .tv_sec = (time_t) r->sec[1], .tv_nsec = (long) r->nsec[1] },
  };
  if (r->err == 0 && utimensat(AT_FDCWD, r->path, ts, (int) r->flags) < 0) r->err = -errno;
}

// pread/pwrite fallback for copy_file_range. Refuses what copy_file_range
// refuses for a reason: read-only or O_APPEND outputs (pwrite would ignore the
// offset) and overlapping ranges in one file (a forward copy would corrupt them).
static int64_t copy_rw (ferry_io_t *r) {
  int in = (int) r->fd_in, out = (int) r->fd_out;
  struct stat si, so;
  int fl = fcntl(out, F_GETFL);
  if (fl < 0 || fstat(in, &si) < 0 || fstat(out, &so) < 0) return -errno;
  if ((fl & O_APPEND) || (fl & O_ACCMODE) == O_RDONLY) return -EBADF;
  if (si.st_dev == so.st_dev && si.st_ino == so.st_ino &&
      r->off_in < r->off_out + r->length && r->off_out < r->off_in + r->length) return -EINVAL;

  char *buf = malloc(IO_COPY_BUF);
  if (buf == NULL) return -ENOMEM;
  int64_t done = 0;
  while (done < r->length) {
    size_t want = r->length - done < IO_COPY_BUF ? (size_t) (r->length - done) : IO_COPY_BUF;
    ssize_t n = pread(in, buf, want, r->off_in + done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) { done = -errno; break; }
    if (n == 0) break; // EOF
    for (ssize_t w = 0; w < n; ) {
      ssize_t m = pwrite(out, buf + w, n - w, r->off_out + done + w);
      if (m < 0 && errno == EINTR) continue;
      if (m < 0) { free(buf); return -errno; }
      w += m;
    }
    done += n;
  }
  free(buf);
  return done;
}

// copy_file_range with explicit offsets (file positions stay put) until length
// or EOF. If the first call fails with an "unsupported here" error (e.g. EXDEV
// across filesystems) or returns 0 (some special files), fall back to
// pread/pwrite, which reports any genuine error (bad fd, bad offset) again.
void ferry_io_copy_range (ferry_io_t *r) {
  loff_t in = r->off_in, out = r->off_out;
  int64_t done = 0;
  while (done < r->length) {
    ssize_t n = copy_file_range((int) r->fd_in, &in, (int) r->fd_out, &out, r->length - done, 0);
    if (n < 0 && errno == EINTR) continue;
    if (done == 0 && (n == 0 || (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS ||
        errno == EOPNOTSUPP || errno == EBADF || errno == EPERM)))) {
      done = copy_rw(r);
      break;
    }
    if (n < 0) { done = -errno; break; }
    if (n == 0) break; // EOF
    done += n;
  }
  if (done < 0) r->err = (int) done;
  else r->result = done;
}

// Into a fresh (all-hole) destination: read SPARSE_PIECE at a time, as cp
// does, and write only the SPARSE_BLOCK blocks holding a non-zero byte, so
// all-zero blocks stay holes (cp --sparse=always). Result: bytes read.
#define SPARSE_PIECE (128 << 10)
#define SPARSE_BLOCK 4096
static const char zero_block[SPARSE_BLOCK];

static int pwrite_all (int fd, const char *buf, size_t len, off_t off) {
  for (size_t w = 0; w < len; ) {
    ssize_t m = pwrite(fd, buf + w, len - w, off + w);
    if (m < 0 && errno == EINTR) continue;
    if (m < 0) return -errno;
    w += m;
  }
  return 0;
}

// Write-behind: every WB_STEP bytes, start the writeback of what was just written and wait for the
// range written WB_LAG bytes earlier. The copy then goes at the pace the destination stores data,
// with bounded dirty memory, and the fsync that ends the pass finds little left: a guest's I/O no longer
// queues behind a whole file's flush. Offsets are absolute, so chunks copied one after the other
// continue one pipeline.
#define WB_STEP (1 << 20)
#define WB_LAG (8 << 20)

// A writeback error reported here is consumed for this open file (errseq): a later fsync of the copy
// would not see it again, so it must fail the copy.
static int write_behind (int fd, off_t from, off_t to) {
  if (sync_file_range(fd, from, to - from, SYNC_FILE_RANGE_WRITE) < 0) return -errno;
  if (from < WB_LAG) return 0;
  unsigned int wait = SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER;
  if (sync_file_range(fd, from - WB_LAG, to - from, wait) < 0) return -errno;
  return 0;
}

void ferry_io_copy_sparse (ferry_io_t *r) {
  char *buf = malloc(SPARSE_PIECE);
  if (buf == NULL) { r->err = -ENOMEM; return; }
  // As cp does: a larger readahead window on this (the copier's own) open file; ignored where unsupported.
  posix_fadvise((int) r->fd_in, 0, 0, POSIX_FADV_SEQUENTIAL);
  int64_t done = 0;
  off_t wb_from = r->off_out;
  while (done < r->length) {
    size_t want = r->length - done < SPARSE_PIECE ? (size_t) (r->length - done) : SPARSE_PIECE;
    ssize_t n = pread((int) r->fd_in, buf, want, r->off_in + done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) { r->err = -errno; break; }
    if (n == 0) break; // EOF
    ssize_t run = -1; // start of the current run of non-zero blocks
    for (ssize_t at = 0; at <= n; at += SPARSE_BLOCK) {
      size_t len = at < n ? (n - at < SPARSE_BLOCK ? (size_t) (n - at) : SPARSE_BLOCK) : 0;
      bool zero = len == 0 || memcmp(buf + at, zero_block, len) == 0;
      if (!zero && run < 0) run = at;
      if (zero && run >= 0) {
        int e = pwrite_all((int) r->fd_out, buf + run, at - run, r->off_out + done + run);
        if (e < 0) { r->err = e; free(buf); return; }
        run = -1;
      }
    }
    if (run >= 0) {
      int e = pwrite_all((int) r->fd_out, buf + run, n - run, r->off_out + done + run);
      if (e < 0) { r->err = e; break; }
    }
    done += n;
    off_t written_to = r->off_out + done;
    if (written_to - wb_from >= WB_STEP || done == r->length) {
      int e = write_behind((int) r->fd_out, wb_from, written_to);
      if (e < 0) { r->err = e; break; }
      wb_from = written_to;
    }
  }
  free(buf);
  if (r->err == 0) r->result = done;
}

// mknod(2) for every node type, sockets included (coreutils' mknod makes none). The FUSE request's rdev is
// the kernel's encoding, which glibc's dev_t matches for every major below 4096.
void ferry_io_mknod (ferry_io_t *r) {
  if (r->err == 0 && mknod(r->path, (mode_t) r->flags, (dev_t) r->off_in) < 0) r->err = -errno;
}
