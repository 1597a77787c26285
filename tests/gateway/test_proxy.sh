#!/usr/bin/env bash
# Public /r/<runner>/<path> through a real tunnel: methods, targets, headers
# (hop-by-hop removed, X-Forwarded-* added), bodies of 0 bytes and 1 MiB both
# ways, SSE event by event, cancellation reaching the upstream, and the
# 404/502/503 answers.
source "$(dirname "$0")/lib.sh"
gw_init
gw_start
upstream_start --max-body 64MiB
enroll alpha "$TMP/ra"
runner_start alpha "$TMP/ra"

body=$(pub /r/alpha/fixed)
[[ $body == "Hello from ferry" ]] || fail "GET /fixed: '$body'"
pub -D "$TMP/h" -o /dev/null -I /r/alpha/fixed
tr -d '\r' <"$TMP/h" | grep -qi '^content-length: 17$' || fail "HEAD lost Content-Length: $(cat "$TMP/h")"
c=$(pub -o /dev/null -w '%{http_code}' "/r/alpha/status?code=418")
[[ $c == 418 ]] || fail "upstream status 418 came back as $c"
c=$(pub -o "$TMP/o" -w '%{http_code}' "/r/alpha/status?code=204")
[[ $c == 204 && ! -s $TMP/o ]] || fail "204: $c"
pass "GET, HEAD and upstream statuses pass through"

# Targets: the /r/<name> prefix is removed, the query kept.
pub "/r/alpha/echo?a=1&b=%20x" >"$TMP/e"
grep -q '"target":"/echo?a=1&b=%20x"' "$TMP/e" || fail "target: $(cat "$TMP/e")"
pub -o "$TMP/e" "/r/alpha?q=1" || true
grep -q 'no such route' "$TMP/e" || fail "/r/alpha?q=1 did not reach the upstream's /: $(cat "$TMP/e")"
pass "runner-side target is the path after /r/<runner>, query kept"

# Headers.
pub -H 'X-Forwarded-For: 203.0.113.9' -H 'X-Forwarded-Proto: gopher' -H 'X-Custom: yes' \
    -H 'Connection: keep-alive, X-Hop' -H 'X-Hop: 1' -H 'Keep-Alive: timeout=5' \
    -H 'Proxy-Authorization: Basic eA==' -H 'TE: trailers' -H 'Upgrade: websocket' \
    /r/alpha/echo >"$TMP/e"
grep -q '\["x-forwarded-for","203.0.113.9, 127.0.0.1"\]' "$TMP/e" || fail "X-Forwarded-For: $(cat "$TMP/e")"
grep -q '\["x-forwarded-proto","https"\]' "$TMP/e" || fail "X-Forwarded-Proto: $(cat "$TMP/e")"
grep -q "\[\"x-forwarded-host\",\"$PUB\"\]" "$TMP/e" || fail "X-Forwarded-Host: $(cat "$TMP/e")"
grep -q '\["X-Custom","yes"\]' "$TMP/e" || fail "end-to-end header lost: $(cat "$TMP/e")"
grep -q 'gopher' "$TMP/e" && fail "client's X-Forwarded-Proto passed through"
for h in X-Hop Keep-Alive Proxy-Authorization '"TE"' Upgrade; do
    grep -qi "$h" "$TMP/e" && fail "hop-by-hop header $h passed through: $(cat "$TMP/e")"
done
pass "hop-by-hop headers removed, X-Forwarded-For/Proto/Host set"
# The API key is the gateway's: the runner and its upstream never see it.
pub /r/alpha/echo >"$TMP/e"
pub_nokey -H "x-api-key: $API_KEY" /r/alpha/echo >>"$TMP/e"
grep -qi 'authorization\|x-api-key\|fy_' "$TMP/e" && fail "the API key reached the upstream: $(cat "$TMP/e")"
[[ $(grep -o '"target":"/echo"' "$TMP/e" | wc -l) == 2 ]] || fail "echo with x-api-key: $(cat "$TMP/e")"
pass "Authorization and x-api-key are not forwarded"

# Bodies of 0 bytes and 1 MiB, both directions, checksummed.
pub -X POST -H 'Content-Length: 0' /r/alpha/echo >"$TMP/e"
grep -q '"body_bytes":0,' "$TMP/e" || fail "empty POST: $(cat "$TMP/e")"
head -c 1048576 /dev/urandom >"$TMP/1m"
want=$(sha256sum <"$TMP/1m" | cut -d' ' -f1)
pub --data-binary @"$TMP/1m" /r/alpha/echo >"$TMP/e"
grep -q "\"body_bytes\":1048576,\"body_sha256\":\"$want\"" "$TMP/e" || fail "1 MiB POST: $(cat "$TMP/e")"
pub -T - /r/alpha/echo <"$TMP/1m" >"$TMP/e" # chunked, with Expect: 100-continue
grep -q "\"body_bytes\":1048576,\"body_sha256\":\"$want\"" "$TMP/e" || fail "1 MiB chunked PUT: $(cat "$TMP/e")"
n=$(pub "/r/alpha/big?bytes=0" | wc -c)
[[ $n == 0 ]] || fail "empty download: $n bytes"
got=$(pub "/r/alpha/big?bytes=1048576" | sha256sum | cut -d' ' -f1)
want=$(python3 -c "import sys,hashlib;b=bytes(97+i%26 for i in range(16384));print(hashlib.sha256(b*64).hexdigest())")
[[ $got == "$want" ]] || fail "1 MiB download checksum"
pass "0-byte and 1 MiB bodies both ways, checksummed"

