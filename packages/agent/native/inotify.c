/*
 * The change journal's inotify watches (packages/agent/src/journal/dir-watch.ts): one inotify
 * instance for the process, its fd polled on Node's event loop, each read's raw events handed
 * to JS as one Buffer (struct inotify_event records, parsed there). Per watched directory
 * this costs the kernel's watch and nothing here; Node's fs.watch costs ~700 B of native
 * memory per directory (an FSEventWrap, libuv's uv_fs_event_t, its watcher list entry and
 * path) and drops IN_Q_OVERFLOW, which this passes on (wd -1, mask IN_Q_OVERFLOW).
 * Also setMtime (utimensat: a journaled sync's directories' mtimes to the nanosecond),
 * malloc_trim(0), for the daemon to give freed native memory back after a job, mallopt's
 * M_MMAP_THRESHOLD (fixed, so large buffers are unmapped when freed: memory.ts), and
 * SHA-256 on libuv's thread pool (sha256 / hashUpdate / hashFinal) for the zip writer's
 * database archive (backup/hash-thread.ts): the hash runs over the Buffer's own bytes, no
 * copy and no worker thread (a worker costs ~16 MB of RSS while it runs). The hash is
 * OpenSSL's, the one Node itself links: its SHA256_* functions are looked up in the process
 * (dlsym) when first used; a Node that does not export them gets `hashAvailable() === false`
 * and the agent hashes on a worker thread as before. readHash / writeCheck do a database
 * archive's block I/O with those hashes in one trip through the pool each (their section
 * below). prefetch.c: a tree's read-ahead on a
 * thread of its own (prefetchStart / prefetchConsumed / prefetchStop). digest-files.c: many
 * files' sizes and SHA-256 in one request on the pool (digestFiles: a restore's copy check).
 * gcm.c: a sealed object's frames decrypted in place (gcmAvailable / gcmOpenFrames: a restore
 * from S3) and sealed straight into a pack's buffer (gcmSealAvailable / gcmSealFrames: a backup).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <malloc.h>
#include <node_api.h>
#include "napi-check.h"
#include "pool-work.h"
#include "sha.h"
#include <string.h>
#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

static struct {
  int fd;
  int started;
  uv_poll_t poll;
  napi_env env;
  napi_ref cb;
} st = {.fd = -1};

static napi_value int_value(napi_env env, int32_t v) {
  napi_value r;
  napi_create_int32(env, v, &r);
  return r;
}

/* One read per readable turn (the poll is level-triggered: what is left comes next turn). */
static void on_readable(uv_poll_t *h, int status, int events) {
  (void)h;
  (void)events;
  napi_env env = st.env;
  char buf[65536] __attribute__((aligned(__alignof__(struct inotify_event))));
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value cb, recv, arg, result;
  napi_get_reference_value(env, st.cb, &cb);
  napi_get_global(env, &recv);
  ssize_t n = 0;
  if (status < 0) {
    arg = int_value(env, status);
  } else {
    do n = read(st.fd, buf, sizeof buf);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      napi_close_handle_scope(env, scope);
      return;
    }
    if (n <= 0) {
      arg = int_value(env, n < 0 ? -errno : -EIO);
    } else {
      void *data;
      napi_create_buffer_copy(env, (size_t)n, buf, &data, &arg);
    }
  }
  if (napi_make_callback(env, NULL, recv, cb, 1, &arg, &result) == napi_pending_exception) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
  napi_close_handle_scope(env, scope);
}

/* start(callback) -> 0 or -errno: callback(Buffer) per read, callback(-errno) if reading fails. */
static napi_value start(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (st.started) return int_value(env, -EBUSY);
  int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) return int_value(env, -errno);
  uv_loop_t *loop;
  CHECK(napi_get_uv_event_loop(env, &loop));
  CHECK(napi_create_reference(env, argv[0], 1, &st.cb));
  st.fd = fd;
  st.env = env;
  int rc = uv_poll_init(loop, &st.poll, fd);
  if (rc == 0) rc = uv_poll_start(&st.poll, UV_READABLE, on_readable);
  if (rc != 0) {
    close(fd);
    st.fd = -1;
    return int_value(env, rc);
  }
  uv_unref((uv_handle_t *)&st.poll);
  st.started = 1;
  return int_value(env, 0);
}

