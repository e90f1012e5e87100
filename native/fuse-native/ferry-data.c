#ifndef _GNU_SOURCE
#define _GNU_SOURCE // preadv2, RWF_NOWAIT
#endif
#include <fcntl.h>
#include <poll.h>
#include <sys/uio.h>
// ferry's native data path (patch 010).
//
// read and write on a file handle that JavaScript registered are answered here,
// on libfuse's worker thread: pread/pwrite on the backing fd, dirty bits set in
// the file's bitmaps, counted, without waking the JS thread. Anything this code
// does not handle (an unregistered handle, a frozen path, a write the JS side
// must see: mirroring, a write-intent not yet durable, a map too small) returns
// FERRY_DATA_PASS and goes to the JavaScript handler, which does the same work
// with the same maps. The memory model is in ferry's native-notes/memory-model.md.
#define _GNU_SOURCE
#include "ferry-data.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_HANDLES 65536
#define MAX_SLOTS 8
#define MAX_FROZEN 64
#define LAT_BUCKETS 32

// One dirty bitmap, MSB-first within a byte (npm bitfield's order). The memory
// is ours (calloc), lent to JS as an external ArrayBuffer; `ref` keeps that
// ArrayBuffer (and so the memory) alive while the map is installed.
typedef struct {
  uint8_t *bits;
  size_t bytes;
  napi_ref ref;
} slot_t;

#define WINDOW_SAMPLES 1024

// Mirror mode: where the copier stands in one file (see ferry's src/track/copy-window.ts). Chunks, their
// states (0 pending, 1 in flight, 2 done) and `gen` change only under `mu`, on the JS thread; workers read
// them under `mu` and wait on `changed` for in-flight chunks. Writes go to `fd` (the destination).
typedef struct {
  int fd;
  pthread_mutex_t mu;
  pthread_cond_t changed;
  int planning;
  uint64_t gen;
  double *start, *len;
  uint8_t *state;
  size_t count;
  _Atomic int error; // errno of the first failed destination write
  _Atomic uint64_t ops, bytes, sample_count;
  _Atomic uint32_t samples_us[WINDOW_SAMPLES];
} dp_window_t;

typedef struct {
  // Shared by markers (worker threads, and JS marks), exclusive for installing
  // or swapping a map: a swap waits for every marker of the old map to finish.
  pthread_rwlock_t lock;
  slot_t slots[MAX_SLOTS];
  // Write-intent regions JS vouches for (durable and touched this epoch); NULL
  // when no migration logs intents for this file. Only the JS thread writes it.
  uint8_t *intent_ok;
  size_t intent_bytes;
  unsigned intent_shift;
  napi_ref intent_ref;
  _Atomic uint32_t js_writes;      // > 0: every write takes the JS path
  dp_window_t *window;             // mirror mode: classifies writes for the map in window_slot
  int window_slot;
  // Writes to one file run in parallel (FOPEN_PARALLEL_DIRECT_WRITES): see order_begin.
  _Atomic uint32_t ordered_in_flight;
  _Atomic uint64_t ordered_seq;
  _Atomic uint64_t bytes_written;  // by this path
} dp_file_t;

typedef struct {
  _Atomic int fd;
  dp_file_t *file; // NULL: writes are not tracked
} dp_handle_t;

typedef struct {
  _Atomic uint64_t ops, bytes, errors;
  _Atomic uint64_t latency[LAT_BUCKETS]; // bucket b: [2^(b-1), 2^b) microseconds
} op_stats_t;

static _Atomic int enabled = 0;
static unsigned block_shift = 16;
static _Atomic(dp_handle_t *) handles[MAX_HANDLES];
static op_stats_t read_stats, write_stats;
static _Atomic uint64_t passed_ops, mirror_ops;

// The gate: ops count themselves in inflight[epoch & 1]; a drain advances the
// epoch and waits for the old counter to reach zero. Frozen prefixes send ops
// to JS, whose gate holds them.
static struct {
  _Atomic uint64_t epoch;
  _Atomic int64_t inflight[2];
  _Atomic int frozen_count;
  _Atomic int draining;
  char *frozen[MAX_FROZEN];
  pthread_mutex_t mu;       // frozen[], and the drained condition
  pthread_cond_t drained;
  pthread_mutex_t drain_mu; // one drain at a time keeps the two counters apart
} gate = {
  .mu = PTHREAD_MUTEX_INITIALIZER,
  .drained = PTHREAD_COND_INITIALIZER,
  .drain_mu = PTHREAD_MUTEX_INITIALIZER,
};

