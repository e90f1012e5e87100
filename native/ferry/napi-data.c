// Fuse.data's N-API glue: argument checks, and the lifetimes of what JS and C share (maps lent to JS as
// external ArrayBuffers, files and windows as externals, napi references that keep installed maps alive).
// Everything here runs on the JS thread, except drain's work, which waits for the gate on the threadpool.
// The work itself is in data.c, maps.c, gate.c, window.c, busy-poll.c.
#include "napi-glue.h"
#include "data.h"
#include "loop.h"
#include "window.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static void *arg_external (napi_env env, napi_value v) {
  void *p = NULL;
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external) return NULL;
  napi_get_value_external(env, v, &p);
  return p;
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

static napi_value boolean (napi_env env, bool b) {
  napi_value r;
  napi_get_boolean(env, b, &r);
  return r;
}

static void set_number (napi_env env, napi_value obj, const char *key, double value) {
  napi_value v;
  napi_create_double(env, value, &v);
  napi_set_named_property(env, obj, key, v);
}

static void free_memory (napi_env env, void *data, void *hint) {
  (void) env;
  (void) hint;
  free(data);
}

static void free_file (napi_env env, void *data, void *hint) {
  (void) hint;
  ferry_file_t *f = (ferry_file_t *) data;
  for (int s = 0; s < FERRY_MAX_SLOTS; s++) if (f->slots[s].owner != NULL) napi_delete_reference(env, (napi_ref) f->slots[s].owner);
  if (f->intent_owner != NULL) napi_delete_reference(env, (napi_ref) f->intent_owner);
  ferry_file_destroy(f);
  free(f);
}

// enable(blockSize): turns the data path on for handles registered from now on.
static napi_value dp_enable (napi_env env, napi_callback_info info) {
  ARGS(1)
  int64_t bs;
  if (!arg_int(env, argv[0], 4096, 1 << 30, &bs) || (bs & (bs - 1)) != 0) THROW("ferry data: block size must be a power of two");
  ferry_data_enable((unsigned) __builtin_ctzll((uint64_t) bs));
  return undefined(env);
}

// readAround(bytes): 0, or a power of two from 4 KiB to 16 MiB.
static napi_value dp_read_around (napi_env env, napi_callback_info info) {
  ARGS(1)
  int64_t bytes;
  if (!arg_int(env, argv[0], 0, 16 << 20, &bytes) || (bytes != 0 && (bytes < 4096 || (bytes & (bytes - 1)) != 0))) {
    THROW("ferry data: read-around must be 0 or a power of two from 4 KiB to 16 MiB");
  }
  ferry_data_read_around((size_t) bytes);
  return undefined(env);
}

// busyPoll(ns): 0 (off) up to 1 ms.
static napi_value dp_busy_poll (napi_env env, napi_callback_info info) {
  ARGS(1)
  int64_t ns;
  if (!arg_int(env, argv[0], 0, 1000000, &ns)) THROW("ferry data: busy poll must be 0 to 1 ms");
  atomic_store(&ferry_poller.window_ns, (long) ns);
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
  (void) info;
  ferry_file_t *f = malloc(sizeof(ferry_file_t));
  if (f == NULL) THROW("ferry data: out of memory");
  if (ferry_file_init(f) != 0) {
    free(f);
    THROW("ferry data: cannot create the file");
  }
  napi_value ext;
  if (napi_create_external(env, f, free_file, NULL, &ext) != napi_ok) {
    ferry_file_destroy(f);
    free(f);
    THROW("ferry data: cannot create the file");
  }
  return ext;
}

// install(file, slot, map | null, merge): see ferry_file_install. The napi reference keeps an installed map's
// ArrayBuffer (and so its memory) alive; the previous map's is dropped after the swap.
static napi_value dp_install (napi_env env, napi_callback_info info) {
  ARGS(4)
  ferry_file_t *f = arg_external(env, argv[0]);
  int64_t slot;
  uint8_t *bits;
  size_t bytes;
  bool merge = false;
  if (f == NULL || !arg_int(env, argv[1], 0, FERRY_MAX_SLOTS - 1, &slot) || !arg_map(env, argv[2], &bits, &bytes) ||
      napi_get_value_bool(env, argv[3], &merge) != napi_ok) THROW("ferry data: install(file, slot, map, merge)");
  napi_ref ref = NULL;
  if (bits != NULL && napi_create_reference(env, argv[2], 1, &ref) != napi_ok) THROW("ferry data: cannot reference the map");
  napi_ref old = ferry_file_install(f, (int) slot, bits, bytes, ref, merge);
  if (old != NULL) napi_delete_reference(env, old);
  return undefined(env);
}

