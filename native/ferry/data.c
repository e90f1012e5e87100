#ifndef _GNU_SOURCE
#define _GNU_SOURCE // preadv2, RWF_NOWAIT
#endif
// ferry's native data path: the worker side and the handle table (see data.h).
#include "data.h"
#include "direct.h"
#include "window.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

typedef struct {
  _Atomic int fd;
  // The backing file opened with O_DIRECT (-1: plain fd only), for a handle opened with O_DIRECT (its reads and
  // writes go through direct.c) or a page-cached one (its sequential reads). Changed with fd, by a move under the
  // freeze.
  _Atomic int direct_fd;
  ferry_direct_t direct;
  // FERRY_USE_*: what the handle's open asked of the backing file's cache. Set at open, never changed (a move keeps it).
  int use;
  // FERRY_USE_DROP_READS: where the last read was to end (a read starting there is sequential); any worker swaps it.
  _Atomic off_t read_end;
  ferry_file_t *file; // NULL: writes are not tracked
  bool unprivileged;  // opened for writing by a user other than root: a write must not keep setuid/setgid
} handle_t;

ferry_gate_t ferry_gate = FERRY_GATE_INIT;
ferry_poller_t ferry_poller;
ferry_data_stats_t ferry_data_stats;

static _Atomic int enabled = 0;
static unsigned block_shift = 16;
static _Atomic(handle_t *) handles[FERRY_MAX_HANDLES];
// Read-around: a read that misses the backing file's page cache first asks the
// kernel to fetch the aligned read_around bytes around it, as the kernel itself
// does for mmap faults and FUSE's readahead does for a page-cache mount. 0: off.
static _Atomic size_t read_around = 0;

