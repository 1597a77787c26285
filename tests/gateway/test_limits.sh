#!/usr/bin/env bash
# Per-key rate limits end to end: OpenAI's x-ratelimit-* headers on plain,
# streamed (SSE) and 429 responses; requests per minute (429 + Retry-After);
# exactness with 50 parallel clients on one key (never more than the
# limiter's bound, gateway/ratelimit.h: burst + ceil(W/T) - 1 in a window W);
# an explicit burst (--burst: validated, shown by the CLI and the admin API,
# sent as ratelimit-policy, changed on a live key by keys update);
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
[[ $(hdr ratelimit-policy) == '"requests";q=600;w=60;burst=100' ]] || fail "ratelimit-policy: '$(hdr ratelimit-policy)'"
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
grep -qi '^x-ratelimit\|^ratelimit-policy' "$TMP/h" && fail "x-ratelimit-* for a key without limits"
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
# at_once N KEY: N clients that first connect (TLS done, one thread each),
# then send one request each at the same moment: what reaches the limiter is
# the burst itself, not the spread of 50 process starts and handshakes.
# Sets OK, LIMITED and D_MS (first send to last answer).
at_once() {
    read -r OK LIMITED D_MS < <(python3 - "$1" "$2" "$PUB" "$CA" <<'PY') || fail "at_once clients"
import http.client, ssl, sys, threading, time
n, key, pub, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
host, port = pub.rsplit(":", 1)
ctx = ssl.create_default_context(cafile=ca)
conns = []
for i in range(n):
    c = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=60)
    c.connect()
    conns.append(c)
go = threading.Barrier(n + 1)
codes = [None] * n
def one(i):
    go.wait()
    conns[i].request("GET", f"/r/alpha/fixed?c={i}", headers={"Authorization": "Bearer " + key})
    r = conns[i].getresponse()
    r.read()
    codes[i] = r.status
threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
for t in threads:
    t.start()
t0 = time.monotonic()
go.wait()
for t in threads:
    t.join()
d_ms = int((time.monotonic() - t0) * 1000) + 1
ok, limited = codes.count(200), codes.count(429)
if ok + limited != n:
    sys.exit(f"other answers than 200/429: {sorted(codes)}")
print(ok, limited, d_ms)
PY
}
# A burst: rpm 60 (T = 1 s, burst 10), 50 clients at once. The bound over the
# whole run (D, measured around it, contains the gateway's window) is
# 10 + ceil(D / 1 s) - 1: exactly 10 when the burst lands within a second.
mkkey burst --rpm 60
at_once 50 "$KEY"
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

# --- an explicit burst -------------------------------------------------------------------------
ferry --help >"$TMP/help.txt"
grep -q -- '--burst N' "$TMP/help.txt" && grep -q 'ceil(N/6) requests at once' "$TMP/help.txt" &&
    grep -q 'default ceil(rpm/6)' "$TMP/help.txt" || fail "--help does not state the burst and its default"
# Refused, with the reason: a burst without rpm, above rpm, not a number.
expect_cli() { # expect_cli EXIT PATTERN ferry-ARGS...: the CLI exits EXIT and says PATTERN
    local want=$1 pat=$2 rc=0
    shift 2
    ferry "$@" >"$TMP/cli.out" 2>"$TMP/cli.err" || rc=$?
    [[ $rc == "$want" ]] && grep -q -- "$pat" "$TMP/cli.err" ||
        fail "ferry $*: exit $rc, want $want /$pat/: $(cat "$TMP/cli.out" "$TMP/cli.err")"
}
expect_cli 1 'needs a requests-per-minute limit' keys create --name b0 --burst 5
expect_cli 1 'burst 61 does not fit rpm 60: a burst is 1..rpm' keys create --name b1 --rpm 60 --burst 61
expect_cli 2 '--burst takes a number' keys create --name b2 --rpm 60 --burst -2
expect_cli 2 "'five' is not an integer" keys create --name b3 --rpm 60 --burst five
expect_cli 2 "go with 'keys create'" keys list --burst 3
admin POST /admin/v1/keys '{"name":"b4","rpm":6,"burst":7}' >"$TMP/o"
[[ $(code) == 400 ]] && grep -q '"code":"invalid_request"' "$TMP/o" && grep -q '1\.\.rpm' "$TMP/o" ||
    fail "admin API burst above rpm: $(code) $(cat "$TMP/o")"
admin POST /admin/v1/keys '{"name":"b5","rpm":6,"burst":"many"}' >"$TMP/o"
[[ $(code) == 400 ]] && grep -q 'burst' "$TMP/o" || fail "admin API burst not a number: $(code) $(cat "$TMP/o")"
ferry --json keys list >"$TMP/keys.json"
! grep -q '"name": *"b[0-5]"' "$TMP/keys.json" || fail "a refused key was created: $(cat "$TMP/keys.json")"
# rpm 60 with a burst of 5: exactly 5 of 50 parallel requests at once (the
# bound allows one more per second the run took: T = 1 s).
mkkey burst5 --rpm 60 --burst 5
B5=$KEY B5_ID=$KID
grep -q 'limits       rpm 60,' "$TMP/mkkey.out" && grep -q '^  burst        5 requests at once' "$TMP/mkkey.out" &&
    ! grep -q 'default' "$TMP/mkkey.out" || fail "create output: $(cat "$TMP/mkkey.out")"
