#!/usr/bin/env bash
# 256 MiB streamed through the tunnel in each direction, checksummed end to
# end, with the gateway's peak RSS bounded (flow control, not buffering); a
# slow public client holds only its window and does not stall other streams
# on the same tunnel.
source "$(dirname "$0")/lib.sh"
LIMIT_KIB=$((128 * 1024))
SIZE=$((256 * 1024 * 1024))
gw_init
gw_start --log-level warn
upstream_start --max-body 1GiB
enroll alpha "$TMP/ra"
runner_start alpha "$TMP/ra"

# Download: the upstream's /big pattern, 16 KiB blocks of 'a' + i % 26.
want=$(python3 -c "
import hashlib
h = hashlib.sha256(); b = bytes(97 + i % 26 for i in range(16384)) * 64
for _ in range($SIZE >> 20): h.update(b)
print(h.hexdigest())")
got=$(pub --max-time 90 "/r/alpha/big?bytes=$SIZE" | sha256sum | cut -d' ' -f1)
[[ $got == "$want" ]] || fail "256 MiB download checksum"
hwm=$(vmhwm "$GW_PID")
((hwm < LIMIT_KIB)) || fail "gateway peak RSS $hwm KiB after the download"
pass "256 MiB download checksummed; gateway VmHWM $hwm KiB, runner $(vmhwm "$RN_PID") KiB"

# Upload: random bytes, streamed (chunked) by curl from a pipe.
python3 -c "
import os, sys
for _ in range($SIZE >> 20): sys.stdout.buffer.write(os.urandom(1 << 20))" |
    tee >(sha256sum | cut -d' ' -f1 >"$TMP/up.sha") |
    pub --max-time 90 -T - /r/alpha/echo >"$TMP/echo"
want=$(cat "$TMP/up.sha")
grep -q "\"body_bytes\":$SIZE,\"body_sha256\":\"$want\"" "$TMP/echo" || fail "256 MiB upload: $(cat "$TMP/echo")"
hwm=$(vmhwm "$GW_PID")
((hwm < LIMIT_KIB)) || fail "gateway peak RSS $hwm KiB after the upload"
pass "256 MiB upload checksummed; gateway VmHWM $hwm KiB, runner $(vmhwm "$RN_PID") KiB"

# A slow reader: 256 MiB at 256 KiB/s. Others on the same tunnel go on.
# It runs until the test stops it (256 MiB at 256 KiB/s is over 16 minutes),
# so it is still being held back when the others have finished.
curl -sS --cacert "$CA" -H "$AUTH" --limit-rate 256k --max-time 1200 -o "$TMP/slowr.out" "$(pub_url "/r/alpha/big?bytes=$SIZE")" &
slow=$!
PIDS+=("$slow")
# Its first 256 KiB (a second at its pace) have arrived: it is flowing and
# the windows behind it have filled.
got_256k() { (($(stat -c %s "$TMP/slowr.out" 2>/dev/null || echo 0) >= 262144)); }
wait_for 60 got_256k || fail "the slow reader got nothing"
rss0=$(awk '/VmRSS/ {print $2}' "/proc/$GW_PID/status")
# A request stalled behind the slow reader would wait for its 16 minutes.
for i in $(seq 20); do
    [[ $(pub --max-time 60 /r/alpha/fixed) == "Hello from ferry" ]] || fail "request $i stalled behind the slow reader"
done
n=$(pub --max-time 120 "/r/alpha/big?bytes=$((16 * 1024 * 1024))" | wc -c)
[[ $n == $((16 * 1024 * 1024)) ]] || fail "16 MiB next to the slow reader: $n bytes"
rss1=$(awk '/VmRSS/ {print $2}' "/proc/$GW_PID/status")
kill -0 $slow || fail "slow reader finished already?"
grow_max=$((SANITIZED ? 40960 : 8192)) # ASan's quarantine alone may hold 16 MiB
((rss1 - rss0 < grow_max)) || fail "gateway RSS grew by $((rss1 - rss0)) KiB with a slow reader"
kill9 $slow
pass "slow reader does not stall the tunnel; gateway RSS ${rss0} -> ${rss1} KiB"
gw_stop
