/* shared_limits.c: the shared per-key limits (see shared_limits.h for the
 * contract).
 *
 * Each operation is one Lua script; the scripts share a prelude of helpers,
 * joined to each at registration. Inside Lua every number is a double, so
 * the scripts keep every value below 2^53: times are microseconds (unix time
 * is ~1.8e15 of them), limits at most 2^40, and the products that can pass
 * 2^53 (tokens * window, tpm * window, a history rescaled to new limits) go
 * through muldiv, which is exact. Divisions go through idiv, since a double
 * quotient can round up to the next integer. Numbers handed to Redis are
 * formatted with %.0f: Redis would print a large double in exponent form.
 * Each script validates what it reads (a decimal integer in range, else a
 * script error), so garbage in a hash is an error reply, never a guess. */
#include "gateway/shared_limits.h"

#include "common/err.h"
#include "gateway/shared_layout.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_PER_US 1000
#define MAX53     (((int64_t)1 << 53) - 1) /* the largest integer Lua holds exactly */

/* --- the scripts ------------------------------------------------------------------ */

/* Helpers every script but live_lua starts with (fy_shl_new joins them). */
static const char prelude_lua[] =
    "-- W: the window; CAPQ, CAPH: the local limiter's caps on one duration\n"
    "-- (INT64_MAX / 4 ns) and on the bucket's end (INT64_MAX / 2 ns), in us.\n"
    "local W, CAPQ, CAPH = 60000000, 2305843009213693, 4611686018427387\n"
    "local LIM, MAX = 1099511627776, 9007199254740991\n"
    "local function fmt(x) return string.format('%.0f', x) end\n"
    "-- A decimal integer 0..HI from Redis (false, nil: 0), else a script error.\n"
    "local function int(v, what, hi)\n"
    "  if not v then return 0 end\n"
    "  if type(v) ~= 'string' or #v > 16 or not string.match(v, '^%d+$') then\n"
    "    error('ferry: ' .. what .. ' is not an integer')\n"
    "  end\n"
    "  local x = tonumber(v)\n"
    "  if x > hi then error('ferry: ' .. what .. ' is out of range') end\n"
    "  return x\n"
    "end\n"
    "-- floor(A / B) and the remainder, exact for integers below 2^53 (the\n"
    "-- double quotient may round up across an integer).\n"
    "local function idiv(a, b)\n"
    "  local q = math.floor(a / b)\n"
    "  local r = a - q * b\n"
    "  if r < 0 then q = q - 1; r = r + b elseif r >= b then q = q + 1; r = r - b end\n"
    "  return q, r\n"
    "end\n"
    "-- floor(A * B / C) and the remainder, exact while the quotient stays below\n"
    "-- 2^53 (beyond that only its size matters: it is capped), by doubling.\n"
    "local function muldiv(a, b, c)\n"
    "  if a * b <= MAX then return idiv(a * b, c) end\n"
    "  local qa, ra = idiv(a, c)\n"
    "  local bits, q, r = {}, 0, 0\n"
    "  while b > 0 do local bit = b % 2; bits[#bits + 1] = bit; b = (b - bit) / 2 end\n"
    "  for i = #bits, 1, -1 do\n"
    "    q = q * 2; r = r * 2\n"
    "    if r >= c then q = q + 1; r = r - c end\n"
    "    if bits[i] == 1 then\n"
    "      q = q + qa; r = r + ra\n"
    "      if r >= c then q = q + 1; r = r - c end\n"
    "    end\n"
    "  end\n"
    "  return q, r\n"
    "end\n"
    "-- fy_rl_set_limits' rescale: the use left after NOW in the new limit's time.\n"
    "local function rescale(e, now, num, den)\n"
    "  if e <= now or den <= 0 then return e end\n"
    "  local d = muldiv(e - now, num, den)\n"
    "  if d > CAPQ then d = CAPQ end\n"
    "  return now + d\n"
    "end\n"
    "-- Now in us and in s: the arguments, or Redis's clock for an empty one.\n"
    "local function clock(us, s)\n"
    "  if us ~= '' and s ~= '' then return int(us, 'now_us', MAX), int(s, 'now_s', MAX) end\n"
    "  local t = redis.call('TIME')\n"
    "  local ts, tus = tonumber(t[1]), tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "  if us ~= '' then tus = int(us, 'now_us', MAX) end\n"
    "  if s ~= '' then ts = int(s, 'now_s', MAX) end\n"
    "  return tus, ts\n"
    "end\n"
    "-- The live hash KEYS[1] with T and TOL as fy_rl computes them (nil: the\n"
    "-- key is unknown).\n"
    "local function live()\n"
    "  if redis.call('EXISTS', KEYS[1]) == 0 then return nil end\n"
    "  local v = redis.call('HMGET', KEYS[1], 'rpm', 'tpm', 'cc', 'burst', 'exp', 'rev', 'ver')\n"
    "  local l = {rpm = int(v[1], 'rpm', LIM), tpm = int(v[2], 'tpm', LIM),\n"
    "    cc = int(v[3], 'cc', LIM), burst = int(v[4], 'burst', LIM),\n"
    "    exp = int(v[5], 'exp', MAX), rev = int(v[6], 'rev', MAX), ver = int(v[7], 'ver', MAX)}\n"
    "  if l.cc > 2147483647 then l.cc = 2147483647 end\n"
    "  l.t, l.tol = 0, 0\n"
    "  if l.rpm > 0 then\n"
    "    l.t = idiv(W + l.rpm - 1, l.rpm)\n"
    "    local b = l.burst\n"
    "    if b == 0 then b = idiv(l.rpm + 5, 6) end\n"
    "    if b > l.rpm then b = l.rpm end\n"
    "    l.tol = b * l.t\n"
    "  end\n"
    "  return l\n"
    "end\n"
    "-- The limiter state KEYS[2] at NOW, carried over to L's limits as\n"
    "-- fy_rl_set_limits does when they changed since it was written (dirty:\n"
    "-- then it must be saved even if nothing is admitted).\n"
    "local function state(l, now)\n"
    "  local v = redis.call('HMGET', KEYS[2], 'tat', 'tfull', 't', 'tpm')\n"
    "  local st = {tat = int(v[1], 'tat', MAX), tfull = int(v[2], 'tfull', MAX),\n"
    "    t = int(v[3], 't', W), tpm = int(v[4], 'tpm', LIM), dirty = false}\n"
    "  if l.t ~= st.t then\n"
    "    if l.t > 0 and st.t > 0 then st.tat = rescale(st.tat, now, l.t, st.t)\n"
    "    elseif l.t > 0 then st.tat = 0 end\n"
    "    st.t, st.dirty = l.t, true\n"
    "  end\n"
    "  if l.tpm ~= st.tpm then\n"
    "    if l.tpm > 0 and st.tpm > 0 then st.tfull = rescale(st.tfull, now, st.tpm, l.tpm)\n"
    "    elseif l.tpm > 0 then st.tfull = 0 end\n"
    "    st.tpm, st.dirty = l.tpm, true\n"
    "  end\n"
    "  return st\n"
    "end\n"
    "-- Writes ST back, to expire a minute after it is back at the initial state\n"
    "-- (from then on a missing state means the same).\n"
    "local function save(st, now)\n"
    "  redis.call('HSET', KEYS[2], 'tat', fmt(st.tat), 'tfull', fmt(st.tfull),\n"
    "    't', fmt(st.t), 'tpm', fmt(st.tpm))\n"
    "  local left = math.max(st.tat, st.tfull) - now\n"
    "  if left < 0 then left = 0 end\n"
    "  redis.call('PEXPIRE', KEYS[2], fmt(idiv(left + 999, 1000) + 60000))\n"
    "end\n"
    "-- The lease set CC expires a minute after its last lease.\n"
    "local function leases_expire(cc, now_ms)\n"
    "  local top = redis.call('ZRANGE', cc, -1, -1, 'WITHSCORES')\n"
    "  if top[2] then\n"
    "    local left = tonumber(top[2]) - now_ms\n"
    "    if left < 0 then left = 0 end\n"
    "    redis.call('PEXPIRE', cc, fmt(left + 60000))\n"
    "  end\n"
    "end\n";

