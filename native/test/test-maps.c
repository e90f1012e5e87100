// Dirty maps (maps.c): marking, clearing, and the lossless swap under concurrent writers.
#include "test.h"
#include "maps.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SHIFT 12

static bool bit (const uint8_t *bits, uint64_t b) {
  return bits[b >> 3] & (0x80 >> (b & 7));
}

void test_maps_set_bits (void) {
  uint64_t seed = 42;
  for (int round = 0; round < 2000; round++) {
    uint8_t bits[16] = { 0 }, want[16] = { 0 };
    uint64_t first = test_rand(&seed) % 128, last = first + test_rand(&seed) % (128 - first);
    ferry_set_bits(bits, first, last);
    for (uint64_t b = first; b <= last; b++) want[b >> 3] |= (uint8_t) (0x80 >> (b & 7));
    CHECK(memcmp(bits, want, sizeof(bits)) == 0);
    CHECK(ferry_all_bits(bits, sizeof(bits), first, last));
    if (first > 0) CHECK(!ferry_all_bits(bits, sizeof(bits), first - 1, last));
    if (last < 127) CHECK(!ferry_all_bits(bits, sizeof(bits), first, last + 1));
  }
  uint8_t bits[2] = { 0xff, 0xff };
  CHECK(!ferry_all_bits(bits, sizeof(bits), 0, 16)); // past the map: not all set
}

void test_maps_mark_and_clear (void) {
  ferry_file_t f;
  CHECK(ferry_file_init(&f) == 0);
  uint8_t *map = calloc(8, 1);
  CHECK(!ferry_file_mark(&f, 0, 0, 0)); // no map installed
  CHECK(ferry_file_install(&f, 0, map, 8, (void *) 1, false) == NULL);
  CHECK(ferry_file_mark(&f, 0, 3, 12));
  CHECK(!ferry_file_mark(&f, 0, 60, 64)); // block 64 is past the 64-block map
  for (uint64_t b = 0; b < 64; b++) CHECK(bit(map, b) == (b >= 3 && b <= 12));
  ferry_file_clear_from(&f, 0, 5);
  for (uint64_t b = 0; b < 64; b++) CHECK(bit(map, b) == (b >= 3 && b <= 4));
  ferry_file_clear_from(&f, 0, 0);
  for (int i = 0; i < 8; i++) CHECK(map[i] == 0);
  // mark_maps marks every installed slot the write fits, and returns no window when none is attached.
  uint8_t *other = calloc(8, 1);
  ferry_file_install(&f, 3, other, 8, (void *) 2, false);
  int slot = 7;
  CHECK(ferry_file_mark_maps(&f, 5 << SHIFT, 2 << SHIFT, SHIFT, -1, &slot) == NULL && slot == -1);
  CHECK(bit(map, 5) && bit(map, 6) && !bit(map, 7) && bit(other, 5) && bit(other, 6));
  // Installing returns the previous owner; merging carries the old bits into the new map.
  uint8_t *grown = calloc(16, 1);
  CHECK(ferry_file_install(&f, 0, grown, 16, (void *) 3, true) == (void *) 1);
  CHECK(bit(grown, 5) && bit(grown, 6) && !bit(grown, 4));
  CHECK(ferry_file_install(&f, 0, NULL, 0, NULL, false) == (void *) 3);
  CHECK(ferry_file_install(&f, 3, NULL, 0, NULL, false) == (void *) 2);
  ferry_file_destroy(&f);
  free(map);
  free(other);
  free(grown);
}

// Writers mark random blocks of a small map (so that they hit the same bytes) while a taker swaps fresh maps
// in, as a migration's pass does: every block a writer marked must be in one of the maps taken.
#define BLOCKS 512
#define WRITERS 8

typedef struct {
  ferry_file_t *file;
  uint64_t seed;
  long ops;
  uint8_t marked[BLOCKS / 8]; // this writer's own record of its marks
  const _Atomic int *stop;
} writer_t;

static void *writer (void *arg) {
  writer_t *w = arg;
  for (long i = 0; i < w->ops && !atomic_load_explicit(w->stop, memory_order_relaxed); i++) {
    uint64_t first = test_rand(&w->seed) % BLOCKS, n = 1 + test_rand(&w->seed) % 3;
    if (first + n > BLOCKS) n = BLOCKS - first;
    int slot;
    CHECK_T(ferry_file_write_stays_native(w->file, (off_t) (first << SHIFT), n << SHIFT, SHIFT));
    ferry_file_mark_maps(w->file, (off_t) (first << SHIFT), n << SHIFT, SHIFT, -1, &slot);
    for (uint64_t b = first; b < first + n; b++) w->marked[b >> 3] |= (uint8_t) (0x80 >> (b & 7));
  }
  return NULL;
}

static void swap_lossless (bool grow) {
  ferry_file_t f;
  CHECK(ferry_file_init(&f) == 0);
  size_t bytes = BLOCKS / 8;
  ferry_file_install(&f, 0, calloc(bytes, 1), bytes, NULL, false);
  _Atomic int stop = 0;
  writer_t writers[WRITERS];
  pthread_t threads[WRITERS];
  for (int i = 0; i < WRITERS; i++) {
    writers[i] = (writer_t) { .file = &f, .seed = 0x9e3779b97f4a7c15ull * (i + 1), .ops = scaled(200000), .stop = &stop };
    memset(writers[i].marked, 0, sizeof(writers[i].marked));
    pthread_create(&threads[i], NULL, writer, &writers[i]);
  }
  // The taker: what it takes is final once install returns (no writer touches it any more).
  uint8_t taken[BLOCKS / 8] = { 0 };
  long swaps = scaled(20000);
  for (long s = 0; s < swaps; s++) {
    // Growing installs a larger map with merge: the old bits are carried over, nothing is taken.
    size_t size = grow && s % 2 == 0 ? bytes * 2 : bytes;
    uint8_t *fresh = calloc(size, 1);
    bool merge = grow && s % 2 == 0;
    uint8_t *old = f.slots[0].bits; // only this thread installs, so reading the slot here is safe
    ferry_file_install(&f, 0, fresh, size, NULL, merge);
    if (!merge) for (size_t i = 0; i < bytes; i++) taken[i] |= old[i];
    free(old);
  }
  atomic_store(&stop, 1);
  for (int i = 0; i < WRITERS; i++) pthread_join(threads[i], NULL);
  uint8_t *last = f.slots[0].bits;
  ferry_file_install(&f, 0, NULL, 0, NULL, false);
  for (size_t i = 0; i < bytes; i++) taken[i] |= last[i];
  free(last);
  long lost = 0;
  for (uint64_t b = 0; b < BLOCKS; b++) {
    bool marked = false;
    for (int i = 0; i < WRITERS; i++) marked |= bit(writers[i].marked, b);
    if (marked && !bit(taken, b)) lost++;
  }
  if (lost > 0) fprintf(stderr, "  %ld marked blocks are in no map taken\n", lost);
  CHECK(lost == 0);
  ferry_file_destroy(&f);
}

void test_maps_swap_lossless (void) {
  swap_lossless(false);
}

void test_maps_grow_lossless (void) {
  swap_lossless(true);
}
