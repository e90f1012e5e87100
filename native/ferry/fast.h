// The request loop's fast path for READ and WRITE (issue 29, route (b) of native-notes/io-routes.md): a request
// on a registered native handle is answered here, straight from the kernel's request, with one writev on the
// FUSE device, without libfuse's high-level layer (no path string built under its global lock, no fuse_req, no
// malloc per read). Admission is the C gate's without a path: only while no subtree is frozen (data.h
// ferry_data_fast_read/write); anything else is left untouched for libfuse, which serves it as before.
//
// Owns each worker's READ reply buffer (page-aligned, FERRY_FAST_READ_MAX bytes, made at the worker's first fast
// READ, freed at its exit). Threads: FUSE workers only (loop.c).
#ifndef FERRY_FAST_H
#define FERRY_FAST_H

#include <stdbool.h>
#include <stddef.h>

// The largest READ served here: the max_read the mount negotiates (negotiate.h). Larger ones go to libfuse.
#define FERRY_FAST_READ_MAX ((size_t) 1 << 20)

// req: a request of `got` bytes as read from the FUSE device. True: answered (the reply written to `fd`, the
// FUSE device); false: nothing was done, hand it to libfuse.
bool ferry_fast_serve (int fd, const char *req, size_t got);

#endif
