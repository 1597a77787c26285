#!/usr/bin/env bash
# A runner given one gateway name that resolves to several addresses (two
# replicas behind one DNS name) keeps connections to each address, and
# requests through either replica reach it. The name is real to the
# resolver: the runner runs in its own mount namespace where /etc/hosts is
# bind-mounted with "gw.ferry.test" -> 127.0.0.1 and 127.0.0.2 (both
# loopback), so glibc's getaddrinfo answers it as any name. The replicas
# listen on the same port, one on each address, and their certificate (one
# for the deployment) names gw.ferry.test, which the runner verifies.
# Needs root's unshare --mount; where that is refused the test says so and
# is skipped (exit 77).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/../lib/redis.sh"
FAIL_LOGS=(gw.*.log runner.*.out redis.r/log)

if ! unshare --mount sh -c "mount --bind /dev/null /etc/hostname" 2>"$TMP/unshare.err"; then
    echo "SKIP: a private mount namespace is refused here: $(cat "$TMP/unshare.err")"
    exit 77
fi

redis_start
upstream_start
source "$(dirname "$0")/shared_lib.sh"

# One deployment whose certificate names gw.ferry.test (A seeds, B joins).
DIR[a]=$TMP/gw-a
DIR[b]=$TMP/gw-b
"$BIN/ferry-gateway" init --data-dir "${DIR[a]}" --shared "$REDIS_URL" --hostname gw.ferry.test \
    --hostname 127.0.0.1 >"$TMP/init.a" 2>&1 || fail "init --shared: $(cat "$TMP/init.a")"
"$BIN/ferry-gateway" init --data-dir "${DIR[b]}" --shared "$REDIS_URL" >"$TMP/init.b" 2>&1 ||
    fail "init --shared (join): $(cat "$TMP/init.b")"
ADMIN_TOKEN=$(cat "${DIR[a]}/admin.token")
CA=${DIR[a]}/ca.crt

replica_start a
PORT=${TUNS[a]##*:}
# 127.0.0.2 is loopback too (127.0.0.0/8): B takes A's port there.
TUN_LISTEN=127.0.0.2:$PORT replica_start b
[[ ${TUNS[b]} == "127.0.0.2:$PORT" ]] || fail "replica B's tunnel is on ${TUNS[b]}"

printf '127.0.0.1 gw.ferry.test\n127.0.0.2 gw.ferry.test\n' >"$TMP/hosts"
# in_ns CMD...: CMD where gw.ferry.test resolves to both addresses (exec'd:
# the same process, so stopping it stops CMD).
in_ns() { unshare --mount sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$TMP/hosts" "$@"; }
in_ns getent ahostsv4 gw.ferry.test >"$TMP/getent" || fail "gw.ferry.test does not resolve in the namespace"
grep -q '^127.0.0.2 ' "$TMP/getent" || fail "gw.ferry.test: $(cat "$TMP/getent")"

t=$(tok delta a)
[[ -n $t ]] || fail "no enrollment token"
in_ns "$BIN/ferry-runner" enroll --gateway "gw.ferry.test:$PORT" --token "$t" --ca "$CA" \
    --data-dir "$TMP/r-delta" >"$TMP/enroll.out" 2>&1 || fail "enroll by name: $(cat "$TMP/enroll.out")"
NRN=1
FERRY_TEST_BACKOFF_MS=100 in_ns "$BIN/ferry-runner" run --data-dir "$TMP/r-delta" \
    --upstream "http://127.0.0.1:$UP" --gateway "gw.ferry.test:$PORT" --connections 2 \
    >"$TMP/runner.$NRN.out" 2>&1 &
PIDS+=($!)
for r in a b; do
    wait_for 30 conns_on_are "$r" delta 1 ||
        fail "runner delta has $(conns_on "$r" delta) connections on replica $r, want 1"
done
for r in a b; do
    k=$(on a keys create --name "d$r" | tail -n1)
    [[ $(code_at "$r" "$k" /r/delta/fixed) == 200 ]] || fail "runner delta through replica $r"
done
grep -q 'gw.ferry.test:[0-9]* (127.0.0.2)' "$TMP/runner.$NRN.out" ||
    fail "the runner's log does not name the second address: $(tail -n 5 "$TMP/runner.$NRN.out")"
pass "--gateway NAME resolving to 2 addresses: a connection to each replica, requests through both"
