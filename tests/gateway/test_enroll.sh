#!/usr/bin/env bash
# Enrollment over the tunnel listener and every refusal; what a runner
# certificate may and may not claim; revocation dropping connections at once.
source "$(dirname "$0")/lib.sh"
gw_init
gw_start --heartbeat 1s
upstream_start

# enroll_raw JSON: POST /v1/enroll with curl; body in $TMP/en, status echoed.
enroll_raw() {
    curl -sS --max-time 10 --cacert "$CA" -o "$TMP/en" -w '%{http_code}' \
        -H 'Content-Type: application/json' --data-binary "$1" "https://$TUN/v1/enroll"
}
expect_refusal() { # expect_refusal STATUS CODE JSON
    local c
    c=$(enroll_raw "$3")
    [[ $c == "$1" ]] && grep -q "\"code\":\"$2\"" "$TMP/en" || fail "want $1 $2, got $c $(cat "$TMP/en")"
}

# A CSR made here (the runner's side), asking for another name than the token's.
openssl ecparam -name prime256v1 -genkey -noout -out "$TMP/k.pem" 2>/dev/null
openssl req -new -key "$TMP/k.pem" -subj "/CN=root-of-all" -out "$TMP/csr.pem" 2>/dev/null
csr=$(awk '{printf "%s\\n", $0}' "$TMP/csr.pem")
openssl genrsa -out "$TMP/rsa.pem" 2048 2>/dev/null
openssl req -new -key "$TMP/rsa.pem" -subj "/CN=alpha" -out "$TMP/rsacsr.pem" 2>/dev/null
rsacsr=$(awk '{printf "%s\\n", $0}' "$TMP/rsacsr.pem")

tok=$(token alpha)
expect_refusal 400 invalid_request 'not json'
expect_refusal 400 invalid_request "{\"token\":\"$tok\"}"
expect_refusal 400 invalid_csr "{\"token\":\"$tok\",\"csr\":\"garbage\"}"
expect_refusal 400 invalid_csr "{\"token\":\"$tok\",\"csr\":\"$rsacsr\"}"
expect_refusal 401 token_unknown "{\"token\":\"fyt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\",\"csr\":\"$csr\"}"
expect_refusal 401 token_unknown "{\"token\":\"hello\",\"csr\":\"$csr\"}"
c=$(curl -sS --cacert "$CA" -o /dev/null -w '%{http_code}' "https://$TUN/v1/enroll")
[[ $c == 405 ]] || fail "GET /v1/enroll: $c"
c=$(curl -sS --cacert "$CA" -o /dev/null -w '%{http_code}' "https://$TUN/admin/v1/status")
[[ $c == 404 ]] || fail "admin path on the tunnel listener: $c"
head -c 20000 /dev/zero | tr '\0' 'a' >"$TMP/big"
c=$(curl -sS --cacert "$CA" -o /dev/null -w '%{http_code}' --data-binary @"$TMP/big" "https://$TUN/v1/enroll")
[[ $c == 413 ]] || fail "20 kB enrollment body: $c"
pass "malformed bodies, bad CSRs and unknown tokens refused"

# The bad CSRs did not spend the token: it still enrolls, once.
c=$(enroll_raw "{\"token\":\"$tok\",\"csr\":\"$csr\"}")
[[ $c == 200 ]] || fail "enroll: $c $(cat "$TMP/en")"
python3 -c "import json,sys;d=json.load(open('$TMP/en'));open('$TMP/c.pem','w').write(d['certificate']);open('$TMP/ca.pem','w').write(d['ca']);print(d['runner'])" >"$TMP/name"
[[ $(cat "$TMP/name") == alpha ]] || fail "enrolled as $(cat "$TMP/name")"
openssl x509 -in "$TMP/c.pem" -noout -subject | grep -q 'CN = alpha' || fail "certificate subject: $(openssl x509 -in "$TMP/c.pem" -noout -subject)"
openssl verify -CAfile "$GW/runner-ca.crt" "$TMP/c.pem" >/dev/null || fail "certificate not from the runner CA"
cmp -s "$TMP/ca.pem" "$GW/ca.crt" || fail "returned CA is not DIR/ca.crt"
[[ $(openssl x509 -in "$TMP/c.pem" -noout -pubkey) == $(openssl pkey -in "$TMP/k.pem" -pubout) ]] ||
    fail "certificate is not for the CSR's key"
expect_refusal 401 token_used "{\"token\":\"$tok\",\"csr\":\"$csr\"}"
pass "enrolled: CN is the token's runner (not the CSR's), signed by the runner CA; reuse refused"

short=$(token beta 1s)
# Refused from its expiry on (the clock the gateway reads), not after a guess.
exp_at=$(json_get "$TMP/tok.json" expires_at)
clock_reached() { (($(date +%s) >= $1)); }
wait_for 30 clock_reached "$exp_at" || fail "the clock did not reach $exp_at"
expect_refusal 401 token_expired "{\"token\":\"$short\",\"csr\":\"$csr\"}"
pass "expired token refused"

# The test runner enrolls (key made locally) and serves.
tenroll alpha "$TMP/ra"
tenroll beta "$TMP/rb"
trunner_start "$TMP/ra"
ALPHA_OUT=$RN_OUT
[[ $(pub /r/alpha/fixed) == "Hello from ferry" ]] || fail "alpha does not serve"
pass "enrolled runner connects and serves"