static bool is_within (const char *path, const char *prefix) {
  if (strcmp(prefix, "/") == 0) return true;
  size_t n = strlen(prefix);
  return strncmp(path, prefix, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

static bool is_frozen (const char *path) {
  bool frozen = false;
  pthread_mutex_lock(&gate.mu);
  for (int i = 0; i < MAX_FROZEN && !frozen; i++) {
    if (gate.frozen[i] != NULL && path != NULL && is_within(path, gate.frozen[i])) frozen = true;
  }
  pthread_mutex_unlock(&gate.mu);
  return frozen || path == NULL;
}

static void gate_leave (int index) {
  if (atomic_fetch_sub(&gate.inflight[index], 1) == 1 && atomic_load(&gate.draining)) {
    pthread_mutex_lock(&gate.mu);
    pthread_cond_broadcast(&gate.drained);
    pthread_mutex_unlock(&gate.mu);
  }
}

// Returns the counter index to leave with, or -1 when the path is frozen.
static int gate_admit (const char *path) {
  for (;;) {
    uint64_t epoch = atomic_load(&gate.epoch);
    int index = (int) (epoch & 1);
    atomic_fetch_add(&gate.inflight[index], 1);
    // Counted before the epoch moved on, or retry: a drain must see every op it has to wait for.
    if (atomic_load(&gate.epoch) != epoch) {
      gate_leave(index);
      continue;
    }
    if (atomic_load(&gate.frozen_count) > 0 && is_frozen(path)) {
      gate_leave(index);
      return -1;
    }
    return index;
  }
}

static uint64_t now_ns (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

static void account (op_stats_t *s, int res, uint64_t started) {
  uint64_t us = (now_ns() - started) / 1000;
  unsigned bucket = us == 0 ? 0 : 64 - __builtin_clzll(us);
  if (bucket >= LAT_BUCKETS) bucket = LAT_BUCKETS - 1;
  atomic_fetch_add_explicit(&s->ops, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&s->latency[bucket], 1, memory_order_relaxed);
  if (res < 0) atomic_fetch_add_explicit(&s->errors, 1, memory_order_relaxed);
  else atomic_fetch_add_explicit(&s->bytes, (uint64_t) res, memory_order_relaxed);
}

static dp_handle_t *handle_of (uint64_t fh) {
  if (!atomic_load_explicit(&enabled, memory_order_relaxed) || fh >= MAX_HANDLES) return NULL;
  return atomic_load_explicit(&handles[fh], memory_order_acquire);
}

// Bits [first, last] of a map, atomically: JS and other workers mark the same bytes.
static void set_bits (uint8_t *bits, uint64_t first, uint64_t last) {
  for (uint64_t byte = first >> 3; byte <= last >> 3; byte++) {
    unsigned lo = byte == first >> 3 ? (unsigned) (first & 7) : 0;
    unsigned hi = byte == last >> 3 ? (unsigned) (last & 7) : 7;
    uint8_t mask = (uint8_t) ((0xff >> lo) & (0xff << (7 - hi)));
    if (mask == 0xff) __atomic_store_n(&bits[byte], 0xff, __ATOMIC_RELAXED);
    else __atomic_fetch_or(&bits[byte], mask, __ATOMIC_RELAXED);
  }
}

static bool all_bits (const uint8_t *bits, size_t bytes, uint64_t first, uint64_t last) {
  if ((last >> 3) >= bytes) return false;
  for (uint64_t b = first; b <= last; b++) {
    if (!(__atomic_load_n(&bits[b >> 3], __ATOMIC_RELAXED) & (0x80 >> (b & 7)))) return false;
  }
  return true;
}

// Can this write be done here? Every installed map must hold its blocks, and
// every intent region must be vouched for; otherwise JS grows or logs first.
static bool write_stays_native (dp_file_t *f, off_t offset, size_t len) {
  if (atomic_load(&f->js_writes) > 0) return false;
  uint64_t last_block = ((uint64_t) offset + len - 1) >> block_shift;
  bool ok = true;
  pthread_rwlock_rdlock(&f->lock);
  for (int s = 0; s < MAX_SLOTS && ok; s++) {
    if (f->slots[s].bits != NULL && (last_block >> 3) >= f->slots[s].bytes) ok = false;
  }
  if (ok && f->intent_ok != NULL) {
    ok = all_bits(f->intent_ok, f->intent_bytes, (uint64_t) offset >> f->intent_shift,
                  ((uint64_t) offset + len - 1) >> f->intent_shift);
  }
  pthread_rwlock_unlock(&f->lock);
  return ok;
}

// Two writes of one block in flight at once may reach the source and a mirror
// in different orders. A write that starts while the file has a window counts
// itself here, on either data path; one that overlapped another in time is
// marked dirty in the window's map when it ends, so the copier copies the
// source's bytes again. Returns 0 when another write was already in flight.
static uint64_t order_begin (dp_file_t *f) {
  bool alone = atomic_fetch_add(&f->ordered_in_flight, 1) == 0;
  uint64_t seq = atomic_fetch_add(&f->ordered_seq, 1) + 1;
  return alone ? seq : 0;
}

// True when no other write started since order_begin gave seq.
static bool order_end (dp_file_t *f, uint64_t seq) {
  bool alone = seq != 0 && atomic_load(&f->ordered_seq) == seq;
  atomic_fetch_sub(&f->ordered_in_flight, 1);
  return alone;
}

static dp_window_t *window_of (dp_file_t *f) {
  return __atomic_load_n(&f->window, __ATOMIC_ACQUIRE);
}

// Marks every map but the one a mirror window decides for (skip: its slot, or -1); returns the window.
static dp_window_t *mark_maps (dp_file_t *f, off_t offset, size_t len, int only, int *window_slot) {
  uint64_t first = (uint64_t) offset >> block_shift;
  uint64_t last = ((uint64_t) offset + len - 1) >> block_shift;
  pthread_rwlock_rdlock(&f->lock);
  dp_window_t *w = only < 0 ? f->window : NULL;
  int skip = w != NULL ? f->window_slot : -1;
  for (int s = 0; s < MAX_SLOTS; s++) {
    slot_t *slot = &f->slots[s];
    if (s == skip || (only >= 0 && s != only)) continue;
    if (slot->bits != NULL && (last >> 3) < slot->bytes) set_bits(slot->bits, first, last);
  }
  *window_slot = skip;
  pthread_rwlock_unlock(&f->lock);
  return w;
}

enum { FATE_AHEAD, FATE_MARK, FATE_MIRROR };

// As CopyWindow.fateOf; for a mirror also waits until the in-flight chunks it overlaps are done, so the
// mirror lands after the copier's older bytes.
static int window_fate (dp_window_t *w, off_t offset, size_t len) {
  double from = (double) offset, end = (double) offset + (double) len;
  pthread_mutex_lock(&w->mu);
  if (w->planning || atomic_load(&w->error)) {
    pthread_mutex_unlock(&w->mu);
    return FATE_MARK;
  }
  size_t lo = 0, hi = w->count;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (w->start[mid] + w->len[mid] <= from) lo = mid + 1;
    else hi = mid;
  }
  double covered = 0, pending = 0;
  size_t waits[4];
  int nwaits = 0;
  bool too_many = false;
  for (size_t i = lo; i < w->count && w->start[i] < end; i++) {
    double a = w->start[i] > from ? w->start[i] : from;
    double b = w->start[i] + w->len[i] < end ? w->start[i] + w->len[i] : end;
    covered += b - a;
    if (w->state[i] == 0) pending += b - a;
    if (w->state[i] == 1) {
      if (nwaits < 4) waits[nwaits++] = i;
      else too_many = true;
    }
  }
  int fate = pending == 0 && !too_many ? FATE_MIRROR : pending == (double) len && covered == (double) len ? FATE_AHEAD : FATE_MARK;
  if (fate == FATE_MIRROR) {
    uint64_t gen = w->gen;
    for (int k = 0; k < nwaits; k++) {
      while (w->gen == gen && w->state[waits[k]] == 1) pthread_cond_wait(&w->changed, &w->mu);
    }
  }
  pthread_mutex_unlock(&w->mu);
  return fate;
}

static void mirror_write (dp_file_t *f, dp_window_t *w, int slot, const char *buf, size_t len, off_t offset) {
  uint64_t started = now_ns();
  int fate = window_fate(w, offset, len);
  int ignored;
  if (fate == FATE_MARK) mark_maps(f, offset, len, slot, &ignored);
  if (fate != FATE_MIRROR) return;
  for (size_t done = 0; done < len; ) {
    ssize_t n = pwrite(w->fd, buf + done, len - done, offset + (off_t) done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      // The guest's write reached the source: it does not fail. The migration aborts on this error.
      int expected = 0;
      atomic_compare_exchange_strong(&w->error, &expected, n < 0 ? errno : EIO);
      mark_maps(f, offset, len, slot, &ignored);
      return;
    }
    done += (size_t) n;
  }
  uint64_t us = (now_ns() - started) / 1000;
  uint64_t k = atomic_fetch_add_explicit(&w->sample_count, 1, memory_order_relaxed);
  atomic_store_explicit(&w->samples_us[k % WINDOW_SAMPLES], us > UINT32_MAX ? UINT32_MAX : (uint32_t) us, memory_order_relaxed);
  atomic_fetch_add_explicit(&w->ops, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&w->bytes, len, memory_order_relaxed);
  atomic_fetch_add_explicit(&mirror_ops, 1, memory_order_relaxed);
}

// Read-around: a read that misses the backing file's page cache first asks the
// kernel to fetch the aligned read_around bytes around it, as the kernel itself
// does for mmap faults and FUSE's readahead does for a page-cache mount. 0: off.
static _Atomic size_t read_around = 0;

int ferry_data_read (const char *path, char *buf, size_t len, off_t offset, uint64_t fh) {
  dp_handle_t *h = handle_of(fh);
  if (h == NULL) return FERRY_DATA_PASS;
  int index = gate_admit(path);
  if (index < 0) {
    atomic_fetch_add_explicit(&passed_ops, 1, memory_order_relaxed);
    return FERRY_DATA_PASS;
  }
  uint64_t started = now_ns();
  int fd = atomic_load(&h->fd);
  ssize_t n = -1;
  size_t around = atomic_load_explicit(&read_around, memory_order_relaxed);
  if (around > 0) {
    // RWF_NOWAIT reads only what is cached: EAGAIN means a miss.
    struct iovec iov = { buf, len };
    n = preadv2(fd, &iov, 1, offset, RWF_NOWAIT);
    if (n < 0 && errno == EAGAIN) posix_fadvise(fd, offset & ~((off_t) around - 1), (off_t) around, POSIX_FADV_WILLNEED);
    if (n >= 0 && (size_t) n < len) n = -1; // partly cached (or EOF): read it all the usual way
  }
  if (n < 0) do n = pread(fd, buf, len, offset); while (n < 0 && errno == EINTR);
  int res = n < 0 ? -errno : (int) n;
  account(&read_stats, res, started);
  gate_leave(index);
  return res;
}

int ferry_data_write (const char *path, const char *buf, size_t len, off_t offset, uint64_t fh) {
  dp_handle_t *h = handle_of(fh);
  if (h == NULL) return FERRY_DATA_PASS;
  int index = gate_admit(path);
  if (index >= 0 && len > 0 && h->file != NULL && !write_stays_native(h->file, offset, len)) {
    gate_leave(index);
    index = -1;
  }
  if (index < 0) {
    atomic_fetch_add_explicit(&passed_ops, 1, memory_order_relaxed);
    return FERRY_DATA_PASS;
  }
  uint64_t started = now_ns();
  dp_file_t *f = h->file;
  // Only a window open when the write started may get its mirror (a later one is only marked).
  dp_window_t *seen = f != NULL ? window_of(f) : NULL;
  uint64_t seq = seen != NULL ? order_begin(f) : 0;
  ssize_t n;
  do n = pwrite(atomic_load(&h->fd), buf, len, offset); while (n < 0 && errno == EINTR);
  int res = n < 0 ? -errno : (int) n;
  // Only after the backing write succeeded, and before the op leaves the gate.
  if (n > 0 && f != NULL) {
    int slot;
    dp_window_t *w = mark_maps(f, offset, (size_t) n, -1, &slot);
    // The window lives until the migration detached it and drained the gate, which waits for this op.
    if (w != NULL && w == seen) mirror_write(f, w, slot, buf, (size_t) n, offset);
    bool alone = seen == NULL || order_end(f, seq);
    int ignored;
    if (w != NULL && (w != seen || !alone)) mark_maps(f, offset, (size_t) n, slot, &ignored);
    atomic_fetch_add_explicit(&f->bytes_written, (uint64_t) n, memory_order_relaxed);
  } else if (seen != NULL) {
    order_end(f, seq);
  }
  account(&write_stats, res, started);
  gate_leave(index);
  return res;
}

// ---- JavaScript side (all on the JS thread) ----------------------------------

#define THROW(msg) do { napi_throw_error(env, "ERR_FERRY_DATA", msg); return NULL; } while (0)
#define ARGS(n) \
  napi_value argv[n]; size_t argc = n; \
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < n) THROW("ferry data: missing arguments");

static bool arg_int (napi_env env, napi_value v, int64_t min, int64_t max, int64_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok) return false;
  if (!(d >= (double) min && d <= (double) max) || d != (double) (int64_t) d) return false;
  *out = (int64_t) d;
  return true;
}