/* add(path, mask) -> watch descriptor, or -errno. */
static napi_value add(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char path[4097];
  size_t len;
  uint32_t mask;
  CHECK(napi_get_value_string_utf8(env, argv[0], path, sizeof path, &len));
  CHECK(napi_get_value_uint32(env, argv[1], &mask));
  if (!st.started) return int_value(env, -EBADF);
  if (len >= sizeof path - 1) return int_value(env, -ENAMETOOLONG);
  int wd = inotify_add_watch(st.fd, path, mask);
  return int_value(env, wd < 0 ? -errno : wd);
}

/* rm(wd) -> 0 or -errno. */
static napi_value rm(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t wd;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  CHECK(napi_get_value_int32(env, argv[0], &wd));
  if (!st.started) return int_value(env, -EBADF);
  return int_value(env, inotify_rm_watch(st.fd, wd) < 0 ? -errno : 0);
}

/* ref(bool): whether the watches keep the process alive (as fs.watch's persistent watches do). */
static napi_value ref(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  bool on;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  CHECK(napi_get_value_bool(env, argv[0], &on));
  if (st.started) {
    if (on) uv_ref((uv_handle_t *)&st.poll);
    else uv_unref((uv_handle_t *)&st.poll);
  }
  return NULL;
}

/* trim() -> 1 if glibc gave memory back to the system, else 0. */
static napi_value trim(napi_env env, napi_callback_info info) {
  (void)info;
  return int_value(env, malloc_trim(0));
}

/*
 * mmapThreshold(bytes) -> 1 if set, else 0: glibc's M_MMAP_THRESHOLD fixed at `bytes`. By default
 * glibc raises the threshold to the size of each mmapped chunk freed (up to 32 MiB), so after the
 * first 4 MiB buffer is freed, every buffer up to 4 MiB comes from the heap, and its pages stay
 * there once freed until a trim (docs/design/agent-memory.md). Fixed, a buffer of `bytes` or more
 * is its own mapping, unmapped when V8 frees it.
 */
static napi_value mmap_threshold(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int64_t bytes = 0;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || napi_get_value_int64(env, argv[0], &bytes) != napi_ok || bytes <= 0 || bytes > (1 << 30)) {
    napi_throw_type_error(env, NULL, "mmapThreshold(bytes): bytes must be a positive integer up to 1 GiB");
    return NULL;
  }
  return int_value(env, mallopt(M_MMAP_THRESHOLD, (int)bytes));
}


/*
 * setMtime(path, sec, nsec) -> 0 or -errno: the path's mtime to the nanosecond (utimensat, the
 * atime left as it is, a symlink itself not followed). Node's utimes carries a time as a double
 * (~0.24 us now); a journaled sync sets its directories' mtimes with this instead of an rsync
 * run (store/local/incremental-sync.ts).
 */
static napi_value set_mtime(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char path[4097];
  size_t len;
  int64_t sec;
  int32_t nsec;
  CHECK(napi_get_value_string_utf8(env, argv[0], path, sizeof path, &len));
  CHECK(napi_get_value_int64(env, argv[1], &sec));
  CHECK(napi_get_value_int32(env, argv[2], &nsec));
  if (len >= sizeof path - 1) return int_value(env, -ENAMETOOLONG);
  if (nsec < 0 || nsec > 999999999) return int_value(env, -EINVAL);
  struct timespec ts[2] = {{.tv_sec = 0, .tv_nsec = UTIME_OMIT}, {.tv_sec = (time_t)sec, .tv_nsec = nsec}};
  return int_value(env, utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0);
}

