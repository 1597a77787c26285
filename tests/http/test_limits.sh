#!/usr/bin/env bash
# Every cap on what a client sends answers with its status and an
# OpenAI-shaped JSON error: 431, 414, 413 (up front and while a chunked body
# arrives), 400 for malformed requests, 501 for unknown transfer codings, and
# Expect: 100-continue only when the handler wants the body.
source "$(dirname "$0")/lib.sh"
start_server --max-body 100KiB
u=http://127.0.0.1:$PORT

# check_error NAME STATUS CODE CURL_ARGS...
check_error() {
    local name=$1 want=$2 code=$3
    shift 3
    local got
    got=$(curl -sS --max-time 10 -o "$TMP/body" -D "$TMP/hdr" -w '%{http_code}' "$@") || fail "$name: curl failed"
    [[ $got == "$want" ]] || fail "$name: status $got, want $want"
    grep -q "^{\"error\":{\"message\":\"[^\"]*\",\"type\":\"[a-z_]*\",\"param\":null,\"code\":\"$code\"}}" "$TMP/body" || fail "$name: body $(cat "$TMP/body")"
    tr -d '\r' <"$TMP/hdr" | grep -qi '^connection: close' || fail "$name: no Connection: close"
    tr -d '\r' <"$TMP/hdr" | grep -qi '^content-type: application/json' || fail "$name: not JSON"
    pass "$name -> $want"
}

big=$(head -c 17000 /dev/zero | tr '\0' a)
check_error "17 KB header" 431 request_header_fields_too_large -H "X-Big: $big" "$u/fixed"
hdrs=()
for i in $(seq 101); do hdrs+=(-H "X-H$i: v"); done
check_error "101 headers" 431 request_header_fields_too_large "${hdrs[@]}" "$u/fixed"
long=$(head -c 9000 /dev/zero | tr '\0' u)
check_error "9000-byte URL" 414 uri_too_long "$u/$long"
head -c 200000 /dev/zero >"$TMP/200k"
check_error "Content-Length over the cap" 413 payload_too_large --data-binary @"$TMP/200k" "$u/echo"
check_error "chunked body over the cap" 413 payload_too_large -H 'Transfer-Encoding: chunked' --data-binary @"$TMP/200k" "$u/echo"
check_error "unknown route" 404 not_found "$u/nope" -H 'Connection: close'

# Under the caps: fine.
ok=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -H "X-Big: ${big:0:15000}" "$u/fixed")
[[ $ok == 200 ]] || fail "15 KB header: $ok"
pass "15 KB header accepted"

# Expect: 100-continue: sent when the handler reads the body...
head -c 5000 /dev/zero >"$TMP/5k"
curl -sS -v --max-time 10 -H 'Expect: 100-continue' --data-binary @"$TMP/5k" "$u/echo" >"$TMP/out" 2>"$TMP/verbose"
grep -q '< HTTP/1.1 100 Continue' "$TMP/verbose" || fail "no 100 Continue: $(cat "$TMP/verbose")"
grep -q '"body_bytes":5000' "$TMP/out" || fail "body after 100 Continue: $(cat "$TMP/out")"
pass "100 Continue, then the body"
# ...and never when the request is refused first.
curl -sS -v --max-time 10 -H 'Expect: 100-continue' --data-binary @"$TMP/200k" "$u/echo" >"$TMP/out" 2>"$TMP/verbose" || true
grep -q '< HTTP/1.1 413' "$TMP/verbose" || fail "no 413: $(cat "$TMP/verbose")"
! grep -q '100 Continue' "$TMP/verbose" || fail "100 Continue sent before a 413"
pass "413 without 100 Continue"

# Malformed requests, written raw.
raw() { printf "$1" >"$TMP/req"; raw_exchange "$TMP/req" 5 | tr -d '\r'; }
for req in 'GET\r\n\r\n' 'GET / HTTP/1.1\r\nBad Header\r\n\r\n' 'G@T / HTTP/1.1\r\n\r\n' \
    'POST /echo HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n' \
    'POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n' \
    'POST /echo HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nabc'; do
    out=$(raw "$req")
    grep -q '^HTTP/1.1 400 Bad Request$' <<<"$out" || fail "malformed '$req': $out"
    grep -q '"code":"bad_request"' <<<"$out" || fail "malformed '$req' body: $out"
    ! grep -q TIMEOUT <<<"$out" || fail "connection left open after a 400"
done
pass "malformed requests -> 400 and close"
out=$(raw 'POST /echo HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n')
grep -q '^HTTP/1.1 501 Not Implemented$' <<<"$out" || fail "gzip, chunked: $out"
pass "unsupported transfer coding -> 501"
out=$(raw 'POST /echo HTTP/1.1\r\nContent-Length: 1\r\nExpect: teapot\r\n\r\nx')
grep -q '^HTTP/1.1 417 ' <<<"$out" || fail "unknown Expect: $out"
pass "unknown expectation -> 417"
stop_server