static dp_file_t *arg_file (napi_env env, napi_value v) {
  void *p = NULL;
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external) return NULL;
  napi_get_value_external(env, v, &p);
  return (dp_file_t *) p;
}

// null/undefined gives true with *bits = NULL.
static bool arg_map (napi_env env, napi_value v, uint8_t **bits, size_t *bytes) {
  napi_valuetype t;
  bool is_ab = false;
  *bits = NULL;
  *bytes = 0;
  if (napi_typeof(env, v, &t) != napi_ok) return false;
  if (t == napi_null || t == napi_undefined) return true;
  if (napi_is_arraybuffer(env, v, &is_ab) != napi_ok || !is_ab) return false;
  return napi_get_arraybuffer_info(env, v, (void **) bits, bytes) == napi_ok;
}

static napi_value undefined (napi_env env) {
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

static void set_number (napi_env env, napi_value obj, const char *key, double value) {
  napi_value v;
  napi_create_double(env, value, &v);
  napi_set_named_property(env, obj, key, v);
}

static void free_memory (napi_env env, void *data, void *hint) {
  free(data);
}

static void free_file (napi_env env, void *data, void *hint) {
  dp_file_t *f = (dp_file_t *) data;
  for (int s = 0; s < MAX_SLOTS; s++) if (f->slots[s].ref != NULL) napi_delete_reference(env, f->slots[s].ref);
  if (f->intent_ref != NULL) napi_delete_reference(env, f->intent_ref);
  pthread_rwlock_destroy(&f->lock);
  free(f);
}

// enable(blockSize): turns the data path on for handles registered from now on.
static napi_value dp_enable (napi_env env, napi_callback_info info) {
  ARGS(1)
  int64_t bs;
  if (!arg_int(env, argv[0], 4096, 1 << 30, &bs) || (bs & (bs - 1)) != 0) THROW("ferry data: block size must be a power of two");
  block_shift = (unsigned) __builtin_ctzll((uint64_t) bs);
  atomic_store(&enabled, 1);
  return undefined(env);
}

// Busy polling (patch 015). With one request in flight, the next one arrives
// a few microseconds after our reply, and a worker asleep in read(2) takes a
// cross-CPU wakeup to get it: a large part of a 4 KiB write's round trip. So a
// worker that has just answered a request in less than the window watches the
// device (poll(2), no timeout) for up to the window before it sleeps. After a
// longer request (a disk read, an op answered in JS) the wakeup is a small part
// of the next round trip, and a busy CPU would only slow the storage under us
// (on a VM, a spinning vCPU slowed the virtual disk's random reads by ~20%).
// One worker polls at a time. After a poll in vain, the next 1, 3, 7 ... 63
// chances are let go, so sparse requests cost the CPU little.
static _Atomic long poll_ns = 0;
static atomic_int polling = 0;
static int poll_misses = 0, poll_skip = 0; // only the polling worker touches these
static _Atomic uint64_t poll_caught, poll_vain;

static long ns_since (const struct timespec *t0) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (now.tv_sec - t0->tv_sec) * 1000000000L + (now.tv_nsec - t0->tv_nsec);
}

