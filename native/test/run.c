// Runs the C unit tests: ./run [--concurrent] [name-substring]. --concurrent: only the tests marked
// concurrent (the ThreadSanitizer build). Exit 0 when every test passed.
#define _GNU_SOURCE
#include "test.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TESTS(X) \
  X(maps_set_bits, 0) X(maps_mark_and_clear, 0) X(maps_swap_lossless, 1) X(maps_grow_lossless, 1) \
  X(gate_prefixes, 0) X(gate_epoch_recheck, 0) X(gate_drain_waits, 1) X(gate_freeze_drain_thaw, 1) \
  X(intent_vouching, 0) X(intent_epoch, 1) \
  X(window_fates, 0) X(window_mirror_after_chunk, 1) X(window_mirror_vs_copier, 1) \
  X(busy_poll_backoff, 0) X(busy_poll_one_poller, 1) \
  X(pool_growth, 1) X(direct_routes, 0) X(fast_read_reply, 0) X(fast_write_reply, 0) X(fast_freeze_drains, 1) \
  X(negotiate_recv_buffer, 0) X(negotiate_init_offered, 0) X(negotiate_init_not_offered, 0) X(negotiate_setattr_as_chown, 0)

#define DECLARE(name, c) void test_##name (void);
TESTS(DECLARE)

static const struct { const char *name; void (*fn)(void); int concurrent; } tests[] = {
#define ENTRY(name, c) { #name, test_##name, c },
  TESTS(ENTRY)
};

int test_failures = 0;
double test_scale = 1;

void test_fail (const char *file, int line, const char *what) {
  fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", file, line, what);
  __atomic_add_fetch(&test_failures, 1, __ATOMIC_SEQ_CST);
}

long scaled (long n) {
  long m = (long) (n * test_scale);
  return m > 0 ? m : 1;
}

uint64_t test_now_ns (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

void test_sleep_us (long us) {
  struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
  nanosleep(&ts, NULL);
}

uint64_t test_rand (uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

int test_tmpfile (void) {
  const char *dir = getenv("TMPDIR");
  int fd = open(dir != NULL && *dir ? dir : "/tmp", O_TMPFILE | O_RDWR, 0600);
  if (fd < 0) {
    perror("test_tmpfile");
    exit(2);
  }
  return fd;
}

void test_workers_start (test_workers_t *w, void *(*fn)(void *)) {
  for (int i = 0; i < TEST_WORKERS; i++) {
    w->each[i] = (test_worker_t) { .all = w, .seed = 0x9e3779b97f4a7c15ull * (uint64_t) (i + 1) };
    pthread_create(&w->threads[i], NULL, fn, &w->each[i]);
  }
}

void test_workers_stop (test_workers_t *w) {
  atomic_store(&w->stop, 1);
  for (int i = 0; i < TEST_WORKERS; i++) pthread_join(w->threads[i], NULL);
}

int main (int argc, char **argv) {
  bool concurrent_only = false;
  const char *filter = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--concurrent") == 0) concurrent_only = true;
    else filter = argv[i];
  }
#if defined(__SANITIZE_THREAD__)
  test_scale = 2; // ThreadSanitizer runs each access 5-15x slower than the ASan build (4)
  const char *build = "tsan";
#else
  test_scale = 4;
  const char *build = "asan+ubsan";
#endif
  if (getenv("FERRY_TEST_SCALE") != NULL) test_scale = atof(getenv("FERRY_TEST_SCALE"));
  int ran = 0, failed = 0;
  uint64_t all = test_now_ns();
  for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
    if ((concurrent_only && !tests[i].concurrent) || (filter != NULL && strstr(tests[i].name, filter) == NULL)) continue;
    int before = test_failures;
    uint64_t t0 = test_now_ns();
    tests[i].fn();
    bool ok = test_failures == before;
    printf("%s %s (%s, %.0f ms)\n", ok ? "ok  " : "FAIL", tests[i].name, build, (test_now_ns() - t0) / 1e6);
    fflush(stdout);
    ran++;
    if (!ok) failed++;
  }
  printf("%s: %d of %d C tests passed in %.1f s\n", build, ran - failed, ran, (test_now_ns() - all) / 1e9);
  return failed == 0 && ran > 0 ? 0 : 1;
}
