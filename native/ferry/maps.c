// A tracked file's dirty maps and write intents (see maps.h).
#ifndef _GNU_SOURCE
#define _GNU_SOURCE // pthread_rwlockattr_setkind_np
#endif
#include "maps.h"

#include <string.h>

int ferry_file_init (ferry_file_t *f) {
  memset(f, 0, sizeof(*f));
  pthread_rwlockattr_t attr;
  pthread_rwlockattr_init(&attr);
  // A swap must not starve behind a stream of markers.
  pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  int err = pthread_rwlock_init(&f->lock, &attr);
  pthread_rwlockattr_destroy(&attr);
  return err;
}

void ferry_file_destroy (ferry_file_t *f) {
  pthread_rwlock_destroy(&f->lock);
}

void *ferry_file_install (ferry_file_t *f, int slot, uint8_t *bits, size_t bytes, void *owner, bool merge) {
  ferry_slot_t *s = &f->slots[slot];
  pthread_rwlock_wrlock(&f->lock);
  void *old = s->owner;
  if (merge && bits != NULL && s->bits != NULL) {
    size_t n = s->bytes < bytes ? s->bytes : bytes;
    for (size_t i = 0; i < n; i++) bits[i] |= s->bits[i];
  }
  s->bits = bits;
  s->bytes = bytes;
  s->owner = owner;
  pthread_rwlock_unlock(&f->lock);
  return old;
}

bool ferry_file_mark (ferry_file_t *f, int slot, uint64_t first, uint64_t last) {
  pthread_rwlock_rdlock(&f->lock);
  ferry_slot_t *s = &f->slots[slot];
  bool fits = s->bits != NULL && (last >> 3) < s->bytes;
  if (fits) ferry_set_bits(s->bits, first, last);
  pthread_rwlock_unlock(&f->lock);
  return fits;
}

void ferry_file_clear_from (ferry_file_t *f, int slot, uint64_t first) {
  pthread_rwlock_rdlock(&f->lock);
  ferry_slot_t *s = &f->slots[slot];
  for (uint64_t b = first; s->bits != NULL && (b >> 3) < s->bytes; ) {
    if ((b & 7) == 0) {
      __atomic_store_n(&s->bits[b >> 3], 0, __ATOMIC_RELAXED);
      b += 8;
    } else {
      __atomic_fetch_and(&s->bits[b >> 3], (uint8_t) ~(0x80 >> (b & 7)), __ATOMIC_RELAXED);
      b++;
    }
  }
  pthread_rwlock_unlock(&f->lock);
}

void *ferry_file_intent (ferry_file_t *f, uint8_t *bits, size_t bytes, unsigned shift, void *owner) {
  pthread_rwlock_wrlock(&f->lock);
  void *old = f->intent_owner;
  f->intent_ok = bits;
  f->intent_bytes = bytes;
  f->intent_shift = shift;
  f->intent_owner = owner;
  pthread_rwlock_unlock(&f->lock);
  return old;
}

void ferry_file_attach_window (ferry_file_t *f, struct ferry_window *w, int slot) {
  pthread_rwlock_wrlock(&f->lock);
  __atomic_store_n(&f->window, w, __ATOMIC_RELEASE);
  f->window_slot = slot;
  pthread_rwlock_unlock(&f->lock);
}

bool ferry_file_write_stays_native (ferry_file_t *f, off_t offset, size_t len, unsigned block_shift) {
  if (atomic_load(&f->js_writes) > 0) return false;
  uint64_t last_block = ((uint64_t) offset + len - 1) >> block_shift;
  bool ok = true;
  pthread_rwlock_rdlock(&f->lock);
  for (int s = 0; s < FERRY_MAX_SLOTS && ok; s++) {
    if (f->slots[s].bits != NULL && (last_block >> 3) >= f->slots[s].bytes) ok = false;
  }
  if (ok && f->intent_ok != NULL) {
    ok = ferry_all_bits(f->intent_ok, f->intent_bytes, (uint64_t) offset >> f->intent_shift,
                        ((uint64_t) offset + len - 1) >> f->intent_shift);
  }
  pthread_rwlock_unlock(&f->lock);
  return ok;
}

struct ferry_window *ferry_file_mark_maps (ferry_file_t *f, off_t offset, size_t len, unsigned block_shift, int only, int *window_slot) {
  uint64_t first = (uint64_t) offset >> block_shift;
  uint64_t last = ((uint64_t) offset + len - 1) >> block_shift;
  pthread_rwlock_rdlock(&f->lock);
  struct ferry_window *w = only < 0 ? f->window : NULL;
  int skip = w != NULL ? f->window_slot : -1;
  for (int s = 0; s < FERRY_MAX_SLOTS; s++) {
    ferry_slot_t *slot = &f->slots[s];
    if (s == skip || (only >= 0 && s != only)) continue;
    if (slot->bits != NULL && (last >> 3) < slot->bytes) ferry_set_bits(slot->bits, first, last);
  }
  *window_slot = skip;
  pthread_rwlock_unlock(&f->lock);
  return w;
}
