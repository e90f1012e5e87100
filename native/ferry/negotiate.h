// What ferry's request loop (loop.c) negotiates with the kernel beyond libfuse 2.9 (protocol 7.19): receive
// buffers for 1 MiB requests, with each WRITE's payload on a page boundary, and the INIT reply that asks for
// them. Header only (no libfuse types), so the C unit tests build it without libfuse.
// native-notes/io-routes.md has the experiments behind every number here.
//
// Owns nothing shared: each worker allocates and frees its own buffer.
#ifndef FERRY_NEGOTIATE_H
#define FERRY_NEGOTIATE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// The largest WRITE (and READ) the kernel may send once max_write and max_pages say 1 MiB.
#define FERRY_MAX_WRITE (1u << 20)
// A worker's read(2) on /dev/fuse: the kernel refuses (EINVAL, and the mount dies) one smaller than
// fuse_in_header + fuse_write_in + max_write, so this must hold before the INIT reply raises max_write.
#define FERRY_RECV_SIZE ((size_t) FERRY_MAX_WRITE + 8192)
// sizeof(struct fuse_in_header) + sizeof(struct fuse_write_in) at minor >= 9 (loop.c asserts it): where a
// WRITE's payload starts in the buffer.
#define FERRY_WRITE_PAYLOAD_OFFSET 80
// Pages per request (the kernel caps it by /proc/sys/fs/fuse/max_pages_limit, 256 by default).
#define FERRY_MAX_PAGES 256

// INIT flags (include/uapi/linux/fuse.h) that libfuse 2.9's fuse_kernel.h does not know.
#define FERRY_INIT_ASYNC_DIO (1u << 15) // 7.22: one submitter's O_DIRECT AIO sent in parallel, not one at a time
#define FERRY_INIT_MAX_PAGES (1u << 22) // 7.28: max_pages in the reply
// 7.33: the server drops setuid/setgid on write, truncate and O_TRUNC open, and the kernel stops asking for
// security.capability (a GETXATTR) before every page-cached write. ferry drops them itself for every caller
// but root (src/fs/privileges.ts), as the kernel's rule for local filesystems says.
#define FERRY_INIT_HANDLE_KILLPRIV_V2 (1u << 28)
// 7.36: the reply's flags2 counts (the kernel reads it whatever the reply's minor: io-routes.md E6).
#define FERRY_INIT_EXT (1u << 30)
// flags2 bit 4 (FUSE_DIRECT_IO_ALLOW_MMAP, 7.39): a direct_io open (O_DIRECT, or every open with --direct-io)
// may be mapped shared; without it such an mmap fails with ENODEV. Page-cached opens map shared anyway.
#define FERRY_INIT2_DIRECT_IO_ALLOW_MMAP (1u << 4)
// fuse_init_in's flags2 follows its flags (offset 16); a kernel before 7.36 sends 16 bytes and offers none.
#define FERRY_INIT_IN_FLAGS2_END 20
// Background requests (async reads, async direct I/O) the kernel keeps in flight: libfuse 2.9 says 0, which
// leaves the kernel's 12, short of a guest's 16-deep queue. Congestion at 3/4 of it, as the kernel's default.
#define FERRY_MAX_BACKGROUND 32
#define FERRY_CONGESTION_THRESHOLD 24

// fuse_init_out as the kernel reads it since 7.28 (64 bytes); libfuse 2.9 sends the first 24.
typedef struct {
  uint32_t major, minor, max_readahead, flags;
  uint16_t max_background, congestion_threshold;
  uint32_t max_write, time_gran;
  uint16_t max_pages, map_alignment;
  uint32_t flags2, max_stack_depth;
  uint16_t request_timeout, unused[11];
} ferry_init_out_t;
_Static_assert(sizeof(ferry_init_out_t) == 64, "fuse_init_out is 64 bytes");
#define FERRY_LIBFUSE_INIT_OUT_SIZE 24

// The INIT reply the kernel gets: libfuse's 24-byte one (its flags, minor 19, readahead) in the 64-byte layout
// (a shorter reply leaves max_pages 0, and the kernel then sends 4 KiB requests), with what ferry adds, each
// flag only if `offered` (the INIT request's flags) or `offered2` (its flags2) has it.
static inline void ferry_init_reply (ferry_init_out_t *out, const void *libfuse_reply, uint32_t offered, uint32_t offered2) {
  memset(out, 0, sizeof(*out));
  memcpy(out, libfuse_reply, FERRY_LIBFUSE_INIT_OUT_SIZE);
  out->flags |= offered & (FERRY_INIT_ASYNC_DIO | FERRY_INIT_HANDLE_KILLPRIV_V2);
  out->max_background = FERRY_MAX_BACKGROUND;
  out->congestion_threshold = FERRY_CONGESTION_THRESHOLD;
  if (offered & FERRY_INIT_MAX_PAGES) {
    out->flags |= FERRY_INIT_MAX_PAGES;
    out->max_pages = FERRY_MAX_PAGES;
    out->max_write = FERRY_MAX_WRITE;
  }
  if ((offered & FERRY_INIT_EXT) && (offered2 & FERRY_INIT2_DIRECT_IO_ALLOW_MMAP)) {
    out->flags |= FERRY_INIT_EXT;
    out->flags2 = FERRY_INIT2_DIRECT_IO_ALLOW_MMAP;
  }
}

// The INIT request's flags2 from its argument of `len` bytes (0 when the kernel sent none).
static inline uint32_t ferry_init_offered2 (const void *init_in, size_t len) {
  uint32_t flags2 = 0;
  if (len >= FERRY_INIT_IN_FLAGS2_END) memcpy(&flags2, (const char *) init_in + 16, sizeof(flags2));
  return flags2;
}

// SETATTR's valid bits (fuse_setattr_in) that matter below.
#define FERRY_FATTR_UID (1u << 1)
#define FERRY_FATTR_GID (1u << 2)
#define FERRY_FATTR_FH (1u << 6)
#define FERRY_FATTR_LOCKOWNER (1u << 9)
#define FERRY_FATTR_KILL_SUIDGID (1u << 11)

// With HANDLE_KILLPRIV_V2 a chown(-1, -1) reaches the server as a SETATTR that sets nothing: the kernel drops
// its ATTR_KILL_SUID/SGID and sends FATTR_KILL_SUIDGID only when an owner changes, and libfuse 2.9 then calls
// no op, where ext4 drops setuid (and setgid with group execute). Such a request becomes a chown to (-1, -1),
// which the daemon's backing chown answers by that same rule. Returns whether it rewrote.
static inline bool ferry_setattr_as_chown (uint32_t *valid, uint32_t *uid, uint32_t *gid) {
  if ((*valid & ~(FERRY_FATTR_FH | FERRY_FATTR_LOCKOWNER | FERRY_FATTR_KILL_SUIDGID)) != 0) return false;
  *valid |= FERRY_FATTR_UID | FERRY_FATTR_GID;
  *uid = *gid = UINT32_MAX;
  return true;
}

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
