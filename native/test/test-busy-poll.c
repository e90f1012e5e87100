// Busy polling (busy-poll.c): the back-off after polls in vain, a caught request resetting it, and one poller
// at a time.
#include "test.h"
#include "busy-poll.h"

#include <pthread.h>
#include <unistd.h>

void test_busy_poll_backoff (void) {
  int p[2];
  CHECK(pipe(p) == 0);
  ferry_poller_t poller = { 0 };
  ferry_poll(&poller, p[0], 0);
  CHECK(poller.vain == 0 && poller.caught == 0); // off
  atomic_store(&poller.window_ns, 20000);
  ferry_poll(&poller, p[0], 20000);
  CHECK(poller.vain == 0); // the last request took the whole window: no poll
  // Empty device: poll in vain, then let 1, 3, 7, ... 63 chances go (and 63 from then on).
  int expected_skips[] = { 1, 3, 7, 15, 31, 63, 63 };
  for (int k = 0; k < 7; k++) {
    ferry_poll(&poller, p[0], 1000);
    CHECK(poller.vain == (uint64_t) k + 1);
    CHECK(poller.skip == expected_skips[k]);
    for (int s = 0; s < expected_skips[k]; s++) ferry_poll(&poller, p[0], 1000);
    CHECK(poller.vain == (uint64_t) k + 1 && poller.skip == 0);
  }
  // A request arrives: caught, and the back-off starts over.
  CHECK(write(p[1], "x", 1) == 1);
  ferry_poll(&poller, p[0], 1000);
  CHECK(poller.caught == 1 && poller.misses == 0 && poller.skip == 0);
  char c;
  CHECK(read(p[0], &c, 1) == 1);
  ferry_poll(&poller, p[0], 1000);
  CHECK(poller.vain == 8 && poller.skip == 1);
  CHECK(atomic_load(&poller.polling) == 0);
  close(p[0]);
  close(p[1]);
}

typedef struct {
  ferry_poller_t *poller;
  int fd;
  long calls;
} caller_t;

static void *caller (void *arg) {
  caller_t *c = arg;
  for (long i = 0; i < c->calls; i++) ferry_poll(c->poller, c->fd, 0);
  return NULL;
}

void test_busy_poll_one_poller (void) {
  int p[2];
  CHECK(pipe(p) == 0);
  ferry_poller_t poller = { 0 };
  atomic_store(&poller.window_ns, 2000);
  enum { N = 4 };
  caller_t callers[N];
  pthread_t threads[N];
  for (int i = 0; i < N; i++) {
    callers[i] = (caller_t) { .poller = &poller, .fd = p[0], .calls = scaled(20000) };
    pthread_create(&threads[i], NULL, caller, &callers[i]);
  }
  // Requests arrive now and then; the workers' polls share one back-off state.
  for (int i = 0; i < 200; i++) {
    CHECK(write(p[1], "x", 1) == 1);
    test_sleep_us(200);
    char c;
    CHECK(read(p[0], &c, 1) == 1);
  }
  for (int i = 0; i < N; i++) pthread_join(threads[i], NULL);
  CHECK(atomic_load(&poller.polling) == 0);
  CHECK(poller.caught + poller.vain <= (uint64_t) N * (uint64_t) callers[0].calls);
  CHECK(poller.misses >= 0 && poller.misses <= 6 && poller.skip >= 0 && poller.skip <= 63);
  close(p[0]);
  close(p[1]);
}
