// The C gate (see gate.h): freezing, thawing, draining.
#include "gate.h"

#include <stdlib.h>
#include <string.h>

static bool is_within (const char *path, const char *prefix) {
  if (strcmp(prefix, "/") == 0) return true;
  size_t n = strlen(prefix);
  return strncmp(path, prefix, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

bool ferry_gate_is_frozen (ferry_gate_t *g, const char *path) {
  bool frozen = false;
  pthread_mutex_lock(&g->mu);
  for (int i = 0; i < FERRY_MAX_FROZEN && !frozen; i++) {
    if (g->frozen[i] != NULL && path != NULL && is_within(path, g->frozen[i])) frozen = true;
  }
  pthread_mutex_unlock(&g->mu);
  return frozen || path == NULL;
}

void ferry_gate_drain (ferry_gate_t *g) {
  pthread_mutex_lock(&g->drain_mu);
  uint64_t old = atomic_fetch_add(&g->epoch, 1);
  atomic_store(&g->draining, 1);
  pthread_mutex_lock(&g->mu);
  while (atomic_load(&g->inflight[old & 1]) != 0) pthread_cond_wait(&g->drained, &g->mu);
  pthread_mutex_unlock(&g->mu);
  atomic_store(&g->draining, 0);
  pthread_mutex_unlock(&g->drain_mu);
}

bool ferry_gate_freeze (ferry_gate_t *g, char *prefix) {
  pthread_mutex_lock(&g->mu);
  int i = 0;
  while (i < FERRY_MAX_FROZEN && g->frozen[i] != NULL) i++;
  if (i < FERRY_MAX_FROZEN) g->frozen[i] = prefix;
  pthread_mutex_unlock(&g->mu);
  if (i == FERRY_MAX_FROZEN) return false;
  atomic_fetch_add(&g->frozen_count, 1);
  return true;
}

void ferry_gate_thaw (ferry_gate_t *g, const char *prefix) {
  bool found = false;
  pthread_mutex_lock(&g->mu);
  for (int i = 0; i < FERRY_MAX_FROZEN && !found; i++) {
    if (g->frozen[i] != NULL && strcmp(g->frozen[i], prefix) == 0) {
      free(g->frozen[i]);
      g->frozen[i] = NULL;
      found = true;
    }
  }
  pthread_mutex_unlock(&g->mu);
  if (found) atomic_fetch_sub(&g->frozen_count, 1);
}
