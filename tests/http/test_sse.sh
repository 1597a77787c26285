#!/usr/bin/env bash
# Server-sent events reach the client as they are written: each event must
# arrive before the server writes the next one (no batching anywhere). The
# server stamps each event with the wall-clock time it wrote it; the client
# stamps each line with its arrival time.
source "$(dirname "$0")/lib.sh"
start_server
n=6
curl -sS -N --max-time 20 -D "$TMP/headers" "http://127.0.0.1:$PORT/sse?n=$n&delay_ms=250" |
    while IFS= read -r line; do
        if [[ $line == data:* ]]; then echo "${EPOCHREALTIME/./} $line"; fi
    done >"$TMP/events"
tr -d '\r' <"$TMP/headers" | grep -qi '^content-type: text/event-stream' || fail "no event-stream content type"
tr -d '\r' <"$TMP/headers" | grep -qi '^transfer-encoding: chunked' || fail "not chunked"
count=$(grep -c '"i":' "$TMP/events")
[[ $count == "$n" ]] || fail "got $count events, want $n"
grep -q 'data: \[DONE\]' "$TMP/events" || fail "no [DONE]"
# arrival[k] < written[k+1] for every k.
mapfile -t arrived < <(grep '"i":' "$TMP/events" | cut -d' ' -f1)
mapfile -t written < <(grep -o '"t_us":[0-9]*' "$TMP/events" | cut -d: -f2)
for ((k = 0; k + 1 < n; k++)); do
    if ((arrived[k] >= written[k + 1])); then
        fail "event $k arrived at ${arrived[k]}, after event $((k + 1)) was written at ${written[k + 1]}"
    fi
    if ((arrived[k] < written[k])); then
        fail "event $k arrived before it was written (clock trouble)"
    fi
done
pass "$n events, each delivered before the next was written"

# A client that hangs up mid-stream is noticed (the handler's abort callback).
curl -sS -N --max-time 1 "http://127.0.0.1:$PORT/sse?n=100&delay_ms=100" >/dev/null 2>&1 || true
wait_stat sse_aborted 1
curl -sS --max-time 1 "http://127.0.0.1:$PORT/hold" >/dev/null 2>&1 || true
wait_stat holds_aborted 1
pass "client disconnects reach the handler"
stop_server
