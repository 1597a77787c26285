#!/usr/bin/env bash
# Hooks shared by 3 replicas on one Redis (--shared): a hook created on one
# replica verifies and forwards on the others; a rotation and a delete made
# on one apply on the others; a GitHub delivery id seen on one is a replay
# on another; an async hook's events accepted by any replica reach the
# upstream once each, in order; and the replica delivering a hook, killed
# with an event in flight, is taken over after the owner lease's TTL, the
# event delivered again with the same x-ferry-delivery id (at least once).
# With Redis down: 503 under --shared-failure closed; under open, each
# replica's own replay guard.
source "$(dirname "$0")/../hooks/lib.sh"
source "$(dirname "$0")/../lib/redis.sh"
source "$(dirname "$0")/shared_lib.sh"
FAIL_LOGS=(gw.*.log runner.*.out redis.r/log rec.err)

redis_start
rec_start
shared_init
for r in a b c; do replica_start "$r"; done
for r in a b c; do wait_for 20 replicas_are "$r" 3 || fail "replica $r does not count 3 replicas"; done

# One runner with a connection to every replica.
t=$(tok r1 c)
[[ -n $t ]] || fail "token for r1"
"$BIN/ferry-runner" enroll --gateway "${TUNS[c]}" --token "$t" --ca "$CA" --data-dir "$TMP/r1" \
    >"$TMP/enroll.out" 2>&1 || fail "enroll r1: $(cat "$TMP/enroll.out")"
NRN=1
FERRY_TEST_BACKOFF_MS=100 "$BIN/ferry-runner" run --data-dir "$TMP/r1" --upstream "http://127.0.0.1:$UP" \
    --gateway "${TUNS[a]}" --gateway "${TUNS[b]}" --gateway "${TUNS[c]}" --connections 3 \
    >"$TMP/runner.1.out" 2>&1 &
PIDS+=($!)
for r in a b c; do wait_for 30 conns_on_are "$r" r1 1 || fail "runner r1 is not connected to $r"; done

