// A tracked file's dirty maps and write intents (ferry_file_t), and the order of its parallel writes.
//
// Owns: up to FERRY_MAX_SLOTS dirty bitmaps (one per consumer: `ferry dirty`, each migration), the bitmap of
// write-intent regions JS vouches for, js_writes, the file's mirror window pointer and the order counters.
// Threads: FUSE workers check (ferry_file_write_stays_native) and mark (ferry_file_mark_maps) under the read
// lock; the JS thread installs and swaps maps, vouches and attaches windows under the write lock, and marks and
// clears under the read lock; the order counters are touched by both without the lock. Why no dirty bit is
// lost: native-notes/memory-model.md, "Why no dirty bit is lost".
#ifndef FERRY_MAPS_H
#define FERRY_MAPS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define FERRY_MAX_SLOTS 8

struct ferry_window;

// One dirty bitmap, MSB-first within a byte (npm bitfield's order). `owner` is what keeps `bits` alive while
// the map is installed (the N-API glue's reference to the ArrayBuffer lent to JS); opaque here.
typedef struct {
  uint8_t *bits;
  size_t bytes;
  void *owner;
} ferry_slot_t;

typedef struct {
  // Shared by markers (worker threads, and JS marks), exclusive for installing
  // or swapping a map: a swap waits for every marker of the old map to finish.
  pthread_rwlock_t lock;
  ferry_slot_t slots[FERRY_MAX_SLOTS];
  // Write-intent regions JS vouches for (durable and touched this epoch); NULL
  // when no migration logs intents for this file. Only the JS thread writes it.
  uint8_t *intent_ok;
  size_t intent_bytes;
  unsigned intent_shift;
  void *intent_owner;
  _Atomic uint32_t js_writes;          // > 0: every write takes the JS path
  struct ferry_window *window;         // mirror mode: classifies writes for the map in window_slot
  int window_slot;
  // Writes to one file run in parallel (FOPEN_PARALLEL_DIRECT_WRITES): see ferry_order_begin.
  _Atomic uint32_t ordered_in_flight;
  _Atomic uint64_t ordered_seq;
  _Atomic uint64_t bytes_written;      // by the native path
} ferry_file_t;

// Bits [first, last] of a map, atomically: JS and other workers mark the same bytes.
static inline void ferry_set_bits (uint8_t *bits, uint64_t first, uint64_t last) {
  for (uint64_t byte = first >> 3; byte <= last >> 3; byte++) {
    unsigned lo = byte == first >> 3 ? (unsigned) (first & 7) : 0;
    unsigned hi = byte == last >> 3 ? (unsigned) (last & 7) : 7;
    uint8_t mask = (uint8_t) ((0xff >> lo) & (0xff << (7 - hi)));
    if (mask == 0xff) __atomic_store_n(&bits[byte], 0xff, __ATOMIC_RELAXED);
    else __atomic_fetch_or(&bits[byte], mask, __ATOMIC_RELAXED);
  }
}

static inline bool ferry_all_bits (const uint8_t *bits, size_t bytes, uint64_t first, uint64_t last) {
  if ((last >> 3) >= bytes) return false;
  for (uint64_t b = first; b <= last; b++) {
    if (!(__atomic_load_n(&bits[b >> 3], __ATOMIC_RELAXED) & (0x80 >> (b & 7)))) return false;
  }
  return true;
}

// 0 or an errno.
int ferry_file_init (ferry_file_t *f);
void ferry_file_destroy (ferry_file_t *f);

// Puts bits in the slot (NULL: empty) and returns the previous map's owner. Once this returns no thread
// touches the previous map: its bits are final. With merge, the previous map's bits are ORed into the new
// one first (growing a map).
void *ferry_file_install (ferry_file_t *f, int slot, uint8_t *bits, size_t bytes, void *owner, bool merge);
// Marks blocks [first, last] in one slot; false when the slot is empty or too small.
bool ferry_file_mark (ferry_file_t *f, int slot, uint64_t first, uint64_t last);
// Forgets blocks from first on (a truncate).
void ferry_file_clear_from (ferry_file_t *f, int slot, uint64_t first);
// The intent regions JS vouches for (NULL: no intent log); returns the previous bitmap's owner.
void *ferry_file_intent (ferry_file_t *f, uint8_t *bits, size_t bytes, unsigned shift, void *owner);
// The window decides for the map in slot (NULL: detach).
void ferry_file_attach_window (ferry_file_t *f, struct ferry_window *w, int slot);

// Can this write be done in C? Every installed map must hold its blocks, and every intent region must be
// vouched for; otherwise JS grows or logs first.
bool ferry_file_write_stays_native (ferry_file_t *f, off_t offset, size_t len, unsigned block_shift);
// Marks every map but the one a mirror window decides for (only >= 0: that slot alone, and no window);
// returns the window and sets *window_slot to its slot (or -1).
struct ferry_window *ferry_file_mark_maps (ferry_file_t *f, off_t offset, size_t len, unsigned block_shift, int only, int *window_slot);

static inline struct ferry_window *ferry_file_window (ferry_file_t *f) {
  return __atomic_load_n(&f->window, __ATOMIC_ACQUIRE);
}

// Two writes of one block in flight at once may reach the source and a mirror
// in different orders. A write that starts while the file has a window counts
// itself here, on either data path; one that overlapped another in time is
// marked dirty in the window's map when it ends, so the copier copies the
// source's bytes again. Returns 0 when another write was already in flight.
static inline uint64_t ferry_order_begin (ferry_file_t *f) {
  bool alone = atomic_fetch_add(&f->ordered_in_flight, 1) == 0;
  uint64_t seq = atomic_fetch_add(&f->ordered_seq, 1) + 1;
  return alone ? seq : 0;
}

// True when no other write started since ferry_order_begin gave seq.
static inline bool ferry_order_end (ferry_file_t *f, uint64_t seq) {
  bool alone = seq != 0 && atomic_load(&f->ordered_seq) == seq;
  atomic_fetch_sub(&f->ordered_in_flight, 1);
  return alone;
}

#endif
