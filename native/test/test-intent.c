// Write intents (maps.c): which writes C may do without JS logging them first, and the epoch rule: after JS
// clears its vouches and drains the gate, no write admitted later passes on an old vouch.
#include "test.h"
#include "gate.h"
#include "maps.h"

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#define SHIFT 16 // 64 KiB blocks
#define REGION 20 // 1 MiB intent regions

void test_intent_vouching (void) {
  ferry_file_t f;
  CHECK(ferry_file_init(&f) == 0);
  const off_t R = (off_t) 1 << REGION;
  CHECK(ferry_file_write_stays_native(&f, 5 * R, 4096, SHIFT)); // no intent log, no map: native
  uint8_t *map = calloc(8, 1); // 64 blocks of 64 KiB: 4 MiB
  ferry_file_install(&f, 0, map, 8, NULL, false);
  CHECK(ferry_file_write_stays_native(&f, 4 * R - 4096, 4096, SHIFT));
  CHECK(!ferry_file_write_stays_native(&f, 4 * R, 4096, SHIFT)); // past the map: JS grows it first
  uint8_t intents[1] = { 0 };
  ferry_file_intent(&f, intents, sizeof(intents), REGION, (void *) 1);
  CHECK(!ferry_file_write_stays_native(&f, 0, 4096, SHIFT)); // armed, nothing vouched
  intents[0] = 0x80 | 0x20; // regions 0 and 2
  CHECK(ferry_file_write_stays_native(&f, 0, 4096, SHIFT));
  CHECK(ferry_file_write_stays_native(&f, 2 * R + 100, 4096, SHIFT));
  CHECK(!ferry_file_write_stays_native(&f, R - 4096, 8192, SHIFT)); // spans into region 1
  CHECK(!ferry_file_write_stays_native(&f, R, 4096, SHIFT));
  intents[0] = 0xff;
  CHECK(ferry_file_write_stays_native(&f, R - 4096, 8192, SHIFT));
  CHECK(!ferry_file_write_stays_native(&f, 8 * R, 4096, SHIFT)); // region 8 is past the intent map
  atomic_fetch_add(&f.js_writes, 1);
  CHECK(!ferry_file_write_stays_native(&f, 0, 4096, SHIFT)); // JS takes every write for now
  atomic_fetch_sub(&f.js_writes, 1);
  CHECK(ferry_file_intent(&f, NULL, 0, REGION, NULL) == (void *) 1);
  CHECK(ferry_file_write_stays_native(&f, R, 4096, SHIFT));
  ferry_file_install(&f, 0, NULL, 0, NULL, false);
  ferry_file_destroy(&f);
  free(map);
}

static void *intent_worker (void *arg) {
  test_worker_t *me = arg;
  test_workers_t *w = me->all;
  while (!atomic_load_explicit(&w->stop, memory_order_relaxed)) {
    int i = ferry_gate_admit(w->gate, "/vm/disk.img");
    off_t off = (off_t) (test_rand(&me->seed) % 8) << REGION;
    if (ferry_file_write_stays_native(w->file, off, 4096, SHIFT)) {
      // Admitted after the clear and its drain: it must not pass on a vouch of the old epoch.
      CHECK_T(!atomic_load(&w->sealed));
      atomic_fetch_add_explicit(&w->count, 1, memory_order_relaxed);
    }
    ferry_gate_leave(w->gate, i);
    sched_yield(); // 2 cores: let the checkpointing thread run
  }
  return NULL;
}

void test_intent_epoch (void) {
  ferry_gate_t g = FERRY_GATE_INIT;
  ferry_file_t f;
  CHECK(ferry_file_init(&f) == 0);
  uint8_t intents[1] = { 0 };
  ferry_file_intent(&f, intents, sizeof(intents), REGION, NULL);
  test_workers_t w = { .gate = &g, .file = &f };
  test_workers_start(&w, intent_worker);
  long epochs = scaled(1000);
  for (long e = 0; e < epochs && test_failures == 0; e++) {
    // JS vouches (regions its log holds), writes pass for a while, then a checkpoint begins a new epoch:
    // clear every vouch, then drain.
    __atomic_store_n(&intents[0], (uint8_t) 0xff, __ATOMIC_RELAXED);
    for (int spin = 0; spin < 20; spin++) sched_yield();
    __atomic_store_n(&intents[0], (uint8_t) 0, __ATOMIC_RELAXED);
    ferry_gate_drain(&g);
    atomic_store(&w.sealed, 1);
    for (int spin = 0; spin < 20; spin++) sched_yield();
    atomic_store(&w.sealed, 0);
  }
  test_workers_stop(&w);
  CHECK(atomic_load(&w.count) > 0);
  ferry_file_destroy(&f);
}