/* ---- SHA-256 on libuv's pool -------------------------------------------------------------- */

typedef int (*sha_init_fn)(void *);
typedef int (*sha_update_fn)(void *, const void *, size_t);
typedef int (*sha_final_fn)(unsigned char *, void *);
static struct {
  int looked;
  sha_init_fn init;
  sha_update_fn update;
  sha_final_fn final;
} sha;

static int sha_ready(void) {
  if (!sha.looked) {
    sha.looked = 1;
    sha.init = (sha_init_fn)dlsym(RTLD_DEFAULT, "SHA256_Init");
    sha.update = (sha_update_fn)dlsym(RTLD_DEFAULT, "SHA256_Update");
    sha.final = (sha_final_fn)dlsym(RTLD_DEFAULT, "SHA256_Final");
  }
  return sha.init && sha.update && sha.final;
}

/* sha.h, for digest-files.c (called after bb_sha_ready() said yes). */
int bb_sha_ready(void) { return sha_ready(); }
int bb_sha_init(sha_ctx *c) { return sha.init(c); }
int bb_sha_update(sha_ctx *c, const void *data, size_t len) { return sha.update(c, data, len); }
int bb_sha_final(unsigned char *md, sha_ctx *c) { return sha.final(md, c); }

/* One hash request: a whole digest (ctx NULL: `own` is used) or an update of a running hash. */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref buf_ref;
  napi_ref ctx_ref;
  const unsigned char *data;
  size_t len;
  sha_ctx *ctx;
  sha_ctx own;
  unsigned char md[32];
  int ok;
} hash_req;

static void to_hex(const unsigned char *md, char *hex) {
  static const char digits[] = "0123456789abcdef";
  for (int i = 0; i < 32; i++) {
    hex[2 * i] = digits[md[i] >> 4];
    hex[2 * i + 1] = digits[md[i] & 15];
  }
  hex[64] = 0;
}

static void hash_execute(napi_env env, void *p) {
  (void)env;
  hash_req *r = p;
  if (r->ctx) {
    r->ok = sha.update(r->ctx, r->data, r->len) == 1;
  } else {
    r->ok = sha.init(&r->own) == 1 && sha.update(&r->own, r->data, r->len) == 1 && sha.final(r->md, &r->own) == 1;
  }
}

static void hash_complete(napi_env env, napi_status status, void *p) {
  hash_req *r = p;
  napi_value v;
  if (status == napi_ok && r->ok) {
    if (r->ctx) {
      napi_get_undefined(env, &v);
    } else {
      char hex[65];
      to_hex(r->md, hex);
      napi_create_string_latin1(env, hex, 64, &v);
    }
    napi_resolve_deferred(env, r->deferred, v);
  } else {
    napi_value msg;
    napi_create_string_utf8(env, "SHA-256 failed", NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &v);
    napi_reject_deferred(env, r->deferred, v);
  }
  napi_delete_reference(env, r->buf_ref);
  if (r->ctx_ref) napi_delete_reference(env, r->ctx_ref);
  napi_delete_async_work(env, r->work);
  free(r);
}

