#!/usr/bin/env bash
# A hook's recent deliveries on the dashboard, end to end: a real runner
# whose upstream records what reached it (tests/hooks/recorder.py), GitHub
# deliveries signed independently (tests/hooks/sign.py) and posted with
# curl. A good delivery shows as delivered and verified ok with its status
# and latency, a bad signature and a missing one as refused with their
# verification result, an async hook's event as queued with its delivery
# id; other hooks' deliveries never show; the route is behind the admin
# authorization like the rest.
source "$(dirname "$0")/lib.sh"

hook_gateway
sign_in
printf '{"action":"opened","n":1}\n' >"$TMP/body"
printf 'gh-secret-1\n' >"$TMP/gh.secret"
printf 'wrong-secret\n' >"$TMP/wrong.secret"
mkhook gh --runner r1 --path /gh/events --verify github --secret-file "$TMP/gh.secret"
GH_URL=$HOOK_URL GH_ID=$HOOK_ID
mkhook other --runner r1 --path /other --verify github --secret-file "$TMP/gh.secret"
OTHER_URL=$HOOK_URL OTHER_ID=$HOOK_ID

SIG=$("${SIGN[@]}" github "$TMP/gh.secret" "$TMP/body")
BAD=$("${SIGN[@]}" github "$TMP/wrong.secret" "$TMP/body")
code=$(post "$GH_URL" "$TMP/body" -H "X-Hub-Signature-256: $SIG" -H 'X-GitHub-Delivery: d-1')
expect_status 200 "$code" "good delivery"
code=$(post "$GH_URL" "$TMP/body" -H "X-Hub-Signature-256: $BAD" -H 'X-GitHub-Delivery: d-2')
expect_refused webhook_bad_signature "$code" "bad signature"
code=$(post "$GH_URL" "$TMP/body" -H 'X-GitHub-Delivery: d-3')
expect_refused webhook_missing_header "$code" "no signature"
code=$(post "$GH_URL" "$TMP/body" -H "X-Hub-Signature-256: $SIG" -H 'X-GitHub-Delivery: d-1')
expect_refused webhook_replay "$code" "replayed delivery id"
code=$(post "$OTHER_URL" "$TMP/body" -H "X-Hub-Signature-256: $SIG" -H 'X-GitHub-Delivery: o-1')
expect_status 200 "$code" "the other hook"
rec_count_is 2 || fail "the upstream saw $(rec_count) requests, want 2"

deliveries() { sadmin GET "/admin/v1/hooks/$1/deliveries${2:-}" && [[ $(code) == 200 ]]; }
wait_for 10 deliveries "$GH_ID" || fail "deliveries: $(code) $(cat "$TMP/b")"
expect_security "deliveries"
jcheck "$TMP/b" "[(d['state'], d['verified'], d['status']) for d in j['deliveries']] == [('refused', 'replayed', 401), ('refused', 'missing_signature', 401), ('refused', 'bad_signature', 401), ('delivered', 'ok', 200)]"
jcheck "$TMP/b" "all(d['latency_ms'] >= 0 and d['time'] > 1.7e12 and d['replay_of'] is None and d['captured'] is False for d in j['deliveries']) and j['deliveries'][3]['attempts'] == 1"
grep -qF -- "$OTHER_ID" "$TMP/b" && fail "gh's deliveries show the other hook"
deliveries "$OTHER_ID"
jcheck "$TMP/b" "[(d['state'], d['verified']) for d in j['deliveries']] == [('delivered', 'ok')]"
deliveries "$GH_ID" "?limit=1"
jcheck "$TMP/b" "len(j['deliveries']) == 1 and j['deliveries'][0]['verified'] == 'replayed'"
sadmin GET "/admin/v1/hooks/$GH_ID/deliveries?limit=0"
expect_code 400 "limit=0"
deliveries hk_nosuchhook
jcheck "$TMP/b" "j['deliveries'] == []"
pass "deliveries: delivered/ok, bad and missing signatures and a replay refused, newest first, per hook"

# An async hook: the event is queued with its delivery id.
mkhook queued --runner r1 --path /q --verify github --secret-file "$TMP/gh.secret" --async
Q_URL=$HOOK_URL Q_ID=$HOOK_ID
code=$(post "$Q_URL" "$TMP/body" -H "X-Hub-Signature-256: $SIG" -H 'X-GitHub-Delivery: q-1')
expect_status 202 "$code" "async delivery"
DLV=$(json_get "$TMP/resp" delivery_id)
[[ $DLV == dlv_* ]] || fail "async: no delivery id: $(cat "$TMP/resp")"
deliveries "$Q_ID"
jcheck "$TMP/b" "[(d['id'], d['state'], d['verified'], d['status'], d['attempts']) for d in j['deliveries']] == [('$DLV', 'queued', 'ok', 202, 0)]"
wait_for 20 rec_count_is 3 || fail "the queued event was not delivered"
pass "async: the event shows as queued with its delivery id"

hreq "https://$ADM/admin/v1/hooks/$GH_ID/deliveries"
expect_code 401 "deliveries without credentials"
hreq "https://$ADM/admin/v1/hooks/$GH_ID/deliveries" -X POST -H "Authorization: Bearer $ADMIN_TOKEN"
expect_code 405 "POST deliveries"
admin GET "/admin/v1/hooks/$GH_ID/deliveries" >/dev/null
[[ $(code) == 200 ]] || fail "deliveries with the Bearer token: $(code)"
pass "deliveries: behind the admin token or session like every admin route"

gw_stop
pass "hook deliveries"