// mark(file, slot, offset, length) -> false when the map is too small (grow, then mark again).
static napi_value dp_mark (napi_env env, napi_callback_info info) {
  ARGS(4)
  ferry_file_t *f = arg_external(env, argv[0]);
  int64_t slot, offset, length;
  if (f == NULL || !arg_int(env, argv[1], 0, FERRY_MAX_SLOTS - 1, &slot) || !arg_int(env, argv[2], 0, INT64_MAX >> 1, &offset) ||
      !arg_int(env, argv[3], 1, INT64_MAX >> 1, &length)) THROW("ferry data: mark(file, slot, offset, length)");
  unsigned shift = ferry_data_block_shift();
  uint64_t first = (uint64_t) offset >> shift;
  uint64_t last = ((uint64_t) offset + (uint64_t) length - 1) >> shift;
  return boolean(env, ferry_file_mark(f, (int) slot, first, last));
}

// clearFrom(file, slot, firstBlock): forgets blocks from firstBlock on (a truncate).
static napi_value dp_clear_from (napi_env env, napi_callback_info info) {
  ARGS(3)
  ferry_file_t *f = arg_external(env, argv[0]);
  int64_t slot, first;
  if (f == NULL || !arg_int(env, argv[1], 0, FERRY_MAX_SLOTS - 1, &slot) || !arg_int(env, argv[2], 0, INT64_MAX >> 1, &first)) {
    THROW("ferry data: clearFrom(file, slot, firstBlock)");
  }
  ferry_file_clear_from(f, (int) slot, (uint64_t) first);
  return undefined(env);
}

// jsWrites(file, delta): while positive, every write to the file goes to JS.
static napi_value dp_js_writes (napi_env env, napi_callback_info info) {
  ARGS(2)
  ferry_file_t *f = arg_external(env, argv[0]);
  int64_t delta;
  if (f == NULL || !arg_int(env, argv[1], -1, 1, &delta)) THROW("ferry data: jsWrites(file, +1 | -1)");
  atomic_fetch_add(&f->js_writes, (uint32_t) delta);
  return undefined(env);
}

// intent(file, map | null, regionShift): the regions JS vouches for; null: no intent log.
static napi_value dp_intent (napi_env env, napi_callback_info info) {
  ARGS(3)
  ferry_file_t *f = arg_external(env, argv[0]);
  uint8_t *bits;
  size_t bytes;
  int64_t shift;
  if (f == NULL || !arg_map(env, argv[1], &bits, &bytes) || !arg_int(env, argv[2], 12, 40, &shift)) {
    THROW("ferry data: intent(file, map, regionShift)");
  }
  napi_ref ref = NULL;
  if (bits != NULL && napi_create_reference(env, argv[1], 1, &ref) != napi_ok) THROW("ferry data: cannot reference the map");
  napi_ref old = ferry_file_intent(f, bits, bytes, (unsigned) shift, ref);
  if (old != NULL) napi_delete_reference(env, old);
  return undefined(env);
}

static napi_value dp_bytes_written (napi_env env, napi_callback_info info) {
  ARGS(1)
  ferry_file_t *f = arg_external(env, argv[0]);
  if (f == NULL) THROW("ferry data: bytesWritten(file)");
  napi_value r;
  napi_create_double(env, (double) atomic_load_explicit(&f->bytes_written, memory_order_relaxed), &r);
  return r;
}

// orderBegin(file) -> seq, orderEnd(file, seq) -> alone: a JS-path write of a windowed file takes part in
// the ordering of the file's writes (see ferry_order_begin).
static napi_value dp_order_begin (napi_env env, napi_callback_info info) {
  ARGS(1)
  ferry_file_t *f = arg_external(env, argv[0]);
  if (f == NULL) THROW("ferry data: orderBegin(file)");
  napi_value r;
  napi_create_double(env, (double) ferry_order_begin(f), &r);
  return r;
}

