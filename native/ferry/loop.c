// The FUSE request loop (see loop.h). The same libfuse 2.9 session calls as fuse_loop_mt
// (fuse_session_receive_buf, fuse_session_process_buf, the cleanup thread). Workers block all signals
// (Node's threads handle them) and can be cancelled only while waiting for a request; at unmount the first
// worker to read ENODEV ends the session, and the loop cancels and joins the rest.
#include "loop.h"
#include "data.h"
#include "fast.h"
#include "negotiate.h"
#include "pool.h"

#include <fuse_lowlevel.h>
#include <fuse_kernel.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FERRY_LOOP_MAX 256
#define FERRY_LOOP_GROW_NS 1000000
#define FERRY_OPENS_MAX 256
#define FERRY_FOPEN_PARALLEL_DIRECT_WRITES (1 << 6)

_Static_assert(sizeof(struct fuse_in_header) + sizeof(struct fuse_write_in) == FERRY_WRITE_PAYLOAD_OFFSET,
               "a WRITE's payload must start where negotiate.h places it");

typedef struct {
  struct fuse_session *se;
  struct fuse_chan *ch;
  ferry_pool_t pool;
  pthread_t threads[FERRY_LOOP_MAX];
  struct fuse_chan *reply_ch; // replies go through here (see reply_send)
  pthread_mutex_t opens_mu;
  atomic_int nopens;
  uint64_t opens[FERRY_OPENS_MAX]; // uniques of OPEN and CREATE requests awaiting their reply
  // The INIT request awaiting its reply (the session's first request), and the flags the kernel offered in it.
  atomic_bool init_pending;
  uint64_t init_unique;
  uint32_t init_offered, init_offered2;
  atomic_bool killpriv_v2; // the INIT reply left setuid/setgid to ferry (see ferry_setattr_as_chown)
} loop_t;

ferry_loop_stats_t ferry_loop_stats;

static void note_largest (_Atomic uint32_t *largest, uint32_t size) {
  uint32_t seen = atomic_load(largest);
  while (size > seen && !atomic_compare_exchange_weak(largest, &seen, size)) {}
}

// Sizes of the READ and WRITE requests as the kernel sent them (whoever answers them: C, JS or libfuse).
static void note_request (const struct fuse_in_header *in) {
  if (in->opcode == FUSE_READ) note_largest(&ferry_loop_stats.largest_read, ((const struct fuse_read_in *) (in + 1))->size);
  else if (in->opcode == FUSE_WRITE) note_largest(&ferry_loop_stats.largest_write, ((const struct fuse_write_in *) (in + 1))->size);
}

static void note_open (loop_t *loop, uint64_t unique) {
  pthread_mutex_lock(&loop->opens_mu);
  int n = atomic_load(&loop->nopens);
  // Full: this open keeps the kernel's one-writer-at-a-time, which is only slower.
  if (n < FERRY_OPENS_MAX) {
    loop->opens[n] = unique;
    atomic_store(&loop->nopens, n + 1);
  }
  pthread_mutex_unlock(&loop->opens_mu);
}

static bool take_open (loop_t *loop, uint64_t unique) {
  if (atomic_load(&loop->nopens) == 0) return false;
  bool found = false;
  pthread_mutex_lock(&loop->opens_mu);
  int n = atomic_load(&loop->nopens);
  for (int i = 0; i < n && !found; i++) {
    if (loop->opens[i] == unique) {
      loop->opens[i] = loop->opens[n - 1];
      atomic_store(&loop->nopens, n - 1);
      found = true;
    }
  }
  pthread_mutex_unlock(&loop->opens_mu);
  return found;
}

// libfuse 2.9's INIT reply (24 bytes) sent as the 64-byte one with what negotiate.h adds. The workers' buffers
// already hold the larger requests it allows: they were sized before the INIT request was read.
static int init_reply_send (loop_t *loop, const struct iovec iov[], size_t count) {
  struct fuse_out_header out = *(const struct fuse_out_header *) iov[0].iov_base;
  if (out.error != 0 || count != 2 || iov[1].iov_len != FERRY_LIBFUSE_INIT_OUT_SIZE) return fuse_chan_send(loop->ch, iov, count);
  ferry_init_out_t init;
  ferry_init_reply(&init, iov[1].iov_base, loop->init_offered, loop->init_offered2);
  atomic_store(&loop->killpriv_v2, (init.flags & FERRY_INIT_HANDLE_KILLPRIV_V2) != 0);
  out.len = sizeof(out) + sizeof(init);
  struct iovec copy[2] = { { &out, sizeof(out) }, { &init, sizeof(init) } };
  return fuse_chan_send(loop->ch, copy, 2);
}

