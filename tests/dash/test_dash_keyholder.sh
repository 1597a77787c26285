#!/usr/bin/env bash
# The key holders' page API on the public listener, end to end: two keys
# used through a real runner (stories260K); GET /dashboard/api/me with key A
# shows A's limits, what is left of them and A's usage per hour and per day,
# and nothing of key B, whatever the query says; B sees only B's; a
# revoked key gets the same 401 as /v1; bad keys from one address are
# limited (429 with Retry-After). Every answer carries the dashboard's CSP.
source "$(dirname "$0")/lib.sh"

gw_init
gw_start
stories_runner storyteller
mkkey alice --rpm 60 --burst 10 --tpm 100000 --concurrency 3 --models stories260K
ALICE=$KEY ALICE_ID=$KID
mkkey bob-the-other
BOB=$KEY BOB_ID=$KID

complete() { # complete KEY MAX_TOKENS
    local c
    c=$(pubk "$1" -o "$TMP/out" -w '%{http_code}' -H 'Content-Type: application/json' \
        --data "{\"model\":\"stories260K\",\"prompt\":\"Once upon a time\",\"max_tokens\":$2,\"temperature\":0}" /v1/completions)
    [[ $c == 200 ]] || fail "completion: $c $(cat "$TMP/out")"
}
complete "$ALICE" 7
complete "$ALICE" 5
complete "$BOB" 11

me() { hreq "$(pub_url /dashboard/api/me)" -H "Authorization: Bearer $1" "${@:2}"; }
me "$ALICE"
expect_code 200 "alice's page"
expect_security "/dashboard/api/me"
[[ $(hdr Cache-Control) == no-store ]] || fail "api/me is cacheable"
cp "$TMP/b" "$TMP/alice.json"
jcheck "$TMP/alice.json" "j['key']['id'] == '$ALICE_ID' and j['key']['name'] == 'alice' and j['key']['prefix'] == '${ALICE:0:8}' and j['key']['scopes']['models'] == ['stories260K'] and j['key']['expires_at'] is None"
jcheck "$TMP/alice.json" "j['key']['limits'] == {'rpm': 60, 'tpm': 100000, 'concurrency': 3, 'burst': 10}"
jcheck "$TMP/alice.json" "j['remaining']['requests_this_minute'] in (7, 8) and 0 < j['remaining']['tokens_this_minute'] <= 100000 and j['remaining']['concurrency'] == 3"
jcheck "$TMP/alice.json" "len(j['usage']['hourly']) == 48 and len(j['usage']['daily']) == 30 and j['usage']['hourly'][-1]['requests'] == 2 and j['usage']['hourly'][-1]['completion_tokens'] == 12 and sum(h['requests'] for h in j['usage']['hourly']) == 2 and j['usage']['daily'][-1]['requests'] == 2 and j['usage']['daily'][-1]['prompt_tokens'] == j['usage']['hourly'][-1]['prompt_tokens'] > 0"
jcheck "$TMP/alice.json" "all(b['hour'] - a['hour'] == 3600 for a, b in zip(j['usage']['hourly'], j['usage']['hourly'][1:])) and j['usage']['hourly'][-1]['hour'] % 3600 == 0 and j['usage']['daily'][-1]['day'] % 86400 == 0"
for other in "$BOB_ID" bob-the-other "$BOB"; do
    grep -qF -- "$other" "$TMP/alice.json" && fail "alice's page shows '$other'"
done
grep -qF -- "$ALICE" "$TMP/alice.json" && fail "the page echoes the key"
pass "key A: its limits, remaining quota, 48 hours and 30 days of usage; nothing of key B"

# Nothing names another key: parameters are ignored, the key decides.
me "$ALICE" -G --data-urlencode "key=$BOB_ID" --data-urlencode "id=$BOB_ID"
jcheck "$TMP/b" "j['key']['id'] == '$ALICE_ID' and sum(h['requests'] for h in j['usage']['hourly']) == 2"
me "$BOB"
jcheck "$TMP/b" "j['key']['id'] == '$BOB_ID' and j['key']['limits']['rpm'] == 0 and j['remaining'] == {'requests_this_minute': None, 'tokens_this_minute': None, 'concurrency': None} and sum(h['requests'] for h in j['usage']['hourly']) == 1 and j['usage']['hourly'][-1]['completion_tokens'] == 11"
grep -qF -- "$ALICE_ID" "$TMP/b" && fail "bob's page shows alice's id"
pass "key B sees only B's data; no parameter reaches another key"

admin POST "/admin/v1/keys/$ALICE_ID/revoke" >/dev/null
[[ $(code) == 200 ]] || fail "revoke: $(code)"
me "$ALICE"
expect_code 401 "revoked key"
cp "$TMP/b" "$TMP/me401"
pubk "$ALICE" -o "$TMP/v1401" /v1/models >/dev/null
cmp -s "$TMP/me401" "$TMP/v1401" || fail "api/me's 401 differs from /v1's: $(cat "$TMP/me401") vs $(cat "$TMP/v1401")"
jcheck "$TMP/me401" "j['error']['type'] == 'invalid_request_error' and j['error']['code']"
hreq "$(pub_url /dashboard/api/me)"
expect_code 401 "no key"
hreq "$(pub_url /dashboard/api/me)" -X POST -H "Authorization: Bearer $BOB" --data x
expect_code 405 "POST api/me"
pass "revoked key: the same 401 as /v1; no key 401"

# Two bad attempts so far (revoked, none); the burst is five.
n401=0
for ((i = 0; i < 10; i++)); do
    me fy_wrongwrongwrongwrongwrongwrongwrongwrongwro
    [[ $(code) == 401 ]] || break
    n401=$((n401 + 1))
done
expect_code 429 "bad keys past the burst"
expect_security "429"
ra=$(hdr Retry-After)
[[ $ra =~ ^[0-9]+$ ]] && ((ra >= 1 && ra <= 60)) || fail "429 Retry-After '$ra'"
((n401 >= 3 && n401 <= 6)) || fail "$n401 bad keys got 401 before the 429 (want 3..6)"
c=$(pubk "$BOB" -o /dev/null -w '%{http_code}' /v1/models)
[[ $c == 200 ]] || fail "the API itself is not limited by the page's guard: $c"
pass "bad keys: 429 with Retry-After after five in a minute; the API unaffected"

gw_stop
pass "key holders' page API"