void ferry_data_poll (int fd, long served_ns) {
  long window = atomic_load_explicit(&poll_ns, memory_order_relaxed);
  if (window == 0 || served_ns >= window || atomic_exchange(&polling, 1) != 0) return;
  if (poll_skip > 0) {
    poll_skip--;
  } else {
    struct pollfd p = { .fd = fd, .events = POLLIN };
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int ready;
    while ((ready = poll(&p, 1, 0)) == 0 && ns_since(&t0) < window) {}
    if (ready != 0) {
      poll_misses = 0;
      atomic_fetch_add_explicit(&poll_caught, 1, memory_order_relaxed);
    } else {
      if (poll_misses < 6) poll_misses++;
      poll_skip = (1 << poll_misses) - 1;
      atomic_fetch_add_explicit(&poll_vain, 1, memory_order_relaxed);
    }
  }
  atomic_store(&polling, 0);
}

// readAround(bytes): 0, or a power of two from 4 KiB to 16 MiB.
static napi_value dp_read_around (napi_env env, napi_callback_info info) {
  ARGS(1)
  int64_t bytes;
  if (!arg_int(env, argv[0], 0, 16 << 20, &bytes) || (bytes != 0 && (bytes < 4096 || (bytes & (bytes - 1)) != 0))) {
    THROW("ferry data: read-around must be 0 or a power of two from 4 KiB to 16 MiB");
  }
  atomic_store(&read_around, (size_t) bytes);
  return undefined(env);
}

// busyPoll(ns): 0 (off) up to 1 ms.
static napi_value dp_busy_poll (napi_env env, napi_callback_info info) {
  ARGS(1)
  int64_t ns;
  if (!arg_int(env, argv[0], 0, 1000000, &ns)) THROW("ferry data: busy poll must be 0 to 1 ms");
  atomic_store(&poll_ns, (long) ns);
  return undefined(env);
}