// Every reply passes here on its way to the kernel. A successful OPEN or CREATE
// reply with FOPEN_DIRECT_IO also gets FOPEN_PARALLEL_DIRECT_WRITES (Linux 6.2,
// unknown to libfuse 2.9): without it the kernel holds the inode lock across
// each write's round trip, so writes to one file reach us one at a time.
static int reply_send (struct fuse_chan *ch, const struct iovec iov[], size_t count) {
  loop_t *loop = (loop_t *) fuse_chan_data(ch);
  // fuse_reply_none sends nothing (count 0): it only lets go of the request.
  const struct fuse_out_header *out = count > 0 && iov[0].iov_len >= sizeof(struct fuse_out_header) ? (const struct fuse_out_header *) iov[0].iov_base : NULL;
  if (out != NULL && atomic_load(&loop->init_pending) && out->unique == loop->init_unique) {
    atomic_store(&loop->init_pending, false);
    return init_reply_send(loop, iov, count);
  }
  if (out != NULL && take_open(loop, out->unique) && out->error == 0 && count >= 2 && count <= 4) {
    const struct iovec *last = &iov[count - 1];
    char arg[512];
    // struct fuse_open_out ends the reply (CREATE puts its entry first): fh, open_flags, padding.
    if (last->iov_len >= sizeof(struct fuse_open_out) && last->iov_len <= sizeof(arg)) {
      memcpy(arg, last->iov_base, last->iov_len);
      struct fuse_open_out *open_out = (struct fuse_open_out *) (arg + last->iov_len - sizeof(struct fuse_open_out));
      if (open_out->open_flags & FOPEN_DIRECT_IO) {
        open_out->open_flags |= FERRY_FOPEN_PARALLEL_DIRECT_WRITES;
        struct iovec copy[4];
        memcpy(copy, iov, count * sizeof(struct iovec));
        copy[count - 1].iov_base = arg;
        return fuse_chan_send(loop->ch, copy, count);
      }
    }
  }
  return fuse_chan_send(loop->ch, iov, count);
}

// The opcode of the request this worker thread is serving (0 between requests, or when it came spliced).
static __thread uint32_t serving;

bool ferry_loop_in_rename (void) {
  return serving == FUSE_RENAME;
}

