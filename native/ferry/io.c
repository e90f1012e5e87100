#ifndef _GNU_SOURCE
#define _GNU_SOURCE // copy_file_range, fallocate, SEEK_DATA/SEEK_HOLE, sync_file_range
#endif
// Fuse.io's syscalls (see io.h). Results: r->err (0 or -errno) and r->result / r->data.
#include "io.h"
#include "direct.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

#define IO_COPY_BUF (1 << 20)

// Resolution beneath a root. The parent of the last component is opened as an O_PATH directory fd with
// openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS): no "..", no absolute path, no symlink
// and no /proc magic link on the way, so a directory swapped for a symlink in the backing store makes the op fail
// with ELOOP (or EXDEV) instead of leading root out of the root. The last component then goes to the *at call
// with no-follow semantics. "" is the root itself.
#define BENEATH (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)

static int openat2_beneath (int root, const char *path, int64_t flags, int64_t mode) {
  struct open_how how = { .flags = (uint64_t) flags | O_CLOEXEC, .mode = (uint64_t) mode, .resolve = BENEATH };
  long fd;
  do {
    fd = syscall(SYS_openat2, root, path[0] ? path : ".", &how, sizeof(how));
  } while (fd < 0 && (errno == EINTR || errno == EAGAIN));
  return fd < 0 ? -errno : (int) fd;
}

// Splits path at its last '/': *name points into path; the parent is opened O_PATH beneath root. The root itself
// ("") is "." in the root. Returns the parent's fd, to be closed, or -errno.
typedef struct { int fd; const char *name; } ferry_parent_t;

static int open_parent (int root, char *path, ferry_parent_t *p) {
  char *slash = strrchr(path, '/');
  if (slash == NULL) {
    p->name = path[0] ? path : ".";
    p->fd = openat2_beneath(root, ".", O_PATH | O_DIRECTORY, 0);
  } else {
    *slash = '\0';
    p->name = slash + 1;
    p->fd = openat2_beneath(root, path, O_PATH | O_DIRECTORY, 0);
    *slash = '/';
  }
  if (p->fd < 0) return p->fd;
  if (p->name[0] == '\0') { close(p->fd); return -ENOENT; } // a trailing slash: not a name
  return 0;
}

void ferry_io_open_beneath (ferry_io_t *r) {
  if (r->err) return;
  int fd = openat2_beneath((int) r->root, r->path, r->flags | O_NOFOLLOW, r->mode);
  if (fd < 0) r->err = fd;
  else r->result = fd;
}

// The object itself, as an O_PATH fd that names exactly it (a symlink is not followed): calls without an O_PATH
// form reach it through /proc/self/fd/N, which the kernel resolves to that inode and never follows further.
static int open_object (ferry_io_t *r, char proc[32]) {
  int fd = openat2_beneath((int) r->root, r->path, O_PATH | O_NOFOLLOW, 0);
  if (fd >= 0) snprintf(proc, 32, "/proc/self/fd/%d", fd);
  return fd;
}

// getxattr/listxattr: size query, then read. A value that grew in between gives ERANGE, so ask again
// (bounded). The buffer is one byte larger than the size so that a value that grew from empty cannot pass as a
// size query.
void ferry_io_xattr_read (ferry_io_t *r) {
  if (r->err) return;
  char proc[32];
  int fd = open_object(r, proc);
  if (fd < 0) { r->err = fd; return; }
  r->err = -ERANGE;
  for (int tries = 0; tries < 16; tries++) {
    ssize_t size = r->res_type == FERRY_IO_RES_NAMES ? listxattr(proc, NULL, 0) : getxattr(proc, r->name, NULL, 0);
    if (size < 0) { r->err = -errno; break; }
    free(r->data);
    r->data = malloc(size + 1);
    if (r->data == NULL) { r->err = -ENOMEM; break; }
    ssize_t n = r->res_type == FERRY_IO_RES_NAMES ? listxattr(proc, r->data, size + 1) : getxattr(proc, r->name, r->data, size + 1);
    if (n >= 0) { r->len = n; r->err = 0; break; }
    if (errno != ERANGE) { r->err = -errno; break; }
  }
  close(fd);
}

// flags (XATTR_CREATE / XATTR_REPLACE) are passed through.
void ferry_io_setxattr (ferry_io_t *r) {
  if (r->err) return;
  char proc[32];
  int fd = open_object(r, proc);
  if (fd < 0) { r->err = fd; return; }
  if (setxattr(proc, r->name, r->data, r->len, (int) r->flags) < 0) r->err = -errno;
  close(fd);
}

void ferry_io_removexattr (ferry_io_t *r) {
  if (r->err) return;
  char proc[32];
  int fd = open_object(r, proc);
  if (fd < 0) { r->err = fd; return; }
  if (removexattr(proc, r->name) < 0) r->err = -errno;
  close(fd);
}