/* KEYS live, rl, cc; ARGV now_us|"", lease id, lease ttl ms, now_s|"".
 * fy_rl_acquire's evaluate, step for step. */
static const char admit_lua[] =
    "local l = live()\n"
    "if not l then return {2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0} end\n"
    "local now, now_s = clock(ARGV[1], ARGV[4])\n"
    "if l.rev > 0 then return {3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, l.ver} end\n"
    "if l.exp > 0 and l.exp <= now_s then\n"
    "  return {4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, l.ver}\n"
    "end\n"
    "local ttl = int(ARGV[3], 'lease ttl', MAX)\n"
    "local st = state(l, now)\n"
    "local wait_req, wait_tok, wait_conc = 0, 0, 0\n"
    "local deny_req, deny_tok, deny_conc = false, false, false\n"
    "local tat = math.max(st.tat, now)\n"
    "if l.rpm > 0 then\n"
    "  local nxt = tat + l.t - now\n"
    "  if nxt > l.tol then deny_req = true; wait_req = nxt - l.tol end\n"
    "end\n"
    "local full = math.max(st.tfull, now)\n"
    "if l.tpm > 0 then\n"
    "  local debt = full - now - W -- > 0: the bucket is negative\n"
    "  if debt > 0 then deny_tok = true; wait_tok = debt end\n"
    "end\n"
    "local now_ms = idiv(now, 1000)\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', fmt(now_ms))\n"
    "local in_flight = redis.call('ZCARD', KEYS[3])\n"
    "if l.cc > 0 and in_flight >= l.cc then deny_conc = true; wait_conc = 1000000 end\n"
    "local allowed = not (deny_req or deny_tok or deny_conc)\n"
    "if allowed then\n"
    "  if l.rpm > 0 then tat = tat + l.t; st.tat = tat; st.dirty = true end\n"
    "  redis.call('ZADD', KEYS[3], fmt(now_ms + ttl), ARGV[2])\n"
    "  leases_expire(KEYS[3], now_ms)\n"
    "  in_flight = in_flight + 1\n"
    "end\n"
    "if st.dirty then save(st, now) end\n"
    "-- The longest wait, ties broken in the order requests, tokens, concurrency.\n"
    "local by, retry = 0, 0\n"
    "if not allowed then\n"
    "  if deny_req then by = 1; retry = wait_req end\n"
    "  if deny_tok and (by == 0 or wait_tok > retry) then by = 2; retry = wait_tok end\n"
    "  if deny_conc and (by == 0 or wait_conc > retry) then by = 3; retry = wait_conc end\n"
    "end\n"
    "local lr, rr, rs, br = 0, 0, 0, 0\n"
    "if l.rpm > 0 then\n"
    "  local used = tat - now\n"
    "  local left = l.tol - used\n"
    "  lr, rs, br = l.rpm, used, idiv(l.tol, l.t)\n"
    "  if left > 0 then rr = idiv(left, l.t) end\n"
    "end\n"
    "local lt, rt, rst = 0, 0, 0\n"
    "if l.tpm > 0 then\n"
    "  local owed = full - now -- time to full: 0 = full, > W = debt\n"
    "  lt, rst = l.tpm, owed\n"
    "  if owed < W then rt = muldiv(l.tpm, W - owed, W) end\n"
    "end\n"
    "return {allowed and 0 or 1, by, retry, lr, rr, rs, br, lt, rt, rst, l.cc, in_flight, l.ver}\n";

