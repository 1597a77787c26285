#!/usr/bin/env bash
# API keys end to end, as a user meets them: every outcome of the check (401
# missing / malformed / unknown / revoked / expired, 403 outside the key's
# runners) in the OpenAI error shape, revocation on the very next request,
# expiry, scope changes, the CLI (create, list, update, revoke, usage),
# /metrics and the access log -- key ids there, never keys.
source "$(dirname "$0")/lib.sh"
gw_init
gw_start --access-log "$TMP/access.log"
upstream_start
tenroll alpha "$TMP/ra"
trunner_start "$TMP/ra"
KEYS=("$API_KEY") # every key made here: none may show up in logs or metrics

# st [CURL ARGS...] PATH: status of a public call without the tests' key;
# body in $TMP/o, head in $TMP/h.
st() { pub_nokey -o "$TMP/o" -D "$TMP/h" -w '%{http_code}' "$@"; }
err_code() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['error']['code'])" "$TMP/o"; }
expect() { # expect STATUS CODE WHAT [CURL ARGS...] PATH
    local want=$1 wcode=$2 what=$3 c
    shift 3
    c=$(st "$@")
    [[ $c == "$want" ]] || fail "$what: HTTP $c, want $want: $(cat "$TMP/o")"
    if [[ $wcode != - ]]; then
        [[ $(err_code) == "$wcode" ]] || fail "$what: code $(err_code), want $wcode"
    fi
}

[[ $(pub /r/alpha/fixed) == "Hello from ferry" ]] || fail "the tests' key does not work"
[[ $(pub_nokey -H "x-api-key: $API_KEY" /r/alpha/fixed) == "Hello from ferry" ]] || fail "x-api-key"
pass "a key works as Authorization: Bearer and as x-api-key"

# --- missing and malformed -------------------------------------------------------------
expect 401 missing_api_key "no key" /r/alpha/fixed
tr -d '\r' <"$TMP/h" | grep -qi '^www-authenticate: Bearer' || fail "401 without WWW-Authenticate"
expect 401 missing_api_key "empty Bearer" -H 'Authorization: Bearer ' /r/alpha/fixed
expect 401 invalid_api_key "Basic" -H 'Authorization: Basic Zm9vOmJhcg==' /r/alpha/fixed
grep -q 'Malformed' "$TMP/o" || fail "malformed key message: $(cat "$TMP/o")"
expect 401 invalid_api_key "not a ferry key" -H 'Authorization: Bearer sk-1234567890' /r/alpha/fixed
expect 401 invalid_api_key "truncated key" -H "x-api-key: ${API_KEY:0:30}" /r/alpha/fixed
other=fy_$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
expect 401 invalid_api_key "two different keys" -H "Authorization: Bearer $API_KEY" \
    -H "x-api-key: $other" /r/alpha/fixed
expect 401 invalid_api_key "two Authorization headers" -H "Authorization: Bearer $API_KEY" \
    -H "Authorization: Bearer $API_KEY" /r/alpha/fixed
pass "missing key: 401 missing_api_key; malformed ones: 401 invalid_api_key"

# --- unknown, revoked, expired: one answer -------------------------------------------------
expect 401 invalid_api_key "unknown key" -H "Authorization: Bearer $other" /r/alpha/fixed
cp "$TMP/o" "$TMP/unknown.json"
mkkey rev
KEYS+=("$KEY")
REV_KEY=$KEY REV_ID=$KID
[[ $(pubk "$KEY" /r/alpha/fixed) == "Hello from ferry" ]] || fail "new key does not work"
# A request admitted before the revocation finishes; the very next one is
# refused. The admitted one is held at the upstream until the refusal was seen.
pubk "$KEY" --max-time 120 -o "$TMP/slow.out" -w '%{http_code}' "/r/alpha/gate?name=revoke" >"$TMP/slow.code" &
slow=$!
wait_for 60 in_flight_ge alpha 1 || fail "held request not in flight"
ferry keys revoke "$KID" >"$TMP/revoke.out" || fail "keys revoke: $(cat "$TMP/revoke.out")"
grep -q "revoked" "$TMP/revoke.out" || fail "revoke output: $(cat "$TMP/revoke.out")"
expect 401 invalid_api_key "revoked key" -H "Authorization: Bearer $KEY" /r/alpha/fixed
cmp -s "$TMP/o" "$TMP/unknown.json" || fail "revoked and unknown keys answer differently"
release revoke
wait $slow || true
[[ $(cat "$TMP/slow.code") == 200 && $(cat "$TMP/slow.out") == released ]] ||
    fail "request admitted before the revocation: $(cat "$TMP/slow.code")"
