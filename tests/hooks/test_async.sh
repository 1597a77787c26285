#!/usr/bin/env bash
# Webhooks, async: 202 at once while the runner is offline; the events are in
# the store's queue, survive a kill -9 of the gateway and its restart, and
# are delivered in order, each once (delivery is at least once: a kill
# between the runner's answer and the queue update would repeat one, with the
# same x-ferry-delivery id), when the runner connects. A runner answering 5xx
# gets the event again later (backoff) until it takes it.
source "$(dirname "$0")/lib.sh"

gw_init
gw_start
rec_start
enroll r1 "$TMP/r1" # enrolled, not running yet
printf 'slack-signing-secret\n' >"$TMP/sl.secret"
mkhook slack-async --runner r1 --path /slack/commands --verify slack --secret-file "$TMP/sl.secret" --async
URL_PATH=${HOOK_URL#https://*/}
: >"$TMP/ids"

# send I: event number I, signed; records its delivery id.
send() {
    local now sig
    now=$(date +%s)
    printf 'command=%%2Fdeploy&seq=%s&text=event+%s' "$1" "$1" >"$TMP/ev.$1"
    sig=$("${SIGN[@]}" slack "$now" "$TMP/sl.secret" "$TMP/ev.$1")
    code=$(post "$(pub_url "/$URL_PATH")" "$TMP/ev.$1" -H 'Content-Type: application/x-www-form-urlencoded' \
        -H "X-Slack-Signature: $sig" -H "X-Slack-Request-Timestamp: $now")
    expect_status 202 "$code" "async event $1"
    grep -q '"status":"queued"' "$TMP/resp" || fail "202 body: $(cat "$TMP/resp")"
    sed -n 's/.*"delivery_id":"\(dlv_[0-9a-f]*\)".*/\1/p' "$TMP/resp" >>"$TMP/ids"
}
queued() { ferry --json hooks list | python3 -c "import json,sys; print(json.load(sys.stdin)['hooks'][0]['$1'])"; }
queued_is() { [[ $(queued queued) == "$1" ]]; }

for i in 1 2 3; do send "$i"; done
# A bad signature is refused at once even in async mode, and never queued.
code=$(post "$HOOK_URL" "$TMP/ev.1" -H 'X-Slack-Signature: v0=00' -H "X-Slack-Request-Timestamp: $(date +%s)")
expect_refused webhook_malformed_header "$code" "async bad signature"
[[ $(queued queued) == 3 ]] || fail "queued: $(queued queued), want 3"
pass "async: 202 at once for 3 events while the runner is offline; bad signature 401, not queued"

kill9 "$GW_PID"
GW_SAME_PORTS=1 gw_start
[[ $(queued queued) == 3 ]] || fail "after kill -9 and restart: $(queued queued) queued, want 3"
send 4
pass "async: the 3 accepted events survived kill -9 of the gateway; a 4th accepted after the restart"

rec_count_is 0 || fail "delivered while the runner was offline?"
runner_start r1 "$TMP/r1"
wait_for 30 rec_count_is 4 || fail "delivered $(rec_count) of 4 after the runner connected"
for i in 1 2 3 4; do
    cmp -s "$TMP/ev.$i" "$REC/req.$i.body" || fail "event $i: delivered out of order or changed: $(cat "$REC/req.$i.body")"
    [[ $(rec_target "$i") == /slack/commands ]] || fail "event $i: target $(rec_target "$i")"
    want=$(sed -n "${i}p" "$TMP/ids")
    [[ $(rec_header "$i" x-ferry-delivery) == "$want" ]] || fail "event $i: delivery id $(rec_header "$i" x-ferry-delivery), want $want"
    [[ -n $(rec_header "$i" X-Slack-Signature) && -n $(rec_header "$i" X-Slack-Request-Timestamp) ]] ||
        fail "event $i: provider headers not delivered"
    [[ $(rec_header "$i" Content-Type) == application/x-www-form-urlencoded ]] || fail "event $i: content type"
done
wait_for 10 queued_is 0 || fail "queue not empty after delivery: $(queued queued)"
[[ $(queued delivered) == 4 ]] || fail "delivered count $(queued delivered)"
sleep 1.5 # one more queue tick: nothing may be delivered twice
rec_count_is 4 || fail "an event was delivered again ($(rec_count) requests)"
pass "async: all 4 delivered in order once the runner connected, with their delivery ids and headers"

# The runner answers 503: the event stays queued and is retried with backoff.
echo 503 >"$REC/status"
send 5
wait_for 20 rec_count_is 6 || fail "no retry after a 503 ($(rec_count) requests)"
[[ $(rec_header 5 x-ferry-attempt) == 1 && $(rec_header 6 x-ferry-attempt) == 2 ]] ||
    fail "attempt headers: $(rec_header 5 x-ferry-attempt), $(rec_header 6 x-ferry-attempt)"
[[ $(rec_header 5 x-ferry-delivery) == "$(rec_header 6 x-ferry-delivery)" ]] || fail "retry changed the delivery id"
[[ $(queued queued) == 1 ]] || fail "the failing event left the queue"
rm -f "$REC/status"
wait_for 20 queued_is 0 || fail "not delivered after the runner recovered"
n=$(rec_count)
cmp -s "$TMP/ev.5" "$REC/req.$n.body" || fail "retried event changed"
metrics_page "$TMP/m"
[[ $(metric "$TMP/m" "ferry_hook_deliveries_total{hook=\"$HOOK_ID\",result=\"retry\"}") -ge 1 ]] || fail "no retry metric"
[[ $(metric "$TMP/m" "ferry_hook_deliveries_total{hook=\"$HOOK_ID\",result=\"delivered\"}") == 5 ]] ||
    fail "delivered metric $(metric "$TMP/m" "ferry_hook_deliveries_total{hook=\"$HOOK_ID\",result=\"delivered\"}")"
pass "async: a 503 from the runner is retried with backoff (same delivery id, attempt counted) until it succeeds"

gw_stop
pass "async hooks: durable queue, in-order delivery, retries"