// newMap(bytes): zeroed memory for a bitmap, as an ArrayBuffer C never moves or frees while installed.
static napi_value dp_new_map (napi_env env, napi_callback_info info) {
  ARGS(1)
  int64_t bytes;
  if (!arg_int(env, argv[0], 8, (int64_t) 1 << 32, &bytes) || bytes % 8 != 0) THROW("ferry data: map size must be a multiple of 8 bytes");
  void *mem = calloc(1, (size_t) bytes);
  if (mem == NULL) THROW("ferry data: out of memory");
  napi_value ab;
  if (napi_create_external_arraybuffer(env, mem, (size_t) bytes, free_memory, NULL, &ab) != napi_ok) {
    free(mem);
    THROW("ferry data: cannot create the map");
  }
  return ab;
}

static napi_value dp_new_file (napi_env env, napi_callback_info info) {
  dp_file_t *f = calloc(1, sizeof(dp_file_t));
  if (f == NULL) THROW("ferry data: out of memory");
  pthread_rwlockattr_t attr;
  pthread_rwlockattr_init(&attr);
  // A swap must not starve behind a stream of markers.
  pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&f->lock, &attr);
  pthread_rwlockattr_destroy(&attr);
  napi_value ext;
  if (napi_create_external(env, f, free_file, NULL, &ext) != napi_ok) {
    pthread_rwlock_destroy(&f->lock);
    free(f);
    THROW("ferry data: cannot create the file");
  }
  return ext;
}

// install(file, slot, map | null, merge): puts `map` in the slot. Once this
// returns no worker touches the previous map: its bits are final. With merge,
// the previous map's bits are ORed into the new one first (growing a map).
static napi_value dp_install (napi_env env, napi_callback_info info) {
  ARGS(4)
  dp_file_t *f = arg_file(env, argv[0]);
  int64_t slot;
  uint8_t *bits;
  size_t bytes;
  bool merge = false;
  if (f == NULL || !arg_int(env, argv[1], 0, MAX_SLOTS - 1, &slot) || !arg_map(env, argv[2], &bits, &bytes) ||
      napi_get_value_bool(env, argv[3], &merge) != napi_ok) THROW("ferry data: install(file, slot, map, merge)");
  napi_ref ref = NULL;
  if (bits != NULL && napi_create_reference(env, argv[2], 1, &ref) != napi_ok) THROW("ferry data: cannot reference the map");
  slot_t *s = &f->slots[slot];
  pthread_rwlock_wrlock(&f->lock);
  napi_ref old = s->ref;
  if (merge && bits != NULL && s->bits != NULL) {
    size_t n = s->bytes < bytes ? s->bytes : bytes;
    for (size_t i = 0; i < n; i++) bits[i] |= s->bits[i];
  }
  s->bits = bits;
  s->bytes = bytes;
  s->ref = ref;
  pthread_rwlock_unlock(&f->lock);
  if (old != NULL) napi_delete_reference(env, old);
  return undefined(env);
}

// mark(file, slot, offset, length) -> false when the map is too small (grow, then mark again).
static napi_value dp_mark (napi_env env, napi_callback_info info) {
  ARGS(4)
  dp_file_t *f = arg_file(env, argv[0]);
  int64_t slot, offset, length;
  if (f == NULL || !arg_int(env, argv[1], 0, MAX_SLOTS - 1, &slot) || !arg_int(env, argv[2], 0, INT64_MAX >> 1, &offset) ||
      !arg_int(env, argv[3], 1, INT64_MAX >> 1, &length)) THROW("ferry data: mark(file, slot, offset, length)");
  uint64_t first = (uint64_t) offset >> block_shift;
  uint64_t last = ((uint64_t) offset + (uint64_t) length - 1) >> block_shift;
  bool fits;
  pthread_rwlock_rdlock(&f->lock);
  slot_t *s = &f->slots[slot];
  fits = s->bits != NULL && (last >> 3) < s->bytes;
  if (fits) set_bits(s->bits, first, last);
  pthread_rwlock_unlock(&f->lock);
  napi_value r;
  napi_get_boolean(env, fits, &r);
  return r;
}

// clearFrom(file, slot, firstBlock): forgets blocks from firstBlock on (a truncate).
static napi_value dp_clear_from (napi_env env, napi_callback_info info) {
  ARGS(3)
  dp_file_t *f = arg_file(env, argv[0]);
  int64_t slot, first;
  if (f == NULL || !arg_int(env, argv[1], 0, MAX_SLOTS - 1, &slot) || !arg_int(env, argv[2], 0, INT64_MAX >> 1, &first)) {
    THROW("ferry data: clearFrom(file, slot, firstBlock)");
  }
  pthread_rwlock_rdlock(&f->lock);
  slot_t *s = &f->slots[slot];
  for (uint64_t b = (uint64_t) first; s->bits != NULL && (b >> 3) < s->bytes; ) {
    if ((b & 7) == 0) {
      __atomic_store_n(&s->bits[b >> 3], 0, __ATOMIC_RELAXED);
      b += 8;
    } else {
      __atomic_fetch_and(&s->bits[b >> 3], (uint8_t) ~(0x80 >> (b & 7)), __ATOMIC_RELAXED);
      b++;
    }
  }
  pthread_rwlock_unlock(&f->lock);
  return undefined(env);
}

// jsWrites(file, delta): while positive, every write to the file goes to JS.
static napi_value dp_js_writes (napi_env env, napi_callback_info info) {
  ARGS(2)
  dp_file_t *f = arg_file(env, argv[0]);
  int64_t delta;
  if (f == NULL || !arg_int(env, argv[1], -1, 1, &delta)) THROW("ferry data: jsWrites(file, +1 | -1)");
  atomic_fetch_add(&f->js_writes, (uint32_t) delta);
  return undefined(env);
}

