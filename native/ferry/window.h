// Mirror mode: a copy window, where the copier stands in one file (the C twin of src/track/copy-window.ts).
//
// Owns the copy's chunks, their states (0 pending, 1 in flight, 2 done), the planning flag and a generation
// counter, all under `mu`, plus the mirror's error and figures (atomics). Threads: the JS thread plans and
// moves chunk states (Fuse.data.windowPlan/windowState) and reads the figures; FUSE workers ask a write's
// fate under `mu` and wait on `changed` for in-flight chunks, then record mirrors and errors. The rules:
// native-notes/memory-model.md, "Mirror mode".
#ifndef FERRY_WINDOW_H
#define FERRY_WINDOW_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define FERRY_WINDOW_SAMPLES 1024

typedef struct ferry_window {
  int fd; // the destination: mirrors are written here
  pthread_mutex_t mu;
  pthread_cond_t changed;
  int planning;
  uint64_t gen;
  double *start, *len;
  uint8_t *state;
  size_t count;
  _Atomic int error; // errno of the first failed destination write
  _Atomic uint64_t ops, bytes, sample_count;
  _Atomic uint32_t samples_us[FERRY_WINDOW_SAMPLES];
} ferry_window_t;

enum { FERRY_FATE_AHEAD, FERRY_FATE_MARK, FERRY_FATE_MIRROR };

// NULL: out of memory. fd stays the caller's (closed only after the window is detached and the gate drained).
ferry_window_t *ferry_window_new (int fd);
void ferry_window_free (ferry_window_t *w);

// The copier is planning: every write's fate is "mark" until the next plan.
void ferry_window_planning (ferry_window_t *w);
// The chunks of the copy about to run, all pending (count 0: the copy ended). 0 or ENOMEM.
int ferry_window_plan (ferry_window_t *w, const double *start, const double *len, size_t count);
// Chunk index is in flight (1, before the copier reads it) or done (2).
void ferry_window_state (ferry_window_t *w, size_t index, int state);

// As CopyWindow.fateOf. For a mirror, first waits until the in-flight chunks the range overlaps are done (or
// the plan changes), so the mirror lands after the copier's older bytes.
int ferry_window_fate (ferry_window_t *w, off_t offset, size_t len);

// A destination write failed: keeps the first errno (the migration aborts on it).
void ferry_window_failed (ferry_window_t *w, int err);
// A mirror of len bytes was written, us after the write asked for its fate.
void ferry_window_mirrored (ferry_window_t *w, size_t len, uint64_t us);

#endif
