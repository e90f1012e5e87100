// The request loop's fast path (fast.c, data.c's fast entries): READ requests answered from the request with one
// reply on the "device" (a pipe here), the gate's admission without a path, and the freeze's drain.
#include "test.h"
#include "data.h"
#include "fast.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FH 11
#define BLK 4096

// A READ request as the kernel sends it.
static size_t read_request (char *req, uint64_t unique, uint64_t fh, uint64_t offset, uint32_t size) {
  struct fuse_in_header in = { .len = sizeof(in) + sizeof(struct fuse_read_in), .opcode = FUSE_READ, .unique = unique };
  struct fuse_read_in arg = { .fh = fh, .offset = offset, .size = size };
  memcpy(req, &in, sizeof(in));
  memcpy(req + sizeof(in), &arg, sizeof(arg));
  return in.len;
}

// A WRITE request and its payload, as the kernel sends them.
static size_t write_request (char *req, uint64_t unique, uint64_t fh, uint64_t offset, const char *data, uint32_t size) {
  struct fuse_in_header in = { .len = sizeof(in) + sizeof(struct fuse_write_in) + size, .opcode = FUSE_WRITE, .unique = unique };
  struct fuse_write_in arg = { .fh = fh, .offset = offset, .size = size };
  memcpy(req, &in, sizeof(in));
  memcpy(req + sizeof(in), &arg, sizeof(arg));
  memcpy(req + sizeof(in) + sizeof(arg), data, size);
  return in.len;
}

static int file_of (char byte, size_t size) {
  int fd = test_tmpfile();
  char *b = malloc(size);
  memset(b, byte, size);
  if (pwrite(fd, b, size, 0) != (ssize_t) size) abort();
  free(b);
  return fd;
}

void test_fast_read_reply (void) {
  ferry_data_enable(12);
  int fd = file_of('a', 3 * BLK);
  CHECK(ferry_data_open(FH, fd, -1, FERRY_USE_SHARED, NULL, false) == 0);
  int dev[2];
  CHECK(pipe(dev) == 0);
  char req[128];
  static char reply[sizeof(struct fuse_out_header) + 2 * BLK];
  uint64_t fast = atomic_load(&ferry_data_stats.fast_reads);

  // Served: one reply, header and data, the short read at EOF as it is.
  CHECK(ferry_fast_serve(dev[1], req, read_request(req, 42, FH, 2 * BLK, 2 * BLK)));
  struct fuse_out_header *out = (struct fuse_out_header *) reply;
  CHECK(read(dev[0], reply, sizeof(reply)) == (ssize_t) (sizeof(*out) + BLK));
  CHECK(out->len == sizeof(*out) + BLK && out->error == 0 && out->unique == 42);
  for (int i = 0; i < BLK; i++) CHECK(reply[sizeof(*out) + i] == 'a');
  CHECK(atomic_load(&ferry_data_stats.fast_reads) == fast + 1);

  // An error is a reply too: the header alone (a directory's fd: pread fails with EISDIR).
  const char *tmp = getenv("TMPDIR");
  int dir = open(tmp != NULL && *tmp ? tmp : "/tmp", O_RDONLY | O_DIRECTORY);
  CHECK(dir >= 0 && ferry_data_open(FH + 1, dir, -1, FERRY_USE_SHARED, NULL, false) == 0);
  CHECK(ferry_fast_serve(dev[1], req, read_request(req, 43, FH + 1, 0, BLK)));
  CHECK(read(dev[0], reply, sizeof(reply)) == sizeof(*out));
  CHECK(out->len == sizeof(*out) && out->error == -EISDIR && out->unique == 43);
  ferry_data_close(FH + 1);
  close(dir);

  // Left to libfuse, nothing written: an unknown handle, a request larger than max_read, a subtree frozen
  // (whichever: the fast path has no path), a truncated request.
  CHECK(!ferry_fast_serve(dev[1], req, read_request(req, 44, FH + 2, 0, BLK)));
  CHECK(!ferry_fast_serve(dev[1], req, read_request(req, 45, FH, 0, FERRY_FAST_READ_MAX + BLK)));
  CHECK(ferry_gate_freeze(&ferry_gate, strdup("/elsewhere")));
  CHECK(!ferry_fast_serve(dev[1], req, read_request(req, 46, FH, 0, BLK)));
  ferry_gate_thaw(&ferry_gate, "/elsewhere");
  CHECK(!ferry_fast_serve(dev[1], req, read_request(req, 47, FH, 0, BLK) - 1));
  CHECK(atomic_load(&ferry_data_stats.fast_reads) == fast + 2);
  CHECK(ferry_fast_serve(dev[1], req, read_request(req, 48, FH, 0, BLK)));
  CHECK(read(dev[0], reply, sizeof(reply)) == (ssize_t) (sizeof(*out) + BLK) && out->unique == 48);

  ferry_data_close(FH);
  close(fd);
  close(dev[0]);
  close(dev[1]);
}

