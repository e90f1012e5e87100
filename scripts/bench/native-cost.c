// CPU cost of the native data path's own work per write, apart from the syscall: the tracking check and
// the marking of two maps (the `ferry dirty` map and a migration's), and the gate. Built and run by
// native-cost.sh against the patched ferry-data.c in node_modules/fuse-native.
#include "ferry-data.c"
#include <stdio.h>

#define OPS 10000000

static dp_file_t *file;

static void *track_loop (void *arg) {
  int slot;
  for (long i = 0; i < OPS; i++) {
    off_t off = (off_t) ((i * 7919L) % 65536) * 4096;
    if (!write_stays_native(file, off, 4096)) exit(1);
    mark_maps(file, off, 4096, -1, &slot);
  }
  return NULL;
}

static void *gate_loop (void *arg) {
  for (long i = 0; i < OPS; i++) gate_leave(gate_admit("/vm/disk.img"));
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
  block_shift = 16;
  file = calloc(1, sizeof(dp_file_t));
  pthread_rwlock_init(&file->lock, NULL);
  for (int s = 0; s < 2; s++) {
    file->slots[s].bytes = 4096;
    file->slots[s].bits = calloc(1, 4096);
  }
  printf("| work per 4 KiB write | 1 thread, ns | 2 threads on one file, ns per op and thread |\n|---|---:|---:|\n");
  printf("| tracking: check the maps and intents, mark 2 maps | %.1f | %.1f |\n", per_op(track_loop, 1), per_op(track_loop, 2));
  printf("| gate: admit + leave, nothing frozen | %.1f | %.1f |\n", per_op(gate_loop, 1), per_op(gate_loop, 2));
  return 0;
}