/* Queue a request on the pool for `buf` (a Buffer, unchanged until the promise settles). */
static napi_value queue_hash(napi_env env, napi_value buf, napi_value ctx_value, sha_ctx *ctx) {
  void *data;
  size_t len;
  CHECK(napi_get_buffer_info(env, buf, &data, &len));
  hash_req *r = calloc(1, sizeof *r);
  if (!r) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  r->data = data;
  r->len = len;
  r->ctx = ctx;
  napi_value promise, name;
  CHECK(napi_create_promise(env, &r->deferred, &promise));
  CHECK(napi_create_reference(env, buf, 1, &r->buf_ref));
  if (ctx_value) CHECK(napi_create_reference(env, ctx_value, 1, &r->ctx_ref));
  CHECK(napi_create_string_utf8(env, "boxback:sha256", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_create_async_work(env, NULL, name, hash_execute, hash_complete, r, &r->work));
  CHECK(napi_queue_async_work(env, r->work));
  return promise;
}

/* hashAvailable() -> whether Node's OpenSSL SHA-256 functions were found. */
static napi_value hash_available(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value v;
  napi_get_boolean(env, sha_ready(), &v);
  return v;
}

/* sha256(buf) -> Promise<hex>, hashed on the pool. */
static napi_value sha256(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (!sha_ready()) {
    napi_throw_error(env, NULL, "SHA-256 is not available");
    return NULL;
  }
  return queue_hash(env, argv[0], NULL, NULL);
}

static void free_ctx(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

/* hashStart() -> a running SHA-256 (an external). */
static napi_value hash_start(napi_env env, napi_callback_info info) {
  (void)info;
  if (!sha_ready()) {
    napi_throw_error(env, NULL, "SHA-256 is not available");
    return NULL;
  }
  sha_ctx *ctx = calloc(1, sizeof *ctx);
  if (!ctx || sha.init(ctx) != 1) {
    free(ctx);
    napi_throw_error(env, NULL, "SHA-256 could not start");
    return NULL;
  }
  napi_value v;
  CHECK(napi_create_external(env, ctx, free_ctx, NULL, &v));
  return v;
}

/* hashUpdate(ctx, buf) -> Promise<void>: one update at a time per ctx (the caller waits for the last). */
static napi_value hash_update(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  void *ctx;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  CHECK(napi_get_value_external(env, argv[0], &ctx));
  return queue_hash(env, argv[1], argv[0], ctx);
}

/* hashFinal(ctx) -> hex; the ctx starts again empty. */
static napi_value hash_final(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], v;
  void *ctx;
  unsigned char md[32];
  char hex[65];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  CHECK(napi_get_value_external(env, argv[0], &ctx));
  if (sha.final(md, ctx) != 1 || sha.init(ctx) != 1) {
    napi_throw_error(env, NULL, "SHA-256 failed");
    return NULL;
  }
  to_hex(md, hex);
  CHECK(napi_create_string_latin1(env, hex, 64, &v));
  return v;
}

/* ---- A database archive's block I/O on libuv's pool (backup/zip-writer.ts) ---------------- */
/*
 * readHash(fd, buf, position) -> Promise<[bytesRead, hex]>: pread until `buf` is full or the
 *   file ends, then the SHA-256 of the bytes read ('' when none): a raw block read and hashed
 *   in one trip through the pool instead of two.
 * writeCheck(ctx, fd, buf, position, scratch) -> Promise<number>: pwrite all of `buf` at
 *   `position`, read it back piece by piece into `scratch`, compare byte for byte and add the
 *   bytes as they read back to the running SHA-256 `ctx`: one trip instead of a write, a read
 *   per piece and a hash update per piece. Resolves -1, or the file offset of the first piece
 *   that read back different or short (nothing of it or after it is hashed). One request per
 *   ctx at a time (the caller chains them, as hashUpdate's).
 * A failed read or write rejects with an Error whose `code` is the errno's name (ENOSPC...).
 */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref refs[3];
  int op; /* 0 readHash, 1 writeCheck */
  int fd;
  unsigned char *data;
  size_t len;
  int64_t pos;
  unsigned char *scratch;
  size_t scratch_len;
  sha_ctx *ctx;
  size_t done;
  int64_t bad;
  int err;
  const char *syscall;
  int hash_failed;
  unsigned char md[32];
} io_req;

