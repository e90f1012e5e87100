// Mirror mode (window.c, and data.c's writes through a window): each write's fate against the copier's
// chunks (ahead / mark / mirror), a mirror waiting for the chunk in flight, and a copy racing writers that
// ends equal to the source.
#define _GNU_SOURCE
#include "test.h"
#include "data.h"
#include "window.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static ferry_window_t *three_chunks (void) {
  ferry_window_t *w = ferry_window_new(-1);
  double start[] = { 0, 4096, 8192 }, len[] = { 4096, 4096, 4096 };
  if (ferry_window_plan(w, start, len, 3) != 0) abort();
  return w;
}

void test_window_fates (void) {
  ferry_window_t *w = three_chunks();
  CHECK(ferry_window_fate(w, 4096 + 100, 200) == FERRY_FATE_AHEAD);    // all in a pending chunk
  CHECK(ferry_window_fate(w, 0, 12288) == FERRY_FATE_AHEAD);           // all pending, across chunks
  CHECK(ferry_window_fate(w, 12288, 4096) == FERRY_FATE_MIRROR);       // past the plan: nothing pending
  CHECK(ferry_window_fate(w, 8192, 8192) == FERRY_FATE_MARK);          // partly pending, partly past the plan
  ferry_window_state(w, 0, 1);
  ferry_window_state(w, 0, 2);
  CHECK(ferry_window_fate(w, 0, 4096) == FERRY_FATE_MIRROR);           // chunk done: the copy has it, mirror
  CHECK(ferry_window_fate(w, 2048, 4096) == FERRY_FATE_MARK);          // half done, half pending
  ferry_window_state(w, 7, 2);                                         // past the plan: ignored
  ferry_window_planning(w);
  CHECK(ferry_window_fate(w, 0, 4096) == FERRY_FATE_MARK);             // planning: mark everything
  double start[8], len[8];
  for (int i = 0; i < 8; i++) {
    start[i] = i * 4096.0;
    len[i] = 4096;
  }
  CHECK(ferry_window_plan(w, start, len, 8) == 0);
  CHECK(ferry_window_fate(w, 0, 4096) == FERRY_FATE_AHEAD);            // a new plan: pending again
  for (int i = 0; i < 5; i++) ferry_window_state(w, (size_t) i, 1);
  CHECK(ferry_window_fate(w, 0, 5 * 4096) == FERRY_FATE_MARK);         // over 4 chunks in flight: mark
  CHECK(ferry_window_plan(w, NULL, NULL, 0) == 0);                     // the copy ended
  CHECK(ferry_window_fate(w, 0, 4096) == FERRY_FATE_MIRROR);
  ferry_window_failed(w, EIO);
  ferry_window_failed(w, ENOSPC);
  CHECK(atomic_load(&w->error) == EIO);                                // the first error stays
  CHECK(ferry_window_fate(w, 0, 4096) == FERRY_FATE_MARK);             // failed: mark, the migration aborts
  ferry_window_free(w);
}

typedef struct {
  ferry_window_t *w;
  off_t offset;
  _Atomic int fate;
} asker_t;

static void *asker (void *arg) {
  asker_t *a = arg;
  atomic_store(&a->fate, ferry_window_fate(a->w, a->offset, 4096));
  return NULL;
}

void test_window_mirror_after_chunk (void) {
  for (int round = 0; round < 10; round++) {
    ferry_window_t *w = three_chunks();
    ferry_window_state(w, 1, 1); // the copier is reading chunk 1
    asker_t a = { .w = w, .offset = 4096, .fate = -1 };
    pthread_t t;
    pthread_create(&t, NULL, asker, &a);
    test_sleep_us(5000);
    CHECK(atomic_load(&a.fate) == -1); // waits for the chunk in flight
    if (round % 2 == 0) {
      ferry_window_state(w, 1, 2);
    } else {
      double start[] = { 0 }, len[] = { 4096 };
      ferry_window_plan(w, start, len, 1); // a new plan releases it too
    }
    pthread_join(t, NULL);
    CHECK(atomic_load(&a.fate) == FERRY_FATE_MIRROR);
    ferry_window_free(w);
  }
}

// The whole path: writers write 4 KiB blocks through ferry_data_write (source file, window attached) while a
// copier copies chunk by chunk as a mirror-mode migration does, then copies again what was marked. With the
// writers stopped, the destination must equal the source.
#define BLK 4096
#define FILE_BLOCKS 256
#define CHUNK_BLOCKS 16
#define FH 7

typedef struct {
  uint64_t seed;
  long ops;
  _Atomic int *running;
} cw_writer_t;