// One *at call on the last component: AT(p.fd, p.name) is the call, its result < 0 with errno set on failure.
#define AT_CALL(r, call) do {\
    if ((r)->err) return;\
    ferry_parent_t p;\
    int e = open_parent((int) (r)->root, (r)->path, &p);\
    if (e < 0) { (r)->err = e; return; }\
    if ((call) < 0) (r)->err = -errno;\
    close(p.fd);\
  } while (0)

// mknod(2) for every node type, sockets included (coreutils' mknod makes none). The FUSE request's rdev is
// 32 bits in the kernel's old encoding, which new_decode_dev's layout matches for the values FUSE sends.
void ferry_io_mknodat (ferry_io_t *r) { AT_CALL(r, mknodat(p.fd, p.name, (mode_t) r->mode, (dev_t) r->off_in)); }
void ferry_io_mkdirat (ferry_io_t *r) { AT_CALL(r, mkdirat(p.fd, p.name, (mode_t) r->mode)); }
void ferry_io_symlinkat (ferry_io_t *r) { AT_CALL(r, symlinkat(r->path2, p.fd, p.name)); }
void ferry_io_unlinkat (ferry_io_t *r) { AT_CALL(r, unlinkat(p.fd, p.name, (int) r->flags)); }
void ferry_io_chownat (ferry_io_t *r) { AT_CALL(r, fchownat(p.fd, p.name, (uid_t) r->uid, (gid_t) r->gid, AT_SYMLINK_NOFOLLOW)); }

// With AT_SYMLINK_NOFOLLOW, glibc (fchmodat2 where the kernel has it, else O_PATH + fstat) answers EOPNOTSUPP for
// a symlink, as Linux >= 6.6 does for chmod through one on ext4: the target is never reached.
void ferry_io_chmodat (ferry_io_t *r) { AT_CALL(r, fchmodat(p.fd, p.name, (mode_t) r->mode, AT_SYMLINK_NOFOLLOW)); }

// Nanoseconds exact; UTIME_NOW and UTIME_OMIT go to the kernel as they are, so "now" is the kernel's clock and an
// omitted time is never read and written back. A symlink's own times, never its target's.
void ferry_io_utimensat (ferry_io_t *r) {
  struct timespec ts[2] = {
    { .tv_sec = (time_t) r->sec[0], .tv_nsec = (long) r->nsec[0] },
    { .tv_sec = (time_t) r->sec[1], .tv_nsec = (long) r->nsec[1] },
  };
  AT_CALL(r, utimensat(p.fd, p.name, ts, AT_SYMLINK_NOFOLLOW));
}

void ferry_io_readlinkat (ferry_io_t *r) {
  r->data = malloc(PATH_MAX);
  if (r->data == NULL) { r->err = -ENOMEM; return; }
  ssize_t n = 0;
  AT_CALL(r, (n = readlinkat(p.fd, p.name, r->data, PATH_MAX)));
  if (r->err == 0) r->len = (size_t) n;
}

// Two parents, each beneath its own root.
static void two_parents (ferry_io_t *r, int (*call) (ferry_parent_t *, ferry_parent_t *, int64_t)) {
  if (r->err) return;
  ferry_parent_t a, b;
  int e = open_parent((int) r->root, r->path, &a);
  if (e < 0) { r->err = e; return; }
  e = open_parent((int) r->root2, r->path2, &b);
  if (e < 0) { r->err = e; close(a.fd); return; }
  if (call(&a, &b, r->flags) < 0) r->err = -errno;
  close(a.fd);
  close(b.fd);
}

static int do_rename (ferry_parent_t *a, ferry_parent_t *b, int64_t flags) {
  return (int) syscall(SYS_renameat2, a->fd, a->name, b->fd, b->name, (unsigned int) flags);
}

// linkat without AT_SYMLINK_FOLLOW: a symlink is linked as itself.
static int do_link (ferry_parent_t *a, ferry_parent_t *b, int64_t flags) {
  (void) flags;
  return linkat(a->fd, a->name, b->fd, b->name, 0);
}

void ferry_io_renameat (ferry_io_t *r) { two_parents(r, do_rename); }
void ferry_io_linkat (ferry_io_t *r) { two_parents(r, do_link); }

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

// Into a fresh (all-hole) destination: read a piece at a time and write only the SPARSE_BLOCK blocks holding a
// non-zero byte, so all-zero blocks stay holes (cp --sparse=always). Result: bytes read.
// With an O_DIRECT twin of the source (fd_direct >= 0), aligned pieces of DIRECT_PIECE that the page cache holds
// none of are read through it: the device's data lands in the buffer, not in the page cache first (perf: copying
// out of the page cache took 62-72% of the copy's CPU), and the guest's disk does not fill the host's memory as it
// is copied (one cache). Were a page dirtied between the look and the read, the kernel writes it back before the
// direct read: it reads what a plain read would. Otherwise (no twin, a cached piece, an unaligned tail)
// SPARSE_PIECE plain reads with the source's readahead, as cp does.
#define SPARSE_PIECE (128 << 10)
#define DIRECT_PIECE (1 << 20)
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

