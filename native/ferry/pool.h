// The growth rule of the FUSE worker pool (the request loop itself is loop.c).
//
// libfuse 2.9's fuse_loop_mt starts a worker whenever none is idle and ends one as soon as more than 10 are
// idle: under 16 reads in flight it created ~90 threads a second here, and each new thread that calls into JS
// costs fuse-native a uv_async handle (and a Buffer) that is never freed, which every later wakeup of the JS
// thread scans. Here workers never end before the session does (libfuse 3.12's default), and the pool grows
// only after a look grow_ns later: when the last idle worker takes a request, the growing thread waits
// grow_ns and adds a worker only if none is idle then. A worker that has replied but not yet come back
// (preempted on a busy machine) is not a reason to add one. Workers held by a long op (a frozen subtree waits
// in JS) still let the pool grow, so that other files keep being served, up to max; so does a worker kept
// busy without a pause (it is busy when the look comes).
//
// Owns the worker count and the idle count. Threads: workers call ferry_pool_took / _done / _gone (a request
// costs two atomic operations; only the worker that takes idle to zero takes the lock, to wake the grower);
// one thread runs ferry_pool_run, which spawns them.
#ifndef FERRY_POOL_H
#define FERRY_POOL_H

#include <pthread.h>
#include <stdatomic.h>

typedef struct {
  pthread_mutex_t lock;
  pthread_cond_t wake;  // to the growing thread: no worker idle, or one ended
  int workers, gone;    // under lock
  atomic_int idle;      // workers waiting for a request: atomic, so a request takes no lock
  int max;
  long grow_ns;
} ferry_pool_t;

// 0 or an errno.
int ferry_pool_init (ferry_pool_t *p, int max, long grow_ns);
void ferry_pool_destroy (ferry_pool_t *p);

// A worker took a request that counts (FORGETs do not: a burst of them must not grow the pool).
void ferry_pool_took (ferry_pool_t *p);
// ... and answered it.
void ferry_pool_done (ferry_pool_t *p);
// A worker ended (the session is over): ferry_pool_run returns.
void ferry_pool_gone (ferry_pool_t *p);

// Starts worker 0, then adds one whenever none has been idle for grow_ns, until one ends. spawn(ctx, index)
// starts worker `index` (called with the pool's lock held) and returns 0, or an errno (that worker is not
// counted). Returns the number of workers started.
int ferry_pool_run (ferry_pool_t *p, int (*spawn)(void *ctx, int index), void *ctx);

#endif
