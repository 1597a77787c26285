#!/usr/bin/env bash
# Faults, with real processes: a connection cut under in-flight requests, a
# runner killed with -9, a gateway restarted (killed, and drained) on the same
# ports, a TCP proxy that stalls (a dead but open peer: heartbeats must find
# it), a revoked runner, and SIGTERM draining a request in flight.
#
# Requests that must be in flight while a fault happens are gated at the
# upstream (/gate, answered only on release), so they are still open when
# the fault comes, however slowly a loaded machine gets there.
source "$(dirname "$0")/lib.sh"
gw_init
gw_start --heartbeat 2s
up_start
enroll r1 "$TMP/r1"

# faultproxy in front of the tunnel listener, driven through a FIFO.
mkfifo "$TMP/fp.in"
"$TBIN/faultproxy" 127.0.0.1 "${TUN##*:}" <"$TMP/fp.in" >"$TMP/fp.out" 2>&1 &
PIDS+=("$!")
exec 7>"$TMP/fp.in"
wait_for 30 grep -q '^port ' "$TMP/fp.out" || fail "faultproxy did not start"
PROXY=127.0.0.1:$(sed -n 's/^port //p' "$TMP/fp.out")
fp() {
    local n
    n=$(grep -c "^ok $1" "$TMP/fp.out" || true)
    echo "$1" >&7
    wait_for 30 count_ge "$TMP/fp.out" "^ok $1" $((n + 1)) || fail "faultproxy $1"
}

# --- a cut connection: its in-flight request gets a clean 502, the other
# connection keeps serving ------------------------------------------------------------
rn_start "$TMP/r1" --gateway "$PROXY" --gateway "$TUN" --connections 2 --heartbeat-timeout 3s
wait_conns r1 2
for i in 1 2; do
    curl -sS --max-time 120 --cacert "$CA" -H "$AUTH" -o "$TMP/slow.$i" -w '%{http_code}' \
        "https://$PUB/r/r1/gate?name=cut" >"$TMP/slow.$i.code" &
    PIDS+=("$!")
    SLOW[$i]=$!
done
wait_for 60 in_flight_is r1 2 || fail "two requests are not in flight"
# Least-outstanding routing put one request on each connection.
fp cut
# The one on the cut connection ends (502); then the other is let go.
wait_for 60 grep -q 502 "$TMP/slow.1.code" "$TMP/slow.2.code" || fail "no 502 after the cut"
release cut
for i in 1 2; do wait "${SLOW[$i]}" || true; done
codes=$(printf '%s\n%s\n' "$(cat "$TMP/slow.1.code")" "$(cat "$TMP/slow.2.code")" | sort | tr '\n' ' ')
[[ $codes == "200 502 " ]] || fail "after a cut, the two requests got $codes, want one 200 and one 502"
grep -q '"code":"runner_disconnected"' "$TMP/slow.1" "$TMP/slow.2" || fail "502 is not runner_disconnected"
[[ $(pub /r/r1/fixed) == "Hello from ferry" ]] || fail "the other connection does not serve"
wait_for 30 grep -q 'reason=the gateway closed the connection' "$RN_LOG" || fail "runner did not log the cut"
wait_conns r1 2
pass "cut: the request on that connection got 502 runner_disconnected, the other 200; reconnected"

# --- stall: heartbeats find the dead-but-open gateway within the timeout -----------------
fp stall
t0=$(now_ms)
wait_for 30 grep -q 'heartbeat timeout' "$RN_LOG" || fail "a stalled gateway was not detected"
t1=$(now_ms)
echo "  stall detected after $((t1 - t0)) ms (heartbeat timeout 3 s)"
# Seconds, not the 30 s default timeout: generous for a loaded machine.
((t1 - t0 <= 15000)) || fail "stall detection took $((t1 - t0)) ms, timeout is 3 s"
# The gateway's heartbeats drop its side too (its reconnect is stalled as well),
# and the direct connection carries the traffic meanwhile.
wait_conns r1 1 30
[[ $(pub /r/r1/fixed) == "Hello from ferry" ]] || fail "the direct connection does not serve"
fp resume
wait_conns r1 2 15
rn_stop
pass "stall: heartbeat timeout after $((t1 - t0)) ms; the other connection served; reconnected"

# --- kill -9 of the runner: in-flight clients get a clean 502; after a restart
# the next request succeeds ---------------------------------------------------------------
rn_start "$TMP/r1" --connections 2
wait_conns r1 2
# A held request and a stream of 2,000 events (100 s): both still open when
# the runner dies.
curl -sS --max-time 120 --cacert "$CA" -H "$AUTH" -o "$TMP/slow.3" -w '%{http_code}' \
    "https://$PUB/r/r1/gate?name=kill9" >"$TMP/slow.3.code" &
S3=$!
PIDS+=("$S3")
curl -sS -N --max-time 120 --cacert "$CA" -H "$AUTH" -o "$TMP/sse.out" "https://$PUB/r/r1/sse?n=2000&delay_ms=50" &
S4=$!
PIDS+=("$S4")
wait_for 60 up_stat_is gated 1 || fail "the held request did not reach the upstream"
wait_for 60 grep -q '"i":2' "$TMP/sse.out" || fail "SSE did not start"
kill -9 "$RN_PID"
wait "$RN_PID" 2>/dev/null || true
wait "$S3" || true
[[ $(cat "$TMP/slow.3.code") == 502 ]] && grep -q runner_disconnected "$TMP/slow.3" ||
    fail "in-flight request after kill -9: $(cat "$TMP/slow.3.code") $(cat "$TMP/slow.3")"