ferry keys revoke "$KID" >/dev/null || fail "revoking twice"
c=0
ferry keys revoke key_nosuchkey000000 >/dev/null 2>"$TMP/e" || c=$?
[[ $c == 1 ]] && grep -q key_not_found "$TMP/e" || fail "revoke of an unknown key: $c $(cat "$TMP/e")"
pass "revocation: the very next request gets the unknown key's answer; the admitted one finished"

mkkey exp --expires 2s
KEYS+=("$KEY")
EXP_KEY=$KEY
ferry --json keys list >"$TMP/keys.json"
exp_at=$(python3 -c "import json,sys; print([k['expires_at'] for k in json.load(open(sys.argv[1]))['keys'] if k['id']==sys.argv[2]][0])" "$TMP/keys.json" "$KID")
c=$(st -H "Authorization: Bearer $KEY" /r/alpha/fixed)
# Works until its expiry (checked only when this ran before it: no timing assumption).
if (($(date +%s) < exp_at)); then [[ $c == 200 ]] || fail "key before its expiry: $c"; fi
# On a slow machine that request may already have come after the expiry: it
# is then one more 401 in the counts checked below.
EARLY_401=0
[[ $c == 401 ]] && EARLY_401=1
clock_reached() { (($(date +%s) >= $1)); }
wait_for 10 clock_reached "$exp_at" || fail "clock"
expect 401 invalid_api_key "expired key" -H "Authorization: Bearer $KEY" /r/alpha/fixed
cmp -s "$TMP/o" "$TMP/unknown.json" || fail "expired and unknown keys answer differently"
pass "expiry (--expires 2s): refused once expired, with the same answer"

# --- scopes ------------------------------------------------------------------------------
mkkey scoped --runners beta,gamma
KEYS+=("$KEY")
SC_KEY=$KEY SC_ID=$KID
expect 403 permission_denied "runner outside the scope" -H "Authorization: Bearer $KEY" /r/alpha/fixed
# Scopes and keys are checked before anything is said about runners.
expect 403 permission_denied "unknown runner outside the scope" -H "Authorization: Bearer $KEY" /r/nosuch/x
expect 404 runner_not_found "unknown runner in scope" -H "Authorization: Bearer $KEY" /r/beta/x
expect 401 missing_api_key "unknown runner without a key" /r/nosuch/x
ferry keys update "$SC_ID" --runners alpha,beta >/dev/null || fail "keys update --runners"
[[ $(pubk "$KEY" /r/alpha/fixed) == "Hello from ferry" ]] || fail "runner added to the scope"
ferry keys update "$SC_ID" --runners gamma >/dev/null || fail "keys update --runners gamma"
expect 403 permission_denied "runner removed from the scope" -H "Authorization: Bearer $KEY" /r/alpha/fixed
ferry keys update "$SC_ID" --runners '' >/dev/null || fail "keys update --runners ''"
[[ $(pubk "$KEY" /r/alpha/fixed) == "Hello from ferry" ]] || fail "scope cleared"
pass "scopes: 403 permission_denied outside --runners, checked before routing; updates apply at once"

# --- the CLI ------------------------------------------------------------------------------
mkkey "carol's key" --owner carol --rpm 120 --tpm 5000 --concurrency 3 --models m1,m2 --runners alpha
KEYS+=("$KEY")
C_KEY=$KEY C_ID=$KID
grep -q 'limits       rpm 120, tpm 5000, concurrency 3' "$TMP/mkkey.out" || fail "create output: $(cat "$TMP/mkkey.out")"
grep -q 'models       m1,m2' "$TMP/mkkey.out" || fail "create output (models)"
[[ $(tail -n1 "$TMP/mkkey.out" | wc -c) == 47 ]] || fail "the key is not alone on the last line"
for i in 1 2 3; do pubk "$KEY" -o /dev/null /r/alpha/fixed; done
ferry keys list >"$TMP/list.txt" || fail "keys list"
head -n1 "$TMP/list.txt" | grep -q 'ID.*NAME.*PREFIX.*RPM.*TPM.*CONC.*SCOPES.*CREATED.*LAST USED.*REQUESTS.*TOKENS.*STATE' ||
    fail "keys list header: $(head -n1 "$TMP/list.txt")"
grep "^$C_ID " "$TMP/list.txt" | grep -q "carol's key .* 120 .* 5000 .* 3 .*models=m1,m2 runners=alpha .* 3 .* active$" ||
    fail "keys list row: $(grep "^$C_ID " "$TMP/list.txt")"
