#!/usr/bin/env bash
# The gateway's side of faults and drains: heartbeats find a dead-but-open
# runner connection (its streams get 502), least-outstanding routing, a
# runner's GOAWAY (no new work there, in-flight finishes), and the gateway's
# own SIGTERM drain (in-flight finishes, new connections refused, exit 0,
# state.json removed), bounded by --drain-timeout.
#
# Requests that must be in flight while something happens are gated at the
# upstream (/gate, answered only on release): they stay open until the test
# has seen what it needs, however slowly a loaded machine gets there, and
# every wait for a state has a generous deadline that costs nothing when the
# state comes at once.
source "$(dirname "$0")/lib.sh"
gw_init
gw_start --heartbeat 1s
upstream_start
enroll alpha "$TMP/ra"

# --- heartbeats: a stalled connection is dropped after 3 silent intervals ---------
mkfifo "$TMP/fp.in"
"$TBIN/faultproxy" 127.0.0.1 "${TUN##*:}" <"$TMP/fp.in" >"$TMP/fp.out" 2>&1 &
PIDS+=("$!")
exec 7>"$TMP/fp.in"
wait_for 30 grep -q '^port ' "$TMP/fp.out" || fail "faultproxy did not start"
PROXY=127.0.0.1:$(sed -n 's/^port //p' "$TMP/fp.out")
runner_start alpha "$TMP/ra" --gateway "$PROXY" --heartbeat-timeout 60s
pub -o "$TMP/held" -w '%{http_code}' /r/alpha/hold >"$TMP/held.code" 2>/dev/null &
cpid=$!
wait_for 60 in_flight_ge alpha 1 || fail "held request not in flight"
echo stall >&7
wait_for 30 grep -q '^ok stall' "$TMP/fp.out" || fail "faultproxy did not stall"
t0=${EPOCHREALTIME/./}
wait $cpid || true
t1=${EPOCHREALTIME/./}
[[ $(cat "$TMP/held.code") == 502 ]] && grep -q '"code":"runner_disconnected"' "$TMP/held" ||
    fail "request on a stalled connection: $(cat "$TMP/held.code") $(cat "$TMP/held")"
grep -q 'runner heartbeat timeout' "$TMP/gw.log" || fail "no heartbeat timeout logged"
ms=$(((t1 - t0) / 1000))
# Not before 2 of the 3 silent intervals; well within curl's 30 s (the bound
# is for "seconds, not the client's timeout", generous for a loaded machine).
((ms >= 2000 && ms <= 15000)) || fail "stall detected after $ms ms (3 x 1 s heartbeats)"
conns_are alpha 0 || fail "stalled connection still registered"
pass "stalled runner connection dropped by heartbeats after $ms ms; its request got 502"
kill9 "$RN_PID"
echo resume >&7

# --- least-outstanding routing over two connections ----------------------------------
CONNS=2 runner_start alpha "$TMP/ra"
for i in 1 2; do
    pub --max-time 120 -o "$TMP/s.$i" "/r/alpha/gate?name=lor" &
    S[$i]=$!
done
# Held until released: the listing that shows both in flight is the one read.
two_in_flight() {
    curl -sS --cacert "$CA" -H "Authorization: Bearer $ADMIN_TOKEN" "https://$ADM/admin/v1/runners" >"$TMP/r.json"
    [[ $(python3 -c "import json; j=json.load(open('$TMP/r.json')); print(sum(r['in_flight'] for r in j['runners']))") == 2 ]]
}
wait_for 60 two_in_flight || fail "two requests not in flight"
streams=$(python3 -c "import json; j=json.load(open('$TMP/r.json')); print(sorted(c['streams'] for r in j['runners'] for c in r['connections']))")
[[ $streams == "[1, 1]" ]] || fail "two requests on two connections spread as $streams"
release lor
wait "${S[1]}" "${S[2]}"
[[ $(cat "$TMP/s.1") == released && $(cat "$TMP/s.2") == released ]] || fail "gated requests"
pass "least outstanding: two requests, one on each connection"
FIRST=$RN_PID

# --- a runner's GOAWAY: nothing new goes there, in-flight finishes --------------------
runner_start alpha "$TMP/ra" # a second process: 3 connections in all
# Two held requests on two different connections: at least one is on
# FIRST's two, so its drain has work in flight until the release.
pub --max-time 120 -o "$TMP/s.3" "/r/alpha/gate?name=goaway" &
S3=$!
pub --max-time 120 -o "$TMP/s.4" "/r/alpha/gate?name=goaway" &
S4=$!
wait_for 60 in_flight_ge alpha 2 || fail "requests not in flight"
kill -TERM "$FIRST"
wait_for 30 grep -q 'runner sent GOAWAY' "$TMP/gw.log" || fail "GOAWAY not seen"
for i in $(seq 10); do
    [[ $(pub /r/alpha/fixed) == "Hello from ferry" ]] || fail "request $i during the runner's drain"
done
kill -0 "$FIRST" || fail "the draining runner exited with a request in flight"
release goaway
wait $S3 $S4
[[ $(cat "$TMP/s.3") == released && $(cat "$TMP/s.4") == released ]] || fail "in-flight requests during the runner's drain"
rc=0
wait "$FIRST" || rc=$?
[[ $rc == 0 ]] || fail "draining runner exited $rc"
wait_for 30 conns_are alpha 1 || fail "drained connections not gone: $(conns alpha)"
pass "runner GOAWAY: new requests went elsewhere, in-flight ones finished, its connections closed"