static napi_value dp_order_end (napi_env env, napi_callback_info info) {
  ARGS(2)
  ferry_file_t *f = arg_external(env, argv[0]);
  double seq;
  if (f == NULL || napi_get_value_double(env, argv[1], &seq) != napi_ok) THROW("ferry data: orderEnd(file, seq)");
  return boolean(env, ferry_order_end(f, (uint64_t) seq));
}

// open(fh, fd, directFd, file | null, unprivileged, use) -> false when fh is out of range (the handle stays on the
// JS path). directFd: -1, or the file opened with O_DIRECT. use: 0, 1 or 2, data.h's FERRY_USE_*.
static napi_value dp_open (napi_env env, napi_callback_info info) {
  ARGS(6)
  int64_t fh, fd, direct_fd;
  int64_t use;
  bool unprivileged;
  if (!arg_int(env, argv[0], 0, UINT32_MAX, &fh) || !arg_int(env, argv[1], 0, INT32_MAX, &fd) ||
      !arg_int(env, argv[2], -1, INT32_MAX, &direct_fd) ||
      napi_get_value_bool(env, argv[4], &unprivileged) != napi_ok ||
      !arg_int(env, argv[5], FERRY_USE_SHARED, FERRY_USE_DIRECT, &use)) THROW("ferry data: open(fh, fd, directFd, file, unprivileged, use)");
  ferry_file_t *f = arg_external(env, argv[3]);
  if (fh >= FERRY_MAX_HANDLES) return boolean(env, false);
  if (ferry_data_open((uint32_t) fh, (int) fd, (int) direct_fd, (int) use, f, unprivileged) != 0) THROW("ferry data: out of memory");
  return boolean(env, true);
}

// move(fh, fd, directFd): the handle's backing fds become these (switchover, with the path frozen and drained).
static napi_value dp_move (napi_env env, napi_callback_info info) {
  ARGS(3)
  int64_t fh, fd, direct_fd;
  if (!arg_int(env, argv[0], 0, UINT32_MAX, &fh) || !arg_int(env, argv[1], 0, INT32_MAX, &fd) ||
      !arg_int(env, argv[2], -1, INT32_MAX, &direct_fd)) THROW("ferry data: move(fh, fd, directFd)");
  if (fh < FERRY_MAX_HANDLES) ferry_data_move((uint32_t) fh, (int) fd, (int) direct_fd);
  return undefined(env);
}

// close(fh): at release, when the kernel sends no more ops for fh.
static napi_value dp_close (napi_env env, napi_callback_info info) {
  ARGS(1)
  int64_t fh;
  if (!arg_int(env, argv[0], 0, UINT32_MAX, &fh)) THROW("ferry data: close(fh)");
  if (fh < FERRY_MAX_HANDLES) ferry_data_close((uint32_t) fh);
  return undefined(env);
}

static napi_value dp_freeze (napi_env env, napi_callback_info info) {
  ARGS(1)
  size_t len;
  if (napi_get_value_string_utf8(env, argv[0], NULL, 0, &len) != napi_ok) THROW("ferry data: freeze(prefix)");
  char *prefix = malloc(len + 1);
  if (prefix == NULL) THROW("ferry data: out of memory");
  napi_get_value_string_utf8(env, argv[0], prefix, len + 1, &len);
  if (!ferry_gate_freeze(&ferry_gate, prefix)) {
    free(prefix);
    THROW("ferry data: too many frozen subtrees");
  }
  return undefined(env);
}

static napi_value dp_thaw (napi_env env, napi_callback_info info) {
  ARGS(1)
  char prefix[4096];
  size_t len;
  if (napi_get_value_string_utf8(env, argv[0], prefix, sizeof(prefix), &len) != napi_ok) THROW("ferry data: thaw(prefix)");
  ferry_gate_thaw(&ferry_gate, prefix);
  return undefined(env);
}

