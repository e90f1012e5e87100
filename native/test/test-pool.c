// The worker pool's growth rule (pool.c): grow only when no worker has been idle for grow_ns, never past
// max, and stop when a worker ends. Workers here take "requests" from a queue instead of /dev/fuse.
#include "test.h"
#include "pool.h"

#include <pthread.h>
#include <stdlib.h>

#define MAX 4

typedef struct {
  ferry_pool_t pool;
  pthread_t threads[MAX];
  pthread_mutex_t mu;
  pthread_cond_t cond;
  int pending;    // requests waiting for a worker
  int held;       // > 0: requests are held until release
  int done;       // requests answered
  int stop;
} fake_t;

static void *fake_worker (void *arg) {
  fake_t *f = arg;
  pthread_mutex_lock(&f->mu);
  for (;;) {
    while (f->pending == 0 && !f->stop) pthread_cond_wait(&f->cond, &f->mu);
    if (f->stop) break;
    f->pending--;
    pthread_mutex_unlock(&f->mu);
    ferry_pool_took(&f->pool);
    pthread_mutex_lock(&f->mu);
    while (f->held && !f->stop) pthread_cond_wait(&f->cond, &f->mu);
    f->done++;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->mu);
    ferry_pool_done(&f->pool);
    pthread_mutex_lock(&f->mu);
  }
  pthread_mutex_unlock(&f->mu);
  ferry_pool_gone(&f->pool);
  return NULL;
}

static int fake_spawn (void *ctx, int index) {
  fake_t *f = ctx;
  return pthread_create(&f->threads[index], NULL, fake_worker, f);
}

static _Atomic int run_returned;

static void *runner (void *arg) {
  fake_t *f = arg;
  atomic_store(&run_returned, ferry_pool_run(&f->pool, fake_spawn, f));
  return NULL;
}

static int workers (fake_t *f) {
  pthread_mutex_lock(&f->pool.lock);
  int n = f->pool.workers;
  pthread_mutex_unlock(&f->pool.lock);
  return n;
}

static void post (fake_t *f, int n) {
  pthread_mutex_lock(&f->mu);
  f->pending += n;
  pthread_cond_broadcast(&f->cond);
  pthread_mutex_unlock(&f->mu);
}

static void set_held (fake_t *f, int held) {
  pthread_mutex_lock(&f->mu);
  f->held = held;
  pthread_cond_broadcast(&f->cond);
  pthread_mutex_unlock(&f->mu);
}

static void wait_done (fake_t *f, int n) {
  pthread_mutex_lock(&f->mu);
  while (f->done < n) pthread_cond_wait(&f->cond, &f->mu);
  pthread_mutex_unlock(&f->mu);
}

static bool wait_workers (fake_t *f, int n) {
  for (int i = 0; i < 2000 && workers(f) < n; i++) test_sleep_us(1000);
  return workers(f) >= n;
}

static void start (fake_t *f, long grow_ns, pthread_t *run) {
  *f = (fake_t) { .held = 0 };
  pthread_mutex_init(&f->mu, NULL);
  pthread_cond_init(&f->cond, NULL);
  if (ferry_pool_init(&f->pool, MAX, grow_ns) != 0) abort();
  atomic_store(&run_returned, -1);
  pthread_create(run, NULL, runner, f);
}

static void finish (fake_t *f, pthread_t run) {
  pthread_mutex_lock(&f->mu);
  f->stop = 1;
  pthread_cond_broadcast(&f->cond);
  pthread_mutex_unlock(&f->mu);
  pthread_join(run, NULL);
  int n = atomic_load(&run_returned);
  for (int i = 0; i < n; i++) pthread_join(f->threads[i], NULL);
  ferry_pool_destroy(&f->pool);
  pthread_cond_destroy(&f->cond);
  pthread_mutex_destroy(&f->mu);
}

void test_pool_growth (void) {
  fake_t f;
  pthread_t run;

  // An idle worker is never a reason to grow; nor is a request answered within grow_ns: the loop's thread
  // looks again grow_ns after no worker was idle, and finds one idle.
  start(&f, 50 * 1000000L, &run);
  bool one = wait_workers(&f, 1);
  test_sleep_us(60000);
  int idle_workers = workers(&f);
  for (int i = 0; i < 5; i++) {
    post(&f, 1);
    wait_done(&f, i + 1);
    test_sleep_us(60000);
  }
  int quick_workers = workers(&f);
  finish(&f, run);
  CHECK(one && idle_workers == 1 && quick_workers == 1);
  CHECK(atomic_load(&run_returned) == 1);

  // One request held (a frozen subtree waits in JS): after grow_ns a second worker comes, and being idle,
  // it is the last one. Every worker held: the pool grows to max and no further.
  start(&f, 1000000L, &run);
  one = wait_workers(&f, 1);
  set_held(&f, 1);
  post(&f, 1);
  bool two = wait_workers(&f, 2);
  test_sleep_us(20000);
  int held_one = workers(&f);
  post(&f, 10);
  bool max = wait_workers(&f, MAX);
  test_sleep_us(20000);
  int held_all = workers(&f);
  set_held(&f, 0);
  wait_done(&f, 11);
  finish(&f, run);
  CHECK(one && two && held_one == 2);
  CHECK(max && held_all == MAX);
  CHECK(atomic_load(&run_returned) == MAX); // a worker ended: the pool stops, reporting every worker started
}