at_once 50 "$B5"
bound=$((5 + (D_MS + 999) / 1000 - 1))
echo "  rpm 60 burst 5, 50 clients at once: $OK admitted, $LIMITED refused in $D_MS ms (bound $bound)"
((OK >= 5)) || fail "a fresh key's burst of 5 was not admitted: $OK"
((OK <= bound)) || fail "$OK admitted with a burst of 5, more than the bound $bound in $D_MS ms"
# The CLI's table and --json and the admin API's show/list say what it does.
ferry keys list >"$TMP/list.txt"
head -n1 "$TMP/list.txt" | grep -q 'RPM *BURST *TPM' || fail "keys list header: $(head -n1 "$TMP/list.txt")"
grep -Eq "^$B5_ID +burst5 +fy_[^ ]+ +60 +5 +- " "$TMP/list.txt" || fail "keys list row: $(grep "^$B5_ID" "$TMP/list.txt")"
admin GET "/admin/v1/keys/$B5_ID" >"$TMP/show.json"
ferry --json keys list >"$TMP/keys.json"
python3 - "$TMP/keys.json" "$TMP/show.json" "$B5_ID" <<'PY' || fail "burst in the key JSON: $(cat "$TMP/show.json")"
import json, sys
keys = {k["name"]: k for k in json.load(open(sys.argv[1]))["keys"]}
show = json.load(open(sys.argv[2]))
b5 = keys["burst5"]
assert b5["id"] == sys.argv[3] == show["id"], (b5, show)
for k in (b5, show):
    assert (k["rpm"], k["burst"], k["burst_default"]) == (60, 5, False), k
# Defaults are shown as what they are: ceil(rpm/6), following rpm.
assert (keys["burst"]["burst"], keys["burst"]["burst_default"]) == (10, True), keys["burst"]
assert (keys["rpm6"]["burst"], keys["rpm6"]["burst_default"]) == (1, True), keys["rpm6"]
PY
# keys update --burst on the live key: the very next request sees the new
# burst (ratelimit-policy), with the requests used so far still counted: at
# most the old burst of 5, so 20 - 5 - 1 = 14 <= remaining <= 19.
ferry keys update "$B5_ID" --burst 20 >"$TMP/upd.out" || fail "keys update --burst: $(cat "$TMP/upd.out")"
grep -q '^  burst        20 requests at once' "$TMP/upd.out" || fail "update output: $(cat "$TMP/upd.out")"
c=$(pubk "$B5" -D "$TMP/h" -o /dev/null -w '%{http_code}' /r/alpha/fixed)
[[ $c == 200 && $(hdr ratelimit-policy) == '"requests";q=60;w=60;burst=20' ]] ||
    fail "after keys update --burst 20: $c $(cat "$TMP/h")"
R=$(hdr x-ratelimit-remaining-requests)
((R >= 14 && R <= 19)) || fail "remaining after raising the burst to 20: $R"
# 50 at once: at least what was left (nothing but use takes room away), at
# most the new burst plus a second's refill per second.
at_once 50 "$B5"
bound=$((20 + (D_MS + 999) / 1000 - 1))
echo "  burst raised to 20 ($R left), 50 clients at once: $OK admitted in $D_MS ms (bound $bound)"
((OK >= R && OK <= bound)) || fail "$OK admitted after raising the burst to 20 ($R left, bound $bound)"
# Cut to 1: the next request says so; the room used is kept (remaining 0).
ferry keys update "$B5_ID" --burst 1 >/dev/null || fail "keys update --burst 1"
c=$(pubk "$B5" -D "$TMP/h" -o /dev/null -w '%{http_code}' /r/alpha/fixed)
[[ ($c == 200 || $c == 429) && $(hdr ratelimit-policy) == '"requests";q=60;w=60;burst=1' &&
    $(hdr x-ratelimit-remaining-requests) == 0 ]] || fail "after keys update --burst 1: $c $(cat "$TMP/h")"
# An rpm cut below the key's own burst needs a new burst; turning rpm off
# clears it; 0 goes back to the default.
ferry keys update "$B5_ID" --burst 20 >/dev/null || fail "keys update --burst 20 (again)"
expect_cli 1 'burst 20 does not fit rpm 10' keys update "$B5_ID" --rpm 10
ferry --json keys update "$B5_ID" --rpm 10 --burst 0 >"$TMP/u.json" || fail "keys update --rpm 10 --burst 0"
python3 -c "import json,sys; k=json.load(open(sys.argv[1])); assert (k['rpm'],k['burst'],k['burst_default'])==(10,2,True), k" "$TMP/u.json" ||
    fail "burst back to the default: $(cat "$TMP/u.json")"
ferry keys update "$B5_ID" --burst 3 >/dev/null || fail "keys update --burst 3"
ferry --json keys update "$B5_ID" --rpm 0 >"$TMP/u.json" || fail "keys update --rpm 0"
python3 -c "import json,sys; k=json.load(open(sys.argv[1])); assert (k['rpm'],k['burst'],k['burst_default'])==(0,None,True), k" "$TMP/u.json" ||
    fail "rpm off clears the burst: $(cat "$TMP/u.json")"
pubk "$B5" -D "$TMP/h" -o /dev/null /r/alpha/fixed
! grep -qi '^x-ratelimit\|^ratelimit-policy' "$TMP/h" || fail "rate headers after rpm was turned off: $(cat "$TMP/h")"
pass "--burst: exactly the burst of 5 out of 50 at once; validated; shown; keys update applies it to the next request"

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
