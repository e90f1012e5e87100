// A small test runner for native/ferry's pure C modules (no framework): each test is a function that
// CHECKs; run.c lists them. `concurrent` tests are also run under ThreadSanitizer (see Makefile).
#ifndef FERRY_TEST_H
#define FERRY_TEST_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "gate.h"
#include "maps.h"

extern int test_failures;
void test_fail (const char *file, int line, const char *what);

// Fails the current test and returns from the test function.
#define CHECK(cond) do { if (!(cond)) { test_fail(__FILE__, __LINE__, #cond); return; } } while (0)
// The same, from a thread: records the failure (the test checks test_failures when it joins).
#define CHECK_T(cond) do { if (!(cond)) { test_fail(__FILE__, __LINE__, #cond); return NULL; } } while (0)

// Scales iteration counts: FERRY_TEST_SCALE (default 4 under ASan+UBSan, 2 under ThreadSanitizer; see run.c).
extern double test_scale;
long scaled (long n);
uint64_t test_now_ns (void);
void test_sleep_us (long us);
// xorshift: fast, per thread.
uint64_t test_rand (uint64_t *state);
// A scratch file under $TMPDIR (or /tmp), already unlinked: an fd.
int test_tmpfile (void);

// Threads that run ops through a gate until `stop`, checking what the driving thread has `sealed`; `count`
// shows that they ran. Each gets its own random seed.
#define TEST_WORKERS 3
typedef struct test_workers test_workers_t;
typedef struct {
  test_workers_t *all;
  uint64_t seed;
} test_worker_t;
struct test_workers {
  ferry_gate_t *gate;
  ferry_file_t *file;
  _Atomic int stop, sealed;
  _Atomic long count;
  test_worker_t each[TEST_WORKERS];
  pthread_t threads[TEST_WORKERS];
};
// fn gets its test_worker_t.
void test_workers_start (test_workers_t *w, void *(*fn)(void *));
void test_workers_stop (test_workers_t *w);

#endif