/* KEYS live, rl; ARGV now_us|"", tokens. fy_rl_charge. */
static const char charge_lua[] = "local l = live()\n"
                                 "if not l then return 0 end\n"
                                 "local now = clock(ARGV[1], '0')\n"
                                 "local tokens = int(ARGV[2], 'tokens', MAX)\n"
                                 "local st = state(l, now)\n"
                                 "local charged = 0\n"
                                 "if l.tpm > 0 and tokens > 0 then\n"
                                 "  local q, r = muldiv(tokens, W, l.tpm)\n"
                                 "  if r > 0 then q = q + 1 end\n"
                                 "  if q > CAPQ then q = CAPQ end\n"
                                 "  st.tfull = math.min(math.max(st.tfull, now) + q, CAPH)\n"
                                 "  st.dirty, charged = true, 1\n"
                                 "end\n"
                                 "if st.dirty then save(st, now) end\n"
                                 "return charged\n";

/* KEYS cc; ARGV now_us|"", ttl ms, lease ids... */
static const char renew_lua[] =
    "local now = clock(ARGV[1], '0')\n"
    "local ttl = int(ARGV[2], 'lease ttl', MAX)\n"
    "local now_ms = idiv(now, 1000)\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', fmt(now_ms))\n"
    "local n = 0\n"
    "for i = 3, #ARGV do\n"
    "  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then\n"
    "    redis.call('ZADD', KEYS[1], 'XX', fmt(now_ms + ttl), ARGV[i])\n"
    "    n = n + 1\n"
    "  end\n"
    "end\n"
    "if n > 0 then leases_expire(KEYS[1], now_ms) end\n"
    "return n\n";

