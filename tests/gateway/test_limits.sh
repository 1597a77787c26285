#!/usr/bin/env bash
# Per-key rate limits end to end: OpenAI's x-ratelimit-* headers on plain,
# streamed (SSE) and 429 responses; requests per minute (429 + Retry-After);
# exactness with 50 parallel clients on one key (never more than the
# limiter's bound, gateway/ratelimit.h: burst + ceil(W/T) - 1 in a window W);
# concurrent requests (slots given back on success, client abort and runner
# death); tokens per minute charged from the runner's usage trailer.
source "$(dirname "$0")/lib.sh"
gw_init
gw_start --access-log "$TMP/access.log"
upstream_start
tenroll alpha "$TMP/ra"
trunner_start "$TMP/ra"

hdr() { tr -d '\r' <"$TMP/h" | sed -n "s/^$1: //Ip" | head -n1; } # hdr NAME: from $TMP/h
# A Go-style duration as OpenAI writes it ("1s", "250ms", "6m0s").
is_duration() { [[ $1 =~ ^([0-9]+h)?([0-9]+m)?([0-9]+(\.[0-9]+)?(ms|s))?$ && -n $1 ]]; }

# --- headers -------------------------------------------------------------------------------
mkkey headers --rpm 600 --tpm 100000
c=$(pubk "$KEY" -D "$TMP/h" -o "$TMP/o" -w '%{http_code}' /r/alpha/fixed)
[[ $c == 200 ]] || fail "limited key: $c"
[[ $(hdr x-ratelimit-limit-requests) == 600 ]] || fail "limit-requests: $(cat "$TMP/h")"
# rpm 600: a burst of 100; this request took one.
[[ $(hdr x-ratelimit-remaining-requests) == 99 ]] || fail "remaining-requests: $(hdr x-ratelimit-remaining-requests)"
is_duration "$(hdr x-ratelimit-reset-requests)" || fail "reset-requests: '$(hdr x-ratelimit-reset-requests)'"
[[ $(hdr x-ratelimit-limit-tokens) == 100000 && $(hdr x-ratelimit-remaining-tokens) == 100000 ]] ||
    fail "token headers: $(cat "$TMP/h")"
[[ $(hdr x-ratelimit-reset-tokens) == 0s ]] || fail "reset-tokens of a full bucket: $(hdr x-ratelimit-reset-tokens)"
[[ -z $(hdr retry-after) ]] || fail "Retry-After on an admitted request"
# Streamed: the headers are in the head, before the first event.
pubk "$KEY" -N -D "$TMP/h" -o "$TMP/sse" "/r/alpha/sse?n=3&delay_ms=100"
[[ $(hdr content-type) == text/event-stream* ]] || fail "SSE head: $(cat "$TMP/h")"
[[ $(hdr x-ratelimit-limit-requests) == 600 && $(hdr x-ratelimit-limit-tokens) == 100000 ]] ||
    fail "SSE head without x-ratelimit-*: $(cat "$TMP/h")"
r=$(hdr x-ratelimit-remaining-requests)
((r >= 0 && r <= 99)) || fail "SSE remaining-requests: $r"
[[ $(grep -c '"i":' "$TMP/sse") == 3 ]] || fail "SSE events: $(cat "$TMP/sse")"
# Errors answered by the gateway for an admitted request carry them too.
c=$(pubk "$KEY" -D "$TMP/h" -o /dev/null -w '%{http_code}' /r/nosuch/x)
[[ $c == 404 && $(hdr x-ratelimit-limit-requests) == 600 ]] || fail "404 head: $c $(cat "$TMP/h")"
# A key without limits gets none.
pub -D "$TMP/h" -o /dev/null /r/alpha/fixed
grep -qi '^x-ratelimit' "$TMP/h" && fail "x-ratelimit-* for a key without limits"
pass "x-ratelimit-* on plain, SSE and error responses; values sane"

# --- requests per minute: 429 ------------------------------------------------------------------
mkkey rpm6 --rpm 6 # burst 1, one request every 10 s
c=$(pubk "$KEY" -D "$TMP/h" -o /dev/null -w '%{http_code}' /r/alpha/fixed)
[[ $c == 200 && $(hdr x-ratelimit-remaining-requests) == 0 ]] || fail "first request: $c $(cat "$TMP/h")"
c=$(pubk "$KEY" -D "$TMP/h" -o "$TMP/o" -w '%{http_code}' /r/alpha/fixed)
[[ $c == 429 ]] || fail "second request within the interval: $c"
grep -q '"code":"rate_limit_exceeded"' "$TMP/o" && grep -q 'requests per minute' "$TMP/o" ||
    fail "429 body: $(cat "$TMP/o")"
