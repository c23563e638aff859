/*
 * The change journal's inotify watches (packages/agent/src/journal/dir-watch.ts): one inotify
 * instance for the process, its fd polled on Node's event loop, each read's raw events handed
 * to JS as one Buffer (struct inotify_event records, parsed there). Per watched directory
 * this costs the kernel's watch and nothing here; Node's fs.watch costs ~700 B of native
 * memory per directory (an FSEventWrap, libuv's uv_fs_event_t, its watcher list entry and
 * path) and drops IN_Q_OVERFLOW, which this passes on (wd -1, mask IN_Q_OVERFLOW).
 * Also malloc_trim(0), for the daemon to give freed native memory back after a job.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <node_api.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>
#include <uv.h>

static struct {
  int fd;
  int started;
  uv_poll_t poll;
  napi_env env;
  napi_ref cb;
} st = {.fd = -1};

#define CHECK(call)                                         \
  do {                                                      \
    if ((call) != napi_ok) {                                \
      napi_throw_error(env, NULL, #call " failed");         \
      return NULL;                                          \
    }                                                       \
  } while (0)

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

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor d[] = {
      {"start", NULL, start, NULL, NULL, NULL, napi_default, NULL},
      {"add", NULL, add, NULL, NULL, NULL, napi_default, NULL},
      {"rm", NULL, rm, NULL, NULL, NULL, napi_default, NULL},
      {"ref", NULL, ref, NULL, NULL, NULL, napi_default, NULL},
      {"trim", NULL, trim, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof d / sizeof d[0], d);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
