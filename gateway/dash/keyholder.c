/* keyholder.c: the key holders' view of their own key (keyholder.h). */
#include "gateway/dash/keyholder.h"

#include "common/crypto.h"
#include "gateway/gateway.h"
#include "gateway/ratelimit.h"

#include <string.h>

typedef struct {
    int64_t from_h, from_d;
    fy_store_usage hours[FY_KEYHOLDER_HOURS], days[FY_KEYHOLDER_DAYS];
} kh_usage;

static void usage_add(fy_store_usage *to, const fy_store_usage *u)
{
    to->requests += u->requests;
    to->prompt_tokens += u->prompt_tokens;
    to->completion_tokens += u->completion_tokens;
}

static void usage_row(const fy_store_usage_row *row, void *arg)
{
    kh_usage *x = arg;
    int64_t h = (row->hour - x->from_h) / 3600, d = (row->hour - x->from_d) / 86400;
    if (row->hour >= x->from_h && h < FY_KEYHOLDER_HOURS) {
        usage_add(&x->hours[h], &row->u);
    }
    if (row->hour >= x->from_d && d < FY_KEYHOLDER_DAYS) {
        usage_add(&x->days[d], &row->u);
    }
}

static json_t *usage_array(const fy_store_usage *u, size_t n, int64_t from, int64_t step,
                           const char *label)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(a, json_pack("{s:I,s:I,s:I,s:I}", label,
                                           (json_int_t)(from + (int64_t)i * step), "requests",
                                           (json_int_t)u[i].requests, "prompt_tokens",
                                           (json_int_t)u[i].prompt_tokens, "completion_tokens",
                                           (json_int_t)u[i].completion_tokens));
    }
    return a;
}

static json_t *remaining_of(int64_t limit, int64_t left)
{
    return limit > 0 ? json_integer((json_int_t)(left > 0 ? left : 0)) : json_null();
}

json_t *fy_keyholder_json(fy_store *st, fy_key *k, int64_t now)
{
    fy_store_key r;
    kh_usage x = {.from_h = now - now % 3600 - (FY_KEYHOLDER_HOURS - 1) * 3600LL,
                  .from_d = now - now % 86400 - (FY_KEYHOLDER_DAYS - 1) * 86400LL};
    if (fy_store_key_get(st, fy_key_id(k), &r) ||
        fy_store_usage_list(st, r.id, x.from_d < x.from_h ? x.from_d : x.from_h, now + 1, 1,
                            usage_row, &x)) {
        return NULL;
    }
    fy_rl_result rr;
    fy_rl_peek(fy_key_rl(k), fy_rl_now(), &rr);
    json_t *o = json_pack(
        "{s:{s:s,s:s,s:s,s:{s:o,s:o,s:o},s:o,s:{s:I,s:I,s:I,s:I}},"
        "s:{s:o,s:o,s:o},s:{s:o,s:o}}",
        "key", "id", r.id, "name", r.name, "prefix", r.prefix, "scopes", "models",
        fy_gw_scope_json(r.models), "runners", fy_gw_scope_json(r.runners), "hooks",
        fy_gw_scope_json(r.hooks), "expires_at",
        r.expires_at ? json_integer((json_int_t)r.expires_at) : json_null(), "limits", "rpm",
        (json_int_t)r.rpm, "tpm", (json_int_t)r.tpm, "concurrency", (json_int_t)r.concurrency,
        "burst", (json_int_t)fy_rl_burst(r.rpm, r.burst), "remaining", "requests_this_minute",
        remaining_of(rr.limit_requests, rr.remaining_requests), "tokens_this_minute",
        remaining_of(rr.limit_tokens, rr.remaining_tokens), "concurrency",
        remaining_of(rr.limit_concurrency, rr.limit_concurrency - rr.in_flight), "usage", "hourly",
        usage_array(x.hours, FY_KEYHOLDER_HOURS, x.from_h, 3600, "hour"), "daily",
        usage_array(x.days, FY_KEYHOLDER_DAYS, x.from_d, 86400, "day"));
    fy_secure_zero(&r, sizeof r);
    return o;
}
