/*
 * A tree's read-ahead on a thread of its own (packages/common/src/store/prefetch.ts says why):
 * the thread walks the tree in the walk's order (walk.ts: a directory's entries by name, then
 * its subdirectories one after the other), stats each entry (the walk's lstat then finds the
 * inode cached) and asks the kernel to read each regular file ahead
 * (posix_fadvise POSIX_FADV_WILLNEED: the pages are read into the page cache by the kernel, no
 * bytes copied here). It stays at most `window` bytes ahead of what the caller has consumed
 * (prefetchConsumed), so a tree larger than memory never pushes its own unread pages out.
 *
 *   prefetchStart(root, windowBytes) -> handle    the thread starts at once
 *   prefetchConsumed(handle, bytes)               the caller has read this many more bytes
 *   prefetchStop(handle) -> [files, bytes]        stop and join the thread (idempotent)
 *
 * Nothing here writes, and nothing fails loudly: an entry that cannot be read is skipped (the
 * caller's own walk reports it).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <node_api.h>
#include "napi-check.h"
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  char *root;
  int64_t window;
  int64_t fetched;
  int64_t consumed;
  int64_t files;
  int stop;
  int joined;
} prefetch_t;

static int stopped(prefetch_t *p) {
  pthread_mutex_lock(&p->mu);
  int s = p->stop;
  pthread_mutex_unlock(&p->mu);
  return s;
}

/* Wait until `size` more bytes fit in the window (or the caller stopped us); 0 to go on. */
static int wait_window(prefetch_t *p, int64_t size) {
  pthread_mutex_lock(&p->mu);
  while (!p->stop && p->fetched - p->consumed > 0 && p->fetched + size - p->consumed > p->window) pthread_cond_wait(&p->cv, &p->mu);
  int s = p->stop;
  pthread_mutex_unlock(&p->mu);
  return s;
}

static void advise(prefetch_t *p, const char *path, int64_t size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOATIME);
  if (fd < 0 && errno == EPERM) fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  posix_fadvise(fd, 0, 0, POSIX_FADV_WILLNEED);
  close(fd);
  pthread_mutex_lock(&p->mu);
  p->fetched += size;
  p->files++;
  pthread_mutex_unlock(&p->mu);
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* One directory: its entries by name (files read ahead), then each subdirectory in turn. */
static void walk(prefetch_t *p, const char *dir, int depth) {
  if (depth > 256 || stopped(p)) return;
  DIR *d = opendir(dir);
  if (!d) return;
  size_t n = 0, cap = 64;
  char **names = malloc(cap * sizeof *names);
  struct dirent *e;
  while (names && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.' && (e->d_name[1] == 0 || (e->d_name[1] == '.' && e->d_name[2] == 0))) continue;
    if (n == cap) {
      char **more = realloc(names, (cap *= 2) * sizeof *names);
      if (!more) break;
      names = more;
    }
    if (!(names[n] = strdup(e->d_name))) break;
    n++;
  }
  closedir(d);
  if (!names) return;
  qsort(names, n, sizeof *names, by_name);
  char path[PATH_MAX];
  unsigned char *is_dir = calloc(n ? n : 1, 1);
  for (size_t i = 0; i < n && is_dir && !stopped(p); i++) {
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, names[i]) >= sizeof path) continue;
    struct stat st;
    if (lstat(path, &st) != 0) continue;
    if (S_ISDIR(st.st_mode)) is_dir[i] = 1;
    else if (S_ISREG(st.st_mode) && st.st_size > 0 && !wait_window(p, st.st_size)) advise(p, path, st.st_size);
  }
  for (size_t i = 0; i < n && is_dir; i++) {
    if (is_dir[i] && (size_t)snprintf(path, sizeof path, "%s/%s", dir, names[i]) < sizeof path) walk(p, path, depth + 1);
  }
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
  free(is_dir);
}

static void *run(void *arg) {
  prefetch_t *p = arg;
  walk(p, p->root, 0);
  return NULL;
}

static void stop_join(prefetch_t *p) {
  if (p->joined) return;
  pthread_mutex_lock(&p->mu);
  p->stop = 1;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  pthread_join(p->thread, NULL);
  p->joined = 1;
}

static void finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  prefetch_t *p = data;
  stop_join(p);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
  free(p->root);
  free(p);
}

napi_value prefetch_start(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], v;
  char root[PATH_MAX];
  size_t len;
  double window;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  CHECK(napi_get_value_string_utf8(env, argv[0], root, sizeof root, &len));
  CHECK(napi_get_value_double(env, argv[1], &window));
  prefetch_t *p = calloc(1, sizeof *p);
  if (!p || !(p->root = strdup(root))) {
    free(p);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  p->window = window > 0 ? (int64_t)window : 0;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  if (pthread_create(&p->thread, NULL, run, p) != 0) {
    p->joined = 1;
    finalize(env, p, NULL);
    napi_throw_error(env, NULL, "could not start the read-ahead thread");
    return NULL;
  }
  CHECK(napi_create_external(env, p, finalize, NULL, &v));
  return v;
}

napi_value prefetch_consumed(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  void *data;
  double bytes;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  CHECK(napi_get_value_external(env, argv[0], &data));
  CHECK(napi_get_value_double(env, argv[1], &bytes));
  prefetch_t *p = data;
  pthread_mutex_lock(&p->mu);
  p->consumed += (int64_t)bytes;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

napi_value prefetch_stop(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out, files, bytes;
  void *data;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  CHECK(napi_get_value_external(env, argv[0], &data));
  prefetch_t *p = data;
  stop_join(p);
  CHECK(napi_create_array_with_length(env, 2, &out));
  CHECK(napi_create_double(env, (double)p->files, &files));
  CHECK(napi_create_double(env, (double)p->fetched, &bytes));
  CHECK(napi_set_element(env, out, 0, files));
  CHECK(napi_set_element(env, out, 1, bytes));
  return out;
}
