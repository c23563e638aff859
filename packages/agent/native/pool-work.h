/* A request on libuv's pool that settles a promise, keeping its JS buffers alive meanwhile
 * (inotify.c's block I/O, digest-files.c). */
#ifndef BOXBACK_POOL_WORK_H
#define BOXBACK_POOL_WORK_H
#include <node_api.h>

/*
 * Reference the `nkeep` values (into refs[0..nkeep)), make a promise (*deferred) and queue
 * `execute` then `complete` with `data` (*work). Returns the promise; on failure the references
 * made are deleted, `data` is freed, a JS error naming `what` is thrown and NULL returned.
 */
napi_value bb_queue_pool_work(napi_env env, const char *what, napi_value *keep, int nkeep, napi_ref *refs,
                              napi_deferred *deferred, napi_async_work *work, napi_async_execute_callback execute,
                              napi_async_complete_callback complete, void *data);

/* From `complete`: the references and the work deleted, `data` freed. */
void bb_release_pool_work(napi_env env, napi_ref *refs, int nrefs, napi_async_work work, void *data);

#endif