static void free_window (napi_env env, void *data, void *hint) {
  (void) env;
  (void) hint;
  ferry_window_free((ferry_window_t *) data);
}

// windowNew(fd): a copy window writing mirrors to fd (owned by JS, closed only after detach and a drain).
static napi_value dp_window_new (napi_env env, napi_callback_info info) {
  ARGS(1)
  int64_t fd;
  if (!arg_int(env, argv[0], 0, INT32_MAX, &fd)) THROW("ferry data: windowNew(fd)");
  ferry_window_t *w = ferry_window_new((int) fd);
  if (w == NULL) THROW("ferry data: out of memory");
  napi_value ext;
  if (napi_create_external(env, w, free_window, NULL, &ext) != napi_ok) {
    ferry_window_free(w);
    THROW("ferry data: cannot create the window");
  }
  return ext;
}

// windowAttach(file, window | null, slot): the window decides for the map in `slot` (null: detach).
static napi_value dp_window_attach (napi_env env, napi_callback_info info) {
  ARGS(3)
  ferry_file_t *f = arg_external(env, argv[0]);
  napi_valuetype t;
  napi_typeof(env, argv[1], &t);
  ferry_window_t *w = t == napi_null ? NULL : arg_external(env, argv[1]);
  int64_t slot;
  if (f == NULL || (t != napi_null && w == NULL) || !arg_int(env, argv[2], 0, FERRY_MAX_SLOTS - 1, &slot)) THROW("ferry data: windowAttach(file, window, slot)");
  ferry_file_attach_window(f, w, (int) slot);
  return undefined(env);
}

// windowPlan(window, starts | null, lengths): null starts planning (every write is copied again later);
// arrays (Float64Array) install the chunks of the copy about to run, all pending.
static napi_value dp_window_plan (napi_env env, napi_callback_info info) {
  ARGS(3)
  ferry_window_t *w = arg_external(env, argv[0]);
  if (w == NULL) THROW("ferry data: windowPlan(window, starts, lengths)");
  napi_valuetype t;
  napi_typeof(env, argv[1], &t);
  if (t == napi_null) {
    ferry_window_planning(w);
    return undefined(env);
  }
  napi_typedarray_type ta, tb;
  size_t na, nb;
  void *da, *db;
  if (napi_get_typedarray_info(env, argv[1], &ta, &na, &da, NULL, NULL) != napi_ok ||
      napi_get_typedarray_info(env, argv[2], &tb, &nb, &db, NULL, NULL) != napi_ok ||
      ta != napi_float64_array || tb != napi_float64_array || na != nb) THROW("ferry data: windowPlan needs two Float64Arrays of one length");
  if (ferry_window_plan(w, (const double *) da, (const double *) db, na) != 0) THROW("ferry data: out of memory");
  return undefined(env);
}

// windowState(window, index, 1 | 2): a chunk is in flight (before the copier reads it), or done.
static napi_value dp_window_state (napi_env env, napi_callback_info info) {
  ARGS(3)
  ferry_window_t *w = arg_external(env, argv[0]);
  int64_t index, state;
  if (w == NULL || !arg_int(env, argv[1], 0, INT64_MAX >> 1, &index) || !arg_int(env, argv[2], 1, 2, &state)) THROW("ferry data: windowState(window, index, state)");
  ferry_window_state(w, (size_t) index, (int) state);
  return undefined(env);
}

// windowStats(window) -> { ops, bytes, error, samplesUs }: mirrors written here (latest 1024 latencies).
static napi_value dp_window_stats (napi_env env, napi_callback_info info) {
  ARGS(1)
  ferry_window_t *w = arg_external(env, argv[0]);
  if (w == NULL) THROW("ferry data: windowStats(window)");
  napi_value obj, samples;
  napi_create_object(env, &obj);
  set_number(env, obj, "ops", (double) atomic_load(&w->ops));
  set_number(env, obj, "bytes", (double) atomic_load(&w->bytes));
  set_number(env, obj, "error", (double) atomic_load(&w->error));
  uint64_t n = atomic_load(&w->sample_count);
  if (n > FERRY_WINDOW_SAMPLES) n = FERRY_WINDOW_SAMPLES;
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
  (void) env;
  (void) data;
  ferry_gate_drain(&ferry_gate);
}

