#!/usr/bin/env bash
# HTTPS: the server over TLS (certificates made with the openssl CLI) driven
# by curl, and the HTTP client over TLS against it (http_client_probe), with
# keep-alive reuse, streamed uploads, event streams, limits and mTLS identity.
source "$(dirname "$0")/lib.sh"
cd "$TMP"
ossl() { openssl "$@" 2>/dev/null || fail "openssl $1 failed"; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem \
    -days 2 -subj "/CN=ferry test CA"
mkcert() { # NAME SUBJECT EXT
    ossl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2"
    printf '%s\n' "$3" >"$1.ext"
    ossl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out "$1.pem" -extfile "$1.ext"
}
mkcert server "/CN=ferry.test" "subjectAltName=DNS:ferry.test,DNS:localhost,IP:127.0.0.1"
mkcert client "/CN=runner-7/O=ferry" "extendedKeyUsage=clientAuth"
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout other.key -out other.pem \
    -days 2 -subj "/CN=someone else"

start_server --max-body 8MiB --tls-cert server.pem --tls-key server.key
u=https://ferry.test:$PORT
c=(curl -sS --max-time 20 --cacert ca.pem --resolve "ferry.test:$PORT:127.0.0.1")

# curl: three requests, one TLS connection.
n=$("${c[@]}" -w '%{stderr}%{num_connects}\n' "$u/fixed" "$u/fixed" "$u/fixed" 2>&1 >/dev/null | paste -sd+ | bc)
[[ $n == 1 ]] || fail "3 HTTPS requests used $n connections"
[[ $("${c[@]}" "$u/fixed") == "Hello from ferry" ]] || fail "HTTPS body"
pass "curl over TLS, keep-alive"

head -c 3000000 /dev/urandom >body
want=$(sha256sum body | cut -d' ' -f1)
"${c[@]}" -H 'Transfer-Encoding: chunked' --data-binary @body "$u/echo" | grep -q "\"body_sha256\":\"$want\"" ||
    fail "chunked upload over TLS"
pass "3 MB chunked upload over TLS"

big=$(head -c 17000 /dev/zero | tr '\0' a)
[[ $("${c[@]}" -o /dev/null -w '%{http_code}' -H "X-Big: $big" "$u/fixed") == 431 ]] || fail "431 over TLS"
pass "431 over TLS"

# Events over TLS: each arrives before the next is written.
"${c[@]}" -N "$u/sse?n=4&delay_ms=250" | while IFS= read -r line; do
    if [[ $line == *'"i":'* ]]; then echo "${EPOCHREALTIME/./} $line"; fi
done >events
mapfile -t arrived < <(cut -d' ' -f1 events)
mapfile -t written < <(grep -o '"t_us":[0-9]*' events | cut -d: -f2)
[[ ${#arrived[@]} == 4 ]] || fail "TLS events: $(cat events)"
for ((k = 0; k + 1 < 4; k++)); do
    ((arrived[k] < written[k + 1])) || fail "TLS event $k arrived after event $((k + 1)) was written"
done
pass "event stream over TLS flushed per event"

# The client over TLS: pooled reuse, streamed chunked and Content-Length uploads.
out=$("$BIN/http_client_probe" --cacert ca.pem --count 3 "https://localhost:$PORT/fixed") || fail "probe: $out"
grep -q '^connects=1 reused=2 retries=0$' <<<"$out" || fail "probe reuse: $out"
[[ $(grep -c '^status=200 bytes=17 ' <<<"$out") == 3 ]] || fail "probe statuses: $out"
for mode in --chunked ""; do
    out=$("$BIN/http_client_probe" --cacert ca.pem --method POST $mode --data-file body --show-body \
        "https://127.0.0.1:$PORT/echo") || fail "probe upload $mode: $out"
    grep -q "\"body_bytes\":3000000,\"body_sha256\":\"$want\"" <<<"$out" || fail "probe upload $mode: $out"
done
pass "client over TLS: reuse and streamed uploads"

# The client refuses a server its CA did not sign.
set +e
out=$("$BIN/http_client_probe" --cacert other.pem "https://localhost:$PORT/fixed" 2>&1)
rc=$?
set -e
[[ $rc == 1 ]] && grep -q '(CERT)' <<<"$out" || fail "wrong CA accepted: rc=$rc $out"
pass "client rejects an unknown server certificate"
stop_server

# mTLS: the handler sees the client's certificate through the request's stream.
start_server --tls-cert server.pem --tls-key server.key --tls-ca ca.pem --require-client-cert
out=$("$BIN/http_client_probe" --cacert ca.pem --cert client.pem --key client.key --show-body \
    "https://localhost:$PORT/tls-peer") || fail "mTLS probe: $out"
grep -q '^runner-7$' <<<"$out" || fail "peer CN: $out"
if curl -sS --max-time 5 --cacert ca.pem "https://localhost:$PORT/tls-peer" >/dev/null 2>&1; then
    fail "a client without a certificate was served"
fi
pass "mTLS identity reaches the handler; no certificate, no service"
stop_server
