// Busy polling: before a FUSE worker sleeps in read(2) on /dev/fuse, it may watch the device for a while.
//
// With one request in flight, the next one arrives a few microseconds after our reply, and a worker asleep
// in read(2) takes a cross-CPU wakeup to get it: a large part of a 4 KiB write's round trip. So a worker that
// has just answered a request in less than the window watches the device (poll(2), no timeout) for up to the
// window before it sleeps. After a longer request (a disk read, an op answered in JS) the wakeup is a small
// part of the next round trip, and a busy CPU would only slow the storage under us (on a VM, a spinning vCPU
// slowed the virtual disk's random reads by ~20%). One worker polls at a time. After a poll in vain, the next
// 1, 3, 7 ... 63 chances are let go, so sparse requests cost the CPU little.
//
// Owns the window, the back-off state and its counters. Threads: FUSE workers call ferry_poll (one at a
// time gets past `polling`; only that one touches misses and skip); the JS thread sets window_ns and reads
// the counters.
#ifndef FERRY_BUSY_POLL_H
#define FERRY_BUSY_POLL_H

#include <stdatomic.h>
#include <stdint.h>

typedef struct {
  _Atomic long window_ns; // 0: off
  atomic_int polling;
  int misses, skip;       // only the polling worker touches these
  _Atomic uint64_t caught, vain;
} ferry_poller_t;

// fd: the FUSE device; served_ns: how long the worker's last request took to answer.
void ferry_poll (ferry_poller_t *p, int fd, long served_ns);

#endif