// intent(file, map | null, regionShift): the regions JS vouches for; null: no intent log.
static napi_value dp_intent (napi_env env, napi_callback_info info) {
  ARGS(3)
  dp_file_t *f = arg_file(env, argv[0]);
  uint8_t *bits;
  size_t bytes;
  int64_t shift;
  if (f == NULL || !arg_map(env, argv[1], &bits, &bytes) || !arg_int(env, argv[2], 12, 40, &shift)) {
    THROW("ferry data: intent(file, map, regionShift)");
  }
  napi_ref ref = NULL;
  if (bits != NULL && napi_create_reference(env, argv[1], 1, &ref) != napi_ok) THROW("ferry data: cannot reference the map");
  pthread_rwlock_wrlock(&f->lock);
  napi_ref old = f->intent_ref;
  f->intent_ok = bits;
  f->intent_bytes = bytes;
  f->intent_shift = (unsigned) shift;
  f->intent_ref = ref;
  pthread_rwlock_unlock(&f->lock);
  if (old != NULL) napi_delete_reference(env, old);
  return undefined(env);
}

static napi_value dp_bytes_written (napi_env env, napi_callback_info info) {
  ARGS(1)
  dp_file_t *f = arg_file(env, argv[0]);
  if (f == NULL) THROW("ferry data: bytesWritten(file)");
  napi_value r;
  napi_create_double(env, (double) atomic_load_explicit(&f->bytes_written, memory_order_relaxed), &r);
  return r;
}

// orderBegin(file) -> seq, orderEnd(file, seq) -> alone: a JS-path write of a windowed file takes part in
// the ordering of the file's writes (see order_begin).
static napi_value dp_order_begin (napi_env env, napi_callback_info info) {
  ARGS(1)
  dp_file_t *f = arg_file(env, argv[0]);
  if (f == NULL) THROW("ferry data: orderBegin(file)");
  napi_value r;
  napi_create_double(env, (double) order_begin(f), &r);
  return r;
}

static napi_value dp_order_end (napi_env env, napi_callback_info info) {
  ARGS(2)
  dp_file_t *f = arg_file(env, argv[0]);
  double seq;
  if (f == NULL || napi_get_value_double(env, argv[1], &seq) != napi_ok) THROW("ferry data: orderEnd(file, seq)");
  napi_value r;
  napi_get_boolean(env, order_end(f, (uint64_t) seq), &r);
  return r;
}

// open(fh, fd, file | null) -> false when fh is out of range (the handle stays on the JS path).
static napi_value dp_open (napi_env env, napi_callback_info info) {
  ARGS(3)
  int64_t fh, fd;
  if (!arg_int(env, argv[0], 0, UINT32_MAX, &fh) || !arg_int(env, argv[1], 0, INT32_MAX, &fd)) THROW("ferry data: open(fh, fd, file)");
  dp_file_t *f = arg_file(env, argv[2]);
  napi_value r;
  if (fh >= MAX_HANDLES) {
    napi_get_boolean(env, false, &r);
    return r;
  }
  dp_handle_t *h = calloc(1, sizeof(dp_handle_t));
  if (h == NULL) THROW("ferry data: out of memory");
  atomic_store(&h->fd, (int) fd);
  h->file = f;
  dp_handle_t *old = atomic_exchange(&handles[fh], h);
  free(old); // a release JS never saw: nothing can use it any more
  napi_get_boolean(env, true, &r);
  return r;
}

// move(fh, fd): the handle's backing fd becomes fd (switchover, with the path frozen and drained).
static napi_value dp_move (napi_env env, napi_callback_info info) {
  ARGS(2)
  int64_t fh, fd;
  if (!arg_int(env, argv[0], 0, UINT32_MAX, &fh) || !arg_int(env, argv[1], 0, INT32_MAX, &fd)) THROW("ferry data: move(fh, fd)");
  if (fh < MAX_HANDLES) {
    dp_handle_t *h = atomic_load(&handles[fh]);
    if (h != NULL) atomic_store(&h->fd, (int) fd);
  }
  return undefined(env);
}

// close(fh): at release, when the kernel sends no more ops for fh.
static napi_value dp_close (napi_env env, napi_callback_info info) {
  ARGS(1)
  int64_t fh;
  if (!arg_int(env, argv[0], 0, UINT32_MAX, &fh)) THROW("ferry data: close(fh)");
  if (fh < MAX_HANDLES) free(atomic_exchange(&handles[fh], NULL));
  return undefined(env);
}

static napi_value dp_freeze (napi_env env, napi_callback_info info) {
  ARGS(1)
  size_t len;
  if (napi_get_value_string_utf8(env, argv[0], NULL, 0, &len) != napi_ok) THROW("ferry data: freeze(prefix)");
  char *prefix = malloc(len + 1);
  if (prefix == NULL) THROW("ferry data: out of memory");
  napi_get_value_string_utf8(env, argv[0], prefix, len + 1, &len);
  pthread_mutex_lock(&gate.mu);
  int i = 0;
  while (i < MAX_FROZEN && gate.frozen[i] != NULL) i++;
  if (i < MAX_FROZEN) gate.frozen[i] = prefix;
  pthread_mutex_unlock(&gate.mu);
  if (i == MAX_FROZEN) {
    free(prefix);
    THROW("ferry data: too many frozen subtrees");
  }
  atomic_fetch_add(&gate.frozen_count, 1);
  return undefined(env);
}

static napi_value dp_thaw (napi_env env, napi_callback_info info) {
  ARGS(1)
  char prefix[4096];
  size_t len;
  if (napi_get_value_string_utf8(env, argv[0], prefix, sizeof(prefix), &len) != napi_ok) THROW("ferry data: thaw(prefix)");
  bool found = false;
  pthread_mutex_lock(&gate.mu);
  for (int i = 0; i < MAX_FROZEN && !found; i++) {
    if (gate.frozen[i] != NULL && strcmp(gate.frozen[i], prefix) == 0) {
      free(gate.frozen[i]);
      gate.frozen[i] = NULL;
      found = true;
    }
  }
  pthread_mutex_unlock(&gate.mu);
  if (found) atomic_fetch_sub(&gate.frozen_count, 1);
  return undefined(env);
}