# --- the gateway's SIGTERM drain ----------------------------------------------------------
pub --max-time 120 -o "$TMP/s.5" -w '%{http_code}' "/r/alpha/gate?name=drain" >"$TMP/s.5.code" &
S5=$!
wait_for 60 in_flight_ge alpha 1 || fail "request not in flight"
t0=${EPOCHREALTIME/./}
kill -TERM "$GW_PID"
wait_for 30 grep -q 'draining' "$TMP/gw.log" || fail "no drain logged"
rc=0
curl -sS --max-time 10 --cacert "$CA" -H "$AUTH" -o /dev/null "$(pub_url /r/alpha/fixed)" 2>/dev/null || rc=$?
[[ $rc == 7 ]] || fail "a new public connection during the drain: curl exit $rc, want 7 (refused)"
[[ -e $GW/state.json ]] || fail "state.json removed before the drain finished"
kill -0 "$GW_PID" || fail "the gateway exited with a request in flight"
release drain # straight to the upstream: the gateway's drain is not in the way
wait $S5 || true
[[ $(cat "$TMP/s.5.code") == 200 && $(cat "$TMP/s.5") == released ]] ||
    fail "request in flight across SIGTERM: $(cat "$TMP/s.5.code")"
rc=0
wait "$GW_PID" || rc=$?
t1=${EPOCHREALTIME/./}
[[ $rc == 0 ]] || fail "gateway exited $rc after draining"
[[ ! -e $GW/state.json ]] || fail "state.json left behind"
wait_for 30 grep -q 'gateway draining this connection\|goaway' "$RN_OUT" || fail "runner was not told to drain"
pass "gateway SIGTERM: in-flight request finished (200), new connections refused, exit 0 after $(((t1 - t0) / 1000)) ms"

# --- the drain timeout bounds a request that never ends; a second signal stops at once ----
GW_SAME_PORTS=1 gw_start --drain-timeout 1s
wait_for 10 conns_are alpha 1 || fail "runner did not come back"
pub --max-time 120 -o /dev/null /r/alpha/hold 2>/dev/null &
H=$!
wait_for 60 in_flight_ge alpha 1 || fail "hold not in flight"
t0=${EPOCHREALTIME/./}
gw_stop
t1=${EPOCHREALTIME/./}
ms=$(((t1 - t0) / 1000))
# The hold never ends: without the 1 s timeout the drain would take the
# default 30 s. Not before the timeout; well before the default.
((ms >= 900 && ms < 15000)) || fail "drain with a stuck request took $ms ms (timeout 1 s)"
wait $H || true
wait_for 30 bash -c "[[ \$(curl -sS http://127.0.0.1:$UP/stats | sed -n 's/.*\"holds_aborted\":\([0-9]*\).*/\1/p') -ge 1 ]]" ||
    fail "the stuck upstream call was not cancelled"
GW_SAME_PORTS=1 gw_start
wait_for 10 conns_are alpha 1 || fail "runner did not come back"
pub --max-time 120 -o /dev/null /r/alpha/hold 2>/dev/null &
wait_for 60 in_flight_ge alpha 1 || fail "hold not in flight"
drains=$(grep -c 'draining' "$TMP/gw.log" || true)
t0=${EPOCHREALTIME/./}
kill -TERM "$GW_PID"
# The second signal once the first is being handled (the drain has begun).
wait_for 30 count_ge "$TMP/gw.log" 'draining' $((drains + 1)) || fail "no drain logged"
kill -INT "$GW_PID"
rc=0
wait "$GW_PID" || rc=$?
t1=${EPOCHREALTIME/./}
[[ $rc == 0 ]] || fail "gateway exited $rc after a second signal"
# The hold never ends: without the second signal the drain would last the
# default 30 s.
(((t1 - t0) / 1000 < 15000)) || fail "second signal: stopped after $(((t1 - t0) / 1000)) ms"
pass "drain timeout ends a stuck request after $ms ms; a second signal stops at once"

# --- a runner's stream limit: the next request gets 503 runner_busy, not a hang -----------
GW_SAME_PORTS=1 gw_start
kill9 "$RN_PID"
wait_for 30 conns_are alpha 0 || fail "old runner still connected"
runner_start alpha "$TMP/ra" --max-streams 1
pub --max-time 120 -o "$TMP/s.6" "/r/alpha/gate?name=busy" &
S6=$!
wait_for 60 in_flight_ge alpha 1 || fail "request not in flight"
c=$(pub -D "$TMP/h" -o "$TMP/o" -w '%{http_code}' /r/alpha/fixed)
[[ $c == 503 ]] && grep -q '"code":"runner_busy"' "$TMP/o" || fail "over the stream limit: $c $(cat "$TMP/o")"
tr -d '\r' <"$TMP/h" | grep -qi '^retry-after: 1$' || fail "runner_busy without Retry-After"
release busy
wait $S6
[[ $(cat "$TMP/s.6") == released ]] || fail "the request within the limit"
[[ $(pub /r/alpha/fixed) == "Hello from ferry" ]] || fail "request after the stream freed"
pass "runner's MAX_CONCURRENT_STREAMS reached: 503 runner_busy with Retry-After; served once free"
gw_stop
