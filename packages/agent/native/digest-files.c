/*
 * Many files' sizes and SHA-256 in one request on libuv's pool, for a restore's check of a
 * fresh tree copy (packages/common/src/store/local/tree-index.ts CopyCheck). Per file the JS
 * thread did an open, fstat, read, hash and close (sha256DigestSync) or, above 1 MiB, a pool
 * round trip per read: ~5 s of the JS thread for the default box's 120k files, while the same
 * thread extracts db.zip and VERIFY hashes the archives. Here a batch of files costs the JS
 * thread one call and one callback; the files are read and hashed on a pool thread.
 *
 *   digestFiles(paths, count, sizes, digests) -> Promise<void>
 *     paths    `count` NUL-terminated paths, back to back (a Buffer)
 *     sizes    a Float64Array: in, the size each file must have; out, left as it was when the
 *              file has that size and was read whole (its digest is then in `digests`), else
 *              the size found (fstat's, or the bytes read when the file changed while read),
 *              or -errno when it could not be opened or read (-ELOOP: a symlink; -EISDIR: a
 *              directory; -EINVAL: a FIFO, socket or device, opened without blocking)
 *     digests  a Buffer of count * 32 bytes: file i's SHA-256 at i * 32
 * The buffers must not change until the promise settles. It rejects only when SHA-256 itself
 * fails or the request is cancelled; a file's own trouble is in `sizes`.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <node_api.h>
#include "napi-check.h"
#include "pool-work.h"
#include "sha.h"

/* One read buffer per request, freed with it. */
#define READ_BYTES (256 * 1024)

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref refs[3];
  const char *paths;
  size_t count;
  double *sizes;
  unsigned char *digests;
  int hash_failed;
} digest_req;

/* One file: its digest written to `md` and *size left as wanted, or *size the size found / -errno. */
static void digest_one(const char *file, double *size, unsigned char *buf, unsigned char *md, int *hash_failed) {
  double want = *size;
  /* O_NONBLOCK: a FIFO put where a file was (a live tree) must not hold a pool thread forever. */
  int fd = open(file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    *size = -(double)errno;
    return;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    *size = -(double)errno;
    close(fd);
    return;
  }
  if (!S_ISREG(st.st_mode)) {
    *size = -(double)(S_ISDIR(st.st_mode) ? EISDIR : EINVAL);
    close(fd);
    return;
  }
  if ((double)st.st_size != want) {
    *size = (double)st.st_size;
    close(fd);
    return;
  }
  sha_ctx c;
  if (bb_sha_init(&c) != 1) *hash_failed = 1;
  int64_t got = 0;
  for (;;) {
    ssize_t n = read(fd, buf, READ_BYTES);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      *size = -(double)errno;
      close(fd);
      return;
    }
    if (n == 0) break;
    if (!*hash_failed && bb_sha_update(&c, buf, (size_t)n) != 1) *hash_failed = 1;
    got += n;
  }
  close(fd);
  if ((double)got != want) *size = (double)got;
  else if (!*hash_failed && bb_sha_final(md, &c) != 1) *hash_failed = 1;
}

static void digest_execute(napi_env env, void *p) {
  (void)env;
  digest_req *r = p;
  unsigned char *buf = malloc(READ_BYTES);
  const char *file = r->paths;
  for (size_t i = 0; i < r->count; i++) {
    size_t len = strlen(file);
    if (buf) digest_one(file, &r->sizes[i], buf, r->digests + i * 32, &r->hash_failed);
    else r->sizes[i] = -(double)ENOMEM;
    if (r->hash_failed) break;
    file += len + 1;
  }
  free(buf);
}

static void digest_complete(napi_env env, napi_status status, void *p) {
  digest_req *r = p;
  napi_value v;
  if (status == napi_ok && !r->hash_failed) {
    napi_get_undefined(env, &v);
    napi_resolve_deferred(env, r->deferred, v);
  } else {
    napi_value msg;
    napi_create_string_utf8(env, status == napi_ok ? "SHA-256 failed" : "the request was cancelled", NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &v);
    napi_reject_deferred(env, r->deferred, v);
  }
  bb_release_pool_work(env, r->refs, 3, r->work, r);
}

napi_value digest_files(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  void *paths, *digests, *sizes_data;
  size_t paths_len, digests_len, sizes_len, offset;
  uint32_t count;
  napi_typedarray_type type;
  napi_value ab;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (!bb_sha_ready()) {
    napi_throw_error(env, NULL, "SHA-256 is not available");
    return NULL;
  }
  CHECK(napi_get_buffer_info(env, argv[0], &paths, &paths_len));
  CHECK(napi_get_value_uint32(env, argv[1], &count));
  CHECK(napi_get_typedarray_info(env, argv[2], &type, &sizes_len, &sizes_data, &ab, &offset));
  CHECK(napi_get_buffer_info(env, argv[3], &digests, &digests_len));
  size_t nuls = 0;
  for (size_t k = 0; k < paths_len && nuls < count; k++)
    if (((const char *)paths)[k] == 0) nuls++;
  if (type != napi_float64_array || sizes_len < count || digests_len < (size_t)count * 32 || nuls < count) {
    napi_throw_error(env, NULL, "digestFiles: the paths, sizes or digests hold fewer than count files");
    return NULL;
  }
  digest_req *r = calloc(1, sizeof *r);
  if (!r) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  r->paths = paths;
  r->count = count;
  r->sizes = sizes_data;
  r->digests = digests;
  napi_value keep[3] = {argv[0], argv[2], argv[3]};
  return bb_queue_pool_work(env, "digestFiles", keep, 3, r->refs, &r->deferred, &r->work, digest_execute, digest_complete, r);
}