static dp_window_t *arg_window (napi_env env, napi_value v) {
  void *p = NULL;
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external) return NULL;
  napi_get_value_external(env, v, &p);
  return (dp_window_t *) p;
}

static void free_window (napi_env env, void *data, void *hint) {
  dp_window_t *w = (dp_window_t *) data;
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->changed);
  free(w->start);
  free(w->len);
  free(w->state);
  free(w);
}

// windowNew(fd): a copy window writing mirrors to fd (owned by JS, closed only after detach and a drain).
static napi_value dp_window_new (napi_env env, napi_callback_info info) {
  ARGS(1)
  int64_t fd;
  if (!arg_int(env, argv[0], 0, INT32_MAX, &fd)) THROW("ferry data: windowNew(fd)");
  dp_window_t *w = calloc(1, sizeof(dp_window_t));
  if (w == NULL) THROW("ferry data: out of memory");
  w->fd = (int) fd;
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->changed, NULL);
  napi_value ext;
  if (napi_create_external(env, w, free_window, NULL, &ext) != napi_ok) {
    free_window(env, w, NULL);
    THROW("ferry data: cannot create the window");
  }
  return ext;
}

// windowAttach(file, window | null, slot): the window decides for the map in `slot` (null: detach).
static napi_value dp_window_attach (napi_env env, napi_callback_info info) {
  ARGS(3)
  dp_file_t *f = arg_file(env, argv[0]);
  napi_valuetype t;
  napi_typeof(env, argv[1], &t);
  dp_window_t *w = t == napi_null ? NULL : arg_window(env, argv[1]);
  int64_t slot;
  if (f == NULL || (t != napi_null && w == NULL) || !arg_int(env, argv[2], 0, MAX_SLOTS - 1, &slot)) THROW("ferry data: windowAttach(file, window, slot)");
  pthread_rwlock_wrlock(&f->lock);
  __atomic_store_n(&f->window, w, __ATOMIC_RELEASE);
  f->window_slot = (int) slot;
  pthread_rwlock_unlock(&f->lock);
  return undefined(env);
}

// windowPlan(window, starts | null, lengths): null starts planning (every write is copied again later);
// arrays (Float64Array) install the chunks of the copy about to run, all pending.
static napi_value dp_window_plan (napi_env env, napi_callback_info info) {
  ARGS(3)
  dp_window_t *w = arg_window(env, argv[0]);
  if (w == NULL) THROW("ferry data: windowPlan(window, starts, lengths)");
  napi_valuetype t;
  napi_typeof(env, argv[1], &t);
  double *start = NULL, *len = NULL;
  uint8_t *state = NULL;
  size_t count = 0;
  if (t != napi_null) {
    napi_typedarray_type ta, tb;
    size_t na, nb;
    void *da, *db;
    if (napi_get_typedarray_info(env, argv[1], &ta, &na, &da, NULL, NULL) != napi_ok ||
        napi_get_typedarray_info(env, argv[2], &tb, &nb, &db, NULL, NULL) != napi_ok ||
        ta != napi_float64_array || tb != napi_float64_array || na != nb) THROW("ferry data: windowPlan needs two Float64Arrays of one length");
    count = na;
    start = malloc((count ? count : 1) * sizeof(double));
    len = malloc((count ? count : 1) * sizeof(double));
    state = calloc(count ? count : 1, 1);
    if (start == NULL || len == NULL || state == NULL) {
      free(start);
      free(len);
      free(state);
      THROW("ferry data: out of memory");
    }
    memcpy(start, da, count * sizeof(double));
    memcpy(len, db, count * sizeof(double));
  }
  pthread_mutex_lock(&w->mu);
  double *old_start = w->start, *old_len = w->len;
  uint8_t *old_state = w->state;
  if (t == napi_null) {
    w->planning = 1;
  } else {
    w->start = start;
    w->len = len;
    w->state = state;
    w->count = count;
    w->planning = 0;
    w->gen++;
    pthread_cond_broadcast(&w->changed);
  }
  pthread_mutex_unlock(&w->mu);
  if (t != napi_null) {
    free(old_start);
    free(old_len);
    free(old_state);
  }
  return undefined(env);
}

// windowState(window, index, 1 | 2): a chunk is in flight (before the copier reads it), or done.
static napi_value dp_window_state (napi_env env, napi_callback_info info) {
  ARGS(3)
  dp_window_t *w = arg_window(env, argv[0]);
  int64_t index, state;
  if (w == NULL || !arg_int(env, argv[1], 0, INT64_MAX >> 1, &index) || !arg_int(env, argv[2], 1, 2, &state)) THROW("ferry data: windowState(window, index, state)");
  pthread_mutex_lock(&w->mu);
  if ((size_t) index < w->count) w->state[index] = (uint8_t) state;
  if (state == 2) pthread_cond_broadcast(&w->changed);
  pthread_mutex_unlock(&w->mu);
  return undefined(env);
}

