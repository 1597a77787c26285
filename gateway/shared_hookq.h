/* shared_hookq.h: async hooks' events in Redis Streams, for gateway
 * replicas sharing state (`run --shared`; the keys are shared_layout.h's
 * {h:HOOKID}). hookq.c delivers from here instead of the SQLite queue; what
 * it does with an event (the request, the tunnel stream, timeouts, retry
 * decisions) is the same for both.
 *
 * Accepting: fy_shq_add XADDs the event to the hook's stream (after making
 * sure the consumer group FY_SH_HOOK_GROUP exists) and calls back once Redis
 * answered, so a 202 is sent only for an event Redis has (durable when it
 * runs with appendonly).
 *
 * Delivering, in order per hook across replicas: one replica at a time
 * delivers a hook, the one holding its owner lease (a SET NX PX of the
 * replica id, FY_SH_HOOK_OWNER_FMT). fy_shq_next takes or extends the lease
 * and, in the same script, hands out the oldest entry: first one left
 * pending in the group (XAUTOCLAIM from 0-0, min idle 0: its own, or a dead
 * replica's once that replica's lease ran out), else a new one
 * (XREADGROUP >), with its failed attempts so far (FY_SH_HOOK_TRIES_FMT).
 * Since an entry leaves the stream only when it is delivered or dead, and
 * the lease lets one replica read at a time, entries go out in stream
 * order. While an event is out the lease is renewed every TTL / 3 (compare
 * and extend: only while this replica still holds it); a replica that dies
 * lets go of its hooks within TTL, and the next owner delivers the event it
 * had in flight again, with the same delivery id (at least once).
 *
 * Everything is asynchronous on the shared client (gateway/redis.h); no
 * call waits. Loop thread only. */
#ifndef FY_GATEWAY_SHARED_HOOKQ_H
#define FY_GATEWAY_SHARED_HOOKQ_H

#include "gateway/shared.h"
#include "gateway/store.h"

#include <stdint.h>

#define FY_SHQ_ENTRY_MAX 48 /* a stream entry id "MS-SEQ", with its NUL */

typedef struct fy_shq fy_shq;

/* A queue on SH's client (on LOOP, SH's) whose owner leases last
 * OWNER_TTL_MS. Returns 0, FY_EINVAL or FY_ENOMEM. */
int fy_shq_new(uv_loop_t *loop, fy_shared *sh, unsigned owner_ttl_ms, fy_shq **out);

/* After this returns no callback of Q runs; replies still owed are dropped
 * as they come (the shared client's free cancels the rest). NULL is ok. */
void fy_shq_free(fy_shq *q);

/* Appends event IT (hook_id, delivery_id, target, headers, body,
 * accepted_at; copied) to its hook's stream. CB(DATA, 0) once Redis has it,
 * or an error (FY_ECONNRESET: it may or may not be there). Returns 0 (CB will
 * run), FY_EUNREACH (down), FY_EINVAL or FY_ENOMEM (CB never runs). */
int fy_shq_add(fy_shq *q, const fy_store_hookq_item *it, fy_shared_done_cb cb, void *data);

/* Hook HOOK_ID's next event for this replica to deliver: CB(DATA, 0) with
 * *OUT filled (hook_id, delivery_id, target, headers, body, accepted_at,
 * attempts and next_at; free with fy_store_hookq_item_free) and ENTRY its
 * stream id; FY_ENOENT when there is none or another replica owns the hook;
 * another error when Redis failed. OUT and ENTRY must stay valid until CB.
 * Returns 0 (CB will run) or FY_EUNREACH / FY_ENOMEM (CB never runs). An
 * event handed out stays pending until fy_shq_done or fy_shq_retry (an
 * event left waiting, say for its runner, is handed out again). */
int fy_shq_next(fy_shq *q, const char *hook_id, fy_store_hookq_item *out,
                char entry[FY_SHQ_ENTRY_MAX], fy_shared_done_cb cb, void *data);

/* Delivered: the entry leaves the stream (XACK, XDEL) with its attempts.
 * Returns 0 (sent) or FY_EUNREACH: then it stays pending and is delivered
 * again (at least once). */
int fy_shq_done(fy_shq *q, const char *hook_id, const char *entry);

/* Not delivered: ATTEMPTS failed attempts so far, the next at NEXT_AT (unix
 * s); DEAD moves it to the hook's dead stream (FY_SH_HOOK_DEAD_FMT) with
 * ERROR. Returns as fy_shq_done. */
int fy_shq_retry(fy_shq *q, const fy_store_hookq_item *it, const char *entry, int64_t attempts,
                 int64_t next_at, int dead, const char *error);

#endif
