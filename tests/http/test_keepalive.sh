#!/usr/bin/env bash
# Keep-alive: several URLs on one curl command line share one connection;
# HTTP/1.0 without keep-alive and "Connection: close" do not.
source "$(dirname "$0")/lib.sh"
start_server
u=http://127.0.0.1:$PORT
# connects CURL_ARGS...: total connections curl opened for all its URLs.
connects() {
    curl -sS --max-time 10 -w '%{stderr}%{num_connects}\n' "$@" 2>&1 >/dev/null | paste -sd+ | bc
}
connects=$(connects "$u/fixed" "$u/fixed" "$u/echo" "$u/fixed" "$u/fixed")
[[ $connects == 1 ]] || fail "five requests used $connects connections, want 1"
[[ $(stat accepted) == 2 ]] || fail "server accepted $(stat accepted) connections, want 2 (one curl, one /stats)"
[[ $(stat requests) -ge 5 ]] || fail "server counted $(stat requests) requests"
pass "5 requests on one connection"

body=$(curl -sS --max-time 5 "$u/fixed")
[[ $body == "Hello from ferry" ]] || fail "fixed body: '$body'"

connects=$(connects --http1.0 "$u/fixed" "$u/fixed")
[[ $connects == 2 ]] || fail "HTTP/1.0 requests used $connects connections, want 2"
connects=$(connects --http1.0 -H 'Connection: keep-alive' "$u/fixed" "$u/fixed")
[[ $connects == 1 ]] || fail "HTTP/1.0 keep-alive requests used $connects connections, want 1"
connects=$(connects -H 'Connection: close' "$u/fixed" "$u/fixed")
[[ $connects == 2 ]] || fail "Connection: close requests used $connects connections, want 2"
pass "HTTP/1.0 and Connection: close"

# Pipelining: three requests in one write, answered in order, the first slow.
printf 'GET /slow?ms=300 HTTP/1.1\r\nHost: x\r\n\r\nGET /fixed HTTP/1.1\r\nHost: x\r\n\r\nGET /status?code=204 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >"$TMP/pipe"
out=$(raw_exchange "$TMP/pipe" 10)
order=$(grep -o -e '^slow' -e '^Hello from ferry' -e '^HTTP/1.1 204' <<<"$(tr -d '\r' <<<"$out")" | paste -sd,)
[[ $order == "slow,Hello from ferry,HTTP/1.1 204" ]] || fail "pipelined responses out of order: $order"
pass "pipelined responses in order"
stop_server
