#!/usr/bin/env bash
# Slow clients: an incomplete header block gets 408 and the connection closes
# at the header timeout (also for a client dripping one byte at a time), a
# stalled body gets 408, and an idle keep-alive connection is closed quietly.
source "$(dirname "$0")/lib.sh"
start_server --header-timeout 1s --idle-timeout 1s --body-timeout 1s

# Partial header: 408, then the server closes.
printf 'GET /fixed HTTP/1.1\r\nHost: x\r\n' >"$TMP/partial"
start=$SECONDS
out=$(raw_exchange "$TMP/partial" 8 | tr -d '\r')
grep -q '^HTTP/1.1 408 Request Timeout$' <<<"$out" || fail "partial header: $out"
grep -q '"code":"request_timeout"' <<<"$out" || fail "408 body: $out"
! grep -q TIMEOUT <<<"$out" || fail "the connection stayed open after the 408"
((SECONDS - start <= 5)) || fail "408 came after $((SECONDS - start)) s"
pass "partial header -> 408 and close"

# Slowloris: one byte every 0.2 s of a request that would take ~16 s to send.
# The server must cut it at the header timeout, long before the end.
req="GET /fixed HTTP/1.1\r\nHost: x\r\nX-Slow: $(head -c 60 /dev/zero | tr '\0' s)\r\n\r\n"
exec {fd}<>"/dev/tcp/127.0.0.1/$PORT"
(
    i=0
    printf "$req" | while IFS= read -r -n1 -d '' ch; do
        printf '%s' "$ch" >&$fd 2>/dev/null || exit 0
        sleep 0.2
    done
    echo done >"$TMP/slow_finished"
) &
writer=$!
PIDS+=("$writer")
start=$SECONDS
out=$(timeout 10 cat <&$fd | tr -d '\r' || true)
elapsed=$((SECONDS - start))
exec {fd}>&-
kill "$writer" 2>/dev/null || true
wait "$writer" 2>/dev/null || true
[[ ! -e $TMP/slow_finished ]] || fail "the slow client finished its request before being cut"
grep -q '^HTTP/1.1 408 ' <<<"$out" || fail "slowloris got: $out"
((elapsed <= 6)) || fail "slowloris cut after $elapsed s (header timeout 1 s)"
pass "one byte every 0.2 s: 408 and closed after ${elapsed}s, before the request was complete"

# Stalled body: 408.
printf 'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b' >"$TMP/stall"
out=$(raw_exchange "$TMP/stall" 8 | tr -d '\r')
grep -q '^HTTP/1.1 408 ' <<<"$out" || fail "stalled body: $out"
pass "stalled body -> 408"

# Idle keep-alive: the response, then a quiet close about a second later.
printf 'GET /fixed HTTP/1.1\r\nHost: x\r\n\r\n' >"$TMP/one"
start=$SECONDS
out=$(raw_exchange "$TMP/one" 8 | tr -d '\r')
grep -q '^Hello from ferry$' <<<"$out" || fail "idle: no response: $out"
! grep -q -e 408 -e TIMEOUT <<<"$out" || fail "idle close was not quiet: $out"
((SECONDS - start <= 5)) || fail "idle connection closed after $((SECONDS - start)) s"
pass "idle keep-alive connection closed quietly"

# A connection that sends nothing is closed quietly at the header timeout.
: >"$TMP/none"
out=$(raw_exchange "$TMP/none" 8)
[[ -z $out ]] || fail "silent connection got: $out"
pass "silent connection closed quietly"
stop_server
