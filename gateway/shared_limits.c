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

/* Helpers every script but live_lua starts with (fy_shl_new joins them).
 * Every redis.call costs a script a few microseconds of Redis's one core, so
 * the scripts make as few as they can: one HMGET reads a key's limits and its
 * limiter state together (one hash), one HSET writes the state back. */
static const char prelude_lua[] =
    "-- W: the window; CAPQ, CAPH: the local limiter's caps on one duration\n"
    "-- (INT64_MAX / 4 ns) and on the bucket's end (INT64_MAX / 2 ns), in us.\n"
    "local W, CAPQ, CAPH = 60000000, 2305843009213693, 4611686018427387\n"
    "local LIM, MAX = 1099511627776, 9007199254740991\n"
    "local function fmt(x) return string.format('%.0f', x) end\n"
    "-- An integer 0..HI from Redis (false, nil: 0), else a script error.\n"
    "local function int(v, what, hi)\n"
    "  if not v then return 0 end\n"
    "  local x = tonumber(v)\n"
    "  if not x or x < 0 or x > hi or x % 1 ~= 0 then\n"
    "    error('ferry: ' .. what .. ' is not an integer in range')\n"
    "  end\n"
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
    "-- The key's hash KEYS[1]: its limits L with T and TOL as fy_rl computes\n"
    "-- them (nil: the key is unknown, none of its fields is set), and NOW's\n"
    "-- limiter state ST (rl_*), carried over to L's limits as\n"
    "-- fy_rl_set_limits does when they changed since it was written (dirty:\n"
    "-- then it must be saved even if nothing is admitted).\n"
    "local function load(clk_us, clk_s)\n"
    "  local v = redis.call('HMGET', KEYS[1], 'rpm', 'tpm', 'cc', 'burst', 'exp', 'rev', 'ver',\n"
    "    'rl_tat', 'rl_tfull', 'rl_t', 'rl_tpm')\n"
    "  if not (v[1] or v[2] or v[3] or v[4] or v[5] or v[6] or v[7]) then return nil end\n"
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
    "  local st = {tat = int(v[8], 'rl_tat', MAX), tfull = int(v[9], 'rl_tfull', MAX),\n"
    "    t = int(v[10], 'rl_t', W), tpm = int(v[11], 'rl_tpm', LIM), dirty = false}\n"
    "  local now, now_s = clock(clk_us, clk_s)\n"
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
    "  return l, st, now, now_s\n"
    "end\n"
    "local function save(st)\n"
    "  redis.call('HSET', KEYS[1], 'rl_tat', fmt(st.tat), 'rl_tfull', fmt(st.tfull),\n"
    "    'rl_t', fmt(st.t), 'rl_tpm', fmt(st.tpm))\n"
    "end\n";

/* KEYS key hash, leases; ARGV now_us|"", lease ttl ms, now_s|"", sweep
 * ("1": drop the expired leases first), then one lease id per request.
 * fy_rl_acquire's evaluate, step for step, for each request in turn at the
 * same instant, as if they had arrived one after the other; one reply of
 * R_COUNT integers per request. A revoked or expired key is refused before
 * the state is carried over, so it writes nothing. */