# SSE: each event reaches the client before the upstream writes the next.
n=6
pub -N -D "$TMP/sseh" "/r/alpha/sse?n=$n&delay_ms=200" |
    while IFS= read -r line; do
        if [[ $line == data:* ]]; then echo "${EPOCHREALTIME/./} $line"; fi
    done >"$TMP/events"
tr -d '\r' <"$TMP/sseh" | grep -qi '^cache-control: no-cache$' || fail "SSE without Cache-Control: no-cache"
tr -d '\r' <"$TMP/sseh" | grep -qi '^x-accel-buffering: no$' || fail "SSE without X-Accel-Buffering: no"
[[ $(grep -c '"i":' "$TMP/events") == "$n" ]] || fail "SSE events: $(cat "$TMP/events")"
mapfile -t arrived < <(grep '"i":' "$TMP/events" | cut -d' ' -f1)
mapfile -t written < <(grep -o '"t_us":[0-9]*' "$TMP/events" | cut -d: -f2)
for ((k = 0; k + 1 < n; k++)); do
    ((arrived[k] < written[k + 1])) || fail "SSE event $k arrived after event $((k + 1)) was written"
    ((arrived[k] >= written[k])) || fail "SSE event $k arrived before it was written (clocks?)"
done
pass "SSE: $n events, each delivered before the next was written"

# Cancellation: the public client hangs up, the upstream sees its request
# aborted. The client hangs up only once the upstream holds the request
# ("holding"), and the hold never ends by itself: only the cancellation
# can end it (the time it took is a figure, not a condition).
before=$(up_stat holds_aborted)
curl -sS --cacert "$CA" -H "$AUTH" --max-time 120 "$(pub_url /r/alpha/hold)" >/dev/null 2>&1 &
cpid=$!
wait_for 60 up_stat_is holding 1 || fail "held request never reached the upstream"
kill -9 $cpid
wait $cpid 2>/dev/null || true
t0=${EPOCHREALTIME/./}
wait_for 30 up_stat_gt holds_aborted "$before" || fail "upstream did not see the cancellation"
t1=${EPOCHREALTIME/./}
up_stat_is holding 0 || fail "the upstream still holds the cancelled request"
pass "cancellation reached the upstream in $(((t1 - t0) / 1000)) ms"
# SSE: the client leaves after two events (the stream has 1,000, 50 s worth).
before=$(up_stat sse_aborted)
pub -N --max-time 120 "/r/alpha/sse?n=1000&delay_ms=50" 2>/dev/null | grep -m2 -q '"i":' || true
wait_for 30 up_stat_gt sse_aborted "$before" || fail "SSE cancellation did not reach the upstream"
pass "SSE cancellation reached the upstream"

# Runner killed mid-request: 502 runner_disconnected.
pub -o "$TMP/held" -w '%{http_code}' /r/alpha/hold >"$TMP/held.code" 2>/dev/null &
cpid=$!
wait_for 30 bash -c "curl -sS --cacert $CA -H 'Authorization: Bearer $ADMIN_TOKEN' https://$ADM/admin/v1/runners | grep -q '\"in_flight\":1'" ||
    fail "held request not in flight"
kill9 "$RN_PID"
wait $cpid || true
[[ $(cat "$TMP/held.code") == 502 ]] || fail "runner killed: public got $(cat "$TMP/held.code")"
grep -q '"code":"runner_disconnected"' "$TMP/held" || fail "runner killed: $(cat "$TMP/held")"
pass "runner killed mid-request: 502 runner_disconnected"

# Enrolled but not connected: 503 with Retry-After.
c=$(pub -D "$TMP/h" -o "$TMP/o" -w '%{http_code}' /r/alpha/fixed)
[[ $c == 503 ]] && grep -q '"code":"runner_unavailable"' "$TMP/o" || fail "no runner: $c $(cat "$TMP/o")"
tr -d '\r' <"$TMP/h" | grep -qi '^retry-after: 1$' || fail "503 without Retry-After"
pass "runner not connected: 503 runner_unavailable, Retry-After"

# Upstream down: the runner answers 502 upstream_unavailable through the tunnel.
UP=1 runner_start alpha "$TMP/ra"
c=$(pub -o "$TMP/o" -w '%{http_code}' /r/alpha/fixed)
[[ $c == 502 ]] && grep -q '"code":"upstream_unavailable"' "$TMP/o" || fail "upstream down: $c $(cat "$TMP/o")"
pass "upstream down: 502 upstream_unavailable"
gw_stop
