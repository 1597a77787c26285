#!/usr/bin/env bash
# ferry-gateway run: state.json, config precedence, the admin API with curl
# (auth, tokens, runners, errors) and the public listener's own answers.
source "$(dirname "$0")/lib.sh"

"$BIN/ferry-gateway" --help | grep -q '^  run ' || fail "--help does not list run"
"$BIN/ferry-gateway" --help | grep -q '^  init ' || fail "--help does not list init"
help=$("$BIN/ferry-gateway" run --help)
for opt in --data-dir --config --public-listen --tunnel-listen --admin-listen --public-plain \
    --tls-cert --tls-key --heartbeat --drain-timeout --log-level --log-format; do
    grep -q -- "$opt" <<<"$help" || fail "run --help does not list $opt"
done
set +e
"$BIN/ferry-gateway" run >/dev/null 2>&1
rc=$?
set -e
[[ $rc == 2 ]] || fail "run without --data-dir exited $rc, want 2"

gw_init
gw_start
[[ $SCHEME == https ]] || fail "public_scheme is '$SCHEME'"
for a in "$PUB" "$TUN" "$ADM"; do
    [[ $a =~ ^127\.0\.0\.1:[0-9]+$ && $a != *:0 ]] || fail "state.json address '$a'"
done
pass "state.json names the bound addresses"

# Admin API: every call needs the token.
c=$(curl -sS --cacert "$CA" -o /dev/null -w '%{http_code}' "https://$ADM/admin/v1/status")
[[ $c == 401 ]] || fail "status without a token: $c"
c=$(curl -sS --cacert "$CA" -o /dev/null -w '%{http_code}' -H "Authorization: Bearer fya_wrong" \
    "https://$ADM/admin/v1/runners")
[[ $c == 401 ]] || fail "runners with a wrong token: $c"
c=$(curl -sS --cacert "$CA" -o /dev/null -w '%{http_code}' -X POST \
    "https://$ADM/admin/v1/tokens" -d '{"runner":"x"}')
[[ $c == 401 ]] || fail "tokens create without a token: $c"
pass "admin API refuses calls without the admin token"

admin GET /admin/v1/status >"$TMP/status.json"
[[ $(code) == 200 ]] || fail "status: $(code)"
grep -q "\"public\":\"$PUB\"" "$TMP/status.json" || fail "status listeners: $(cat "$TMP/status.json")"
grep -q '"runners_connected":0' "$TMP/status.json" || fail "status runners: $(cat "$TMP/status.json")"

tok=$(token alpha 2h)
[[ $tok =~ ^fyt_[A-Za-z0-9_-]{43}$ ]] || fail "token shape '$tok'"
grep -q '"id":"tok_' "$TMP/tok.json" || fail "token id: $(cat "$TMP/tok.json")"
exp=$(json_get "$TMP/tok.json" expires_at)
now=$(date +%s)
((exp > now + 7000 && exp <= now + 7200)) || fail "2h token expires at $exp (now $now)"
admin POST /admin/v1/tokens '{"runner":"Bad_Name"}' >/dev/null
[[ $(code) == 400 ]] || fail "invalid runner name: $(code)"
admin POST /admin/v1/tokens '{"runner":"ok","ttl":"31d"}' >/dev/null
[[ $(code) == 400 ]] || fail "ttl over 30d: $(code)"
admin POST /admin/v1/tokens 'not json' >/dev/null
[[ $(code) == 400 ]] || fail "malformed body: $(code)"
admin GET /admin/v1/tokens >"$TMP/tokens.json"
[[ $(code) == 200 ]] || fail "tokens list: $(code)"
grep -q '"runner":"alpha"' "$TMP/tokens.json" || fail "tokens list: $(cat "$TMP/tokens.json")"
grep -q 'fyt_' "$TMP/tokens.json" && fail "tokens list shows a secret"
grep -q "$tok" "$TMP/gw.log" && fail "the gateway logged a token"
pass "tokens create and list (secret shown once, never listed or logged)"

admin GET /admin/v1/runners >"$TMP/runners.json"
[[ $(code) == 200 && $(cat "$TMP/runners.json") == '{"runners":[]}' ]] ||
    fail "runners list: $(code) $(cat "$TMP/runners.json")"
admin POST /admin/v1/runners/nosuch/revoke >/dev/null
[[ $(code) == 404 ]] || fail "revoke unknown runner: $(code)"
admin GET /admin/v1/nothing >/dev/null
[[ $(code) == 404 ]] || fail "unknown admin route: $(code)"
admin DELETE /admin/v1/tokens >/dev/null
[[ $(code) == 405 ]] || fail "wrong method: $(code)"
pass "runners list, revoke of an unknown runner, unknown routes"

# Public listener without any runner.
c=$(pub -o "$TMP/p.out" -w '%{http_code}' /elsewhere)
[[ $c == 404 ]] && grep -q '"code":"not_found"' "$TMP/p.out" || fail "unknown path: $c $(cat "$TMP/p.out")"
c=$(pub -o "$TMP/p.out" -w '%{http_code}' /r/nosuch/x)
[[ $c == 404 ]] && grep -q '"code":"runner_not_found"' "$TMP/p.out" || fail "unknown runner: $c"
c=$(pub -o "$TMP/p.out" -w '%{http_code}' /r/Not_A_Name/x)
[[ $c == 404 ]] && grep -q '"code":"runner_not_found"' "$TMP/p.out" || fail "invalid runner name: $c"
c=$(curl -sS -o /dev/null -w '%{http_code}' "http://$PUB/x" || true)
[[ $c == 000 || $c == 400 ]] || fail "plain HTTP on the HTTPS listener answered $c"
pass "public 404s in the OpenAI error shape"
gw_stop
pass "SIGTERM: exit 0, state.json removed"

# Config precedence: gateway.json < --config < command line.
cat >"$TMP/extra.json" <<JSON
{"public-plain": true, "log-format": "json", "drain-timeout": "5s"}
JSON
gw_start --config "$TMP/extra.json"
[[ $SCHEME == http ]] || fail "--config public-plain not applied"
c=$(curl -sS -o /dev/null -w '%{http_code}' -H "$AUTH" "http://$PUB/r/nosuch/")
[[ $c == 404 ]] || fail "plain public listener: $c"
tail -n1 "$TMP/gw.log" | grep -q '^{.*"msg"' || tail -n1 "$TMP/gw.log" | grep -q '^{' ||
    fail "--log-format json from --config not applied: $(tail -n1 "$TMP/gw.log")"
gw_stop
echo '{"no-such-option": 1}' >"$TMP/bad.json"
set +e
"$BIN/ferry-gateway" run --data-dir "$GW" --config "$TMP/bad.json" 2>"$TMP/bad.err"
rc=$?
set -e
[[ $rc == 2 ]] || fail "unknown config key exited $rc"
grep -q 'no-such-option' "$TMP/bad.err" || fail "unknown config key message: $(cat "$TMP/bad.err")"
pass "config file applied; unknown keys refused"