/* KEYS live; ARGV rpm, tpm, cc, burst, exp, rev (validated by the caller). */
static const char live_lua[] =
    "redis.call('HSET', KEYS[1], 'rpm', ARGV[1], 'tpm', ARGV[2], 'cc', ARGV[3],\n"
    "  'burst', ARGV[4], 'exp', ARGV[5], 'rev', ARGV[6])\n"
    "return redis.call('HINCRBY', KEYS[1], 'ver', 1)\n";

/* --- the client side --------------------------------------------------------------- */

struct fy_shl {
    fy_redis *cl;
    fy_redis_script *admit, *charge, *renew, *live;
};

/* The elements of the admit script's reply, in order. */
enum {
    R_STATUS,
    R_DENIED_BY,
    R_RETRY,
    R_LIMIT_REQ,
    R_REMAINING_REQ,
    R_RESET_REQ,
    R_BURST,
    R_LIMIT_TOK,
    R_REMAINING_TOK,
    R_RESET_TOK,
    R_LIMIT_CC,
    R_IN_FLIGHT,
    R_VER,
    R_COUNT
};

/* One operation in flight: whose callback to run. Freed by the trampoline. */
typedef struct {
    fy_shl_admit_cb admit;
    fy_shl_count_cb count;
    void *data;
} shl_rq;

/* Registers the prelude followed by BODY (the script registration copies
 * the source). */
static int script_new(fy_redis *cl, const char *body, fy_redis_script **out)
{
    size_t np = sizeof prelude_lua - 1, nb = strlen(body);
    char *src = malloc(np + nb + 1);
    int rc;

    if (!src) {
        return FY_ENOMEM;
    }
    memcpy(src, prelude_lua, np);
    memcpy(src + np, body, nb + 1);
    rc = fy_redis_script_new(cl, src, out);
    free(src);
    return rc;
}

int fy_shl_new(fy_redis *cl, fy_shl **out)
{
    fy_shl *l = calloc(1, sizeof *l);
    int rc;

    *out = NULL;
    if (!l) {
        return FY_ENOMEM;
    }
    l->cl = cl;
    if ((rc = script_new(cl, admit_lua, &l->admit)) ||
        (rc = script_new(cl, charge_lua, &l->charge)) ||
        (rc = script_new(cl, renew_lua, &l->renew)) ||
        (rc = fy_redis_script_new(cl, live_lua, &l->live))) {
        free(l); /* the scripts registered so far belong to CL */
        return rc;
    }
    *out = l;
    return 0;
}

void fy_shl_free(fy_shl *l)
{
    free(l);
}

/* KEY_ID is 1..FY_SHL_KEY_ID_MAX bytes of [A-Za-z0-9_-]: nothing that could
 * move the hash tag or overflow a key name. */
static int key_id_ok(const char *id)
{
    size_t n = 0;
    if (!id) {
        return 0;
    }
    for (; id[n]; n++) {
        char c = id[n];
        if (n >= FY_SHL_KEY_ID_MAX || !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                                        (c >= '0' && c <= '9') || c == '_' || c == '-')) {
            return 0;
        }
    }
    return n > 0;
}

static int lease_id_ok(const char *id)
{
    return id && id[0] && strlen(id) <= FY_SHL_LEASE_ID_MAX;
}

/* Key names of a valid key id always fit. */
_Static_assert(sizeof FY_SH_KEY_LEASES_FMT + FY_SHL_KEY_ID_MAX <= FY_SH_KEYNAME_MAX,
               "key names fit FY_SH_KEYNAME_MAX");
_Static_assert(sizeof FY_SH_KEY_LIVE_FMT + FY_SHL_KEY_ID_MAX <= FY_SH_KEYNAME_MAX,
               "key names fit FY_SH_KEYNAME_MAX");
_Static_assert(sizeof FY_SH_KEY_RL_FMT + FY_SHL_KEY_ID_MAX <= FY_SH_KEYNAME_MAX,
               "key names fit FY_SH_KEYNAME_MAX");

/* A time argument: "" for Redis's clock. */
static int time_arg(int64_t t, char *buf, size_t len)
{
    if (t > MAX53) {
        return FY_EINVAL;
    }
    if (t < 0) {
        buf[0] = 0;
    } else {
        snprintf(buf, len, "%lld", (long long)t);
    }
    return 0;
}

static shl_rq *rq_new(fy_shl_admit_cb admit, fy_shl_count_cb count, void *data)
{
    shl_rq *rq = malloc(sizeof *rq);
    if (rq) {
        *rq = (shl_rq){admit, count, data};
    }
    return rq;
}

