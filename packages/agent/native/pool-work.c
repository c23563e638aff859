/* pool-work.h: the queueing and release both pool requests of the addon share. */
#include <stdio.h>
#include <stdlib.h>
#include "pool-work.h"

napi_value bb_queue_pool_work(napi_env env, const char *what, napi_value *keep, int nkeep, napi_ref *refs,
                              napi_deferred *deferred, napi_async_work *work, napi_async_execute_callback execute,
                              napi_async_complete_callback complete, void *data) {
  napi_value promise, name;
  char text[96];
  for (int i = 0; i < nkeep; i++) {
    if (napi_create_reference(env, keep[i], 1, &refs[i]) != napi_ok) {
      for (int j = 0; j < i; j++) napi_delete_reference(env, refs[j]);
      free(data);
      napi_throw_error(env, NULL, "napi_create_reference failed");
      return NULL;
    }
  }
  snprintf(text, sizeof text, "boxback:%s", what);
  if (napi_create_promise(env, deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, execute, complete, data, work) != napi_ok ||
      napi_queue_async_work(env, *work) != napi_ok) {
    for (int j = 0; j < nkeep; j++) napi_delete_reference(env, refs[j]);
    free(data);
    snprintf(text, sizeof text, "queueing %s failed", what);
    napi_throw_error(env, NULL, text);
    return NULL;
  }
  return promise;
}

void bb_release_pool_work(napi_env env, napi_ref *refs, int nrefs, napi_async_work work, void *data) {
  for (int i = 0; i < nrefs; i++)
    if (refs[i]) napi_delete_reference(env, refs[i]);
  napi_delete_async_work(env, work);
  free(data);
}
