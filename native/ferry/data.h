// ferry's native data path: read and write on file handles JavaScript registered, answered on libfuse's
// worker thread: pread/pwrite on the backing fd, dirty bits set in the file's maps, mirrored in mirror mode,
// counted, without waking the JS thread. Anything this code does not handle (an unregistered handle, a frozen
// path, a write the JS side must see: a write intent not yet durable, a map too small, a non-root write to a
// setuid/setgid file) returns
// FERRY_DATA_PASS and goes to the JavaScript handler, which does the same work with the same maps.
//
// Owns the handle table, the data path's settings (enabled, block size, read-around), its counters, and the
// one gate and poller of the process. Threads: FUSE workers call ferry_data_read/write/poll; the JS thread
// registers handles and changes settings (through napi-data.c). native-notes/memory-model.md has who writes
// which shared state and why no dirty bit is lost.
#ifndef FERRY_DATA_H
#define FERRY_DATA_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "gate.h"
#include "maps.h"
#include "busy-poll.h"

// "Not handled here": the op goes on to the JavaScript handler.
#define FERRY_DATA_PASS INT32_MIN

#define FERRY_MAX_HANDLES 65536
#define FERRY_LAT_BUCKETS 32

typedef struct {
  _Atomic uint64_t ops, bytes, errors;
  _Atomic uint64_t latency[FERRY_LAT_BUCKETS]; // bucket b: [2^(b-1), 2^b) microseconds
  _Atomic uint64_t latency_sum_us; // the histogram's sum, for the metrics endpoint (src/metrics/)
} ferry_op_stats_t;

typedef struct {
  ferry_op_stats_t read, write;
  _Atomic uint64_t passed_ops, mirror_ops;
  // Of read.ops and write.ops: those the request loop's fast path answered (fast.h), without libfuse.
  _Atomic uint64_t fast_reads, fast_writes;
} ferry_data_stats_t;

extern ferry_gate_t ferry_gate;
extern ferry_poller_t ferry_poller;
extern ferry_data_stats_t ferry_data_stats;

// Worker side.
int ferry_data_read (const char *path, char *buf, size_t len, off_t offset, uint64_t fh);
int ferry_data_write (const char *path, const char *buf, size_t len, off_t offset, uint64_t fh);
// The same for the request loop's fast path (fast.h), which has no path: FERRY_DATA_PASS also while any subtree
// is frozen (the request then goes to libfuse, whose ferry_data_read/write checks the path).
int ferry_data_fast_read (char *buf, size_t len, off_t offset, uint64_t fh);
int ferry_data_fast_write (const char *buf, size_t len, off_t offset, uint64_t fh);
// Before a worker sleeps in read(2) on the FUSE device `fd`: maybe watch it a while (busy-poll.h).
void ferry_data_poll (int fd, long served_ns);

// JS side. Turns the data path on for handles registered from now on; block_shift: log2 of the block size.
void ferry_data_enable (unsigned block_shift);
unsigned ferry_data_block_shift (void);
// 0 (off) or a power of two: a read that misses the backing file's page cache first asks the kernel to fetch
// the aligned read_around bytes around it.
void ferry_data_read_around (size_t bytes);
// A handle's use of the backing file's page cache (src/fs/backing-io.ts `directUse`, the same three):
#define FERRY_USE_SHARED 0     // a direct_io open without O_DIRECT: served from the backing file's cache
#define FERRY_USE_DROP_READS 1 // page-cached: the FUSE inode's cache is the one cache (data.c serve_read: how)
#define FERRY_USE_DIRECT 2     // opened with O_DIRECT: through direct_fd
// fh < FERRY_MAX_HANDLES. file NULL: writes are not tracked. unprivileged: opened for writing by a user other
// than root (a write to a setuid/setgid file then goes to JS, which drops the bits first). direct_fd: the same file
// opened with O_DIRECT for a handle opened with O_DIRECT (its reads and writes go through direct.h) or a page-cached
// one (its sequential reads), else -1.
// use: FERRY_USE_*, what the open asked of the backing file's cache. 0 or ENOMEM.
int ferry_data_open (uint32_t fh, int fd, int direct_fd, int use, ferry_file_t *file, bool unprivileged);
// The handle's backing fds become fd and direct_fd (switchover, with the path frozen and drained).
void ferry_data_move (uint32_t fh, int fd, int direct_fd);
// At release, when the kernel sends no more ops for fh.
void ferry_data_close (uint32_t fh);

#endif