static void drain_done (napi_env env, napi_status status, void *data) {
  (void) status;
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

static void set_op_stats (napi_env env, napi_value obj, const char *prefix, ferry_op_stats_t *s) {
  char key[64];
  napi_value hist;
  snprintf(key, sizeof(key), "%sOps", prefix);
  set_number(env, obj, key, (double) atomic_load(&s->ops));
  snprintf(key, sizeof(key), "%sBytes", prefix);
  set_number(env, obj, key, (double) atomic_load(&s->bytes));
  snprintf(key, sizeof(key), "%sErrors", prefix);
  set_number(env, obj, key, (double) atomic_load(&s->errors));
  napi_create_array_with_length(env, FERRY_LAT_BUCKETS, &hist);
  for (uint32_t b = 0; b < FERRY_LAT_BUCKETS; b++) {
    napi_value v;
    napi_create_double(env, (double) atomic_load(&s->latency[b]), &v);
    napi_set_element(env, hist, b, v);
  }
  snprintf(key, sizeof(key), "%sLatencyLog2Us", prefix);
  napi_set_named_property(env, obj, key, hist);
  snprintf(key, sizeof(key), "%sLatencySumUs", prefix);
  set_number(env, obj, key, (double) atomic_load(&s->latency_sum_us));
}

static napi_value dp_stats (napi_env env, napi_callback_info info) {
  (void) info;
  napi_value obj;
  napi_create_object(env, &obj);
  set_op_stats(env, obj, "read", &ferry_data_stats.read);
  set_op_stats(env, obj, "write", &ferry_data_stats.write);
  set_number(env, obj, "passedOps", (double) atomic_load(&ferry_data_stats.passed_ops));
  set_number(env, obj, "mirrorOps", (double) atomic_load(&ferry_data_stats.mirror_ops));
  set_number(env, obj, "fastPathReads", (double) atomic_load(&ferry_data_stats.fast_reads));
  set_number(env, obj, "fastPathWrites", (double) atomic_load(&ferry_data_stats.fast_writes));
  set_number(env, obj, "pollCaught", (double) atomic_load(&ferry_poller.caught));
  set_number(env, obj, "pollVain", (double) atomic_load(&ferry_poller.vain));
  set_number(env, obj, "inflight", (double) (atomic_load(&ferry_gate.inflight[0]) + atomic_load(&ferry_gate.inflight[1])));
  return obj;
}

// requests() -> { largestRead, largestWrite, interrupts }: the request loop's figures (loop.h), on either data path.
static napi_value dp_requests (napi_env env, napi_callback_info info) {
  (void) info;
  napi_value obj;
  napi_create_object(env, &obj);
  set_number(env, obj, "largestRead", (double) atomic_load(&ferry_loop_stats.largest_read));
  set_number(env, obj, "largestWrite", (double) atomic_load(&ferry_loop_stats.largest_write));
  set_number(env, obj, "interrupts", (double) atomic_load(&ferry_loop_stats.interrupts));
  return obj;
}

void ferry_data_export (napi_env env, napi_value exports) {
  static const struct { const char *name; napi_callback fn; } methods[] = {
    { "enable", dp_enable }, { "readAround", dp_read_around }, { "busyPoll", dp_busy_poll }, { "newMap", dp_new_map }, { "newFile", dp_new_file }, { "install", dp_install },
    { "mark", dp_mark }, { "clearFrom", dp_clear_from }, { "jsWrites", dp_js_writes }, { "intent", dp_intent },
    { "bytesWritten", dp_bytes_written }, { "orderBegin", dp_order_begin }, { "orderEnd", dp_order_end }, { "open", dp_open }, { "move", dp_move }, { "close", dp_close },
    { "freeze", dp_freeze }, { "thaw", dp_thaw }, { "drain", dp_drain }, { "stats", dp_stats }, { "requests", dp_requests },
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
  set_number(env, data, "MAX_SLOTS", FERRY_MAX_SLOTS);
  set_number(env, data, "MAX_HANDLES", FERRY_MAX_HANDLES);
  napi_set_named_property(env, exports, "ferry_data", data);
}
