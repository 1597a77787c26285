#!/usr/bin/env bash
# Enrollment as a user does it: ferry tokens create, ferry-runner enroll with
# the CA fingerprint (and with a CA file), the files it writes, and every
# refusal (used, expired and unknown tokens, a wrong CA fingerprint, a name
# check); then the ferry CLI's listing, errors and exit codes, and a runner
# that tries to claim another runner's name with its certificate.
source "$(dirname "$0")/lib.sh"
gw_init
gw_start

# --- enrollment with --ca-fingerprint ------------------------------------------
out=$(ferry tokens create --name r1 --ttl 10m)
tok=$(tail -n1 <<<"$out")
[[ $tok =~ ^fyt_[A-Za-z0-9_-]{43}$ ]] || fail "token line: $tok"
grep -q "ferry-runner enroll --gateway $TUN --token TOKEN --ca-fingerprint $FP" <<<"$out" ||
    fail "tokens create does not say how to enroll: $out"
R1=$TMP/r1
"$BIN/ferry-runner" enroll --gateway "$TUN" --token "$tok" --ca-fingerprint "$FP_OPENSSL" --data-dir "$R1" \
    >"$TMP/e.out" 2>&1 || fail "enroll: $(cat "$TMP/e.out")"
grep -q 'enrolled runner "r1"' "$TMP/e.out" || fail "enroll output: $(cat "$TMP/e.out")"
[[ $(stat -c %a "$R1") == 700 ]] || fail "runner dir mode $(stat -c %a "$R1")"
[[ $(stat -c %a "$R1/runner.key") == 600 ]] || fail "key mode $(stat -c %a "$R1/runner.key")"
openssl x509 -in "$R1/runner.crt" -noout -subject | grep -q 'CN *= *r1' || fail "cert subject"
openssl verify -CAfile "$GW/runner-ca.crt" "$R1/runner.crt" >/dev/null || fail "cert does not verify"
# The certificate is for the key made here.
[[ $(openssl x509 -in "$R1/runner.crt" -noout -pubkey) == \
    $(openssl pkey -in "$R1/runner.key" -pubout) ]] || fail "certificate is not for runner.key"
cmp -s "$R1/ca.crt" "$CA" || fail "ca.crt is not the gateway's CA"
[[ $(jget "$R1/runner.json" "j['name'], j['gateways'], j['ca_fingerprint']") == \
    "r1 ['$TUN'] $FP" ]] ||
    fail "runner.json: $(cat "$R1/runner.json")"
pass "enroll with --ca-fingerprint writes key (0600), cert, CA and runner.json"

# The private key never left: the gateway's store and log hold only the fingerprint.
! grep -rq "$(sed -n 2p "$R1/runner.key")" "$GW" "$TMP/gw.log" || fail "key material on the gateway"

expect_refusal() { # expect_refusal PATTERN DIR ARGS...
    local pat=$1 dir=$2 rc=0
    shift 2
    "$BIN/ferry-runner" enroll --gateway "$TUN" --data-dir "$dir" "$@" >"$TMP/e.out" 2>&1 || rc=$?
    [[ $rc == 1 ]] || fail "enroll exited $rc, want 1: $(cat "$TMP/e.out")"
    grep -q -- "$pat" "$TMP/e.out" || fail "refusal message: $(cat "$TMP/e.out"), want /$pat/"
    [[ ! -e $dir/runner.json && ! -e $dir/runner.key ]] || fail "a refused enrollment wrote $dir"
}
expect_refusal "already used" "$TMP/x1" --token "$tok" --ca-fingerprint "$FP"
expect_refusal "token_unknown" "$TMP/x2" --token "fyt_$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-43)" --ca-fingerprint "$FP"
ferry --json tokens create --name r9 --ttl 1s >"$TMP/short.json" || fail "tokens create r9"
short=$(jget "$TMP/short.json" "j['token']")
# Refused from its expiry on (the clock the gateway reads), not after a guess.
clock_reached() { (($(date +%s) >= $1)); }
wait_for 30 clock_reached "$(jget "$TMP/short.json" "j['expires_at']")" || fail "the clock did not reach the expiry"
expect_refusal "token_expired" "$TMP/x3" --token "$short" --ca-fingerprint "$FP"
good=$(token r2)
expect_refusal "certificate was rejected" "$TMP/x4" --token "$good" \
    --ca-fingerprint "sha256:$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
pass "used, unknown and expired tokens and a wrong CA fingerprint are refused, nothing written"

# The wrong fingerprint did not consume the token: it still enrolls r2, with --ca.
"$BIN/ferry-runner" enroll --gateway "$TUN" --token "$good" --ca "$CA" --data-dir "$TMP/r2" \
    >"$TMP/e.out" 2>&1 || fail "enroll with --ca: $(cat "$TMP/e.out")"
