// The FUSE request loop, in place of libfuse 2.9's fuse_loop_mt: a worker pool that grows by pool.h's rule,
// busy polling between requests (busy-poll.h), parallel direct writes (see loop.c), READ/WRITE on native handles
// answered without libfuse (fast.h), INTERRUPTs dropped (see loop.c), and what libfuse 2.9 cannot
// negotiate in the INIT reply (negotiate.h).
//
// Owns the workers and the reply channel. Threads: the mount's own thread runs ferry_loop_run, which starts,
// cancels and joins the workers; the workers receive and answer requests.
#ifndef FERRY_LOOP_H
#define FERRY_LOOP_H

#define FUSE_USE_VERSION 29
#include <fuse.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

// The largest READ and WRITE requests the kernel has sent (bytes): what the INIT reply negotiated, as seen; and the
// INTERRUPT requests the loop dropped (see loop.c).
typedef struct {
  _Atomic uint32_t largest_read, largest_write;
  _Atomic uint64_t interrupts;
} ferry_loop_stats_t;

extern ferry_loop_stats_t ferry_loop_stats;

// Serves the session until it ends (unmount); returns after every worker has been joined.
void ferry_loop_run (struct fuse *fuse, struct fuse_chan *ch);

// Whether the calling thread is a worker serving a RENAME request (libfuse then calls the filesystem's rename
// twice when it first hides an open target).
bool ferry_loop_in_rename (void);

#endif
