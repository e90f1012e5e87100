// The worker pool's growth rule (see pool.h).
#include "pool.h"

#include <errno.h>
#include <time.h>

int ferry_pool_init (ferry_pool_t *p, int max, long grow_ns) {
  p->workers = p->gone = 0;
  atomic_init(&p->idle, 0);
  p->max = max;
  p->grow_ns = grow_ns;
  int err = pthread_mutex_init(&p->lock, NULL);
  if (err != 0) return err;
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  err = pthread_cond_init(&p->wake, &attr);
  pthread_condattr_destroy(&attr);
  if (err != 0) pthread_mutex_destroy(&p->lock);
  return err;
}

void ferry_pool_destroy (ferry_pool_t *p) {
  pthread_cond_destroy(&p->wake);
  pthread_mutex_destroy(&p->lock);
}

void ferry_pool_took (ferry_pool_t *p) {
  // The last idle worker wakes the growing thread, under its lock: it cannot miss the wakeup.
  if (atomic_fetch_sub(&p->idle, 1) == 1) {
    pthread_mutex_lock(&p->lock);
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->lock);
  }
}

void ferry_pool_done (ferry_pool_t *p) {
  atomic_fetch_add(&p->idle, 1);
}

void ferry_pool_gone (ferry_pool_t *p) {
  pthread_mutex_lock(&p->lock);
  p->gone++;
  pthread_cond_signal(&p->wake);
  pthread_mutex_unlock(&p->lock);
}

// With p->lock held.
static void spawn_one (ferry_pool_t *p, int (*spawn)(void *, int), void *ctx) {
  if (spawn(ctx, p->workers) != 0) return;
  p->workers++;
  atomic_fetch_add(&p->idle, 1);
}

int ferry_pool_run (ferry_pool_t *p, int (*spawn)(void *ctx, int index), void *ctx) {
  pthread_mutex_lock(&p->lock);
  spawn_one(p, spawn, ctx);
  while (p->workers > 0 && p->gone == 0) {
    if (atomic_load(&p->idle) > 0 || p->workers == p->max) {
      pthread_cond_wait(&p->wake, &p->lock);
      continue;
    }
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += p->grow_ns;
    while (until.tv_nsec >= 1000000000) { until.tv_sec++; until.tv_nsec -= 1000000000; }
    while (atomic_load(&p->idle) == 0 && p->gone == 0 &&
           pthread_cond_timedwait(&p->wake, &p->lock, &until) != ETIMEDOUT) {}
    if (atomic_load(&p->idle) == 0 && p->gone == 0) spawn_one(p, spawn, ctx);
  }
  int workers = p->workers;
  pthread_mutex_unlock(&p->lock);
  return workers;
}