static uint64_t now_ns (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

static void account (ferry_op_stats_t *s, int res, uint64_t started) {
  uint64_t us = (now_ns() - started) / 1000;
  unsigned bucket = us == 0 ? 0 : 64 - __builtin_clzll(us);
  if (bucket >= FERRY_LAT_BUCKETS) bucket = FERRY_LAT_BUCKETS - 1;
  atomic_fetch_add_explicit(&s->ops, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&s->latency[bucket], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&s->latency_sum_us, us, memory_order_relaxed);
  if (res < 0) atomic_fetch_add_explicit(&s->errors, 1, memory_order_relaxed);
  else atomic_fetch_add_explicit(&s->bytes, (uint64_t) res, memory_order_relaxed);
}

static handle_t *handle_of (uint64_t fh) {
  if (!atomic_load_explicit(&enabled, memory_order_relaxed) || fh >= FERRY_MAX_HANDLES) return NULL;
  return atomic_load_explicit(&handles[fh], memory_order_acquire);
}

static void mirror_write (ferry_file_t *f, ferry_window_t *w, int slot, const char *buf, size_t len, off_t offset) {
  uint64_t started = now_ns();
  int fate = ferry_window_fate(w, offset, len);
  int ignored;
  if (fate == FERRY_FATE_MARK) ferry_file_mark_maps(f, offset, len, block_shift, slot, &ignored);
  if (fate != FERRY_FATE_MIRROR) return;
  for (size_t done = 0; done < len; ) {
    ssize_t n = pwrite(w->fd, buf + done, len - done, offset + (off_t) done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      // The guest's write reached the source: it does not fail. The migration aborts on this error.
      ferry_window_failed(w, n < 0 ? errno : EIO);
      ferry_file_mark_maps(f, offset, len, block_shift, slot, &ignored);
      return;
    }
    done += (size_t) n;
  }
  ferry_window_mirrored(w, len, (now_ns() - started) / 1000);
  atomic_fetch_add_explicit(&ferry_data_stats.mirror_ops, 1, memory_order_relaxed);
}

// A read admitted at the gate under `index`, by either entry; leaves the gate.
//
// A page-cached handle's (FERRY_USE_DROP_READS) data lands in the FUSE inode's cache, the one cache. Its sequential
// reads take the O_DIRECT twin. Its others take the plain fd with the read-around. Either drops the pages of what it
// read (a twin read leaves a neighbour's read-around pages cached, or pages written through the mount): the
// read-around's pages are single pages (POSIX_FADV_WILLNEED makes no large folios, and the plain fd reads with
// POSIX_FADV_RANDOM: direct.c), so each goes when a read wants it; those no read wants stay, as on a --direct-io
// mount. A reader of a random spot thus gets the read-around's neighbours instead of a device read each. The
// kernel's readahead READs may be served out of order: one that finds read_end elsewhere is served as random.
static int serve_read (handle_t *h, char *buf, size_t len, off_t offset, int index) {
  uint64_t started = now_ns();
  int fd = atomic_load(&h->fd);
  ssize_t n = -1;
  size_t around = atomic_load_explicit(&read_around, memory_order_relaxed);
  bool drop = h->use == FERRY_USE_DROP_READS;
  bool twin = atomic_load(&h->direct_fd) >= 0;
  if (twin && drop && around > 0) twin = atomic_exchange(&h->read_end, offset + (off_t) len) == offset;
  if (twin) {
    // O_DIRECT, or a sequential page-cached read: nothing of the backing file is read into the host's page cache.
    n = ferry_direct_pread(&h->direct, buf, len, offset);
    if (n < 0) errno = (int) -n;
  } else if (around > 0) {
    // RWF_NOWAIT reads only what is cached: EAGAIN means a miss.
    struct iovec iov = { buf, len };
    n = preadv2(fd, &iov, 1, offset, RWF_NOWAIT);
    if (n < 0 && errno == EAGAIN) posix_fadvise(fd, offset & ~((off_t) around - 1), (off_t) around, POSIX_FADV_WILLNEED);
    if (n >= 0 && (size_t) n < len) n = -1; // partly cached (or EOF): read it all the usual way
  }
  if (n < 0) do n = pread(fd, buf, len, offset); while (n < 0 && errno == EINTR);
  int res = n < 0 ? -errno : (int) n;
  if (drop && n > 0) ferry_drop_pages(fd, offset, (size_t) n);
  account(&ferry_data_stats.read, res, started);
  ferry_gate_leave(&ferry_gate, index);
  return res;
}

int ferry_data_read (const char *path, char *buf, size_t len, off_t offset, uint64_t fh) {
  handle_t *h = handle_of(fh);
  if (h == NULL) return FERRY_DATA_PASS;
  int index = ferry_gate_admit(&ferry_gate, path);
  if (index < 0) {
    atomic_fetch_add_explicit(&ferry_data_stats.passed_ops, 1, memory_order_relaxed);
    return FERRY_DATA_PASS;
  }
  return serve_read(h, buf, len, offset, index);
}

// Without a path the gate admits only while nothing is frozen (ferry_gate_is_frozen(NULL) is true). Not counted as
// passed: the request goes to libfuse, whose call of ferry_data_read counts it if it passes there too.
int ferry_data_fast_read (char *buf, size_t len, off_t offset, uint64_t fh) {
  handle_t *h = handle_of(fh);
  if (h == NULL) return FERRY_DATA_PASS;
  int index = ferry_gate_admit(&ferry_gate, NULL);
  if (index < 0) return FERRY_DATA_PASS;
  atomic_fetch_add_explicit(&ferry_data_stats.fast_reads, 1, memory_order_relaxed);
  return serve_read(h, buf, len, offset, index);
}

// A write by a user other than root to a setuid/setgid file goes to JS, which drops the bits before the data is
// written (as the kernel's file_remove_privs does before a local write); a chmod may have set them since the open.
static bool keeps_privileges (handle_t *h) {
  if (!h->unprivileged) return false;
  struct stat st;
  return fstat(atomic_load(&h->fd), &st) != 0 || (S_ISREG(st.st_mode) && (st.st_mode & (S_ISUID | S_ISGID)));
}

// A write admitted at the gate under `index`, by either entry; leaves the gate. FERRY_DATA_PASS: JavaScript must
// see it. fast: the fast path's counter, counted inside the gate (a drain's caller sees it final).
static int serve_write (handle_t *h, const char *buf, size_t len, off_t offset, int index, _Atomic uint64_t *fast) {
  if (keeps_privileges(h) || (len > 0 && h->file != NULL && !ferry_file_write_stays_native(h->file, offset, len, block_shift))) {
    ferry_gate_leave(&ferry_gate, index);
    return FERRY_DATA_PASS;
  }
  if (fast != NULL) atomic_fetch_add_explicit(fast, 1, memory_order_relaxed);
  uint64_t started = now_ns();
  ferry_file_t *f = h->file;
  // Only a window open when the write started may get its mirror (a later one is only marked).
  ferry_window_t *seen = f != NULL ? ferry_file_window(f) : NULL;
  uint64_t seq = seen != NULL ? ferry_order_begin(f) : 0;
  ssize_t n;
  if (h->use == FERRY_USE_DIRECT && atomic_load(&h->direct_fd) >= 0) {
    n = ferry_direct_pwrite(&h->direct, buf, len, offset);
    if (n < 0) errno = (int) -n;
  } else {
    do n = pwrite(atomic_load(&h->fd), buf, len, offset); while (n < 0 && errno == EINTR);
  }
  int res = n < 0 ? -errno : (int) n;
  // Only after the backing write succeeded, and before the op leaves the gate.
  if (n > 0 && f != NULL) {
    int slot;
    ferry_window_t *w = ferry_file_mark_maps(f, offset, (size_t) n, block_shift, -1, &slot);
    // The window lives until the migration detached it and drained the gate, which waits for this op.
    if (w != NULL && w == seen) mirror_write(f, w, slot, buf, (size_t) n, offset);
    bool alone = seen == NULL || ferry_order_end(f, seq);
    int ignored;
    if (w != NULL && (w != seen || !alone)) ferry_file_mark_maps(f, offset, (size_t) n, block_shift, slot, &ignored);
    atomic_fetch_add_explicit(&f->bytes_written, (uint64_t) n, memory_order_relaxed);
  } else if (seen != NULL) {
    ferry_order_end(f, seq);
  }
  account(&ferry_data_stats.write, res, started);
  ferry_gate_leave(&ferry_gate, index);
  return res;
}

int ferry_data_write (const char *path, const char *buf, size_t len, off_t offset, uint64_t fh) {
  handle_t *h = handle_of(fh);
  if (h == NULL) return FERRY_DATA_PASS;
  int index = ferry_gate_admit(&ferry_gate, path);
  int res = index < 0 ? FERRY_DATA_PASS : serve_write(h, buf, len, offset, index, NULL);
  if (res == FERRY_DATA_PASS) atomic_fetch_add_explicit(&ferry_data_stats.passed_ops, 1, memory_order_relaxed);
  return res;
}

// As ferry_data_fast_read: admitted only while nothing is frozen, and a pass is counted by libfuse's way.
int ferry_data_fast_write (const char *buf, size_t len, off_t offset, uint64_t fh) {
  handle_t *h = handle_of(fh);
  if (h == NULL) return FERRY_DATA_PASS;
  int index = ferry_gate_admit(&ferry_gate, NULL);
  return index < 0 ? FERRY_DATA_PASS : serve_write(h, buf, len, offset, index, &ferry_data_stats.fast_writes);
}

void ferry_data_poll (int fd, long served_ns) {
  ferry_poll(&ferry_poller, fd, served_ns);
}

void ferry_data_enable (unsigned shift) {
  block_shift = shift;
  atomic_store(&enabled, 1);
}

unsigned ferry_data_block_shift (void) {
  return block_shift;
}

void ferry_data_read_around (size_t bytes) {
  atomic_store(&read_around, bytes);
}

static void set_fds (handle_t *h, int fd, int direct_fd) {
  if (direct_fd >= 0) ferry_direct_init(&h->direct, fd, direct_fd);
  atomic_store(&h->fd, fd);
  atomic_store(&h->direct_fd, direct_fd);
}

int ferry_data_open (uint32_t fh, int fd, int direct_fd, int use, ferry_file_t *file, bool unprivileged) {
  handle_t *h = calloc(1, sizeof(handle_t));
  if (h == NULL) return ENOMEM;
  h->use = use;
  set_fds(h, fd, direct_fd);
  h->file = file;
  h->unprivileged = unprivileged;
  handle_t *old = atomic_exchange(&handles[fh], h);
  free(old); // a release JS never saw: nothing can use it any more
  return 0;
}

void ferry_data_move (uint32_t fh, int fd, int direct_fd) {
  handle_t *h = atomic_load(&handles[fh]);
  if (h != NULL) set_fds(h, fd, direct_fd);
}

void ferry_data_close (uint32_t fh) {
  free(atomic_exchange(&handles[fh], NULL));
}