static void *worker (void *arg) {
  loop_t *loop = (loop_t *) arg;
  // Sized for 1 MiB requests from the first one on: the INIT reply raises max_write (see negotiate.h).
  size_t size = FERRY_RECV_SIZE;
  char *mem = ferry_recv_alloc();
  // Cancelled (at unmount) only while waiting for a request, never mid-request.
  pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
  long served_ns = -1; // how long the last request took to answer (-1: it got no reply)
  while (mem != NULL && !fuse_session_exited(loop->se)) {
    if (served_ns >= 0) ferry_data_poll(fuse_chan_fd(loop->ch), served_ns);
    struct fuse_chan *ch = loop->ch;
    struct fuse_buf buf = { .mem = mem, .size = size };
    int res;
    pthread_cleanup_push(ferry_recv_free, mem);
    pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
    res = fuse_session_receive_buf(loop->se, &buf, &ch);
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
    pthread_cleanup_pop(0);
    if (res == -EINTR) continue;
    if (res <= 0) break;
    // FORGETs take no time and get no reply: a burst of them must not grow the pool.
    const struct fuse_in_header *in = (buf.flags & FUSE_BUF_IS_FD) ? NULL : (const struct fuse_in_header *) mem;
    uint32_t opcode = in != NULL ? in->opcode : 0;
    bool counted = opcode != FUSE_FORGET && opcode != FUSE_BATCH_FORGET;
    if ((opcode == FUSE_OPEN || opcode == FUSE_CREATE) && loop->reply_ch != NULL) note_open(loop, in->unique);
    if (opcode == FUSE_INIT && loop->reply_ch != NULL) {
      loop->init_unique = in->unique;
      loop->init_offered = ((const struct fuse_init_in *) (in + 1))->flags;
      loop->init_offered2 = ferry_init_offered2(in + 1, in->len - sizeof(*in));
      atomic_store(&loop->init_pending, true);
    }
    if (in != NULL) note_request(in);
    if (opcode == FUSE_SETATTR && atomic_load(&loop->killpriv_v2)) {
      struct fuse_setattr_in *arg = (struct fuse_setattr_in *) (mem + sizeof(struct fuse_in_header));
      ferry_setattr_as_chown(&arg->valid, &arg->uid, &arg->gid);
    }
    if (counted) ferry_pool_took(&loop->pool);
    struct timespec began, ended;
    clock_gettime(CLOCK_MONOTONIC, &began);
    serving = opcode;
    if (opcode == FUSE_INTERRUPT) {
      // Dropped, unanswered: the kernel needs no reply (Documentation/filesystems/fuse.rst: a filesystem may ignore
      // INTERRUPT). ferry mounts without libfuse's `intr`, so libfuse would only mark a request it knows as
      // interrupted, and queue one for a request it does not know, a fast-path one, until some later request
      // (fuse_lowlevel.c check_interrupt): a leak while only fast-path requests come.
      atomic_fetch_add_explicit(&ferry_loop_stats.interrupts, 1, memory_order_relaxed);
    } else if (in == NULL || !ferry_fast_serve(fuse_chan_fd(loop->ch), mem, (size_t) res)) {
      fuse_session_process_buf(loop->se, &buf, loop->reply_ch != NULL ? loop->reply_ch : ch);
    }
    serving = 0;
    clock_gettime(CLOCK_MONOTONIC, &ended);
    if (counted) ferry_pool_done(&loop->pool);
    served_ns = counted ? (ended.tv_sec - began.tv_sec) * 1000000000L + (ended.tv_nsec - began.tv_nsec) : -1;
  }
  ferry_recv_free(mem);
  // Unmounted (the read gave ENODEV, which also ends the session) or failed.
  fuse_session_exit(loop->se);
  ferry_pool_gone(&loop->pool);
  return NULL;
}

static int spawn (void *ctx, int index) {
  loop_t *loop = (loop_t *) ctx;
  // Signals stay with Node's threads.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  int err = pthread_create(&loop->threads[index], NULL, worker, loop);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return err;
}

void ferry_loop_run (struct fuse *fuse, struct fuse_chan *ch) {
  loop_t *loop = (loop_t *) calloc(1, sizeof(loop_t));
  if (loop == NULL || ferry_pool_init(&loop->pool, FERRY_LOOP_MAX, FERRY_LOOP_GROW_NS) != 0) {
    free(loop);
    return;
  }
  if (fuse_start_cleanup_thread(fuse) != 0) {
    ferry_pool_destroy(&loop->pool);
    free(loop);
    return;
  }
  loop->se = fuse_get_session(fuse);
  loop->ch = ch;
  pthread_mutex_init(&loop->opens_mu, NULL);
  static struct fuse_chan_ops reply_ops = { .send = reply_send };
  // Without it (out of memory) replies go straight to the channel, with the kernel's serialized writes.
  loop->reply_ch = fuse_chan_new(&reply_ops, fuse_chan_fd(ch), fuse_chan_bufsize(ch), loop);

  int workers = ferry_pool_run(&loop->pool, spawn, loop);
  // The others are still waiting in read(2) on /dev/fuse, or finishing a request.
  for (int i = 0; i < workers; i++) pthread_cancel(loop->threads[i]);
  for (int i = 0; i < workers; i++) pthread_join(loop->threads[i], NULL);
  fuse_stop_cleanup_thread(fuse);
  if (loop->reply_ch != NULL) fuse_chan_destroy(loop->reply_ch);
  pthread_mutex_destroy(&loop->opens_mu);
  ferry_pool_destroy(&loop->pool);
  free(loop);
}
