/*
 * ferry guest workload: deterministic random writes to a disk, and a checksum of it.
 *
 *   workload write <dev> [seed=S] [writes=N] [seconds=T] region=R [bs=B] [direct=0|1] [fsync=K] [delay_us=D]
 *                  [rate=BPS] [trace=<dev-or-file>]
 *   workload simulate <file> <seed> <N> <bs> <region>
 *   workload checksum <dev-or-file> <region>
 *
 * Each mode prints one JSON object on stdout. `write` also prints FERRY-WORKLOAD-START on its own line on stderr
 * once the device is open and the first write is about to be issued.
 *
 * The write sequence (this is the contract the host reproduces with `simulate`):
 *   - splitmix64(state): state += 0x9e3779b97f4a7c15; z = state;
 *       z = (z ^ z >> 30) * 0xbf58476d1ce4e5b9; z = (z ^ z >> 27) * 0x94d049bb133111eb; return z ^ z >> 31.
 *   - Offsets: one stream with state = seed; write i goes to (splitmix64() % (region / bs)) * bs.
 *   - Data of write i: 64-bit little-endian words; word 0 = seed, word 1 = i, word k >= 2 = the k-1th output of
 *     splitmix64 on its own stream with state = seed ^ ((i + 1) * 0xd1b54a32d192ed03).
 * Write i therefore has the same offset and content whether the run is counted (writes=N) or timed (seconds=T),
 * so `simulate` with the reported count reproduces a timed run too.
 *
 * Trace (write with trace=...): after the run, every write's start and latency, for a host that wants the latency
 * of a time window (a migration's, say). Text: a line "FERRY-TRACE <n>", then n lines "<start_us> <lat_us>"
 * (start in µs after the first write began), then "END"; fsynced. The device must hold it all, or nothing is
 * written and the run fails.
 *
 * Checksum: 64-bit FNV-1a (offset basis 0xcbf29ce484222325, prime 0x100000001b3) over the first `region` bytes,
 * printed as 16 hex digits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ALIGN 4096

static uint64_t splitmix64(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static void put_le64(unsigned char *p, uint64_t v) {
  for (int b = 0; b < 8; b++) p[b] = (unsigned char)(v >> (8 * b));
}

static void fill_block(unsigned char *buf, size_t bs, uint64_t seed, uint64_t index) {
  uint64_t state = seed ^ ((index + 1) * 0xd1b54a32d192ed03ULL);
  put_le64(buf, seed);
  put_le64(buf + 8, index);
  for (size_t k = 16; k < bs; k += 8) put_le64(buf + k, splitmix64(&state));
}

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void die(const char *what, const char *path) {
  fprintf(stderr, "workload: %s %s: %s\n", what, path, strerror(errno));
  exit(1);
}

static uint64_t parse_u64(const char *s, const char *name) {
  char *end;
  errno = 0;
  uint64_t v = strtoull(s, &end, 0);
  if (errno || *s == '\0' || *end != '\0') {
    fprintf(stderr, "workload: bad %s: '%s'\n", name, s);
    exit(2);
  }
  return v;
}

/* Size of a block device or a regular file. */
static uint64_t size_of(int fd, const char *path) {
  struct stat st;
  if (fstat(fd, &st) != 0) die("stat", path);
  if (S_ISBLK(st.st_mode)) {
    uint64_t bytes;
    if (ioctl(fd, BLKGETSIZE64, &bytes) != 0) die("BLKGETSIZE64", path);
    return bytes;
  }
  return (uint64_t)st.st_size;
}

struct options {
  uint64_t seed, writes, seconds, region, bs, fsync_every, delay_us;
  uint64_t rate; /* bytes per second: write i starts no earlier than i * bs / rate after the first (0: unpaced) */
  int direct;
  const char *trace;
};

struct report {
  uint64_t writes, bytes, errors, fsyncs, fsync_errors;
  uint32_t *lat_us, *start_us; /* one per write; start in µs after the first write began */
  size_t lat_cap;
  uint32_t lat_max_us, fsync_max_us;
  uint64_t lat_max_index;
  double lat_max_at_ms, elapsed_ms;
  int first_errno;
};