grep "^$REV_ID " "$TMP/list.txt" | grep -q 'revoked$' || fail "revoked key's state"
grep -q ' expired$' "$TMP/list.txt" || fail "expired key's state"
ferry --json keys list >"$TMP/keys.json" || fail "keys list --json"
python3 - "$TMP/keys.json" "$C_ID" <<'PY' || fail "keys list --json: $(cat "$TMP/keys.json")"
import json, sys
keys = json.load(open(sys.argv[1]))["keys"]
k = [k for k in keys if k["id"] == sys.argv[2]][0]
assert k["name"] == "carol's key" and k["owner"] == "carol", k
assert (k["rpm"], k["tpm"], k["concurrency"]) == (120, 5000, 3), k
assert k["models"] == ["m1", "m2"] and k["runners"] == ["alpha"] and k["hooks"] == [], k
assert k["usage"]["requests"] == 3 and k["usage"]["bytes_out"] == 3 * 17, k["usage"]
assert k["last_used_at"] and k["created_at"] and k["prefix"].startswith("fy_"), k
for k in keys:
    assert "key" not in k and "hash" not in k, k
PY
ferry keys update "$C_ID" --rpm 6 --name carol2 --expires never >"$TMP/upd.out" || fail "keys update"
grep -q 'rpm 6, tpm 5000' "$TMP/upd.out" || fail "update output: $(cat "$TMP/upd.out")"
# The next request is under the new limit (admitted, or refused when the 3
# requests above still count against its burst of 1: a cut forgives nothing).
c=$(pubk "$KEY" -D "$TMP/h" -o /dev/null -w '%{http_code}' /r/alpha/fixed)
[[ $c == 200 || $c == 429 ]] || fail "after cutting rpm to 6: $c"
tr -d '\r' <"$TMP/h" | grep -qi '^x-ratelimit-limit-requests: 6$' || fail "new rpm not applied: $(cat "$TMP/h")"
n=$((c == 200 ? 4 : 3))
ferry usage --key "$C_ID" >"$TMP/usage.txt" || fail "usage"
grep -q "^$C_ID  *carol2  *$n  *0  *0  *0  *$((n * 17))$" "$TMP/usage.txt" || fail "usage table: $(cat "$TMP/usage.txt")"
ferry --json usage --by hour >"$TMP/usage.json" || fail "usage --by hour"
python3 - "$TMP/usage.json" "$C_ID" "$n" <<'PY' || fail "usage --json: $(cat "$TMP/usage.json")"
import json, sys
j = json.load(open(sys.argv[1]))
rows = [r for r in j["usage"] if r["key_id"] == sys.argv[2]]
# One row per hour (two if this test straddled an hour).
assert j["by"] == "hour" and 1 <= len(rows) <= 2 and all(r["hour"] % 3600 == 0 for r in rows), rows
assert sum(r["requests"] for r in rows) == int(sys.argv[3]), rows
PY
set +e
ferry keys create >/dev/null 2>&1; r1=$?
ferry keys create --name x --rpm -3 >/dev/null 2>&1; r2=$?
ferry keys create --name x --expires soon >/dev/null 2>&1; r3=$?
ferry keys update "$C_ID" >/dev/null 2>&1; r4=$?
ferry keys revoke not-an-id >/dev/null 2>&1; r5=$?
ferry keys create --name x --runners 'Bad_Name' >/dev/null 2>"$TMP/e"; r6=$?
set -e
[[ "$r1 $r2 $r3 $r4 $r5" == "2 2 2 2 2" ]] || fail "usage errors exit $r1 $r2 $r3 $r4 $r5, want 2"
[[ $r6 == 1 ]] && grep -q 'runner names' "$TMP/e" || fail "bad runner scope: $r6 $(cat "$TMP/e")"
pass "ferry keys create/list/update/revoke and usage (tables and --json; never the key)"

# --- /metrics -----------------------------------------------------------------------------
c=$(curl -sS --cacert "$CA" -o /dev/null -w '%{http_code}' "https://$ADM/metrics")
[[ $c == 401 ]] || fail "/metrics without the admin token: $c"
c=$(pub -o /dev/null -w '%{http_code}' /metrics)
[[ $c == 404 ]] || fail "/metrics on the public listener: $c"
admin GET /metrics >"$TMP/metrics.txt"
[[ $(code) == 200 ]] || fail "/metrics: $(code)"
for fam in ferry_requests_total ferry_request_duration_seconds ferry_request_ttfb_seconds \
    ferry_bytes_received_total ferry_bytes_sent_total ferry_tokens_total ferry_active_streams \
    ferry_connected_runners ferry_tunnel_connections ferry_ratelimit_rejections_total \
    ferry_auth_failures_total; do
    grep -q "^# TYPE $fam " "$TMP/metrics.txt" || fail "/metrics lacks $fam"