static void io_execute(napi_env env, void *p) {
  (void)env;
  io_req *r = p;
  if (r->op == 0) {
    while (r->done < r->len) {
      ssize_t n = pread(r->fd, r->data + r->done, r->len - r->done, r->pos + (int64_t)r->done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        r->err = errno;
        r->syscall = "read";
        return;
      }
      if (n == 0) break;
      r->done += (size_t)n;
    }
    if (r->done) {
      sha_ctx c;
      r->hash_failed = !(sha.init(&c) == 1 && sha.update(&c, r->data, r->done) == 1 && sha.final(r->md, &c) == 1);
    }
    return;
  }
  r->bad = -1;
  while (r->done < r->len) {
    ssize_t n = pwrite(r->fd, r->data + r->done, r->len - r->done, r->pos + (int64_t)r->done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      r->err = errno;
      r->syscall = "write";
      return;
    }
    r->done += (size_t)n;
  }
  for (size_t checked = 0; checked < r->len;) {
    size_t want = r->len - checked < r->scratch_len ? r->len - checked : r->scratch_len;
    size_t got = 0;
    while (got < want) {
      ssize_t n = pread(r->fd, r->scratch + got, want - got, r->pos + (int64_t)(checked + got));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        r->err = errno;
        r->syscall = "read";
        return;
      }
      if (n == 0) break;
      got += (size_t)n;
    }
    if (got < want || memcmp(r->scratch, r->data + checked, want) != 0) {
      r->bad = r->pos + (int64_t)checked;
      return;
    }
    if (sha.update(r->ctx, r->scratch, want) != 1) {
      r->hash_failed = 1;
      return;
    }
    checked += want;
  }
}

static void io_complete(napi_env env, napi_status status, void *p) {
  io_req *r = p;
  napi_value v;
  if (status == napi_ok && !r->err && !r->hash_failed) {
    if (r->op == 0) {
      napi_value n, hex;
      char text[65] = "";
      if (r->done) to_hex(r->md, text);
      napi_create_array_with_length(env, 2, &v);
      napi_create_double(env, (double)r->done, &n);
      napi_create_string_latin1(env, text, r->done ? 64 : 0, &hex);
      napi_set_element(env, v, 0, n);
      napi_set_element(env, v, 1, hex);
    } else {
      napi_create_double(env, (double)r->bad, &v);
    }
    napi_resolve_deferred(env, r->deferred, v);
  } else {
    napi_value msg, code;
    char text[256];
    if (r->err) {
      snprintf(text, sizeof text, "%s: %s, %s", uv_err_name(-r->err), strerror(r->err), r->syscall);
      napi_create_string_utf8(env, uv_err_name(-r->err), NAPI_AUTO_LENGTH, &code);
    } else {
      snprintf(text, sizeof text, "%s", status == napi_ok ? "SHA-256 failed" : "the request was cancelled");
      code = NULL;
    }
    napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, code, msg, &v);
    if (r->err) {
      napi_value no, sys;
      napi_create_int32(env, -r->err, &no);
      napi_create_string_utf8(env, r->syscall, NAPI_AUTO_LENGTH, &sys);
      napi_set_named_property(env, v, "errno", no);
      napi_set_named_property(env, v, "syscall", sys);
    }
    napi_reject_deferred(env, r->deferred, v);
  }
  bb_release_pool_work(env, r->refs, 3, r->work, r);
}

static napi_value queue_io(napi_env env, io_req *r, napi_value *keep, int nkeep) {
  return bb_queue_pool_work(env, "blockio", keep, nkeep, r->refs, &r->deferred, &r->work, io_execute, io_complete, r);
}

static napi_value read_hash(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int32_t fd;
  int64_t pos;
  void *data;
  size_t len;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (!sha_ready()) {
    napi_throw_error(env, NULL, "SHA-256 is not available");
    return NULL;
  }
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  CHECK(napi_get_buffer_info(env, argv[1], &data, &len));
  CHECK(napi_get_value_int64(env, argv[2], &pos));
  io_req *r = calloc(1, sizeof *r);
  if (!r) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  r->op = 0;
  r->fd = fd;
  r->data = data;
  r->len = len;
  r->pos = pos;
  return queue_io(env, r, &argv[1], 1);
}