static void *cw_writer (void *arg) {
  cw_writer_t *w = arg;
  char buf[BLK];
  for (long i = 0; i < w->ops; i++) {
    uint64_t r = test_rand(&w->seed);
    memset(buf, (int) (r >> 32), sizeof(buf));
    off_t off = (off_t) (r % FILE_BLOCKS) * BLK;
    if (ferry_data_write("/vm/disk.img", buf, BLK, off, FH) != BLK) {
      atomic_fetch_sub(w->running, 1);
      CHECK_T(!"a write through the window failed");
    }
  }
  atomic_fetch_sub(w->running, 1);
  return NULL;
}

static void copy_block (int src, int dst, uint64_t b) {
  char buf[BLK];
  if (pread(src, buf, BLK, (off_t) (b * BLK)) != BLK || pwrite(dst, buf, BLK, (off_t) (b * BLK)) != BLK) abort();
}

static uint8_t *take (ferry_file_t *f) {
  uint8_t *old = f->slots[0].bits; // only this thread installs
  ferry_file_install(f, 0, calloc(FILE_BLOCKS / 8, 1), FILE_BLOCKS / 8, NULL, false);
  return old;
}

void test_window_mirror_vs_copier (void) {
  int src = test_tmpfile(), dst = test_tmpfile();
  CHECK(ftruncate(src, FILE_BLOCKS * BLK) == 0 && ftruncate(dst, FILE_BLOCKS * BLK) == 0);
  ferry_data_enable(12);
  ferry_file_t f;
  CHECK(ferry_file_init(&f) == 0);
  ferry_file_install(&f, 0, calloc(FILE_BLOCKS / 8, 1), FILE_BLOCKS / 8, NULL, false);
  CHECK(ferry_data_open(FH, src, -1, false, &f, false) == 0);
  ferry_window_t *w = ferry_window_new(dst);
  ferry_file_attach_window(&f, w, 0);
  enum { N = 4 };
  _Atomic int running = N;
  cw_writer_t writers[N];
  pthread_t threads[N];
  for (int i = 0; i < N; i++) {
    writers[i] = (cw_writer_t) { .seed = 15485863u * (i + 1), .ops = scaled(20000), .running = &running };
    pthread_create(&threads[i], NULL, cw_writer, &writers[i]);
  }
  // Pass 0 copies every block; each later pass copies what the previous one left marked, while writers write.
  uint8_t *todo;
  long passes = 0;
  for (long pass = 0; atomic_load(&running) > 0; pass++, passes++) {
    ferry_window_planning(w);
    uint8_t *marked = pass == 0 ? NULL : take(&f);
    double start[FILE_BLOCKS / CHUNK_BLOCKS], len[FILE_BLOCKS / CHUNK_BLOCKS];
    size_t count = 0;
    for (uint64_t c = 0; c < FILE_BLOCKS / CHUNK_BLOCKS; c++) {
      bool any = marked == NULL;
      for (uint64_t b = c * CHUNK_BLOCKS; b < (c + 1) * CHUNK_BLOCKS && !any; b++) any = marked[b >> 3] & (0x80 >> (b & 7));
      if (!any) continue;
      start[count] = (double) (c * CHUNK_BLOCKS * BLK);
      len[count++] = CHUNK_BLOCKS * BLK;
    }
    CHECK(ferry_window_plan(w, start, len, count) == 0);
    for (size_t i = 0; i < count; i++) {
      ferry_window_state(w, i, 1);
      for (uint64_t b = (uint64_t) start[i] / BLK; b < (uint64_t) (start[i] + len[i]) / BLK; b++) copy_block(src, dst, b);
      ferry_window_state(w, i, 2);
    }
    CHECK(ferry_window_plan(w, NULL, NULL, 0) == 0);
    free(marked);
  }
  for (int i = 0; i < N; i++) pthread_join(threads[i], NULL);
  CHECK(test_failures == 0 && passes > 1);
  // The switchover: writers stopped, copy what is still marked.
  ferry_file_attach_window(&f, NULL, 0);
  todo = take(&f);
  for (uint64_t b = 0; b < FILE_BLOCKS; b++) if (todo[b >> 3] & (0x80 >> (b & 7))) copy_block(src, dst, b);
  free(todo);
  long differ = 0;
  for (uint64_t b = 0; b < FILE_BLOCKS; b++) {
    char a[BLK], c[BLK];
    if (pread(src, a, BLK, (off_t) (b * BLK)) != BLK || pread(dst, c, BLK, (off_t) (b * BLK)) != BLK) abort();
    if (memcmp(a, c, BLK) != 0) differ++;
  }
  if (differ > 0) fprintf(stderr, "  %ld blocks of the copy differ from the source\n", differ);
  CHECK(differ == 0);
  CHECK(atomic_load(&w->ops) > 0); // some writes were mirrored
  ferry_data_close(FH);
  free(f.slots[0].bits);
  ferry_file_install(&f, 0, NULL, 0, NULL, false);
  ferry_file_destroy(&f);
  ferry_window_free(w);
  close(src);
  close(dst);
}
