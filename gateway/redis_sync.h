/* redis_sync.h: a blocking Redis connection for one-shot CLI commands
 * (`ferry-gateway init --shared`, `migrate --to`) and for `run --shared`'s
 * start-up, before its loop runs. Never for the daemon's loop: every call
 * here blocks (gateway/redis.h is the loop's client).
 *
 * Built on hiredis 0.14's blocking API. Connecting takes an fy_redis_config
 * (fy_redis_config_parse) and, within cfg->connect_timeout_ms for the
 * connect and for each command after it, sends AUTH (when a password is
 * set), SELECT (DB not 0) and PING (which catches a server that wants a
 * password the config lacks). The password is never logged or put in ERR.
 *
 * Errors: every function returns 0 or a negative FY_E* code with a one-line
 * message in ERR: FY_ECONNREFUSED (nothing listens), FY_ENOENT (no such
 * socket), FY_ETIMEDOUT, FY_ECONNRESET, FY_EPERM (AUTH refused or needed),
 * FY_EIO (an error reply, with its text, or another I/O error), FY_ENOMEM.
 * After any error but FY_EIO from an error reply the connection is broken:
 * free it. */
#ifndef FY_GATEWAY_REDIS_SYNC_H
#define FY_GATEWAY_REDIS_SYNC_H

#include "gateway/redis.h"

#include <hiredis/hiredis.h>
#include <stddef.h>

typedef struct fy_redis_sync fy_redis_sync;

/* Connects and authenticates as above. Returns 0 with *OUT set, or an
 * error (*OUT NULL). CFG is not kept. */
int fy_redis_sync_connect(const fy_redis_config *cfg, fy_redis_sync **out, char *err,
                          size_t errlen);

/* Closes the connection. NULL is ok. */
void fy_redis_sync_free(fy_redis_sync *c);

/* Sends ARGV[0..ARGC) (ARGVLEN[i] bytes each; NULL for NUL-terminated
 * strings) and waits for its reply. Returns 0 with *REPLY set (free it with
 * freeReplyObject; never an error reply), FY_EIO for an error reply (*REPLY
 * NULL, ERR "redis: " and its text) or a connection error. */
int fy_redis_sync_cmd(fy_redis_sync *c, redisReply **reply, int argc, const char *const *argv,
                      const size_t *argvlen, char *err, size_t errlen);

/* Pipelining: fy_redis_sync_append queues a command (nothing is sent yet;
 * returns 0 or FY_ENOMEM); each fy_redis_sync_get then sends what is queued
 * (the first time) and returns the next reply in order, as
 * fy_redis_sync_cmd does. Call get once per appended command. */
int fy_redis_sync_append(fy_redis_sync *c, int argc, const char *const *argv,
                         const size_t *argvlen);
int fy_redis_sync_get(fy_redis_sync *c, redisReply **reply, char *err, size_t errlen);

#endif
