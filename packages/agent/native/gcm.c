/*
 * A sealed object's frames opened in place (packages/common/src/store/s3/sealed.ts, registered
 * by the agent's native.ts with useOpenInPlace): AES-256-GCM over each frame's bytes in the
 * buffer they were read into (a GET's), each frame's plaintext written over its ciphertext.
 * Node's Decipher hands out a new buffer per frame: in a restore from S3 every restored byte
 * was one, ~150-235 MB of 64 KiB buffers per small-box restore, from glibc's main heap (under
 * the mmap threshold), which the daemon's GCs and malloc_trims then chased
 * (docs/design/store-s3-performance.md).
 *
 *   gcmOpenFrames(key, aad, buf, start, end, frameLog2) -> -1 (every frame authenticated),
 *                                                          or the index of the frame that failed
 *   gcmSealFrames(key, aad, plain, out, at, frameLog2)  -> bytes written at out[at..] (frames
 *                                                          and tags), -1 if OpenSSL failed
 *
 * Sealing is the backup's side of the same: Node's Cipher hands out a new buffer per frame (and
 * one per final and tag), which sealed.ts then copied into the pack being built; here each
 * frame is encrypted from the plaintext straight into the pack's buffer, with one context keyed
 * once per object instead of a Cipher (its key schedule) per frame.
 *
 * Frames as sealed.ts writes them: [start, end) holds floor(n / F) + 1 frames of F + 16 bytes
 * (the last shorter), frame i's nonce 7 zero bytes | i (u32 BE) | last (u8). A frame whose tag
 * fails leaves its bytes decrypted but unauthenticated in `buf`: the caller throws and never
 * hands them out. The cipher is OpenSSL's, the one Node links, looked up in the process (dlsym)
 * when first used; gcmAvailable() says whether it was found.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <string.h>
#include <node_api.h>
#include "napi-check.h"

#define TAG 16
/* OpenSSL's EVP_CTRL_GCM_SET_IVLEN and EVP_CTRL_GCM_SET_TAG (evp.h: the same in 1.1 and 3.x). */
#define CTRL_SET_IVLEN 0x9
#define CTRL_SET_TAG 0x11
#define CTRL_GET_TAG 0x10

typedef void *(*ctx_new_fn)(void);
typedef const void *(*cipher_fn)(void);
typedef int (*init_fn)(void *, const void *, void *, const unsigned char *, const unsigned char *);
typedef int (*ctrl_fn)(void *, int, int, void *);
typedef int (*update_fn)(void *, unsigned char *, int *, const unsigned char *, int);
typedef int (*final_fn)(void *, unsigned char *, int *);

static struct {
  int looked;
  ctx_new_fn ctx_new;
  cipher_fn aes_256_gcm;
  init_fn init;
  ctrl_fn ctrl;
  update_fn update;
  final_fn final;
  init_fn enc_init;
  update_fn enc_update;
  final_fn enc_final;
  void *ctx; /* one context for the process (the JS thread is the only caller), re-keyed per object */
  void *enc; /* the same for sealing */
} g;

static int gcm_ready(void) {
  if (!g.looked) {
    g.looked = 1;
    g.ctx_new = (ctx_new_fn)dlsym(RTLD_DEFAULT, "EVP_CIPHER_CTX_new");
    g.aes_256_gcm = (cipher_fn)dlsym(RTLD_DEFAULT, "EVP_aes_256_gcm");
    g.init = (init_fn)dlsym(RTLD_DEFAULT, "EVP_DecryptInit_ex");
    g.ctrl = (ctrl_fn)dlsym(RTLD_DEFAULT, "EVP_CIPHER_CTX_ctrl");
    g.update = (update_fn)dlsym(RTLD_DEFAULT, "EVP_DecryptUpdate");
    g.final = (final_fn)dlsym(RTLD_DEFAULT, "EVP_DecryptFinal_ex");
    g.enc_init = (init_fn)dlsym(RTLD_DEFAULT, "EVP_EncryptInit_ex");
    g.enc_update = (update_fn)dlsym(RTLD_DEFAULT, "EVP_EncryptUpdate");
    g.enc_final = (final_fn)dlsym(RTLD_DEFAULT, "EVP_EncryptFinal_ex");
    if (g.ctx_new && g.aes_256_gcm && g.init && g.ctrl && g.update && g.final) g.ctx = g.ctx_new();
    if (g.ctx && g.enc_init && g.enc_update && g.enc_final) g.enc = g.ctx_new();
  }
  return g.ctx != NULL;
}