/* Parses the admit script's reply R into *A: exactly R_COUNT integers in
 * range, the status and the denial consistent. Returns 0 or FY_EPROTO. */
static int parse_admission(const fy_redis_reply *r, fy_shl_admission *a)
{
    int64_t v[R_COUNT];

    memset(a, 0, sizeof *a);
    if (!r || r->type != FY_REDIS_REPLY_ARRAY || r->n != R_COUNT || !r->elem) {
        return FY_EPROTO;
    }
    for (size_t i = 0; i < R_COUNT; i++) {
        if (r->elem[i].type != FY_REDIS_REPLY_INTEGER || r->elem[i].integer < 0 ||
            r->elem[i].integer > MAX53) {
            return FY_EPROTO;
        }
        v[i] = r->elem[i].integer;
    }
    if (v[R_STATUS] > FY_SHL_EXPIRED || v[R_DENIED_BY] > FY_RL_CONCURRENCY ||
        (v[R_STATUS] == FY_SHL_DENIED) != (v[R_DENIED_BY] != FY_RL_NONE)) {
        return FY_EPROTO;
    }
    a->status = (fy_shl_status)v[R_STATUS];
    a->ver = v[R_VER];
    if (a->status > FY_SHL_DENIED) {
        return 0;
    }
    a->rr = (fy_rl_result){
        .allowed = a->status == FY_SHL_OK,
        .denied_by = (fy_rl_kind)v[R_DENIED_BY],
        .retry_after_ns = v[R_RETRY] * NS_PER_US,
        .limit_requests = v[R_LIMIT_REQ],
        .remaining_requests = v[R_REMAINING_REQ],
        .reset_requests_ns = v[R_RESET_REQ] * NS_PER_US,
        .burst_requests = v[R_BURST],
        .limit_tokens = v[R_LIMIT_TOK],
        .remaining_tokens = v[R_REMAINING_TOK],
        .reset_tokens_ns = v[R_RESET_TOK] * NS_PER_US,
        .limit_concurrency = v[R_LIMIT_CC],
        .in_flight = v[R_IN_FLIGHT],
    };
    return 0;
}

static void on_admit(void *data, int status, const fy_redis_reply *reply)
{
    shl_rq *rq = data;
    fy_shl_admission a;
    int err = status ? status : parse_admission(reply, &a);

    rq->admit(rq->data, err, err ? NULL : &a);
    free(rq);
}

/* The reply of charge, release, renew and live: one integer >= 0. */
static void on_count(void *data, int status, const fy_redis_reply *reply)
{
    shl_rq *rq = data;
    int err = status;
    int64_t n = 0;

    if (!err && (reply->type != FY_REDIS_REPLY_INTEGER || reply->integer < 0)) {
        err = FY_EPROTO;
    }
    if (!err) {
        n = reply->integer;
    }
    if (rq->count) {
        rq->count(rq->data, err, n);
    }
    free(rq);
}

/* Runs S with KEYS and ARGS, calling back through ON; frees RQ when the
 * call fails at once. */
static int run(fy_redis_script *s, shl_rq *rq, fy_redis_reply_cb on, int nkeys,
               const char *const *keys, int nargs, const char *const *args)
{
    int rc;
    if (!rq) {
        return FY_ENOMEM;
    }
    rc = fy_redis_eval(s, on, rq, nkeys, keys, NULL, nargs, args, NULL);
    if (rc) {
        free(rq);
    }
    return rc;
}

int fy_shl_admit(fy_shl *l, const char *key_id, const char *lease_id, int64_t lease_ttl_ms,
                 int64_t now_us, int64_t now_s, fy_shl_admit_cb cb, void *data)
{
    char live[FY_SH_KEYNAME_MAX], rl[FY_SH_KEYNAME_MAX], cc[FY_SH_KEYNAME_MAX];
    char us[24], s[24], ttl[24];

    if (!l || !cb || !key_id_ok(key_id) || !lease_id_ok(lease_id) || lease_ttl_ms < 1 ||
        lease_ttl_ms > FY_SHL_LEASE_TTL_MAX || time_arg(now_us, us, sizeof us) ||
        time_arg(now_s, s, sizeof s)) {
        return FY_EINVAL;
    }
    snprintf(live, sizeof live, FY_SH_KEY_LIVE_FMT, key_id);
    snprintf(rl, sizeof rl, FY_SH_KEY_RL_FMT, key_id);
    snprintf(cc, sizeof cc, FY_SH_KEY_LEASES_FMT, key_id);
    snprintf(ttl, sizeof ttl, "%lld", (long long)lease_ttl_ms);
    const char *keys[] = {live, rl, cc};
    const char *args[] = {us, lease_id, ttl, s};
    return run(l->admit, rq_new(cb, NULL, data), on_admit, 3, keys, 4, args);
}