ra=$(hdr retry-after)
ram=$(hdr retry-after-ms)
[[ $ra =~ ^[0-9]+$ ]] && ((ra >= 1 && ra <= 10)) || fail "Retry-After: '$ra'"
[[ $ram =~ ^[0-9]+$ ]] && ((ram >= 1 && ram <= 10000 && (ram + 999) / 1000 == ra)) || fail "retry-after-ms: '$ram' vs $ra"
[[ $(hdr x-ratelimit-limit-requests) == 6 && $(hdr x-ratelimit-remaining-requests) == 0 ]] ||
    fail "429 x-ratelimit-*: $(cat "$TMP/h")"
is_duration "$(hdr x-ratelimit-reset-requests)" || fail "429 reset-requests"
pass "rpm: 429 rate_limit_exceeded with Retry-After $ra s, retry-after-ms $ram, x-ratelimit-*"

# --- exactness under concurrency ----------------------------------------------------------------
# clients N REQS KEY: N curl processes at once, REQS sequential requests each
# (one keep-alive connection per client); statuses in $TMP/st.*; sets D_MS.
clients() {
    local n=$1 reqs=$2 key=$3 i pids=() t0 t1
    rm -f "$TMP"/st.*
    t0=${EPOCHREALTIME/./}
    for ((i = 0; i < n; i++)); do
        curl -sS --max-time 60 --cacert "$CA" -H "Authorization: Bearer $key" -o /dev/null \
            -w '%{http_code}\n' "$(pub_url "/r/alpha/fixed?c=$i&r=[1-$reqs]")" >"$TMP/st.$i" 2>/dev/null &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || true; done
    t1=${EPOCHREALTIME/./}
    D_MS=$(((t1 - t0 + 999) / 1000))
    OK=$(cat "$TMP"/st.* | grep -c '^200$' || true)
    LIMITED=$(cat "$TMP"/st.* | grep -c '^429$' || true)
    ((OK + LIMITED == n * reqs)) || fail "other answers than 200/429: $(sort "$TMP"/st.* | uniq -c)"
}
# A burst: rpm 60 (T = 1 s, burst 10), 50 clients at once. The bound over the
# whole run (D, measured around it, contains the gateway's window) is
# 10 + ceil(D / 1 s) - 1: exactly 10 when the burst lands within a second.
mkkey burst --rpm 60
clients 50 1 "$KEY"
bound=$((10 + (D_MS + 999) / 1000 - 1))
echo "  rpm 60, 50 clients at once: $OK admitted, $LIMITED refused in $D_MS ms (bound $bound)"
((OK >= 10)) || fail "a fresh key's burst of 10 was not admitted: $OK"
((OK <= bound)) || fail "$OK admitted, more than the limiter's bound $bound in $D_MS ms"
# Sustained: rpm 600 (T = 100 ms, burst 100), 50 clients x 12 requests.
mkkey sustained --rpm 600
clients 50 12 "$KEY"
bound=$((100 + (D_MS + 99) / 100 - 1))
echo "  rpm 600, 50 clients x 12: $OK admitted, $LIMITED refused in $D_MS ms (bound $bound)"
((OK >= 100)) || fail "the burst of 100 was not admitted: $OK"
((OK <= bound)) || fail "$OK admitted, more than the limiter's bound $bound in $D_MS ms"
pass "50 parallel clients on one key: never more than burst + ceil(W/T) - 1"

# --- concurrency -------------------------------------------------------------------------------
mkkey conc2 --concurrency 2
CONC=$KEY
HOLDS=()
hold() { # hold I: a request the upstream never answers, in the background; curl's pid in HOLD
    curl -sS --max-time 60 --cacert "$CA" -H "Authorization: Bearer $CONC" -o "$TMP/hold.$1" \
        -w '%{http_code}' "$(pub_url /r/alpha/hold)" >"$TMP/hold.$1.code" 2>/dev/null &
    HOLD=$!
    PIDS+=("$HOLD")
    HOLDS+=("$HOLD")
}
third_refused() {
    c=$(pubk "$CONC" -D "$TMP/h" -o "$TMP/o" -w '%{http_code}' /r/alpha/fixed)
    [[ $c == 429 ]] && grep -q 'concurrent' "$TMP/o" || fail "a third request at concurrency 2: $c $(cat "$TMP/o")"
    [[ $(hdr retry-after) == 1 ]] || fail "concurrency 429 Retry-After: $(hdr retry-after)"
}
hold 1
h1=$HOLD
hold 2
h2=$HOLD
wait_for 10 in_flight_ge alpha 2 || fail "two holds not in flight"
third_refused
# A client that hangs up gives its slot back.
kill9 "$h1"
fixed_ok() { [[ $(pubk "$CONC" -o /dev/null -w '%{http_code}' /r/alpha/fixed) == 200 ]]; }
wait_for 10 fixed_ok || fail "the aborted request's slot was not given back"
# Runner death: both in-flight requests end (502) and give their slots back.
hold 3
wait_for 10 in_flight_ge alpha 2 || fail "two holds not in flight (2)"
third_refused
kill9 "$RN_PID"
wait "$h2" || true
[[ $(cat "$TMP/hold.2.code") == 502 ]] || fail "hold after the runner died: $(cat "$TMP/hold.2.code")"
trunner_start "$TMP/ra"
wait_for 10 conns_are alpha 1 || fail "runner did not come back"
hold 4
hold 5
wait_for 10 in_flight_ge alpha 2 || fail "two holds not in flight after the runner died"
third_refused # exactly two slots: none leaked, none lost
for p in "${HOLDS[@]}"; do kill9 "$p"; done
pass "concurrency 2: a third request gets 429; slots come back on client abort and runner death"

