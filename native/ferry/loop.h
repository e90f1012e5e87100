// The FUSE request loop, in place of libfuse 2.9's fuse_loop_mt: a worker pool that grows by pool.h's rule,
// busy polling between requests (busy-poll.h), and parallel direct writes (see loop.c).
//
// Owns the workers and the reply channel. Threads: the mount's own thread runs ferry_loop_run, which starts,
// cancels and joins the workers; the workers receive and answer requests.
#ifndef FERRY_LOOP_H
#define FERRY_LOOP_H

#define FUSE_USE_VERSION 29
#include <fuse.h>
#include <stdbool.h>

// Serves the session until it ends (unmount); returns after every worker has been joined.
void ferry_loop_run (struct fuse *fuse, struct fuse_chan *ch);

// Whether the calling thread is a worker serving a RENAME request (libfuse then calls the filesystem's rename
// twice when it first hides an open target).
bool ferry_loop_in_rename (void);

#endif