// windowStats(window) -> { ops, bytes, error, samplesUs }: mirrors written here (latest 1024 latencies).
static napi_value dp_window_stats (napi_env env, napi_callback_info info) {
  ARGS(1)
  dp_window_t *w = arg_window(env, argv[0]);
  if (w == NULL) THROW("ferry data: windowStats(window)");
  napi_value obj, samples;
  napi_create_object(env, &obj);
  set_number(env, obj, "ops", (double) atomic_load(&w->ops));
  set_number(env, obj, "bytes", (double) atomic_load(&w->bytes));
  set_number(env, obj, "error", (double) atomic_load(&w->error));
  uint64_t n = atomic_load(&w->sample_count);
  if (n > WINDOW_SAMPLES) n = WINDOW_SAMPLES;
  napi_create_array_with_length(env, n, &samples);
  for (uint32_t i = 0; i < n; i++) {
    napi_value v;
    napi_create_double(env, (double) atomic_load(&w->samples_us[i]), &v);
    napi_set_element(env, samples, i, v);
  }
  napi_set_named_property(env, obj, "samplesUs", samples);
  return obj;
}

typedef struct {
  napi_async_work work;
  napi_ref cb;
} drain_req_t;

static void drain_exec (napi_env env, void *data) {
  pthread_mutex_lock(&gate.drain_mu);
  uint64_t old = atomic_fetch_add(&gate.epoch, 1);
  atomic_store(&gate.draining, 1);
  pthread_mutex_lock(&gate.mu);
  while (atomic_load(&gate.inflight[old & 1]) != 0) pthread_cond_wait(&gate.drained, &gate.mu);
  pthread_mutex_unlock(&gate.mu);
  atomic_store(&gate.draining, 0);
  pthread_mutex_unlock(&gate.drain_mu);
}

static void drain_done (napi_env env, napi_status status, void *data) {
  drain_req_t *r = (drain_req_t *) data;
  napi_value cb, recv;
  napi_get_reference_value(env, r->cb, &cb);
  napi_get_undefined(env, &recv);
  napi_delete_reference(env, r->cb);
  napi_delete_async_work(env, r->work);
  free(r);
  napi_call_function(env, recv, cb, 0, NULL, NULL);
}

// drain(cb): cb() once every op admitted before the call has left (on the threadpool: never blocks JS).
static napi_value dp_drain (napi_env env, napi_callback_info info) {
  ARGS(1)
  drain_req_t *r = calloc(1, sizeof(drain_req_t));
  if (r == NULL) THROW("ferry data: out of memory");
  napi_value name;
  napi_create_string_utf8(env, "ferry.data.drain", NAPI_AUTO_LENGTH, &name);
  if (napi_create_reference(env, argv[0], 1, &r->cb) != napi_ok ||
      napi_create_async_work(env, NULL, name, drain_exec, drain_done, r, &r->work) != napi_ok ||
      napi_queue_async_work(env, r->work) != napi_ok) {
    free(r);
    THROW("ferry data: cannot queue the drain");
  }
  return undefined(env);
}

static void set_op_stats (napi_env env, napi_value obj, const char *prefix, op_stats_t *s) {
  char key[64];
  napi_value hist;
  snprintf(key, sizeof(key), "%sOps", prefix);
  set_number(env, obj, key, (double) atomic_load(&s->ops));
  snprintf(key, sizeof(key), "%sBytes", prefix);
  set_number(env, obj, key, (double) atomic_load(&s->bytes));
  snprintf(key, sizeof(key), "%sErrors", prefix);
  set_number(env, obj, key, (double) atomic_load(&s->errors));
  napi_create_array_with_length(env, LAT_BUCKETS, &hist);
  for (uint32_t b = 0; b < LAT_BUCKETS; b++) {
    napi_value v;
    napi_create_double(env, (double) atomic_load(&s->latency[b]), &v);
    napi_set_element(env, hist, b, v);
  }
  snprintf(key, sizeof(key), "%sLatencyLog2Us", prefix);
  napi_set_named_property(env, obj, key, hist);
}

static napi_value dp_stats (napi_env env, napi_callback_info info) {
  napi_value obj;
  napi_create_object(env, &obj);
  set_op_stats(env, obj, "read", &read_stats);
  set_op_stats(env, obj, "write", &write_stats);
  set_number(env, obj, "passedOps", (double) atomic_load(&passed_ops));
  set_number(env, obj, "mirrorOps", (double) atomic_load(&mirror_ops));
  set_number(env, obj, "pollCaught", (double) atomic_load(&poll_caught));
  set_number(env, obj, "pollVain", (double) atomic_load(&poll_vain));
  set_number(env, obj, "inflight", (double) (atomic_load(&gate.inflight[0]) + atomic_load(&gate.inflight[1])));
  return obj;
}

void ferry_data_export (napi_env env, napi_value exports) {
  static const struct { const char *name; napi_callback fn; } methods[] = {
    { "enable", dp_enable }, { "readAround", dp_read_around }, { "busyPoll", dp_busy_poll }, { "newMap", dp_new_map }, { "newFile", dp_new_file }, { "install", dp_install },
    { "mark", dp_mark }, { "clearFrom", dp_clear_from }, { "jsWrites", dp_js_writes }, { "intent", dp_intent },
    { "bytesWritten", dp_bytes_written }, { "orderBegin", dp_order_begin }, { "orderEnd", dp_order_end }, { "open", dp_open }, { "move", dp_move }, { "close", dp_close },
    { "freeze", dp_freeze }, { "thaw", dp_thaw }, { "drain", dp_drain }, { "stats", dp_stats },
    { "windowNew", dp_window_new }, { "windowAttach", dp_window_attach }, { "windowPlan", dp_window_plan },
    { "windowState", dp_window_state }, { "windowStats", dp_window_stats },
  };
  napi_value data;
  napi_create_object(env, &data);
  for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
    napi_value fn;
    napi_create_function(env, methods[i].name, NAPI_AUTO_LENGTH, methods[i].fn, NULL, &fn);
    napi_set_named_property(env, data, methods[i].name, fn);
  }
  set_number(env, data, "MAX_SLOTS", MAX_SLOTS);
  set_number(env, data, "MAX_HANDLES", MAX_HANDLES);
  napi_set_named_property(env, exports, "ferry_data", data);
}
