// CPU cost of the native data path's own work per write, apart from the syscall: the tracking check and
// the marking of two maps (the `ferry dirty` map and a migration's), and the gate. Built and run by
// native-cost.sh against native/ferry's maps.c and gate.c.
#include "gate.h"
#include "maps.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define OPS 10000000

static ferry_file_t *file;
static ferry_gate_t gate = FERRY_GATE_INIT;

static uint64_t now_ns (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

static void *track_loop (void *arg) {
  int slot;
  (void) arg;
  for (long i = 0; i < OPS; i++) {
    off_t off = (off_t) ((i * 7919L) % 65536) * 4096;
    if (!ferry_file_write_stays_native(file, off, 4096, 16)) exit(1);
    ferry_file_mark_maps(file, off, 4096, 16, -1, &slot);
  }
  return NULL;
}

static void *gate_loop (void *arg) {
  (void) arg;
  for (long i = 0; i < OPS; i++) ferry_gate_leave(&gate, ferry_gate_admit(&gate, "/vm/disk.img"));
  return NULL;
}

static double per_op (void *(*loop)(void *), int threads) {
  pthread_t t[8];
  uint64_t t0 = now_ns();
  for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, loop, NULL);
  for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
  return (double) (now_ns() - t0) / OPS;
}

int main (void) {
  file = malloc(sizeof(ferry_file_t));
  ferry_file_init(file);
  for (int s = 0; s < 2; s++) ferry_file_install(file, s, calloc(1, 4096), 4096, NULL, false);
  printf("| work per 4 KiB write | 1 thread, ns | 2 threads on one file, ns per op and thread |\n|---|---:|---:|\n");
  printf("| tracking: check the maps and intents, mark 2 maps | %.1f | %.1f |\n", per_op(track_loop, 1), per_op(track_loop, 2));
  printf("| gate: admit + leave, nothing frozen | %.1f | %.1f |\n", per_op(gate_loop, 1), per_op(gate_loop, 2));
  return 0;
}
