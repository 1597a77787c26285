#!/usr/bin/env bash
# Request bodies: chunked and Content-Length uploads reach the handler intact
# (SHA-256 compared), streamed or buffered by the server.
source "$(dirname "$0")/lib.sh"
head -c 3000000 /dev/urandom >"$TMP/body"
want=$(sha256sum "$TMP/body" | cut -d' ' -f1)
for mode in "" --buffer-body; do
    start_server --max-body 4MiB $mode
    u=http://127.0.0.1:$PORT
    for route in echo echo-buffered; do
        got=$(curl -sS --max-time 20 -H 'Transfer-Encoding: chunked' --data-binary @"$TMP/body" "$u/$route")
        grep -q "\"body_bytes\":3000000,\"body_sha256\":\"$want\"" <<<"$got" || fail "chunked upload to /$route ($mode): $got"
        got=$(curl -sS --max-time 20 --data-binary @"$TMP/body" "$u/$route")
        grep -q "\"body_sha256\":\"$want\"" <<<"$got" || fail "Content-Length upload to /$route ($mode): $got"
    done
    stop_server
done
pass "3 MB chunked and Content-Length uploads, streamed and buffered"

# A streamed response with backpressure: 20 MB through curl, byte-exact.
start_server
n=$(curl -sS --max-time 30 "http://127.0.0.1:$PORT/big?bytes=20000000" | wc -c)
[[ $n == 20000000 ]] || fail "streamed response: $n bytes"
stop_server
pass "20 MB streamed response"
