// The gate (gate.c): frozen prefixes, drains that wait for admitted ops, and freeze/drain/thaw under load.
static void between_load_and_count (void *gate);
#define FERRY_GATE_BETWEEN_LOAD_AND_COUNT(g) between_load_and_count(g)
#include "test.h"
#include "gate.h"

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

static char *copy (const char *s) {
  return strdup(s);
}

static _Atomic int interleave; // set: the next admit meets a drain between its load of the epoch and its count

static void between_load_and_count (void *gate) {
  if (atomic_exchange(&interleave, 0)) ferry_gate_drain(gate); // nothing counted yet: it returns at once
}

void test_gate_prefixes (void) {
  ferry_gate_t g = FERRY_GATE_INIT;
  CHECK(!ferry_gate_is_frozen(&g, "/vm/disk"));
  CHECK(ferry_gate_is_frozen(&g, NULL)); // an op without a path cannot be checked
  CHECK(ferry_gate_freeze(&g, copy("/vm")));
  CHECK(ferry_gate_is_frozen(&g, "/vm") && ferry_gate_is_frozen(&g, "/vm/disk") && ferry_gate_is_frozen(&g, "/vm/a/b"));
  CHECK(!ferry_gate_is_frozen(&g, "/vm2") && !ferry_gate_is_frozen(&g, "/v") && !ferry_gate_is_frozen(&g, "/other"));
  CHECK(ferry_gate_admit(&g, "/vm/disk") == -1);
  int i = ferry_gate_admit(&g, "/other");
  CHECK(i == 0);
  ferry_gate_leave(&g, i);
  CHECK(atomic_load(&g.inflight[0]) == 0 && atomic_load(&g.inflight[1]) == 0);
  ferry_gate_thaw(&g, "/vm/other"); // not frozen: nothing happens
  CHECK(atomic_load(&g.frozen_count) == 1);
  ferry_gate_thaw(&g, "/vm");
  CHECK(atomic_load(&g.frozen_count) == 0 && !ferry_gate_is_frozen(&g, "/vm/disk"));
  CHECK(ferry_gate_freeze(&g, copy("/")));
  CHECK(ferry_gate_is_frozen(&g, "/anything"));
  ferry_gate_thaw(&g, "/");
  // At most FERRY_MAX_FROZEN prefixes; a refused one is not taken.
  char name[32];
  for (int k = 0; k < FERRY_MAX_FROZEN; k++) {
    snprintf(name, sizeof(name), "/p%d", k);
    CHECK(ferry_gate_freeze(&g, copy(name)));
  }
  char *extra = copy("/one-too-many");
  CHECK(!ferry_gate_freeze(&g, extra));
  free(extra);
  for (int k = 0; k < FERRY_MAX_FROZEN; k++) {
    snprintf(name, sizeof(name), "/p%d", k);
    ferry_gate_thaw(&g, name);
  }
  CHECK(atomic_load(&g.frozen_count) == 0);
  // A drain with nothing in flight returns at once, and moves the epoch on.
  ferry_gate_drain(&g);
  CHECK(atomic_load(&g.epoch) == 1);
}

typedef struct {
  ferry_gate_t *g;
  _Atomic int inside, release, drained;
} hold_t;

static void *holder (void *arg) {
  hold_t *h = arg;
  int i = ferry_gate_admit(h->g, "/vm/disk");
  atomic_store(&h->inside, 1);
  while (!atomic_load(&h->release)) test_sleep_us(100);
  ferry_gate_leave(h->g, i);
  return NULL;
}

static void *drainer (void *arg) {
  hold_t *h = arg;
  ferry_gate_drain(h->g);
  atomic_store(&h->drained, 1);
  return NULL;
}

void test_gate_drain_waits (void) {
  ferry_gate_t g = FERRY_GATE_INIT;
  for (int round = 0; round < 20; round++) {
    hold_t h = { .g = &g };
    pthread_t a, b;
    pthread_create(&a, NULL, holder, &h);
    while (!atomic_load(&h.inside)) test_sleep_us(100);
    uint64_t epoch = atomic_load(&g.epoch);
    pthread_create(&b, NULL, drainer, &h);
    while (atomic_load(&g.epoch) == epoch) test_sleep_us(100);
    test_sleep_us(2000);
    CHECK(!atomic_load(&h.drained)); // an op admitted before the drain holds it
    // An op admitted after the drain began does not: it counts under the new epoch.
    int late = ferry_gate_admit(&g, "/vm/disk");
    atomic_store(&h.release, 1);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    CHECK(atomic_load(&h.drained));
    ferry_gate_leave(&g, late);
  }
}

// Workers run ops on a frozen and an unfrozen tree while the test freezes, drains and thaws over and over:
// once a freeze's drain returned, no op under the prefix runs in C until the thaw, and the rest runs on.
static void *gate_worker (void *arg) {
  test_worker_t *me = arg;
  test_workers_t *w = me->all;
  while (!atomic_load_explicit(&w->stop, memory_order_relaxed)) {
    bool vm = test_rand(&me->seed) & 1;
    int i = ferry_gate_admit(w->gate, vm ? "/vm/disk.img" : "/other/disk.img");
    if (i < 0) {
      CHECK_T(vm);
      continue;
    }
    // Frozen and drained: no op under /vm may be admitted now.
    if (vm) CHECK_T(!atomic_load(&w->sealed));
    else atomic_fetch_add_explicit(&w->count, 1, memory_order_relaxed);
    ferry_gate_leave(w->gate, i);
    sched_yield(); // 2 cores: let the freezing thread run
  }
  return NULL;
}

void test_gate_freeze_drain_thaw (void) {
  ferry_gate_t g = FERRY_GATE_INIT;
  test_workers_t w = { .gate = &g };
  test_workers_start(&w, gate_worker);
  long rounds = scaled(1000), during = 0;
  for (long r = 0; r < rounds && test_failures == 0; r++) {
    CHECK(ferry_gate_freeze(&g, copy("/vm")));
    ferry_gate_drain(&g);
    atomic_store(&w.sealed, 1);
    long before = atomic_load(&w.count);
    for (int spin = 0; spin < 50; spin++) sched_yield();
    during += atomic_load(&w.count) - before;
    atomic_store(&w.sealed, 0);
    ferry_gate_thaw(&g, "/vm");
  }
  test_workers_stop(&w);
  CHECK(during > 0); // the rest of the mount kept running while /vm was frozen
  CHECK(atomic_load(&g.inflight[0]) == 0 && atomic_load(&g.inflight[1]) == 0 && atomic_load(&g.frozen_count) == 0);
}

// An admit read the epoch, a drain moved it on, then the admit counted itself: under the old epoch's counter,
// which is the one the drain after next waits for, so the next drain would not wait for this op. It must see
// the epoch moved and count itself again under the new one.
void test_gate_epoch_recheck (void) {
  ferry_gate_t g = FERRY_GATE_INIT;
  atomic_store(&interleave, 1);
  int i = ferry_gate_admit(&g, "/vm/disk");
  CHECK(atomic_load(&g.epoch) == 1 && i == 1);
  hold_t h = { .g = &g };
  pthread_t t;
  CHECK(pthread_create(&t, NULL, drainer, &h) == 0);
  test_sleep_us(50000);
  CHECK(!atomic_load(&h.drained)); // the op is still in flight
  ferry_gate_leave(&g, i);
  pthread_join(t, NULL);
  CHECK(atomic_load(&h.drained) && atomic_load(&g.inflight[0]) == 0 && atomic_load(&g.inflight[1]) == 0);
}
