// Busy polling with back-off (see busy-poll.h).
#include "busy-poll.h"

#include <poll.h>
#include <time.h>

static long ns_since (const struct timespec *t0) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (now.tv_sec - t0->tv_sec) * 1000000000L + (now.tv_nsec - t0->tv_nsec);
}

void ferry_poll (ferry_poller_t *p, int fd, long served_ns) {
  long window = atomic_load_explicit(&p->window_ns, memory_order_relaxed);
  if (window == 0 || served_ns >= window || atomic_exchange(&p->polling, 1) != 0) return;
  if (p->skip > 0) {
    p->skip--;
  } else {
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int ready;
    while ((ready = poll(&pfd, 1, 0)) == 0 && ns_since(&t0) < window) {}
    if (ready != 0) {
      p->misses = 0;
      atomic_fetch_add_explicit(&p->caught, 1, memory_order_relaxed);
    } else {
      if (p->misses < 6) p->misses++;
      p->skip = (1 << p->misses) - 1;
      atomic_fetch_add_explicit(&p->vain, 1, memory_order_relaxed);
    }
  }
  atomic_store(&p->polling, 0);
}
