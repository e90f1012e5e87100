// What ferry's request loop (loop.c) negotiates with the kernel beyond libfuse 2.9 (protocol 7.19): receive
// buffers for 1 MiB requests, with each WRITE's payload on a page boundary. Header only (no libfuse types), so
// the C unit tests build it without libfuse. native-notes/io-routes.md has the experiments behind every number
// here.
//
// Owns nothing shared: each worker allocates and frees its own buffer.
#ifndef FERRY_NEGOTIATE_H
#define FERRY_NEGOTIATE_H

#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

// The largest WRITE (and READ) the kernel may send once max_write and max_pages say 1 MiB.
#define FERRY_MAX_WRITE (1u << 20)
// A worker's read(2) on /dev/fuse: the kernel refuses (EINVAL, and the mount dies) one smaller than
// fuse_in_header + fuse_write_in + max_write, so this must hold before the INIT reply raises max_write.
#define FERRY_RECV_SIZE ((size_t) FERRY_MAX_WRITE + 8192)
// sizeof(struct fuse_in_header) + sizeof(struct fuse_write_in) at minor >= 9 (loop.c asserts it): where a
// WRITE's payload starts in the buffer.
#define FERRY_WRITE_PAYLOAD_OFFSET 80

static inline size_t ferry_page_size (void) {
  long page = sysconf(_SC_PAGESIZE);
  return page > 0 ? (size_t) page : 4096;
}

// A receive buffer of FERRY_RECV_SIZE bytes placed so that mem + FERRY_WRITE_PAYLOAD_OFFSET is page-aligned:
// an O_DIRECT backing write can take a WRITE's payload without a copy. NULL when out of memory. Its pages are
// backed lazily: a worker only touches what its requests fill.
static inline char *ferry_recv_alloc (void) {
  size_t page = ferry_page_size();
  void *base;
  if (posix_memalign(&base, page, FERRY_RECV_SIZE + page) != 0) return NULL;
  return (char *) base + page - FERRY_WRITE_PAYLOAD_OFFSET;
}

static inline void ferry_recv_free (void *mem) {
  if (mem != NULL) free((char *) mem - (ferry_page_size() - FERRY_WRITE_PAYLOAD_OFFSET));
}

#endif
