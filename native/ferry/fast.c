// The request loop's READ/WRITE fast path (see fast.h).
#include "fast.h"
#include "data.h"

#include <errno.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/uio.h>

#define PAGE 4096

// Page-aligned, so that direct.c reads an O_DIRECT handle's data straight into it (no bounce copy).
static pthread_key_t reply_key;
static pthread_once_t reply_once = PTHREAD_ONCE_INIT;
static __thread char *reply;

static void reply_key_make (void) {
  pthread_key_create(&reply_key, free);
}

static char *reply_buffer (void) {
  if (reply != NULL) return reply;
  void *p;
  if (posix_memalign(&p, PAGE, FERRY_FAST_READ_MAX) != 0) return NULL;
  pthread_once(&reply_once, reply_key_make);
  pthread_setspecific(reply_key, p);
  return reply = p;
}

// error: 0 or -errno (then no data). A failed write is not the request's to report: ENOENT means the kernel gave up
// on the request (libfuse ignores it too), ENODEV is the unmount the next read sees.
static void send_reply (int fd, uint64_t unique, int error, const void *data, size_t len) {
  struct fuse_out_header out = { .len = (uint32_t) (sizeof(out) + len), .error = error, .unique = unique };
  struct iovec iov[2] = { { &out, sizeof(out) }, { (void *) data, len } };
  ssize_t n;
  do n = writev(fd, iov, len > 0 ? 2 : 1); while (n < 0 && errno == EINTR);
}

bool ferry_fast_serve (int fd, const char *req, size_t got) {
  const struct fuse_in_header *in = (const struct fuse_in_header *) req;
  if (got < sizeof(*in) || in->len != got) return false;
  if (in->opcode == FUSE_READ && got >= sizeof(*in) + sizeof(struct fuse_read_in)) {
    const struct fuse_read_in *arg = (const struct fuse_read_in *) (in + 1);
    char *buf = arg->size <= FERRY_FAST_READ_MAX ? reply_buffer() : NULL;
    if (buf == NULL) return false;
    int res = ferry_data_fast_read(buf, arg->size, (off_t) arg->offset, arg->fh);
    if (res == FERRY_DATA_PASS) return false;
    send_reply(fd, in->unique, res < 0 ? res : 0, buf, res < 0 ? 0 : (size_t) res);
    return true;
  }
  if (in->opcode == FUSE_WRITE && got >= sizeof(*in) + sizeof(struct fuse_write_in)) {
    const struct fuse_write_in *arg = (const struct fuse_write_in *) (in + 1);
    // The payload follows (page-aligned in the loop's buffers, negotiate.h); anything else is libfuse's to judge.
    if (got - sizeof(*in) - sizeof(*arg) != arg->size) return false;
    int res = ferry_data_fast_write((const char *) (arg + 1), arg->size, (off_t) arg->offset, arg->fh);
    if (res == FERRY_DATA_PASS) return false;
    struct fuse_write_out out = { .size = res < 0 ? 0 : (uint32_t) res };
    send_reply(fd, in->unique, res < 0 ? res : 0, &out, res < 0 ? 0 : sizeof(out));
    return true;
  }
  return false;
}