void test_fast_write_reply (void) {
  ferry_data_enable(12);
  int fd = file_of('a', 4 * BLK);
  ferry_file_t f;
  CHECK(ferry_file_init(&f) == 0);
  uint8_t *bits = calloc(1, 1);
  ferry_file_install(&f, 0, bits, 1, NULL, false);
  CHECK(ferry_data_open(FH, fd, -1, FERRY_USE_SHARED, &f, false) == 0);
  int dev[2];
  CHECK(pipe(dev) == 0);
  static char req[128 + BLK], data[BLK], back[BLK];
  memset(data, 'w', BLK);
  struct { struct fuse_out_header h; struct fuse_write_out w; } reply;
  uint64_t fast = atomic_load(&ferry_data_stats.fast_writes);

  // Served: the bytes in the file, the block marked, one reply with the size written.
  CHECK(ferry_fast_serve(dev[1], req, write_request(req, 50, FH, 2 * BLK, data, BLK)));
  CHECK(read(dev[0], &reply, sizeof(reply)) == sizeof(reply));
  CHECK(reply.h.len == sizeof(reply) && reply.h.error == 0 && reply.h.unique == 50 && reply.w.size == BLK);
  CHECK(pread(fd, back, BLK, 2 * BLK) == BLK && memcmp(back, data, BLK) == 0);
  CHECK(__atomic_load_n(&bits[0], __ATOMIC_RELAXED) == 0x20); // block 2 of 8, MSB first
  CHECK(atomic_load(&ferry_data_stats.fast_writes) == fast + 1);

  // Left to libfuse: frozen, a payload shorter or longer than the request says, a write the map cannot hold
  // (block 8 of a 1-byte map: JavaScript grows the map).
  CHECK(ferry_gate_freeze(&ferry_gate, strdup("/elsewhere")));
  CHECK(!ferry_fast_serve(dev[1], req, write_request(req, 51, FH, 0, data, BLK)));
  ferry_gate_thaw(&ferry_gate, "/elsewhere");
  CHECK(!ferry_fast_serve(dev[1], req, write_request(req, 52, FH, 0, data, BLK) - 1));
  struct fuse_write_in *arg = (struct fuse_write_in *) (req + sizeof(struct fuse_in_header));
  write_request(req, 53, FH, 0, data, BLK);
  arg->size = BLK - 1;
  CHECK(!ferry_fast_serve(dev[1], req, sizeof(struct fuse_in_header) + sizeof(*arg) + BLK));
  CHECK(!ferry_fast_serve(dev[1], req, write_request(req, 54, FH, 8 * BLK, data, BLK)));
  CHECK(atomic_load(&ferry_data_stats.fast_writes) == fast + 1);
  CHECK(pread(fd, back, BLK, 0) == BLK && back[0] == 'a');

  ferry_data_close(FH);
  ferry_file_install(&f, 0, NULL, 0, NULL, false);
  free(bits);
  ferry_file_destroy(&f);
  close(fd);
  close(dev[0]);
  close(dev[1]);
}

// Readers hammer the fast path while the driving thread freezes, drains, swaps the handle's file for another
// (closing the old fd, as a switchover does) and thaws. A drain must wait for every fast read admitted before it
// (else one reads a closed or reused fd), and none may be admitted while frozen: those go to the slow path.
typedef struct {
  _Atomic int stop;
  _Atomic long served, passed;
} hammer_t;

static void *fast_reader (void *arg) {
  hammer_t *h = arg;
  char *buf = aligned_alloc(BLK, BLK);
  while (!atomic_load(&h->stop)) {
    int res = ferry_data_fast_read(buf, BLK, 0, FH);
    if (res == FERRY_DATA_PASS) {
      atomic_fetch_add(&h->passed, 1);
      continue;
    }
    if (res != BLK || (buf[0] != 'a' && buf[0] != 'b') || memcmp(buf, buf + 1, BLK - 1) != 0) {
      free(buf);
      CHECK_T(!"a fast read returned another file's bytes, or failed");
    }
    atomic_fetch_add(&h->served, 1);
  }
  free(buf);
  return NULL;
}

static void *fast_writer (void *arg) {
  hammer_t *h = arg;
  char *buf = aligned_alloc(BLK, BLK);
  memset(buf, 'w', BLK);
  while (!atomic_load(&h->stop)) {
    int res = ferry_data_fast_write(buf, BLK, BLK, FH);
    if (res == FERRY_DATA_PASS) {
      atomic_fetch_add(&h->passed, 1);
      continue;
    }
    if (res != BLK) {
      free(buf);
      CHECK_T(!"a fast write failed");
    }
    atomic_fetch_add(&h->served, 1);
  }
  free(buf);
  return NULL;
}

void test_fast_freeze_drains (void) {
  ferry_data_enable(12);
  int fd = file_of('a', 2 * BLK);
  CHECK(ferry_data_open(FH, fd, -1, FERRY_USE_SHARED, NULL, false) == 0);
  hammer_t h = { 0 };
  pthread_t threads[TEST_WORKERS + 1];
  for (int i = 0; i < TEST_WORKERS; i++) pthread_create(&threads[i], NULL, fast_reader, &h);
  pthread_create(&threads[TEST_WORKERS], NULL, fast_writer, &h); // block 1; the readers read block 0
  for (long round = 0; round < scaled(50); round++) {
    CHECK(ferry_gate_freeze(&ferry_gate, strdup("/vm")));
    ferry_gate_drain(&ferry_gate);
    uint64_t fast = atomic_load(&ferry_data_stats.fast_reads) + atomic_load(&ferry_data_stats.fast_writes);
    int next = file_of(round % 2 ? 'a' : 'b', 2 * BLK);
    close(fd); // its number may come back at once: a read still using it would read the wrong file
    ferry_data_move(FH, next, -1);
    fd = next;
    test_sleep_us(500);
    CHECK(atomic_load(&ferry_data_stats.fast_reads) + atomic_load(&ferry_data_stats.fast_writes) == fast); // nothing admitted while frozen
    ferry_gate_thaw(&ferry_gate, "/vm");
    test_sleep_us(500);
  }
  atomic_store(&h.stop, 1);
  for (int i = 0; i <= TEST_WORKERS; i++) pthread_join(threads[i], NULL);
  CHECK(atomic_load(&h.served) > 0 && atomic_load(&h.passed) > 0);
  ferry_data_close(FH);
  close(fd);
}
