#include <hiredis/adapters/libuv.h>
#include "portsweep_redis.h"

int portsweep_redis_attach(redisAsyncContext *context, void *loop) {
    return redisLibuvAttach(context, (uv_loop_t *)loop);
}