# --- tokens per minute, from the usage trailer -------------------------------------------------
mkkey tpm --tpm 100
TPM_ID=$KID
# The trailer comes 300 ms after the body, when curl has left: the gateway
# keeps the stream for it, so a client cannot dodge its tokens by hanging up.
c=$(pubk "$KEY" -H 'x-test-usage: 80,70,300' -D "$TMP/h" -o /dev/null -w '%{http_code}' /r/alpha/fixed)
[[ $c == 200 ]] || fail "first request of a full token bucket: $c"
[[ $(hdr x-ratelimit-limit-tokens) == 100 && $(hdr x-ratelimit-remaining-tokens) == 100 ]] ||
    fail "token headers before the charge: $(cat "$TMP/h")"
prompt_counted() {
    admin GET /metrics >"$TMP/metrics.txt"
    [[ $(metric "$TMP/metrics.txt" 'ferry_tokens_total{kind="prompt"}') == 80 ]]
}
wait_for 10 prompt_counted || fail "the usage trailer was not counted"
# 150 tokens charged: the bucket is 50 in debt, paid back at 100/min (30 s).
c=$(pubk "$KEY" -D "$TMP/h" -o "$TMP/o" -w '%{http_code}' /r/alpha/fixed)
[[ $c == 429 ]] && grep -q 'tokens per minute' "$TMP/o" || fail "request while in token debt: $c $(cat "$TMP/o")"
ra=$(hdr retry-after)
((ra >= 1 && ra <= 30)) || fail "token Retry-After: $ra"
[[ $(hdr x-ratelimit-remaining-tokens) == 0 ]] || fail "remaining-tokens in debt: $(hdr x-ratelimit-remaining-tokens)"
ferry --json usage --key "$TPM_ID" >"$TMP/u.json"
python3 - "$TMP/u.json" <<'PY' || fail "usage after the trailer: $(cat "$TMP/u.json")"
import json, sys
(row,) = json.load(open(sys.argv[1]))["usage"]
assert (row["requests"], row["prompt_tokens"], row["completion_tokens"]) == (1, 80, 70), row
PY
grep "\"key_id\":\"$TPM_ID\"" "$TMP/access.log" | grep '"status":200' |
    grep -q '"prompt_tokens":80,"completion_tokens":70' || fail "access log tokens: $(grep "$TPM_ID" "$TMP/access.log")"
pass "tpm: the usage trailer is charged; 429 while in debt (Retry-After $ra s); usage and access log have the tokens"

admin GET /metrics >"$TMP/metrics.txt"
m() { metric "$TMP/metrics.txt" "$1"; }
(($(m 'ferry_ratelimit_rejections_total{kind="requests"}') >= 40)) || fail "request rejections: $(m 'ferry_ratelimit_rejections_total{kind="requests"}')"
[[ $(m 'ferry_ratelimit_rejections_total{kind="concurrency"}') == 3 ]] || fail "concurrency rejections"
[[ $(m 'ferry_ratelimit_rejections_total{kind="tokens"}') == 1 ]] || fail "token rejections"
[[ $(m 'ferry_tokens_total{kind="prompt"}') == 80 && $(m 'ferry_tokens_total{kind="completion"}') == 70 ]] ||
    fail "tokens: $(grep '^ferry_tokens_total' "$TMP/metrics.txt")"
[[ $(m ferry_active_streams) == 0 ]] || fail "active streams left: $(m ferry_active_streams)"
pass "/metrics: rejections by kind and tokens counted"
gw_stop