static void record_latency(struct report *r, uint32_t start_us, uint32_t us) {
  if (r->writes == r->lat_cap) {
    r->lat_cap = r->lat_cap ? r->lat_cap * 2 : 4096;
    r->lat_us = realloc(r->lat_us, r->lat_cap * sizeof *r->lat_us);
    r->start_us = realloc(r->start_us, r->lat_cap * sizeof *r->start_us);
    if (!r->lat_us || !r->start_us) {
      fprintf(stderr, "workload: out of memory\n");
      exit(1);
    }
  }
  r->lat_us[r->writes] = us;
  r->start_us[r->writes] = start_us;
}

static void timed_fsync(int fd, struct report *r) {
  double t0 = now_us();
  if (fsync(fd) != 0) {
    r->fsync_errors++;
    if (!r->first_errno) r->first_errno = errno;
  }
  uint32_t us = (uint32_t)(now_us() - t0);
  if (us > r->fsync_max_us) r->fsync_max_us = us;
  r->fsyncs++;
}

/* The write loop shared by `write` (timed, on the guest's disk) and `simulate` (on the host). Failed writes are
 * counted and the loop goes on: the point is to see every error a migration causes, not to stop at the first. */
static void run_writes(int fd, const struct options *o, struct report *r, int announce) {
  uint64_t nblocks = o->region / o->bs;
  uint64_t offsets = o->seed;
  unsigned char *buf;
  if (posix_memalign((void **)&buf, ALIGN, o->bs) != 0) {
    fprintf(stderr, "workload: out of memory\n");
    exit(1);
  }
  if (announce) fprintf(stderr, "FERRY-WORKLOAD-START\n"); /* stderr: stdout is the JSON, captured by init */
  double start = now_us();
  double deadline = start + o->seconds * 1e6;
  for (uint64_t i = 0; (!o->writes || i < o->writes) && (!o->seconds || now_us() < deadline); i++) {
    uint64_t off = (splitmix64(&offsets) % nblocks) * o->bs;
    fill_block(buf, o->bs, o->seed, i);
    /* A fixed rate, like fio's rate=: the schedule, not the last write's latency, sets when the next one starts, so a
     * stall is followed by a catch-up and the bytes written per second do not depend on the storage under test. */
    if (o->rate) {
      double due = start + (double)i * o->bs * 1e6 / o->rate, wait = due - now_us();
      if (wait > 0) {
        struct timespec d = {(time_t)(wait / 1e6), (long)((uint64_t)wait % 1000000) * 1000};
        nanosleep(&d, NULL);
      }
    }
    double t0 = now_us();
    ssize_t n = pwrite(fd, buf, o->bs, (off_t)off);
    double t1 = now_us();
    if (n != (ssize_t)o->bs) {
      r->errors++;
      if (!r->first_errno) r->first_errno = n < 0 ? errno : EIO;
    } else {
      r->bytes += o->bs;
    }
    uint32_t us = (uint32_t)(t1 - t0);
    record_latency(r, (uint32_t)(t0 - start), us);
    if (us > r->lat_max_us || r->writes == 0) {
      r->lat_max_us = us;
      r->lat_max_index = i;
      r->lat_max_at_ms = (t0 - start) / 1e3;
    }
    r->writes++;
    if (o->fsync_every && r->writes % o->fsync_every == 0) timed_fsync(fd, r);
    if (o->delay_us) {
      struct timespec d = {(time_t)(o->delay_us / 1000000), (long)(o->delay_us % 1000000) * 1000};
      nanosleep(&d, NULL);
    }
  }
  timed_fsync(fd, r); /* always, so the data is on the disk before anyone checks it */
  r->elapsed_ms = (now_us() - start) / 1e3;
  free(buf);
}