static int seal_ready(void) {
  return gcm_ready() && g.enc != NULL;
}

/* The sealing context keyed for one object; 1 if done. */
static int set_seal_key(const unsigned char *key) {
  return g.enc_init(g.enc, g.aes_256_gcm(), NULL, NULL, NULL) == 1 && g.ctrl(g.enc, CTRL_SET_IVLEN, 12, NULL) == 1 &&
         g.enc_init(g.enc, NULL, NULL, key, NULL) == 1;
}

/* One frame: n plaintext bytes at p encrypted to out, its tag after them; 1 if done. */
static int seal_frame(const unsigned char *aad, size_t aad_len, uint32_t i, int last, const unsigned char *p, size_t n,
                      unsigned char *out) {
  unsigned char nonce[12] = {0};
  nonce[7] = (unsigned char)(i >> 24);
  nonce[8] = (unsigned char)(i >> 16);
  nonce[9] = (unsigned char)(i >> 8);
  nonce[10] = (unsigned char)i;
  nonce[11] = last ? 1 : 0;
  int len = 0;
  if (g.enc_init(g.enc, NULL, NULL, NULL, nonce) != 1) return 0;
  if (aad_len && g.enc_update(g.enc, NULL, &len, aad, (int)aad_len) != 1) return 0;
  if (n && (g.enc_update(g.enc, out, &len, p, (int)n) != 1 || (size_t)len != n)) return 0;
  if (g.enc_final(g.enc, out + n, &len) != 1 || len != 0) return 0;
  return g.ctrl(g.enc, CTRL_GET_TAG, TAG, out + n) == 1;
}

/* The context keyed for one object (the key schedule once, not per frame); 1 if done. */
static int set_key(const unsigned char *key) {
  return g.init(g.ctx, g.aes_256_gcm(), NULL, NULL, NULL) == 1 && g.ctrl(g.ctx, CTRL_SET_IVLEN, 12, NULL) == 1 &&
         g.init(g.ctx, NULL, NULL, key, NULL) == 1;
}

/* One frame: ciphertext at p (n bytes) then its tag, decrypted in place; 1 if its tag checks. */
static int open_frame(const unsigned char *aad, size_t aad_len, uint32_t i, int last, unsigned char *p,
                      size_t n) {
  unsigned char nonce[12] = {0};
  nonce[7] = (unsigned char)(i >> 24);
  nonce[8] = (unsigned char)(i >> 16);
  nonce[9] = (unsigned char)(i >> 8);
  nonce[10] = (unsigned char)i;
  nonce[11] = last ? 1 : 0;
  int out = 0;
  if (g.init(g.ctx, NULL, NULL, NULL, nonce) != 1) return 0;
  if (aad_len && g.update(g.ctx, NULL, &out, aad, (int)aad_len) != 1) return 0;
  if (n && g.update(g.ctx, p, &out, p, (int)n) != 1) return 0;
  if (g.ctrl(g.ctx, CTRL_SET_TAG, TAG, p + n) != 1) return 0;
  return g.final(g.ctx, p + n, &out) == 1;
}

/* gcmAvailable() -> whether Node's OpenSSL AES-GCM functions were found (gcmSealAvailable: the sealing ones too). */
napi_value gcm_available(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value v;
  napi_get_boolean(env, gcm_ready(), &v);
  return v;
}

napi_value gcm_seal_available(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value v;
  napi_get_boolean(env, seal_ready(), &v);
  return v;
}

/*
 * gcmSealFrames(key, aad, plain, out, at, frameLog2) -> the bytes written at out[at..]: the
 * frames of `plain` (floor(n / F) + 1 of them, the last one shorter, possibly empty), each
 * followed by its tag; -1 if OpenSSL failed. The caller checked that out has room (sealed.ts
 * sealInto); checked again here.
 */
