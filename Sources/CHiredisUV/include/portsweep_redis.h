// hiredis (Debian's libhiredis-dev) and its libuv adapter, for UVRedis. The adapter is header-only C that uses
// libuv's types; it is compiled here, so that no libuv type crosses into Swift from this module (UVLoop owns
// those) and the loop is passed as an opaque pointer.
#ifndef PORTSWEEP_REDIS_H
#define PORTSWEEP_REDIS_H
#include <hiredis/hiredis.h>
#include <hiredis/async.h>

/// hiredis's redisLibuvAttach: the context's socket is driven by a uv_poll_t on `loop` (a uv_loop_t *), closed
/// with uv_close and freed in its close callback when the context is freed. REDIS_OK or REDIS_ERR.
int portsweep_redis_attach(redisAsyncContext *context, void *loop);

#endif