/* Writes the trace (format above) in one piece: it is built in memory first, so a device too small fails cleanly. */
static void write_trace(const char *path, const struct report *r) {
  size_t cap = 32 + (size_t)r->writes * 22 + 8, len = 0; /* a line is at most "4294967295 4294967295\n" */
  char *text = malloc(cap);
  if (!text) {
    fprintf(stderr, "workload: out of memory\n");
    exit(1);
  }
  len += (size_t)snprintf(text + len, cap - len, "FERRY-TRACE %" PRIu64 "\n", r->writes);
  for (uint64_t i = 0; i < r->writes; i++)
    len += (size_t)snprintf(text + len, cap - len, "%" PRIu32 " %" PRIu32 "\n", r->start_us[i], r->lat_us[i]);
  len += (size_t)snprintf(text + len, cap - len, "END\n");
  int fd = open(path, O_WRONLY);
  if (fd < 0) die("open", path);
  if (size_of(fd, path) < len) {
    fprintf(stderr, "workload: trace of %zu bytes does not fit in %s\n", len, path);
    exit(1);
  }
  for (size_t done = 0; done < len;) {
    ssize_t n = pwrite(fd, text + done, len - done, (off_t)done);
    if (n <= 0) die("write", path);
    done += (size_t)n;
  }
  if (fsync(fd) != 0) die("fsync", path);
  close(fd);
  free(text);
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return (x > y) - (x < y);
}

static uint32_t percentile(const struct report *r, double p) {
  if (!r->writes) return 0;
  size_t k = (size_t)(p * (double)(r->writes - 1) + 0.5);
  return r->lat_us[k];
}

static void check_geometry(const struct options *o, uint64_t size, const char *path) {
  if (o->bs < 512 || o->bs % 512) {
    fprintf(stderr, "workload: bs must be a positive multiple of 512, got %" PRIu64 "\n", o->bs);
    exit(2);
  }
  if (o->region < o->bs || o->region > size) {
    fprintf(stderr, "workload: region %" PRIu64 " must be between bs and the size of %s (%" PRIu64 ")\n", o->region, path, size);
    exit(2);
  }
}

static int mode_write(int argc, char **argv) {
  struct options o = {.bs = 4096};
  const char *path = argv[0];
  for (int a = 1; a < argc; a++) {
    char *eq = strchr(argv[a], '=');
    if (!eq) {
      fprintf(stderr, "workload: expected key=value, got '%s'\n", argv[a]);
      return 2;
    }
    *eq = '\0';
    const char *k = argv[a], *v = eq + 1;
    if (!strcmp(k, "trace")) {
      o.trace = v;
      continue;
    }
    uint64_t n = parse_u64(v, k);
    if (!strcmp(k, "seed")) o.seed = n;
    else if (!strcmp(k, "writes")) o.writes = n;
    else if (!strcmp(k, "seconds")) o.seconds = n;
    else if (!strcmp(k, "region")) o.region = n;
    else if (!strcmp(k, "bs")) o.bs = n;
    else if (!strcmp(k, "direct")) o.direct = n != 0;
    else if (!strcmp(k, "fsync")) o.fsync_every = n;
    else if (!strcmp(k, "delay_us")) o.delay_us = n;
    else if (!strcmp(k, "rate")) o.rate = n;
    else {
      fprintf(stderr, "workload: unknown parameter '%s'\n", k);
      return 2;
    }
  }
  if (!o.writes && !o.seconds) {
    fprintf(stderr, "workload: give writes=N, seconds=T or both (whichever limit comes first)\n");
    return 2;
  }
  int fd = open(path, O_RDWR | (o.direct ? O_DIRECT : 0));
  if (fd < 0) die("open", path);
  check_geometry(&o, size_of(fd, path), path);

  struct report r = {0};
  run_writes(fd, &o, &r, 1);
  close(fd);
  if (o.trace) write_trace(o.trace, &r);
  qsort(r.lat_us, r.writes, sizeof *r.lat_us, cmp_u32);
  double secs = r.elapsed_ms / 1e3;
  printf("{\"mode\":\"write\",\"seed\":%" PRIu64 ",\"writes\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"bs\":%" PRIu64
         ",\"region\":%" PRIu64 ",\"direct\":%d,\"elapsed_ms\":%.1f,\"mb_per_s\":%.3f"
         ",\"lat_p50_us\":%" PRIu32 ",\"lat_p99_us\":%" PRIu32 ",\"lat_max_us\":%" PRIu32
         ",\"lat_max_index\":%" PRIu64 ",\"lat_max_at_ms\":%.1f,\"errors\":%" PRIu64 ",\"first_error\":",
         o.seed, r.writes, r.bytes, o.bs, o.region, o.direct, r.elapsed_ms, secs > 0 ? r.bytes / 1e6 / secs : 0.0,
         percentile(&r, 0.50), percentile(&r, 0.99), r.lat_max_us, r.lat_max_index, r.lat_max_at_ms, r.errors);
  if (r.first_errno) printf("\"%s\"", strerror(r.first_errno));
  else printf("null");
  printf(",\"fsyncs\":%" PRIu64 ",\"fsync_errors\":%" PRIu64 ",\"fsync_max_us\":%" PRIu32 "}\n", r.fsyncs,
         r.fsync_errors, r.fsync_max_us);
  free(r.lat_us);
  free(r.start_us);
  return 0;
}