static const char admit_lua[] =
    "local n = #ARGV - 4\n"
    "local function all(r) local o = {} for i = 1, n do o[i] = r end return o end\n"
    "local l, st, now, now_s = load(ARGV[1], ARGV[3])\n"
    "if not l then return all({2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}) end\n"
    "if l.rev > 0 then return all({3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, l.ver}) end\n"
    "if l.exp > 0 and l.exp <= now_s then\n"
    "  return all({4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, l.ver})\n"
    "end\n"
    "local ttl = int(ARGV[2], 'lease ttl', MAX)\n"
    "local full = math.max(st.tfull, now)\n"
    "local deny_tok, wait_tok = false, 0\n"
    "if l.tpm > 0 then\n"
    "  local debt = full - now - W -- > 0: the bucket is negative\n"
    "  if debt > 0 then deny_tok = true; wait_tok = debt end\n"
    "end\n"
    "-- The token figures are the same for every request of the call.\n"
    "local lt, rt, rst = 0, 0, 0\n"
    "if l.tpm > 0 then\n"
    "  local owed = full - now -- time to full: 0 = full, > W = debt\n"
    "  lt, rst = l.tpm, owed\n"
    "  if owed < W then rt = muldiv(l.tpm, W - owed, W) end\n"
    "end\n"
    "-- Leases: expired ones never count; the caller asks for a sweep now and\n"
    "-- then, so the set does not grow with the dead ones.\n"
    "local now_ms = idiv(now, 1000)\n"
    "if ARGV[4] == '1' then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', fmt(now_ms)) end\n"
    "local in_flight = redis.call('ZCOUNT', KEYS[2], '(' .. fmt(now_ms), '+inf')\n"
    "local held, score, adds, out = in_flight, fmt(now_ms + ttl), {}, {}\n"
    "for i = 1, n do\n"
    "  local wait_req, wait_conc, deny_req, deny_conc = 0, 0, false, false\n"
    "  local tat = math.max(st.tat, now)\n"
    "  if l.rpm > 0 then\n"
    "    local nxt = tat + l.t - now\n"
    "    if nxt > l.tol then deny_req = true; wait_req = nxt - l.tol end\n"
    "  end\n"
    "  if l.cc > 0 and in_flight >= l.cc then deny_conc = true; wait_conc = 1000000 end\n"
    "  local allowed = not (deny_req or deny_tok or deny_conc)\n"
    "  if allowed then\n"
    "    if l.rpm > 0 then tat = tat + l.t; st.tat = tat; st.dirty = true end\n"
    "    adds[#adds + 1] = score; adds[#adds + 1] = ARGV[4 + i]\n"
    "    in_flight = in_flight + 1\n"
    "  end\n"
    "  -- The longest wait, ties broken in the order requests, tokens, concurrency.\n"
    "  local by, retry = 0, 0\n"
    "  if not allowed then\n"
    "    if deny_req then by = 1; retry = wait_req end\n"
    "    if deny_tok and (by == 0 or wait_tok > retry) then by = 2; retry = wait_tok end\n"
    "    if deny_conc and (by == 0 or wait_conc > retry) then by = 3; retry = wait_conc end\n"
    "  end\n"
    "  local lr, rr, rs, br = 0, 0, 0, 0\n"
    "  if l.rpm > 0 then\n"
    "    local used = tat - now\n"
    "    local left = l.tol - used\n"
    "    lr, rs, br = l.rpm, used, idiv(l.tol, l.t)\n"
    "    if left > 0 then rr = idiv(left, l.t) end\n"
    "  end\n"
    "  out[i] = {allowed and 0 or 1, by, retry, lr, rr, rs, br, lt, rt, rst, l.cc, in_flight,\n"
    "    l.ver}\n"
    "end\n"
    "if #adds > 0 then\n"
    "  redis.call('ZADD', KEYS[2], unpack(adds))\n"
    "  -- The set lives a minute past its last lease: GT keeps a later expiry\n"
    "  -- (another replica's longer TTL); with no live lease, set it afresh.\n"
    "  if held == 0 then redis.call('PEXPIRE', KEYS[2], fmt(ttl + 60000))\n"
    "  else redis.call('PEXPIRE', KEYS[2], fmt(ttl + 60000), 'GT') end\n"
    "end\n"
    "if st.dirty then save(st) end\n"
    "return out\n";