static napi_value write_check(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  void *ctx, *data, *scratch;
  int32_t fd;
  int64_t pos;
  size_t len, scratch_len;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  CHECK(napi_get_value_external(env, argv[0], &ctx));
  CHECK(napi_get_value_int32(env, argv[1], &fd));
  CHECK(napi_get_buffer_info(env, argv[2], &data, &len));
  CHECK(napi_get_value_int64(env, argv[3], &pos));
  CHECK(napi_get_buffer_info(env, argv[4], &scratch, &scratch_len));
  if (!scratch_len) {
    napi_throw_error(env, NULL, "writeCheck: empty scratch buffer");
    return NULL;
  }
  io_req *r = calloc(1, sizeof *r);
  if (!r) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  r->op = 1;
  r->ctx = ctx;
  r->fd = fd;
  r->data = data;
  r->len = len;
  r->pos = pos;
  r->scratch = scratch;
  r->scratch_len = scratch_len;
  napi_value keep[3] = {argv[0], argv[2], argv[4]};
  return queue_io(env, r, keep, 3);
}

/* digest-files.c: many files' SHA-256 in one request on the pool. */
napi_value digest_files(napi_env env, napi_callback_info info);

/* prefetch.c: a tree's read-ahead on its own thread. */
napi_value prefetch_start(napi_env env, napi_callback_info info);
napi_value prefetch_consumed(napi_env env, napi_callback_info info);
napi_value prefetch_stop(napi_env env, napi_callback_info info);

/* gcm.c: a sealed object's frames opened in place (a restore from S3). */
napi_value gcm_available(napi_env env, napi_callback_info info);
napi_value gcm_open_frames(napi_env env, napi_callback_info info);
napi_value gcm_seal_available(napi_env env, napi_callback_info info);
napi_value gcm_seal_frames(napi_env env, napi_callback_info info);

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor d[] = {
      {"start", NULL, start, NULL, NULL, NULL, napi_default, NULL},
      {"add", NULL, add, NULL, NULL, NULL, napi_default, NULL},
      {"rm", NULL, rm, NULL, NULL, NULL, napi_default, NULL},
      {"ref", NULL, ref, NULL, NULL, NULL, napi_default, NULL},
      {"trim", NULL, trim, NULL, NULL, NULL, napi_default, NULL},
      {"mmapThreshold", NULL, mmap_threshold, NULL, NULL, NULL, napi_default, NULL},
      {"setMtime", NULL, set_mtime, NULL, NULL, NULL, napi_default, NULL},
      {"hashAvailable", NULL, hash_available, NULL, NULL, NULL, napi_default, NULL},
      {"sha256", NULL, sha256, NULL, NULL, NULL, napi_default, NULL},
      {"hashStart", NULL, hash_start, NULL, NULL, NULL, napi_default, NULL},
      {"hashUpdate", NULL, hash_update, NULL, NULL, NULL, napi_default, NULL},
      {"hashFinal", NULL, hash_final, NULL, NULL, NULL, napi_default, NULL},
      {"readHash", NULL, read_hash, NULL, NULL, NULL, napi_default, NULL},
      {"writeCheck", NULL, write_check, NULL, NULL, NULL, napi_default, NULL},
      {"digestFiles", NULL, digest_files, NULL, NULL, NULL, napi_default, NULL},
      {"prefetchStart", NULL, prefetch_start, NULL, NULL, NULL, napi_default, NULL},
      {"prefetchConsumed", NULL, prefetch_consumed, NULL, NULL, NULL, napi_default, NULL},
      {"prefetchStop", NULL, prefetch_stop, NULL, NULL, NULL, napi_default, NULL},
      {"gcmAvailable", NULL, gcm_available, NULL, NULL, NULL, napi_default, NULL},
      {"gcmOpenFrames", NULL, gcm_open_frames, NULL, NULL, NULL, napi_default, NULL},
      {"gcmSealAvailable", NULL, gcm_seal_available, NULL, NULL, NULL, napi_default, NULL},
      {"gcmSealFrames", NULL, gcm_seal_frames, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof d / sizeof d[0], d);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
