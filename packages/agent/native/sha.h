/* OpenSSL's SHA-256 as Node links it, looked up in the process when first used (inotify.c). */
#ifndef BOXBACK_SHA_H
#define BOXBACK_SHA_H
#include <stddef.h>
#include <stdint.h>

/* OpenSSL's SHA256_CTX is 112 bytes on every ABI Node ships; this reserves more, aligned. */
typedef struct {
  uint64_t words[32];
} sha_ctx;

/* Whether Node's SHA256_* functions were found (looked up once). */
int bb_sha_ready(void);
/* SHA-256 of `len` bytes in one call, or a running hash: 1 on success (OpenSSL's convention). */
int bb_sha_init(sha_ctx *c);
int bb_sha_update(sha_ctx *c, const void *data, size_t len);
int bb_sha_final(unsigned char *md, sha_ctx *c);

#endif