# A runner's certificate cannot claim another runner's name.
NOWAIT=1 trunner_start "$TMP/ra" --hello-name beta --reconnect-ms 0
wait_for 30 grep -q 'goaway REJECTED' "$RN_OUT" || fail "name claim not rejected: $(cat "$RN_OUT")"
grep -q '^connected' "$RN_OUT" && fail "name claim got HELLO_ACK"
c=$(pub -o /dev/null -w '%{http_code}' /r/beta/fixed)
[[ $c == 503 ]] || fail "beta reachable through alpha's certificate: $c"
grep -q 'runner refused.*HELLO name does not match' "$TMP/gw.log" || fail "no refusal in the log"
pass "HELLO naming another runner is refused (GOAWAY REJECTED)"

# A certificate from another CA is refused at TLS; no certificate with ALPN
# ferry/1 is closed.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=evil CA" \
    -keyout "$TMP/eca.key" -out "$TMP/eca.crt" -days 2 \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=alpha" \
    -keyout "$TMP/evil.key" -out "$TMP/evil.csr" 2>/dev/null
openssl x509 -req -in "$TMP/evil.csr" -CA "$TMP/eca.crt" -CAkey "$TMP/eca.key" -CAcreateserial \
    -days 1 -out "$TMP/evil.crt" 2>/dev/null
NOWAIT=1 trunner_start "$TMP/ra" --cert "$TMP/evil.crt" --key "$TMP/evil.key" --reconnect-ms 0
wait_for 30 grep -q '^refused\|^closed' "$RN_OUT" || fail "foreign certificate: $(cat "$RN_OUT")"
grep -q '^connected' "$RN_OUT" && fail "foreign certificate got a tunnel"
wait_for 30 grep -q 'tunnel TLS handshake failed' "$TMP/gw.log" || fail "no TLS refusal logged"
NOWAIT=1 trunner_start "$TMP/ra" --no-cert --reconnect-ms 0
wait_for 30 grep -q '^closed' "$RN_OUT" || fail "no certificate: $(cat "$RN_OUT")"
grep -q '^connected' "$RN_OUT" && fail "runner without a certificate got a tunnel"
wait_for 30 grep -q 'no client certificate' "$TMP/gw.log" || fail "no-certificate refusal not logged"
pass "foreign CA refused at TLS; ferry/1 without a certificate closed"

# Revocation: in-flight requests end with 502, the connection is dropped at
# once, the runner cannot come back.
admin GET /admin/v1/runners >"$TMP/r.json"
grep -q '"name":"alpha"[^]]*"connected":true' "$TMP/r.json" || fail "alpha not listed as connected: $(cat "$TMP/r.json")"
pub -o "$TMP/held" -w '%{http_code}' /r/alpha/hold >"$TMP/held.code" 2>/dev/null &
cpid=$!
wait_for 30 bash -c "curl -sS --cacert $CA -H 'Authorization: Bearer $ADMIN_TOKEN' https://$ADM/admin/v1/runners | grep -q '\"in_flight\":1'" ||
    fail "held request not in flight"
admin POST /admin/v1/runners/alpha/revoke >"$TMP/rv.json"
[[ $(code) == 200 ]] && grep -q '"name":"alpha"' "$TMP/rv.json" || fail "revoke: $(code) $(cat "$TMP/rv.json")"
wait $cpid || true
[[ $(cat "$TMP/held.code") == 502 ]] || fail "in-flight request after revoke: $(cat "$TMP/held.code")"
wait_for 30 grep -q 'goaway REJECTED runner revoked' "$ALPHA_OUT" || fail "runner not told: $(cat "$ALPHA_OUT")"
wait_for 30 grep -q 'goaway REJECTED runner is revoked' "$ALPHA_OUT" ||
    fail "reconnect not refused: $(cat "$ALPHA_OUT")"
[[ $(grep -c '^connected' "$ALPHA_OUT") == 1 ]] || fail "revoked runner reconnected"
c=$(pub -o "$TMP/o" -w '%{http_code}' /r/alpha/fixed)
[[ $c == 404 ]] && grep -q 'revoked' "$TMP/o" || fail "revoked runner: $c $(cat "$TMP/o")"
admin GET /admin/v1/runners >"$TMP/r.json"
grep -q '"name":"alpha"[^]]*"revoked_at":[0-9]' "$TMP/r.json" || fail "revoked_at not set: $(cat "$TMP/r.json")"
pass "revoke: in-flight 502, connection dropped, reconnects refused, 404 after"

# Enrolling again clears the revocation; the old certificate stays refused.
tenroll alpha "$TMP/ra2"
trunner_start "$TMP/ra2"
[[ $(pub /r/alpha/fixed) == "Hello from ferry" ]] || fail "re-enrolled alpha does not serve"
NOWAIT=1 trunner_start "$TMP/ra" --reconnect-ms 0
wait_for 30 grep -q 'goaway REJECTED' "$RN_OUT" || fail "superseded certificate: $(cat "$RN_OUT")"
pass "re-enrollment: new certificate serves, the superseded one is refused"
gw_stop
