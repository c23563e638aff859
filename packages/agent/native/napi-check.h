/* CHECK(call): an N-API call that failed throws a JS error naming it and returns NULL (inotify.c, prefetch.c). */
#ifndef BOXBACK_NAPI_CHECK_H
#define BOXBACK_NAPI_CHECK_H
#include <node_api.h>

#define CHECK(call)                                         \
  do {                                                      \
    if ((call) != napi_ok) {                                \
      napi_throw_error(env, NULL, #call " failed");         \
      return NULL;                                          \
    }                                                       \
  } while (0)

#endif