static int mode_simulate(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: workload simulate <file> <seed> <N> <bs> <region>\n");
    return 2;
  }
  const char *path = argv[0];
  struct options o = {.seed = parse_u64(argv[1], "seed"), .writes = parse_u64(argv[2], "N"),
                      .bs = parse_u64(argv[3], "bs"), .region = parse_u64(argv[4], "region")};
  int fd = open(path, O_RDWR | O_CREAT, 0644);
  if (fd < 0) die("open", path);
  /* A short file grows (with zeros) to the region, as a raw image of that size would be. */
  if (size_of(fd, path) < o.region && ftruncate(fd, (off_t)o.region) != 0) die("truncate", path);
  check_geometry(&o, size_of(fd, path), path);
  struct report r = {0};
  run_writes(fd, &o, &r, 0);
  close(fd);
  if (r.errors || r.fsync_errors) {
    fprintf(stderr, "workload: simulate %s: %s\n", path, strerror(r.first_errno));
    return 1;
  }
  printf("{\"mode\":\"simulate\",\"seed\":%" PRIu64 ",\"writes\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"bs\":%" PRIu64
         ",\"region\":%" PRIu64 "}\n",
         o.seed, r.writes, r.bytes, o.bs, o.region);
  free(r.lat_us);
  free(r.start_us);
  return 0;
}

static int mode_checksum(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: workload checksum <dev-or-file> <region>\n");
    return 2;
  }
  const char *path = argv[0];
  uint64_t region = parse_u64(argv[1], "region");
  int fd = open(path, O_RDONLY);
  if (fd < 0) die("open", path);
  size_t cap = 1 << 20;
  unsigned char *buf = malloc(cap);
  if (!buf) return 1;
  uint64_t h = 0xcbf29ce484222325ULL, done = 0;
  double t0 = now_us();
  while (done < region) {
    size_t want = region - done < cap ? (size_t)(region - done) : cap;
    ssize_t n = pread(fd, buf, want, (off_t)done);
    if (n < 0) die("read", path);
    if (n == 0) {
      fprintf(stderr, "workload: %s ends at %" PRIu64 ", before the region (%" PRIu64 ")\n", path, done, region);
      return 1;
    }
    for (ssize_t k = 0; k < n; k++) {
      h ^= buf[k];
      h *= 0x100000001b3ULL;
    }
    done += (uint64_t)n;
  }
  close(fd);
  free(buf);
  printf("{\"mode\":\"checksum\",\"bytes\":%" PRIu64 ",\"fnv1a64\":\"%016" PRIx64 "\",\"elapsed_ms\":%.1f}\n", done, h,
         (now_us() - t0) / 1e3);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 3 && !strcmp(argv[1], "write")) return mode_write(argc - 2, argv + 2);
  if (argc >= 3 && !strcmp(argv[1], "simulate")) return mode_simulate(argc - 2, argv + 2);
  if (argc >= 3 && !strcmp(argv[1], "checksum")) return mode_checksum(argc - 2, argv + 2);
  fprintf(stderr,
          "usage: workload write <dev> [seed=S] [writes=N] [seconds=T] region=R [bs=B] [direct=0|1] [fsync=K] "
          "[delay_us=D] [trace=<dev-or-file>]\n"
          "       workload simulate <file> <seed> <N> <bs> <region>\n"
          "       workload checksum <dev-or-file> <region>\n");
  return 2;
}
