#!/usr/bin/env bash
# bench_keys.sh: what per-key rate limiting costs end to end.
#
#   FERRY_BUILD=build tests/bench/bench_keys.sh
#
# Builds nothing. Starts a gateway (public HTTPS), a real ferry-runner and an
# http_test_server upstream on loopback, makes two API keys -- one with
# request, token and concurrency limits set far above what the run can reach,
# one with no limits -- and drives GET /r/bench/fixed through the whole path
# with `wrk -t2 -c64 -d10s`, alternating the keys for ROUNDS rounds each in
# the same run. Prints req/s per round, the median per key and the ratio
# limited/unlimited (the goal: within 5%). Both keys are authenticated and
# accounted the same way; the difference is the limiter (GCRA step, token
# bucket, concurrency slot) and the six x-ratelimit-* response headers.
# The gateway logs at warn, so neither run writes access-log lines.
# Environment: FERRY_BUILD (default build), DURATION (10s), CONNECTIONS (64),
# THREADS (2), ROUNDS (5).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${FERRY_BUILD:-$root/build}
bin=$build/bin
duration=${DURATION:-10s}
conns=${CONNECTIONS:-64}
threads=${THREADS:-2}
rounds=${ROUNDS:-5}
for tool in wrk curl python3; do
    command -v "$tool" >/dev/null || { echo "bench_keys: '$tool' not found" >&2; exit 2; }
done
for b in ferry-gateway ferry-runner ferry http_test_server; do
    [[ -x $bin/$b ]] || { echo "bench_keys: no $bin/$b (build first)" >&2; exit 2; }
done

tmp=$(mktemp -d)
pids=()
cleanup() {
    local p
    for ((p = ${#pids[@]} - 1; p >= 0; p--)); do
        kill "${pids[$p]}" 2>/dev/null || true
        wait "${pids[$p]}" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
wait_for() { # wait_for SECONDS CMD...
    local i
    for ((i = 0; i < $1 * 10; i++)); do
        if "${@:2}" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    return 1
}
gw=$tmp/gw
ferry() { "$bin/ferry" --data-dir "$gw" "$@"; }

"$bin/ferry-gateway" init --data-dir "$gw" >/dev/null
"$bin/ferry-gateway" run --data-dir "$gw" --public-listen 127.0.0.1:0 --tunnel-listen 127.0.0.1:0 \
    --admin-listen 127.0.0.1:0 --log-level warn 2>"$tmp/gw.log" &
pids+=($!)
wait_for 10 test -s "$gw/state.json" || { echo "bench_keys: the gateway did not start" >&2; exit 1; }
state() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$gw/state.json" "$1"; }
pub=$(state public)
tun=$(state tunnel)

"$bin/http_test_server" >"$tmp/up.port" 2>"$tmp/up.log" &
pids+=($!)
wait_for 10 test -s "$tmp/up.port" || { echo "bench_keys: no upstream" >&2; exit 1; }
token=$(ferry tokens create --name bench | tail -n1)
"$bin/ferry-runner" enroll --gateway "$tun" --token "$token" --ca "$gw/ca.crt" --data-dir "$tmp/rn" >/dev/null
"$bin/ferry-runner" run --data-dir "$tmp/rn" --upstream "http://127.0.0.1:$(head -n1 "$tmp/up.port")" \
    --log-level warn 2>"$tmp/rn.log" &
pids+=($!)

limited=$(ferry keys create --name bench-limited --rpm 1000000000 --tpm 1000000000000 \
    --concurrency 1000000 | tail -n1)
unlimited=$(ferry keys create --name bench-unlimited | tail -n1)
url=https://$pub/r/bench/fixed
ok() { curl -sSf --max-time 2 --cacert "$gw/ca.crt" -H "Authorization: Bearer $1" "$url"; }
wait_for 15 ok "$unlimited" || { echo "bench_keys: no answer through the tunnel" >&2; exit 1; }
curl -sS --cacert "$gw/ca.crt" -D "$tmp/h" -o /dev/null -H "Authorization: Bearer $limited" "$url"
grep -qi '^x-ratelimit-limit-requests: 1000000000' "$tmp/h" || { echo "bench_keys: limited key has no limits?" >&2; exit 1; }

echo "bench_keys: wrk -t$threads -c$conns -d$duration $url (gateway, ferry-runner, upstream and wrk share $(nproc) cores)"
run() { # run KEY: one wrk run; prints req/s
    wrk -t"$threads" -c"$conns" -d"$duration" -H "Authorization: Bearer $1" "$url" >"$tmp/wrk.out" 2>&1
    if grep -q 'Non-2xx' "$tmp/wrk.out"; then
        echo "bench_keys: errors during the run:" >&2
        cat "$tmp/wrk.out" >&2
        exit 1
    fi
    awk '/^Requests\/sec/ {print $2}' "$tmp/wrk.out"
}
wrk -t"$threads" -c"$conns" -d2s -H "Authorization: Bearer $unlimited" "$url" >/dev/null 2>&1 # warm-up
L=()
U=()
for ((r = 1; r <= rounds; r++)); do
    u=$(run "$unlimited")
    l=$(run "$limited")
    U+=("$u")
    L+=("$l")
    printf '  round %d: no limits %10.0f req/s   rate-limited %10.0f req/s\n' "$r" "$u" "$l"
done
python3 - "${U[*]}" "${L[*]}" <<'PY'
import statistics, sys
u = statistics.median(map(float, sys.argv[1].split()))
l = statistics.median(map(float, sys.argv[2].split()))
print(f"  median:  no limits {u:10.0f} req/s   rate-limited {l:10.0f} req/s")
print(f"  rate-limited / no limits = {l / u:.3f} ({(l / u - 1) * 100:+.1f}%; goal: within 5%)")
PY