/* KEYS key hash; ARGV now_us|"", tokens. fy_rl_charge. */
static const char charge_lua[] = "local l, st, now = load(ARGV[1], '0')\n"
                                 "if not l then return 0 end\n"
                                 "local tokens = int(ARGV[2], 'tokens', MAX)\n"
                                 "local charged = 0\n"
                                 "if l.tpm > 0 and tokens > 0 then\n"
                                 "  local q, r = muldiv(tokens, W, l.tpm)\n"
                                 "  if r > 0 then q = q + 1 end\n"
                                 "  if q > CAPQ then q = CAPQ end\n"
                                 "  st.tfull = math.min(math.max(st.tfull, now) + q, CAPH)\n"
                                 "  st.dirty, charged = true, 1\n"
                                 "end\n"
                                 "if st.dirty then save(st) end\n"
                                 "return charged\n";

/* KEYS leases; ARGV now_us|"", ttl ms, lease ids... */
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
    "if n > 0 then redis.call('PEXPIRE', KEYS[1], fmt(ttl + 60000), 'GT') end\n"
    "return n\n";

/* KEYS key hash; ARGV rpm, tpm, cc, burst, exp, rev (validated by the
 * caller). The limiter state (rl_*) in the same hash is kept. */
static const char live_lua[] =
    "redis.call('HSET', KEYS[1], 'rpm', ARGV[1], 'tpm', ARGV[2], 'cc', ARGV[3],\n"
    "  'burst', ARGV[4], 'exp', ARGV[5], 'rev', ARGV[6])\n"
    "return redis.call('HINCRBY', KEYS[1], 'ver', 1)\n";

/* --- the client side --------------------------------------------------------------- */

struct fy_shl {
    fy_redis *cl;
    fy_redis_script *admit, *charge, *renew, *live;
    uint64_t admits; /* every FY_SHL_SWEEP_EVERY-th admission sweeps */
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
    fy_shl_count_cb count;
    void *data;
} shl_rq;

/* An admission call in flight: the callback of each request, in order. */
typedef struct {
    size_t n;
    fy_shl_ask asks[];
} shl_many;

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

static shl_rq *rq_new(fy_shl_count_cb count, void *data)
{
    shl_rq *rq = malloc(sizeof *rq);
    if (rq) {
        *rq = (shl_rq){count, data};
    }
    return rq;
}

/* Parses one request's part R of the admit script's reply into *A:
 * exactly R_COUNT integers in range, the status and the denial consistent.
 * Returns 0 or FY_EPROTO. */
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

/* The reply is one part per request, in order: each request gets its own,
 * or all get the error (a reply of the wrong shape fails every request). */