rc=0
wait "$S4" || rc=$?
[[ $rc != 0 ]] || fail "a stream cut mid-body looked complete to the client"
! grep -q 'DONE' "$TMP/sse.out" || fail "SSE finished although the runner died"
rn_start "$TMP/r1" --connections 2
wait_conns r1 2
[[ $(pub /r/r1/fixed) == "Hello from ferry" ]] || fail "request after the restart"
pass "kill -9: waiting client got 502 runner_disconnected, streaming client an aborted body; restart serves"

# --- gateway restarts: killed, then drained (SIGTERM); the runner comes back ------------
kill -9 "$GW_PID"
wait "$GW_PID" 2>/dev/null || true
wait_for 30 grep -q 'reason=the gateway closed the connection' "$RN_LOG" || fail "no disconnect logged"
GW_SAME_PORTS=1 gw_start --heartbeat 2s
wait_conns r1 2 10
[[ $(pub /r/r1/fixed) == "Hello from ferry" ]] || fail "request after the gateway restart"
gw_stop
wait_for 30 grep -q 'gateway draining this connection' "$RN_LOG" || fail "runner did not see the drain"
GW_SAME_PORTS=1 gw_start --heartbeat 2s
wait_conns r1 2 10
[[ $(pub /r/r1/fixed) == "Hello from ferry" ]] || fail "request after the gateway drain"
kill -0 "$RN_PID" || fail "the runner died"
pass "gateway killed and restarted, then drained and restarted: the runner reconnected each time"

# --- SIGTERM drains: a request in flight completes, then the runner exits 0 ---------------
curl -sS --max-time 120 --cacert "$CA" -H "$AUTH" -o "$TMP/slow.5" -w '%{http_code}' \
    "https://$PUB/r/r1/gate?name=drain" >"$TMP/slow.5.code" &
S5=$!
PIDS+=("$S5")
wait_for 60 in_flight_is r1 1 || fail "request not in flight"
t0=$(now_ms)
kill -TERM "$RN_PID"
wait_for 30 grep -q 'shutting down: draining' "$RN_LOG" || fail "no drain logged"
code=$(pub -o /dev/null -w '%{http_code}' /r/r1/fixed)
[[ $code == 503 ]] || fail "a new request during the drain got $code, want 503"
kill -0 "$RN_PID" || fail "the runner exited with a request in flight"
release drain
wait "$S5" || true
[[ $(cat "$TMP/slow.5.code") == 200 && $(cat "$TMP/slow.5") == released ]] ||
    fail "the request in flight during SIGTERM: $(cat "$TMP/slow.5.code")"
rc=0
wait "$RN_PID" || rc=$?
t1=$(now_ms)
[[ $rc == 0 ]] || fail "runner exited $rc after the drain"
echo "  drained and exited $((t1 - t0)) ms after SIGTERM"
pass "SIGTERM: the request in flight completed (200), new ones got 503, exit 0"

# The drain timeout bounds a request that never ends.
rn_start "$TMP/r1" --connections 1 --drain-timeout 1s
wait_conns r1 1
curl -sS --max-time 120 --cacert "$CA" -H "$AUTH" -o /dev/null "https://$PUB/r/r1/hold" 2>/dev/null &
PIDS+=("$!")
wait_for 60 in_flight_is r1 1 || fail "hold not in flight"
t0=$(now_ms)
rn_stop
t1=$(now_ms)
# The hold never ends: without the 1 s timeout the drain would last the
# default 30 s.
((t1 - t0 >= 900 && t1 - t0 < 15000)) || fail "drain with a stuck request took $((t1 - t0)) ms (timeout 1 s)"
wait_for 30 up_stat_gt holds_aborted 0 || fail "the stuck upstream call was not cancelled"
pass "drain timeout: a stuck request is cancelled after 1 s, exit 0 in $((t1 - t0)) ms"

# --- revocation: the runner drops at once, cannot come back, keeps retrying -------------
rn_start "$TMP/r1" --connections 2
wait_conns r1 2
ferry runners revoke r1 >"$TMP/revoke.out" || fail "revoke"
grep -q 'runner "r1" revoked' "$TMP/revoke.out" || fail "revoke output: $(cat "$TMP/revoke.out")"
wait_conns r1 0 30
code=$(pub -o "$TMP/err.json" -w '%{http_code}' /r/r1/fixed)
[[ $code == 404 || $code == 503 ]] && grep -q '"error"' "$TMP/err.json" ||
    fail "revoked runner: $code $(cat "$TMP/err.json")"
wait_for 30 count_ge "$RN_LOG" 'rejected this runner' 5 ||
    fail "the revoked runner did not keep retrying: $(grep -c 'rejected this runner' "$RN_LOG") rejections"
grep -q 'runner is revoked' "$RN_LOG" || fail "the runner's log does not say why"
waits=$(sed -n 's/.*reconnecting .*attempt=\([0-9]*\).*/\1/p' "$RN_LOG" | sort -n | tail -n1)
((waits >= 3)) || fail "backoff attempts do not grow: $waits"
ferry runners list | grep -Eq '^r1 +revoked +0 ' || fail "runners list does not show revoked"
kill -0 "$RN_PID" || fail "the revoked runner exited"
[[ $(connections r1) == 0 ]] || fail "the revoked runner reconnected"
rn_stop
pass "revoked: connections dropped, 503, the runner logs why and retries with growing backoff"
gw_stop