set +e
"$BIN/ferry-runner" enroll --gateway "$TUN" --token "$(token r2)" --ca "$CA" --data-dir "$TMP/r2" \
    >"$TMP/e.out" 2>&1
rc=$?
set -e
[[ $rc == 1 ]] && grep -q 'already holds the enrollment of runner "r2"' "$TMP/e.out" ||
    fail "enroll into an enrolled dir: rc $rc $(cat "$TMP/e.out")"
expect_refusal "not \"other\"" "$TMP/x5" --token "$(token r3)" --ca "$CA" --name-check other
pass "enroll with --ca; an enrolled dir and a name mismatch are refused"

set +e
"$BIN/ferry-runner" enroll --gateway "$TUN" --token nope --ca "$CA" --data-dir "$TMP/x6" 2>/dev/null
rc1=$?
"$BIN/ferry-runner" enroll --gateway "$TUN" --token "$tok" --data-dir "$TMP/x6" 2>/dev/null
rc2=$?
set -e
[[ $rc1 == 2 && $rc2 == 2 ]] || fail "usage errors exited $rc1 $rc2, want 2"

# --- the CLI ------------------------------------------------------------------------
ferry tokens list >"$TMP/tl"
grep -Eq "^tok_[0-9a-f]+ +r1 .* used " "$TMP/tl" || fail "tokens list: $(cat "$TMP/tl")"
grep -Eq "^tok_[0-9a-f]+ +r9 .* expired" "$TMP/tl" || fail "tokens list lacks the expired one"
! grep -q "fyt_" "$TMP/tl" || fail "tokens list shows a secret"
ferry runners list >"$TMP/rl"
grep -Eq "^r1 +offline +0 " "$TMP/rl" || fail "runners list: $(cat "$TMP/rl")"
ferry --json runners list >"$TMP/rl.json"
[[ $(jget "$TMP/rl.json" "sorted(r['name'] for r in j['runners'])") == "['r1', 'r2', 'r3']" ]] ||
    fail "runners list --json: $(cat "$TMP/rl.json")"
set +e
ferry runners revoke nobody >/dev/null 2>"$TMP/err"
rc1=$?
ferry frobnicate >/dev/null 2>&1
rc2=$?
ferry tokens create >/dev/null 2>&1
rc3=$?
"$BIN/ferry" --data-dir "$TMP/nowhere" status >/dev/null 2>"$TMP/err2"
rc4=$?
"$BIN/ferry" --admin "https://$ADM" --admin-token-file /dev/null --ca "$CA" status >/dev/null 2>&1
rc5=$?
echo "fya_wrong" >"$TMP/badtok"
"$BIN/ferry" --admin "https://$ADM" --admin-token-file "$TMP/badtok" --ca "$CA" status \
    >/dev/null 2>"$TMP/err3"
rc6=$?
set -e
[[ $rc1 == 1 ]] && grep -q "no enrolled runner named 'nobody'" "$TMP/err" ||
    fail "revoke unknown: rc $rc1 $(cat "$TMP/err")"
[[ $rc2 == 2 && $rc3 == 2 ]] || fail "usage errors exited $rc2 $rc3"
[[ $rc4 == 1 ]] && grep -q "no gateway is running" "$TMP/err2" || fail "no state.json: rc $rc4"
[[ $rc5 == 1 && $rc6 == 1 ]] && grep -q "HTTP 401" "$TMP/err3" || fail "bad admin token: $rc5 $rc6"
"$BIN/ferry" --admin "https://$ADM" --admin-token-file "$GW/admin.token" --ca "$CA" status |
    grep -q "tunnel   $TUN" || fail "status through --admin"
pass "ferry tokens/runners list, --json, --admin, and exit codes 1 (API) and 2 (usage)"

# --- a certificate cannot claim another runner's name ---------------------------------
up_start
cp -r "$R1" "$TMP/thief"
sed -i 's/"name": "r1"/"name": "r2"/' "$TMP/thief/runner.json"
rn_start "$TMP/thief" --connections 1
wait_for 10 grep -q "rejected this runner" "$RN_LOG" || fail "claiming r2 with r1's certificate was not rejected"
[[ $(connections r2) == 0 && $(connections r1) == 0 ]] || fail "the thief got a connection"
code=$(pub -o /dev/null -w '%{http_code}' /r/r2/fixed || true)
[[ $code == 503 ]] || fail "r2 answered $code through a stolen name"
rn_stop
pass "r1's certificate cannot serve as r2 (GOAWAY REJECTED, logged, no route)"
gw_stop