int fy_shl_charge(fy_shl *l, const char *key_id, int64_t tokens, int64_t now_us, fy_shl_count_cb cb,
                  void *data)
{
    char live[FY_SH_KEYNAME_MAX], rl[FY_SH_KEYNAME_MAX], us[24], tok[24];

    if (!l || !key_id_ok(key_id) || time_arg(now_us, us, sizeof us)) {
        return FY_EINVAL;
    }
    snprintf(live, sizeof live, FY_SH_KEY_LIVE_FMT, key_id);
    snprintf(rl, sizeof rl, FY_SH_KEY_RL_FMT, key_id);
    /* Beyond 2^53 tokens the debt is at its cap anyway. */
    snprintf(tok, sizeof tok, "%lld",
             (long long)(tokens < 0       ? 0
                         : tokens > MAX53 ? MAX53
                                          : tokens));
    const char *keys[] = {live, rl};
    const char *args[] = {us, tok};
    return run(l->charge, rq_new(NULL, cb, data), on_count, 2, keys, 2, args);
}

int fy_shl_release(fy_shl *l, const char *key_id, const char *lease_id, fy_shl_count_cb cb,
                   void *data)
{
    char cc[FY_SH_KEYNAME_MAX];
    shl_rq *rq;
    int rc;

    if (!l || !key_id_ok(key_id) || !lease_id_ok(lease_id)) {
        return FY_EINVAL;
    }
    snprintf(cc, sizeof cc, FY_SH_KEY_LEASES_FMT, key_id);
    if (!(rq = rq_new(NULL, cb, data))) {
        return FY_ENOMEM;
    }
    const char *argv[] = {"ZREM", cc, lease_id};
    rc = fy_redis_cmd(l->cl, on_count, rq, 3, argv, NULL);
    if (rc) {
        free(rq);
    }
    return rc;
}

int fy_shl_renew(fy_shl *l, const char *key_id, const char *const *lease_ids, size_t n,
                 int64_t ttl_ms, int64_t now_us, fy_shl_count_cb cb, void *data)
{
    char cc[FY_SH_KEYNAME_MAX], us[24], ttl[24];
    const char *args[2 + FY_SHL_RENEW_MAX];

    if (!l || !key_id_ok(key_id) || !lease_ids || n < 1 || n > FY_SHL_RENEW_MAX || ttl_ms < 1 ||
        ttl_ms > FY_SHL_LEASE_TTL_MAX || time_arg(now_us, us, sizeof us)) {
        return FY_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (!lease_id_ok(lease_ids[i])) {
            return FY_EINVAL;
        }
        args[2 + i] = lease_ids[i];
    }
    snprintf(cc, sizeof cc, FY_SH_KEY_LEASES_FMT, key_id);
    snprintf(ttl, sizeof ttl, "%lld", (long long)ttl_ms);
    args[0] = us;
    args[1] = ttl;
    const char *keys[] = {cc};
    return run(l->renew, rq_new(NULL, cb, data), on_count, 1, keys, (int)(2 + n), args);
}

int fy_shl_live_write(fy_shl *l, const char *key_id, const fy_shl_live *lv, fy_shl_count_cb cb,
                      void *data)
{
    char live[FY_SH_KEYNAME_MAX], text[6][24];
    const int64_t v[6] = {lv ? lv->rpm : 0,   lv ? lv->tpm : 0,        lv ? lv->concurrency : 0,
                          lv ? lv->burst : 0, lv ? lv->expires_at : 0, lv ? lv->revoked_at : 0};
    const char *args[6];

    if (!l || !lv || !key_id_ok(key_id)) {
        return FY_EINVAL;
    }
    for (int i = 0; i < 6; i++) {
        if (v[i] < 0 || v[i] > (i < 4 ? FY_SHL_LIMIT_MAX : MAX53)) {
            return FY_EINVAL;
        }
        snprintf(text[i], sizeof text[i], "%lld", (long long)v[i]);
        args[i] = text[i];
    }
    snprintf(live, sizeof live, FY_SH_KEY_LIVE_FMT, key_id);
    const char *keys[] = {live};
    return run(l->live, rq_new(NULL, cb, data), on_count, 1, keys, 6, args);
}
