// The C gate: which native ops are running, and which subtrees are frozen.
//
// Owns the epoch, the two in-flight counters, the frozen prefixes and the drain. Threads: FUSE workers
// admit and leave (every native read/write); the JS thread freezes and thaws (Fuse.data.freeze/thaw); one
// libuv threadpool thread at a time drains (Fuse.data.drain). Protocol and proofs: native-notes/memory-model.md,
// "The gate".
#ifndef FERRY_GATE_H
#define FERRY_GATE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define FERRY_MAX_FROZEN 64

typedef struct {
  _Atomic uint64_t epoch;
  _Atomic int64_t inflight[2]; // ops admitted under an even / odd epoch and not yet left
  _Atomic int frozen_count;
  _Atomic int draining;
  char *frozen[FERRY_MAX_FROZEN];
  pthread_mutex_t mu;       // frozen[], and the drained condition
  pthread_cond_t drained;
  pthread_mutex_t drain_mu; // one drain at a time keeps the two counters apart
} ferry_gate_t;

#define FERRY_GATE_INIT { .mu = PTHREAD_MUTEX_INITIALIZER, .drained = PTHREAD_COND_INITIALIZER, .drain_mu = PTHREAD_MUTEX_INITIALIZER }

// True when path is under a frozen prefix, or NULL (an op without a path cannot be checked).
bool ferry_gate_is_frozen (ferry_gate_t *g, const char *path);

static inline void ferry_gate_leave (ferry_gate_t *g, int index) {
  if (atomic_fetch_sub(&g->inflight[index], 1) == 1 && atomic_load(&g->draining)) {
    pthread_mutex_lock(&g->mu);
    pthread_cond_broadcast(&g->drained);
    pthread_mutex_unlock(&g->mu);
  }
}

// test-gate.c makes a freeze and drain happen here, between the epoch's load and the count.
#ifndef FERRY_GATE_BETWEEN_LOAD_AND_COUNT
#define FERRY_GATE_BETWEEN_LOAD_AND_COUNT(g) ((void) 0)
#endif

// Returns the counter index to leave with, or -1 when the path is frozen (the op goes to JS, whose gate holds it).
static inline int ferry_gate_admit (ferry_gate_t *g, const char *path) {
  for (;;) {
    uint64_t epoch = atomic_load(&g->epoch);
    FERRY_GATE_BETWEEN_LOAD_AND_COUNT(g);
    int index = (int) (epoch & 1);
    atomic_fetch_add(&g->inflight[index], 1);
    // Counted before the epoch moved on, or retry: a drain must see every op it has to wait for.
    if (atomic_load(&g->epoch) != epoch) {
      ferry_gate_leave(g, index);
      continue;
    }
    if (atomic_load(&g->frozen_count) > 0 && ferry_gate_is_frozen(g, path)) {
      ferry_gate_leave(g, index);
      return -1;
    }
    return index;
  }
}

// Returns once every op admitted before the call has left. Blocks: never on the JS thread.
void ferry_gate_drain (ferry_gate_t *g);
// Ops under prefix go to JS from now on (those already admitted are waited for by a drain). Takes ownership
// of the malloc'ed prefix; false (and the prefix is not taken) when FERRY_MAX_FROZEN prefixes are frozen.
bool ferry_gate_freeze (ferry_gate_t *g, char *prefix);
void ferry_gate_thaw (ferry_gate_t *g, const char *prefix);

#endif
