// Mirror mode's copy window (see window.h).
#include "window.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

ferry_window_t *ferry_window_new (int fd) {
  ferry_window_t *w = calloc(1, sizeof(ferry_window_t));
  if (w == NULL) return NULL;
  w->fd = fd;
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->changed, NULL);
  return w;
}

void ferry_window_free (ferry_window_t *w) {
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->changed);
  free(w->start);
  free(w->len);
  free(w->state);
  free(w);
}

void ferry_window_planning (ferry_window_t *w) {
  pthread_mutex_lock(&w->mu);
  w->planning = 1;
  pthread_mutex_unlock(&w->mu);
}

int ferry_window_plan (ferry_window_t *w, const double *start, const double *len, size_t count) {
  double *new_start = malloc((count ? count : 1) * sizeof(double));
  double *new_len = malloc((count ? count : 1) * sizeof(double));
  uint8_t *new_state = calloc(count ? count : 1, 1);
  if (new_start == NULL || new_len == NULL || new_state == NULL) {
    free(new_start);
    free(new_len);
    free(new_state);
    return ENOMEM;
  }
  if (count > 0) {
    memcpy(new_start, start, count * sizeof(double));
    memcpy(new_len, len, count * sizeof(double));
  }
  pthread_mutex_lock(&w->mu);
  double *old_start = w->start, *old_len = w->len;
  uint8_t *old_state = w->state;
  w->start = new_start;
  w->len = new_len;
  w->state = new_state;
  w->count = count;
  w->planning = 0;
  w->gen++;
  pthread_cond_broadcast(&w->changed);
  pthread_mutex_unlock(&w->mu);
  free(old_start);
  free(old_len);
  free(old_state);
  return 0;
}

void ferry_window_state (ferry_window_t *w, size_t index, int state) {
  pthread_mutex_lock(&w->mu);
  if (index < w->count) w->state[index] = (uint8_t) state;
  if (state == 2) pthread_cond_broadcast(&w->changed);
  pthread_mutex_unlock(&w->mu);
}

int ferry_window_fate (ferry_window_t *w, off_t offset, size_t len) {
  double from = (double) offset, end = (double) offset + (double) len;
  pthread_mutex_lock(&w->mu);
  if (w->planning || atomic_load(&w->error)) {
    pthread_mutex_unlock(&w->mu);
    return FERRY_FATE_MARK;
  }
  size_t lo = 0, hi = w->count;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (w->start[mid] + w->len[mid] <= from) lo = mid + 1;
    else hi = mid;
  }
  double covered = 0, pending = 0;
  size_t waits[4];
  int nwaits = 0;
  bool too_many = false;
  for (size_t i = lo; i < w->count && w->start[i] < end; i++) {
    double a = w->start[i] > from ? w->start[i] : from;
    double b = w->start[i] + w->len[i] < end ? w->start[i] + w->len[i] : end;
    covered += b - a;
    if (w->state[i] == 0) pending += b - a;
    if (w->state[i] == 1) {
      if (nwaits < 4) waits[nwaits++] = i;
      else too_many = true;
    }
  }
  int fate = pending == 0 && !too_many ? FERRY_FATE_MIRROR
    : pending == (double) len && covered == (double) len ? FERRY_FATE_AHEAD : FERRY_FATE_MARK;
  if (fate == FERRY_FATE_MIRROR) {
    uint64_t gen = w->gen;
    for (int k = 0; k < nwaits; k++) {
      while (w->gen == gen && w->state[waits[k]] == 1) pthread_cond_wait(&w->changed, &w->mu);
    }
  }
  pthread_mutex_unlock(&w->mu);
  return fate;
}

void ferry_window_failed (ferry_window_t *w, int err) {
  int expected = 0;
  atomic_compare_exchange_strong(&w->error, &expected, err);
}

void ferry_window_mirrored (ferry_window_t *w, size_t len, uint64_t us) {
  uint64_t k = atomic_fetch_add_explicit(&w->sample_count, 1, memory_order_relaxed);
  atomic_store_explicit(&w->samples_us[k % FERRY_WINDOW_SAMPLES], us > UINT32_MAX ? UINT32_MAX : (uint32_t) us, memory_order_relaxed);
  atomic_fetch_add_explicit(&w->ops, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&w->bytes, len, memory_order_relaxed);
}
