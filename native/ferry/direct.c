#ifndef _GNU_SOURCE
#define _GNU_SOURCE // statx, sync_file_range
#endif
// O_DIRECT on the backing file (see direct.h).
#include "direct.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGE 4096
#define CONSERVATIVE_ALIGN 4096

_Atomic uint64_t ferry_direct_fallbacks;

// Each thread's bounce buffer: page-aligned, grown to the largest request it carried, freed at thread exit.
static pthread_key_t bounce_key;
static pthread_once_t bounce_once = PTHREAD_ONCE_INIT;
static __thread char *bounce;
static __thread size_t bounce_size;

static void bounce_key_make (void) {
  pthread_key_create(&bounce_key, free);
}

static char *bounce_for (size_t len) {
  if (len <= bounce_size) return bounce;
  size_t size = (len + 65535) & ~(size_t) 65535;
  void *p;
  if (posix_memalign(&p, PAGE, size) != 0) return NULL;
  free(bounce);
  bounce = p;
  bounce_size = size;
  pthread_once(&bounce_once, bounce_key_make);
  pthread_setspecific(bounce_key, p);
  return p;
}

void ferry_direct_init (ferry_direct_t *d, int fd, int direct_fd) {
  d->fd = fd;
  d->direct_fd = direct_fd;
  d->mem_align = d->off_align = CONSERVATIVE_ALIGN;
  struct statx st;
  if (statx(direct_fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &st) == 0 && (st.stx_mask & STATX_DIOALIGN)) {
    d->mem_align = st.stx_dio_mem_align ? st.stx_dio_mem_align : CONSERVATIVE_ALIGN;
    d->off_align = st.stx_dio_offset_align; // 0: this file takes no direct I/O
  }
}

static bool aligned (uint64_t value, uint32_t align) {
  return align != 0 && (value & (align - 1)) == 0;
}

// Drops the cached pages of the range, rounded out to whole pages (POSIX_FADV_DONTNEED keeps partly covered
// pages). Pages that are dirty (another writer's) or locked are left alone by the kernel: nothing is lost.
void ferry_drop_pages (int fd, off_t offset, size_t len) {
  off_t from = offset & ~(off_t) (PAGE - 1);
  off_t to = (offset + (off_t) len + PAGE - 1) & ~(off_t) (PAGE - 1);
  posix_fadvise(fd, from, to - from, POSIX_FADV_DONTNEED);
}

// The fallback: the plain fd, the range written to the device and waited for, its pages dropped. As an O_DIRECT
// write, it returns once the device has the data (not flushed from a volatile device cache: that still takes
// fsync/O_DSYNC) and leaves nothing in host memory.
static ssize_t fallback_write (const ferry_direct_t *d, const char *buf, size_t len, off_t offset) {
  atomic_fetch_add_explicit(&ferry_direct_fallbacks, 1, memory_order_relaxed);
  ssize_t n;
  do n = pwrite(d->fd, buf, len, offset); while (n < 0 && errno == EINTR);
  if (n <= 0) return n < 0 ? -errno : 0;
  unsigned wait = SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER;
  if (sync_file_range(d->fd, offset, n, wait) < 0) return -errno;
  ferry_drop_pages(d->fd, offset, (size_t) n);
  return n;
}

// Without readahead on the plain fd (the handle's own open file): only the pages read are brought in, then dropped.
static ssize_t fallback_read (const ferry_direct_t *d, char *buf, size_t len, off_t offset) {
  atomic_fetch_add_explicit(&ferry_direct_fallbacks, 1, memory_order_relaxed);
  posix_fadvise(d->fd, 0, 0, POSIX_FADV_RANDOM);
  ssize_t n;
  do n = pread(d->fd, buf, len, offset); while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
  ferry_drop_pages(d->fd, offset, len);
  return n;
}

ssize_t ferry_direct_pwrite (const ferry_direct_t *d, const char *buf, size_t len, off_t offset) {
  if (!aligned((uint64_t) offset | len, d->off_align)) return fallback_write(d, buf, len, offset);
  const char *src = buf;
  if (!aligned((uintptr_t) buf, d->mem_align)) {
    char *b = bounce_for(len);
    if (b == NULL) return fallback_write(d, buf, len, offset);
    memcpy(b, buf, len);
    src = b;
  }
  ssize_t n;
  do n = pwrite(d->direct_fd, src, len, offset); while (n < 0 && errno == EINTR);
  // EINVAL: the filesystem would not take this one directly after all.
  if (n < 0 && errno == EINVAL) return fallback_write(d, buf, len, offset);
  return n < 0 ? -errno : n;
}

ssize_t ferry_direct_pread (const ferry_direct_t *d, char *buf, size_t len, off_t offset) {
  if (!aligned((uint64_t) offset | len, d->off_align)) return fallback_read(d, buf, len, offset);
  char *dst = buf;
  if (!aligned((uintptr_t) buf, d->mem_align) && (dst = bounce_for(len)) == NULL) return fallback_read(d, buf, len, offset);
  ssize_t n;
  do n = pread(d->direct_fd, dst, len, offset); while (n < 0 && errno == EINTR);
  if (n < 0 && errno == EINVAL) return fallback_read(d, buf, len, offset);
  if (n > 0 && dst != buf) memcpy(buf, dst, (size_t) n);
  return n < 0 ? -errno : n;
}