# mkhook_on R NAME ARGS...: ferry hooks create through replica R; sets HOOK_ID.
mkhook_on() {
    local r=$1 name=$2
    shift 2
    on "$r" hooks create --name "$name" "$@" >"$TMP/mkhook.out" || fail "hooks create on $r: $(cat "$TMP/mkhook.out")"
    HOOK_ID=$(tail -n1 "$TMP/mkhook.out")
    HOOK_ID=${HOOK_ID##*/hooks/}
    [[ $HOOK_ID == hk_* ]] || fail "hooks create output: $(cat "$TMP/mkhook.out")"
}
hook_url() { echo "https://${PUBS[$1]}/hooks/$2"; }
# gh_post R ID SECRET_FILE DELIVERY [QUERY]: a signed GitHub delivery of
# $TMP/body to hook ID through replica R; prints the status.
gh_post() {
    local sig
    sig=$("${SIGN[@]}" github "$3" "$TMP/body")
    post "$(hook_url "$1" "$2")${5:-}" "$TMP/body" -H "X-Hub-Signature-256: $sig" \
        -H "X-GitHub-Delivery: $4" -H 'X-GitHub-Event: push'
}
NDLV=0
# gh_ok R ID SECRET_FILE: a fresh delivery through R answered 200 (for wait_for).
gh_ok() {
    NDLV=$((NDLV + 1))
    [[ $(gh_post "$1" "$2" "$3" "probe-$NDLV") == 200 ]]
}
hook_gone_on() { [[ $(post "$(hook_url "$1" "$2")" "$TMP/body") == 404 ]]; }

printf '{"action":"opened","n": 1}\n' >"$TMP/body"
printf 'gh-shared-1\n' >"$TMP/gh.secret"
printf 'gh-shared-2\n' >"$TMP/gh2.secret"

# --- records: created on A, used on B and C ---------------------------------------------
mkhook_on a gh --runner r1 --path /gh --verify github --secret-file "$TMP/gh.secret"
GH=$HOOK_ID
for r in b c; do
    n=$(rec_count)
    wait_for 20 gh_ok "$r" "$GH" "$TMP/gh.secret" || fail "hook made on A, on $r: $(cat "$TMP/resp")"
    wait_for 10 rec_count_is $((n + 1)) || fail "the delivery through $r did not reach the upstream"
    cmp -s "$TMP/body" "$REC/req.$(rec_count).body" || fail "the body through $r changed"
    [[ $(rec_target "$(rec_count)") == /gh ]] || fail "target through $r: $(rec_target "$(rec_count)")"
done
redis_cli hexists 'ferry:{cat}:hooks' "$GH" | grep -q 1 || fail "the hook record is not in Redis"
pass "a hook created on A verifies and forwards on B and C"

# --- the replay guard across replicas ------------------------------------------------------
c=$(gh_post b "$GH" "$TMP/gh.secret" d-shared-1)
expect_status 200 "$c" "first delivery of d-shared-1 on B"
n=$(rec_count)
c=$(gh_post c "$GH" "$TMP/gh.secret" d-shared-1)
expect_refused webhook_replay "$c" "d-shared-1 replayed on C"
c=$(gh_post a "$GH" "$TMP/gh.secret" d-shared-1)
expect_refused webhook_replay "$c" "d-shared-1 replayed on A"
rec_count_is "$n" || fail "a replay reached the upstream"
[[ $(redis_cli ttl "ferry:{h:$GH}:seen:d-shared-1") -gt 0 ]] || fail "the seen id has no expiry in Redis"
pass "a GitHub delivery id seen on B is a replay on C and A (one SET NX EX in Redis)"

# --- rotation on B applies on A; delete on C is a 404 on A ---------------------------------
on b hooks rotate-secret "$GH" --secret-file "$TMP/gh2.secret" >"$TMP/rot.out" || fail "rotate on B: $(cat "$TMP/rot.out")"
wait_for 20 gh_ok a "$GH" "$TMP/gh2.secret" || fail "the secret rotated on B is refused on A: $(cat "$TMP/resp")"
gh_ok c "$GH" "$TMP/gh.secret" || fail "the previous secret is refused during the grace period on C"
pass "a secret rotated on B is accepted on A (and the previous one during the grace period)"

on c hooks delete "$GH" >/dev/null || fail "delete on C"
wait_for 20 hook_gone_on a "$GH" || fail "deleted on C, still there on A"
hook_gone_on b "$GH" || fail "deleted on C, still there on B"
[[ $(redis_cli hexists 'ferry:{cat}:hooks' "$GH") == 0 ]] || fail "the record is still in Redis"
pass "a hook deleted on C is a 404 on A and B"

# --- async: 10 events over the 3 replicas, delivered once each in order ---------------------
mkhook_on b events --runner r1 --path /ev --verify github --secret-file "$TMP/gh.secret" --async
EV=$HOOK_ID
for r in a c; do wait_for 20 eval '[[ $(post "$(hook_url '"$r"' "$EV")" "$TMP/body") != 404 ]]' || fail "async hook unknown on $r"; done
n0=$(rec_count)
: >"$TMP/ids"
for i in $(seq 1 10); do
    r=$(echo a b c | cut -d' ' -f$((i % 3 + 1)))
    printf '{"seq":%d}\n' "$i" >"$TMP/body"
    c=$(gh_post "$r" "$EV" "$TMP/gh.secret" "ev-$i")
    expect_status 202 "$c" "async event $i on $r"
    sed -n 's/.*"delivery_id":"\(dlv_[0-9a-f]*\)".*/\1/p' "$TMP/resp" >>"$TMP/ids"
done
wait_for 60 rec_count_is $((n0 + 10)) || fail "delivered $(($(rec_count) - n0)) of 10"
for i in $(seq 1 10); do
    k=$((n0 + i))
    [[ $(cat "$REC/req.$k.body") == "{\"seq\":$i}" ]] || fail "event $i: arrived as $(cat "$REC/req.$k.body") (out of order?)"
    [[ $(rec_header "$k" x-ferry-delivery) == "$(sed -n "${i}p" "$TMP/ids")" ]] || fail "event $i: delivery id"
done
stream_empty() { [[ $(redis_cli xlen "ferry:{h:$EV}:q") == 0 ]]; }
wait_for 20 stream_empty || fail "the stream still holds $(redis_cli xlen "ferry:{h:$EV}:q") entries"
rec_count_is $((n0 + 10)) || fail "an event was delivered twice"
pass "async: 10 events accepted over 3 replicas reached the upstream once each, in order"

# --- the owner killed with an event in flight ------------------------------------------------
printf '{"seq":"held"}\n' >"$TMP/body"
n0=$(rec_count)
c=$(gh_post a "$EV" "$TMP/gh.secret" ev-held '?gate=g1')
expect_status 202 "$c" "the held event"
DLV=$(sed -n 's/.*"delivery_id":"\(dlv_[0-9a-f]*\)".*/\1/p' "$TMP/resp")
wait_for 30 rec_count_is $((n0 + 1)) || fail "the held event did not reach the upstream"
[[ $(rec_header $((n0 + 1)) x-ferry-delivery) == "$DLV" ]] || fail "held event: delivery id"
# Any replica's hook listing counts the event waiting in the stream.
queued_is() {
    "$BIN/ferry" --data-dir "${DIR[$1]}" --json hooks list >"$TMP/hl.json" &&
        python3 -c "import json,sys; h={x['id']: x for x in json.load(open(sys.argv[1]))['hooks']}['$EV']; sys.exit(not (h['queued'] == $2 and h['dead'] == 0))" "$TMP/hl.json"
}
for r in a b c; do queued_is "$r" 1 || fail "hooks list on $r does not count the event in flight: $(cat "$TMP/hl.json")"; done
OWNER=$(redis_cli get "ferry:{h:$EV}:owner")
OPUB=$(redis_cli hget 'ferry:{cat}:replica-info' "$OWNER" | python3 -c 'import json,sys; print(json.load(sys.stdin)["public"])')
VICTIM=
for r in a b c; do [[ ${PUBS[$r]} == "$OPUB" ]] && VICTIM=$r; done
[[ -n $VICTIM ]] || fail "no replica is the owner $OWNER ($OPUB)"
kill9 "${PIDOF[$VICTIM]}"
# Another replica takes the hook over after the lease TTL (3 s) and delivers
# the event it finds pending again: the same delivery id.
wait_for 60 rec_count_is $((n0 + 2)) || fail "the event in flight on the killed replica $VICTIM was not delivered again"
[[ $(rec_header $((n0 + 2)) x-ferry-delivery) == "$DLV" ]] || fail "redelivery with another id: $(rec_header $((n0 + 2)) x-ferry-delivery)"
NEW=$(redis_cli get "ferry:{h:$EV}:owner")
[[ -n $NEW && $NEW != "$OWNER" ]] || fail "the owner did not change: $NEW"
curl -sS --max-time 10 -o /dev/null "http://127.0.0.1:$UP/release?name=g1" || fail "release g1"
wait_for 30 stream_empty || fail "the redelivered event was not acknowledged"
for r in a b c; do
    [[ $r == "$VICTIM" ]] || queued_is "$r" 0 || fail "hooks list on $r after delivery: $(cat "$TMP/hl.json")"
done
pass "the delivering replica ($VICTIM) killed mid-delivery: another took over after the lease TTL and delivered it again with the same x-ferry-delivery id"

# --- Redis unreachable (--shared-failure closed, the default) --------------------------------
LIVE=()
for r in a b c; do [[ $r == "$VICTIM" ]] || LIVE+=("$r"); done
R1=${LIVE[0]} R2=${LIVE[1]}
printf '{"action":"down"}\n' >"$TMP/body"
mkhook_on "$R1" gh3 --runner r1 --path /gh3 --verify github --secret-file "$TMP/gh.secret"
GH3=$HOOK_ID
wait_for 20 gh_ok "$R2" "$GH3" "$TMP/gh.secret" || fail "hook gh3 on $R2"
redis_kill9
for r in "$R1" "$R2"; do wait_for 30 eval '! shared_up '"$r" || fail "replica $r still reports Redis up"; done
n=$(rec_count)
c=$(gh_post "$R1" "$GH3" "$TMP/gh.secret" d-down-1)
expect_status 503 "$c" "a GitHub delivery while Redis is down (the replay guard cannot tell)"
grep -q '"code":"shared_state_unavailable"' "$TMP/resp" || fail "503 body: $(cat "$TMP/resp")"
printf '{"seq":"down"}\n' >"$TMP/body"
c=$(gh_post "$R2" "$EV" "$TMP/gh.secret" d-down-2)
expect_status 503 "$c" "an async event while Redis is down"
rec_count_is "$n" || fail "a request reached the upstream while Redis was down"
rc=0
on "$R1" hooks create --name nope --runner r1 --path /x --verify github --secret-file "$TMP/gh.secret" \
    >"$TMP/w.out" 2>&1 || rc=$?
[[ $rc != 0 ]] && grep -qi 'shared state' "$TMP/w.out" || fail "hook create while Redis is down: $(cat "$TMP/w.out")"
redis_start
for r in "$R1" "$R2"; do wait_for 30 shared_up "$r" || fail "replica $r did not reconnect"; done
printf '{"action":"back"}\n' >"$TMP/body"
gh_ok "$R1" "$GH3" "$TMP/gh.secret" || fail "a delivery after Redis came back: $(cat "$TMP/resp")"
pass "Redis down: webhooks with a delivery id and async events 503 shared_state_unavailable, hook writes refused; back: accepted again"

# --- Redis unreachable with --shared-failure open ----------------------------------------------
# R1 restarted with open: while Redis is down, a delivery id is checked
# against R1's own memory of ids (SQLite), so a new delivery is forwarded and
# the same id again on R1 is a replay; a key nobody cached is a plain 401.
replica_stop "$R1"
TUN_LISTEN=${TUNS[$R1]} replica_start "$R1" --shared-failure open # where the runner dials
wait_for 30 conns_on_are "$R1" r1 1 || fail "runner r1 did not reconnect to $R1"
wait_for 20 gh_ok "$R1" "$GH3" "$TMP/gh.secret" || fail "hook gh3 on $R1 after its restart"
redis_kill9
wait_for 30 eval '! shared_up '"$R1" || fail "replica $R1 still reports Redis up"
printf '{"action":"open"}
' >"$TMP/body"
n=$(rec_count)
c=$(gh_post "$R1" "$GH3" "$TMP/gh.secret" d-open-1)
expect_status 200 "$c" "a new GitHub delivery while Redis is down, under --shared-failure open"
wait_for 20 rec_count_is $((n + 1)) || fail "the delivery did not reach the upstream"
c=$(gh_post "$R1" "$GH3" "$TMP/gh.secret" d-open-1)
expect_status 401 "$c" "the same delivery id again on the same replica while Redis is down"
rec_count_is $((n + 1)) || fail "a replayed delivery reached the upstream"
c=$(curl -sS --max-time 30 --cacert "$CA" -o /dev/null -w '%{http_code}' \
    -H "Authorization: Bearer fy_$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=' | head -c 43)" \
    "https://${PUBS[$R1]}/r/r1/fixed")
expect_status 401 "$c" "a key nobody cached while Redis is down, under --shared-failure open"
redis_start
wait_for 30 shared_up "$R1" || fail "replica $R1 did not reconnect"
pass "Redis down, --shared-failure open: a new delivery forwarded, the same id again a replay (local guard), an uncached key 401"

for r in a b c; do [[ $r == "$VICTIM" ]] || replica_stop "$r"; done
pass "replicas stop cleanly"