done
m() { metric "$TMP/metrics.txt" "$1"; }
(($(m 'ferry_requests_total{route="/r",status="200"}') >= 10 - EARLY_401)) || fail "200s: $(m 'ferry_requests_total{route="/r",status="200"}')"
[[ $(m 'ferry_requests_total{route="/r",status="401"}') == $((11 + EARLY_401)) ]] || fail "401s counted: $(m 'ferry_requests_total{route="/r",status="401"}')"
[[ $(m 'ferry_requests_total{route="/r",status="403"}') == 3 ]] || fail "403s counted"
[[ $(m 'ferry_auth_failures_total{reason="missing"}') -ge 3 && $(m 'ferry_auth_failures_total{reason="malformed"}') -ge 5 &&
    $(m 'ferry_auth_failures_total{reason="unknown"}') -ge 1 && $(m 'ferry_auth_failures_total{reason="revoked"}') -ge 1 &&
    $(m 'ferry_auth_failures_total{reason="expired"}') -ge 1 && $(m 'ferry_auth_failures_total{reason="forbidden_runner"}') -ge 3 ]] ||
    fail "auth failures: $(grep '^ferry_auth_failures_total' "$TMP/metrics.txt")"
[[ $(m ferry_connected_runners) == 1 && $(m ferry_tunnel_connections) == 1 && $(m ferry_active_streams) == 0 ]] ||
    fail "gauges: $(grep -E '^ferry_(connected|tunnel|active)' "$TMP/metrics.txt")"
n=$(m 'ferry_request_duration_seconds_count{route="/r"}')
[[ $n == $(m 'ferry_request_duration_seconds_bucket{route="/r",le="+Inf"}') ]] && ((n >= 25)) || fail "duration histogram: $n"
(($(m 'ferry_bytes_sent_total{route="/r"}') > 0)) || fail "bytes sent"
for k in "${KEYS[@]}"; do grep -qF "$k" "$TMP/metrics.txt" && fail "a key in /metrics"; done
grep -Eq 'fy_[A-Za-z0-9_-]{20}' "$TMP/metrics.txt" && fail "something key-shaped in /metrics"
pass "/metrics: admin token required; every family, plausible values, no key"

# --- the access log -------------------------------------------------------------------------
# One line per public request: as many as /metrics counted (nothing ran since).
total=$(awk '/^ferry_requests_total/ {n += $2} END {print n}' "$TMP/metrics.txt")
python3 - "$TMP/access.log" "$SC_ID" "$total" "${KEYS[@]}" <<'PY' || fail "access log: $(tail -n 3 "$TMP/access.log")"
import json, re, sys
path, sc_id, total, keys = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
text = open(path).read()
for k in keys:
    assert k not in text, "a key in the access log"
assert not re.search(r"fy_[A-Za-z0-9_-]{20}", text), "something key-shaped in the access log"
lines = [json.loads(l) for l in text.splitlines()]
assert len(lines) == total, (len(lines), total)
fields = {"time", "request_id", "key_id", "runner", "method", "path", "status", "bytes_in",
          "bytes_out", "latency_ms", "ttfb_ms", "prompt_tokens", "completion_tokens"}
for l in lines:
    assert fields <= set(l), l
    assert l["key_id"] is None or l["key_id"].startswith("key_"), l
    if l["status"] == 401:
        assert l["key_id"] is None, l
ok = [l for l in lines if l["key_id"] == sc_id and l["status"] == 200]
assert ok and ok[0]["runner"] == "alpha" and ok[0]["path"] == "/r/alpha/fixed" and ok[0]["method"] == "GET", ok
assert ok[0]["bytes_out"] == 17 and ok[0]["latency_ms"] >= ok[0]["ttfb_ms"] >= 0, ok
assert any(l["status"] == 403 and l["key_id"] == sc_id for l in lines)
PY
# Rotation: SIGHUP reopens the file.
mv "$TMP/access.log" "$TMP/access.log.1"
kill -HUP "$GW_PID"
wait_for 30 bash -c "curl -sS --cacert '$CA' -H '$AUTH' -o /dev/null 'https://$PUB/r/alpha/fixed' && test -s '$TMP/access.log'" ||
    fail "no new access log after SIGHUP"
grep -q '"path":"/r/alpha/fixed"' "$TMP/access.log" || fail "reopened access log: $(cat "$TMP/access.log")"
pass "access log: JSON lines with key ids, never keys; SIGHUP reopens it"

gw_stop
pass "gateway stopped cleanly (exit 0)"