static void on_admit(void *data, int status, const fy_redis_reply *reply)
{
    shl_many *m = data;
    fy_shl_admission a[FY_SHL_ADMIT_MAX];
    int err = status;

    if (!err && (reply->type != FY_REDIS_REPLY_ARRAY || reply->n != m->n || !reply->elem)) {
        err = FY_EPROTO;
    }
    for (size_t i = 0; !err && i < m->n; i++) {
        err = parse_admission(&reply->elem[i], &a[i]);
    }
    for (size_t i = 0; i < m->n; i++) {
        m->asks[i].cb(m->asks[i].data, err, err ? NULL : &a[i]);
    }
    free(m);
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

int fy_shl_admit_many(fy_shl *l, const char *key_id, const fy_shl_ask *asks, size_t n,
                      int64_t lease_ttl_ms, int64_t now_us, int64_t now_s)
{
    char live[FY_SH_KEYNAME_MAX], cc[FY_SH_KEYNAME_MAX];
    char us[24], s[24], ttl[24];
    const char *args[4 + FY_SHL_ADMIT_MAX];
    shl_many *m;
    int rc;

    if (!l || !asks || n < 1 || n > FY_SHL_ADMIT_MAX || !key_id_ok(key_id) || lease_ttl_ms < 1 ||
        lease_ttl_ms > FY_SHL_LEASE_TTL_MAX || time_arg(now_us, us, sizeof us) ||
        time_arg(now_s, s, sizeof s)) {
        return FY_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (!asks[i].cb || !lease_id_ok(asks[i].lease_id)) {
            return FY_EINVAL;
        }
        args[4 + i] = asks[i].lease_id;
    }
    snprintf(live, sizeof live, FY_SH_KEY_LIVE_FMT, key_id);
    snprintf(cc, sizeof cc, FY_SH_KEY_LEASES_FMT, key_id);
    snprintf(ttl, sizeof ttl, "%lld", (long long)lease_ttl_ms);
    const char *keys[] = {live, cc};
    args[0] = us;
    args[1] = ttl;
    args[2] = s;
    /* Expired leases never count; dropping them is only housekeeping. */
    uint64_t into = l->admits % FY_SHL_SWEEP_EVERY;
    args[3] = into == 0 || into + n > FY_SHL_SWEEP_EVERY ? "1" : "0";
    if (!(m = malloc(sizeof *m + n * sizeof m->asks[0]))) {
        return FY_ENOMEM;
    }
    m->n = n;
    memcpy(m->asks, asks, n * sizeof asks[0]);
    for (size_t i = 0; i < n; i++) {
        m->asks[i].lease_id = NULL; /* the caller's: only the arguments keep it */
    }
    rc = fy_redis_eval(l->admit, on_admit, m, 2, keys, NULL, (int)(4 + n), args, NULL);
    if (rc) {
        free(m);
        return rc;
    }
    l->admits += n;
    return 0;
}

int fy_shl_admit(fy_shl *l, const char *key_id, const char *lease_id, int64_t lease_ttl_ms,
                 int64_t now_us, int64_t now_s, fy_shl_admit_cb cb, void *data)
{
    const fy_shl_ask ask = {lease_id, cb, data};
    return fy_shl_admit_many(l, key_id, &ask, 1, lease_ttl_ms, now_us, now_s);
}

int fy_shl_charge(fy_shl *l, const char *key_id, int64_t tokens, int64_t now_us, fy_shl_count_cb cb,
                  void *data)
{
    char live[FY_SH_KEYNAME_MAX], us[24], tok[24];

    if (!l || !key_id_ok(key_id) || time_arg(now_us, us, sizeof us)) {
        return FY_EINVAL;
    }
    snprintf(live, sizeof live, FY_SH_KEY_LIVE_FMT, key_id);
    /* Beyond 2^53 tokens the debt is at its cap anyway. */
    snprintf(tok, sizeof tok, "%lld",
             (long long)(tokens < 0       ? 0
                         : tokens > MAX53 ? MAX53
                                          : tokens));
    const char *keys[] = {live};
    const char *args[] = {us, tok};
    return run(l->charge, rq_new(cb, data), on_count, 1, keys, 2, args);
}

int fy_shl_release(fy_shl *l, const char *key_id, const char *const *lease_ids, size_t n,
                   fy_shl_count_cb cb, void *data)
{
    char cc[FY_SH_KEYNAME_MAX];
    const char *argv[2 + FY_SHL_RELEASE_MAX];
    shl_rq *rq;
    int rc;

    if (!l || !key_id_ok(key_id) || !lease_ids || n < 1 || n > FY_SHL_RELEASE_MAX) {
        return FY_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (!lease_id_ok(lease_ids[i])) {
            return FY_EINVAL;
        }
        argv[2 + i] = lease_ids[i];
    }
    snprintf(cc, sizeof cc, FY_SH_KEY_LEASES_FMT, key_id);
    if (!(rq = rq_new(cb, data))) {
        return FY_ENOMEM;
    }
    argv[0] = "ZREM";
    argv[1] = cc;
    rc = fy_redis_cmd(l->cl, on_count, rq, (int)(2 + n), argv, NULL);
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
    return run(l->renew, rq_new(cb, data), on_count, 1, keys, (int)(2 + n), args);
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
    return run(l->live, rq_new(cb, data), on_count, 1, keys, 6, args);
}