napi_value gcm_seal_frames(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 6) {
    napi_throw_type_error(env, NULL, "gcmSealFrames(key, aad, plain, out, at, frameLog2)");
    return NULL;
  }
  if (!seal_ready()) {
    napi_throw_error(env, NULL, "AES-GCM is not available");
    return NULL;
  }
  void *key, *aad, *plain, *out;
  size_t key_len, aad_len, plain_len, out_len;
  int64_t at;
  int32_t log2;
  CHECK(napi_get_buffer_info(env, argv[0], &key, &key_len));
  CHECK(napi_get_buffer_info(env, argv[1], &aad, &aad_len));
  CHECK(napi_get_buffer_info(env, argv[2], &plain, &plain_len));
  CHECK(napi_get_buffer_info(env, argv[3], &out, &out_len));
  CHECK(napi_get_value_int64(env, argv[4], &at));
  CHECK(napi_get_value_int32(env, argv[5], &log2));
  size_t frame = log2 >= 10 && log2 <= 24 ? (size_t)1 << log2 : 0;
  size_t frames = frame ? plain_len / frame + 1 : 0;
  if (key_len != 32 || !frame || at < 0 || aad_len > INT32_MAX || (uint64_t)at > out_len ||
      out_len - (size_t)at < plain_len + frames * TAG) {
    napi_throw_range_error(env, NULL, "gcmSealFrames: bad key, frame size or no room");
    return NULL;
  }
  unsigned char *dst = (unsigned char *)out + at;
  const unsigned char *src = (const unsigned char *)plain;
  int64_t written = set_seal_key(key) ? 0 : -1;
  for (size_t i = 0; written >= 0 && i < frames; i++) {
    int last = i == frames - 1;
    size_t n = last ? plain_len - i * frame : frame;
    if (!seal_frame(aad, aad_len, (uint32_t)i, last, src + i * frame, n, dst + written)) {
      written = -1;
      break;
    }
    written += (int64_t)(n + TAG);
  }
  napi_value v;
  CHECK(napi_create_int64(env, written, &v));
  return v;
}

/* gcmOpenFrames(key, aad, buf, start, end, frameLog2) -> -1, or the index of the first frame that failed. */
napi_value gcm_open_frames(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 6) {
    napi_throw_type_error(env, NULL, "gcmOpenFrames(key, aad, buf, start, end, frameLog2)");
    return NULL;
  }
  if (!gcm_ready()) {
    napi_throw_error(env, NULL, "AES-GCM is not available");
    return NULL;
  }
  void *key, *aad, *buf;
  size_t key_len, aad_len, buf_len;
  int64_t start, end;
  int32_t log2;
  CHECK(napi_get_buffer_info(env, argv[0], &key, &key_len));
  CHECK(napi_get_buffer_info(env, argv[1], &aad, &aad_len));
  CHECK(napi_get_buffer_info(env, argv[2], &buf, &buf_len));
  CHECK(napi_get_value_int64(env, argv[3], &start));
  CHECK(napi_get_value_int64(env, argv[4], &end));
  CHECK(napi_get_value_int32(env, argv[5], &log2));
  if (key_len != 32 || start < 0 || end < start || (uint64_t)end > buf_len || log2 < 10 || log2 > 24 || aad_len > INT32_MAX) {
    napi_throw_range_error(env, NULL, "gcmOpenFrames: bad key, range or frame size");
    return NULL;
  }
  size_t step = ((size_t)1 << log2) + TAG;
  size_t len = (size_t)(end - start);
  size_t frames = len / step + 1;
  unsigned char *body = (unsigned char *)buf + start;
  int32_t failed = set_key(key) ? -1 : 0;
  for (size_t i = 0; failed < 0 && i < frames; i++) {
    int last = i == frames - 1;
    size_t at = i * step;
    size_t n = last ? len - at : step;
    if (n < TAG || !open_frame(aad, aad_len, (uint32_t)i, last, body + at, n - TAG)) {
      failed = (int32_t)i;
      break;
    }
  }
  napi_value v;
  CHECK(napi_create_int32(env, failed, &v));
  return v;
}