// Write-behind: every WB_STEP bytes, start the writeback of what was just written, wait for the range written
// WB_LAG bytes earlier and drop its pages. The copy then goes at the pace the destination stores data, with
// bounded dirty memory and no more than the last WB_LAG cached, and the fsync that ends the pass finds little
// left: a guest's I/O no longer queues behind a whole file's flush. Offsets are absolute, so chunks copied one after the other
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
  // Written and clean: not kept in host memory either (the copy is read again only by the guest, after the switch).
  ferry_drop_pages(fd, from - WB_LAG, (size_t) (to - from));
  return 0;
}

// cachestat(2) (Linux 6.5), not in this libc's headers: what of a range is in the page cache, and how it stands.
#ifndef __NR_cachestat
#define __NR_cachestat 451
#endif
struct ferry_cachestat_range { uint64_t off, len; };
struct ferry_cachestat { uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted; };

// Whether none of the range is in the source's page cache. A direct read of a range with dirty pages first writes
// them back and waits (a cache=writeback guest's writes sit there: bench:guest's bulk pass took 2.3x as long), and
// cached pages are better copied from memory. Unknown (no cachestat): false, the plain read.
static bool uncached (int fd, off_t off, size_t len) {
  struct ferry_cachestat_range range = { (uint64_t) off, len };
  struct ferry_cachestat st;
  if (syscall(__NR_cachestat, fd, &range, &st, 0) != 0) return false;
  return st.nr_cache == 0;
}

// One piece of the source at off: through the twin when it is aligned there (a whole number of alignment units)
// and none of it is cached, else plain. A twin the filesystem refuses (EINVAL) is given up for the rest of the copy.
static ssize_t read_piece (ferry_direct_t *d, char *buf, size_t want, off_t off) {
  if (d->direct_fd >= 0 && d->off_align != 0 && (uint64_t) off % d->off_align == 0 && want >= d->off_align &&
      uncached(d->fd, off, want - want % d->off_align)) {
    ssize_t n = pread(d->direct_fd, buf, want - want % d->off_align, off);
    if (n >= 0 || errno != EINVAL) return n;
    d->direct_fd = -1;
  }
  return pread(d->fd, buf, want < SPARSE_PIECE ? want : SPARSE_PIECE, off);
}

void ferry_io_copy_sparse (ferry_io_t *r) {
  ferry_direct_t d = { .fd = (int) r->fd_in, .direct_fd = -1, .mem_align = 4096, .off_align = 4096 };
  if (r->fd_direct >= 0) ferry_direct_init(&d, (int) r->fd_in, (int) r->fd_direct);
  void *mem;
  size_t align = d.mem_align > 4096 ? d.mem_align : 4096;
  if (posix_memalign(&mem, align, DIRECT_PIECE) != 0) { r->err = -ENOMEM; return; }
  char *buf = mem;
  // As cp does: a larger readahead window on this (the copier's own) open file; ignored where unsupported. With a
  // twin, no readahead at all: it would cache the pieces ahead, which then would not go through the twin.
  posix_fadvise((int) r->fd_in, 0, 0, d.direct_fd >= 0 ? POSIX_FADV_RANDOM : POSIX_FADV_SEQUENTIAL);
  int64_t done = 0;
  off_t wb_from = r->off_out;
  while (done < r->length) {
    size_t want = r->length - done < DIRECT_PIECE ? (size_t) (r->length - done) : DIRECT_PIECE;
    ssize_t n = read_piece(&d, buf, want, r->off_in + done);
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


void ferry_io_direct_write (ferry_io_t *r) {
  if (r->err) return;
  ferry_direct_t d;
  ferry_direct_init(&d, (int) r->fd_in, (int) r->fd_out);
  ssize_t n = ferry_direct_pwrite(&d, r->data, r->len, (off_t) r->off_in);
  if (n < 0) r->err = (int) n;
  else r->result = n;
}

// Into page-aligned memory of its own, so that an aligned request is read directly.
void ferry_io_direct_read (ferry_io_t *r) {
  if (r->err) return;
  void *mem;
  if (posix_memalign(&mem, 4096, r->length > 0 ? (size_t) r->length : 1) != 0) { r->err = -ENOMEM; return; }
  r->data = mem;
  ferry_direct_t d;
  ferry_direct_init(&d, (int) r->fd_in, (int) r->fd_out);
  ssize_t n = ferry_direct_pread(&d, r->data, (size_t) r->length, (off_t) r->off_in);
  if (n < 0) r->err = (int) n;
  else r->len = (size_t) n;
}
