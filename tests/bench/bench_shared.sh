#!/usr/bin/env bash
# bench_shared.sh: what sharing limits across replicas in Redis costs, and
# what a second replica gives.
#
#   FERRY_BIN=build/bin tests/bench/bench_shared.sh
#
# Builds nothing. Starts a real redis-server (unix socket, appendonly as the
# README recommends), a gateway on SQLite alone (the peer) and two replicas
# with --shared, one ferry-runner connected to all three, and an
# http_test_server upstream. Every gateway gets the same kind of key, with
# request, token and concurrency limits far above what the run reaches, so
# each request runs the whole limiter: locally on the SQLite gateway, one
# EVALSHA in Redis on the replicas. wrk -t2 -c64 drives GET /r/bench/fixed:
#   1. SQLite gateway vs shared replica A, alternating, ROUNDS rounds each:
#      req/s and the ratio (the goal: >= 0.85);
#   2. Redis's own count of commands per request on the replicas (INFO
#      commandstats: EVALSHA calls / requests; the one round trip a request
#      waits for is the admission script);
#   3. two replicas at once (one wrk each, half the connections each) vs one
#      replica alone: the sum of req/s. Everything shares $(nproc) cores, so
#      this shows the coordination cost, not the capacity of two machines.
# Environment: FERRY_BIN (default build/bin), DURATION (10s), CONNECTIONS
# (64), THREADS (2), ROUNDS (5).
BENCH_NAME=bench_shared
source "$(dirname "$0")/lib.sh"
rounds=${ROUNDS:-5}
need_tools wrk curl python3 redis-server redis-cli
need_bins ferry-gateway ferry-runner ferry http_test_server

sock=$tmp/redis.sock
redis-server --port 0 --unixsocket "$sock" --unixsocketperm 700 --dir "$tmp" --appendonly yes \
    --save '' --logfile "$tmp/redis.log" &
started $!
wait_for 10 redis-cli -s "$sock" ping || { echo "bench_shared: redis-server did not start" >&2; exit 1; }
rcli() { redis-cli -s "$sock" "$@"; }

# gateway NAME [ARGS...]: starts gateway NAME on its own data dir; sets PUB_NAME, TUN_NAME.
gateway() {
    local name=$1 dir=$tmp/$1
    shift
    "$bin/ferry-gateway" run --data-dir "$dir" --public-listen 127.0.0.1:0 --tunnel-listen 127.0.0.1:0 \
        --admin-listen 127.0.0.1:0 --log-level warn "$@" 2>"$tmp/$name.log" &
    started $!
    printf -v "PID_$name" '%s' "$!"
    wait_for 10 test -s "$dir/state.json" || { echo "bench_shared: gateway $name did not start" >&2; exit 1; }
    local st
    st() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$dir/state.json" "$1"; }
    printf -v "PUB_$name" '%s' "$(st public)"
    printf -v "TUN_$name" '%s' "$(st tunnel)"
}
"$bin/ferry-gateway" init --data-dir "$tmp/solo" >/dev/null
"$bin/ferry-gateway" init --data-dir "$tmp/a" --shared "unix://$sock" >/dev/null
"$bin/ferry-gateway" init --data-dir "$tmp/b" --shared "unix://$sock" >/dev/null
gateway solo
gateway a --shared "unix://$sock"
gateway b --shared "unix://$sock"

"$bin/http_test_server" >"$tmp/up.port" 2>"$tmp/up.log" &
started $!
wait_for 10 test -s "$tmp/up.port" || { echo "bench_shared: no upstream" >&2; exit 1; }
up="http://127.0.0.1:$(head -n1 "$tmp/up.port")"
# One runner identity per deployment: the solo gateway's, and the shared one's
# (enrolled through A, connected to A and B).
enroll() { # enroll DATADIR TUNNEL RUNNERDIR
    local t
    t=$("$bin/ferry" --data-dir "$1" tokens create --name bench | tail -n1)
    "$bin/ferry-runner" enroll --gateway "$2" --token "$t" --ca "$1/ca.crt" --data-dir "$3" >/dev/null
}
enroll "$tmp/solo" "$TUN_solo" "$tmp/rn-solo"
enroll "$tmp/a" "$TUN_a" "$tmp/rn-shared"
"$bin/ferry-runner" run --data-dir "$tmp/rn-solo" --upstream "$up" --log-level warn 2>"$tmp/rn1.log" &
started $!
"$bin/ferry-runner" run --data-dir "$tmp/rn-shared" --upstream "$up" --gateway "$TUN_a" \
    --gateway "$TUN_b" --connections 4 --log-level warn 2>"$tmp/rn2.log" &
started $!

mkkey() { # mkkey DATADIR: a key with limits the run never reaches
    "$bin/ferry" --data-dir "$1" keys create --name bench --rpm 1000000000 --tpm 1000000000000 \
        --concurrency 1000000 | tail -n1
}
k_solo=$(mkkey "$tmp/solo")
k_shared=$(mkkey "$tmp/a")
ok() { curl -sSf --max-time 2 --cacert "$tmp/a/ca.crt" -H "Authorization: Bearer $2" "https://$1/r/bench/fixed"; }
oksolo() { curl -sSf --max-time 2 --cacert "$tmp/solo/ca.crt" -H "Authorization: Bearer $k_solo" "https://$PUB_solo/r/bench/fixed"; }
wait_for 20 oksolo || { echo "bench_shared: no answer through the solo gateway" >&2; exit 1; }
wait_for 20 ok "$PUB_a" "$k_shared" || { echo "bench_shared: no answer through replica A" >&2; exit 1; }
wait_for 20 ok "$PUB_b" "$k_shared" || { echo "bench_shared: no answer through replica B" >&2; exit 1; }

# wrk_run PUB KEY CONNS: one wrk run; prints "req/s requests".
wrk_run() {
    local out=$tmp/wrk.$RANDOM
    wrk -t"$threads" -c"$3" -d"$duration" -H "Authorization: Bearer $2" "https://$1/r/bench/fixed" >"$out" 2>&1
    if grep -q 'Non-2xx' "$out"; then
        echo "bench_shared: errors during the run:" >&2
        cat "$out" >&2
        exit 1
    fi
    awk '/^Requests\/sec/ {r=$2} / requests in / {n=$1} END {print r, n}' "$out"
}
# cpu_ms PID: user + system CPU the process has used, in ms.
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{print int(($14 + $15) * 1000 / hz)}' "/proc/$1/stat"; }
redis_cpu_ms() { rcli info cpu | awk -F: '/^used_cpu_(sys|user):/ {s += $2} END {printf "%d", s * 1000}'; }
evalsha_calls() { rcli info commandstats | sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\),.*/\1/p'; }
all_calls() { rcli info commandstats | sed -n 's/^cmdstat_[a-z|]*:calls=\([0-9]*\),.*/\1/p' | awk '{s+=$1} END {print s}'; }

echo "bench_shared: wrk -t$threads -c$conns -d$duration GET /r/bench/fixed (gateways, runners, upstream, redis-server and wrk share $(nproc) cores)"
wrk -t"$threads" -c"$conns" -d2s -H "Authorization: Bearer $k_solo" "https://$PUB_solo/r/bench/fixed" >/dev/null 2>&1
wrk -t"$threads" -c"$conns" -d2s -H "Authorization: Bearer $k_shared" "https://$PUB_a/r/bench/fixed" >/dev/null 2>&1
S=()
R=()
for ((r = 1; r <= rounds; r++)); do
    g0=$(cpu_ms "$PID_solo")
    read -r s ns < <(wrk_run "$PUB_solo" "$k_solo" "$conns")
    g1=$(cpu_ms "$PID_solo")
    e0=$(evalsha_calls) c0=$(all_calls) a0=$(cpu_ms "$PID_a") rc0=$(redis_cpu_ms)
    read -r a n < <(wrk_run "$PUB_a" "$k_shared" "$conns")
    e1=$(evalsha_calls) c1=$(all_calls) a1=$(cpu_ms "$PID_a") rc1=$(redis_cpu_ms)
    S+=("$s")
    R+=("$a")
    per() { awk -v d="$1" -v n="$2" -v k="$3" 'BEGIN {printf "%.2f", d * k / n}'; }
    printf '  round %d: SQLite %8.0f req/s   shared (Redis) %8.0f req/s   Redis per request: %s EVALSHA, %s commands\n' \
        "$r" "$s" "$a" "$(per $((e1 - e0)) "$n" 1)" "$(per $((c1 - c0)) "$n" 1)"
    printf '           CPU per request: SQLite gateway %s us; shared replica %s us + redis-server %s us\n' \
        "$(per $((g1 - g0)) "$ns" 1000)" "$(per $((a1 - a0)) "$n" 1000)" "$(per $((rc1 - rc0)) "$n" 1000)"
done
wrk_run "$PUB_a" "$k_shared" $((conns / 2)) >"$tmp/two_a" &
wa=$!
wrk_run "$PUB_b" "$k_shared" $((conns / 2)) >"$tmp/two_b"
wait "$wa"
read -r two_a _ <"$tmp/two_a"
read -r two_b _ <"$tmp/two_b"
python3 - "${S[*]}" "${R[*]}" "$two_a" "$two_b" <<'PY'
import statistics, sys
s = statistics.median(map(float, sys.argv[1].split()))
r = statistics.median(map(float, sys.argv[2].split()))
two = float(sys.argv[3]) + float(sys.argv[4])
print(f"  median:  SQLite {s:8.0f} req/s   shared {r:8.0f} req/s")
print(f"  shared / SQLite = {r / s:.3f} (goal >= 0.85)")
print(f"  two replicas at once: {two:8.0f} req/s ({float(sys.argv[3]):.0f} + {float(sys.argv[4]):.0f}); "
      f"two / one replica = {two / r:.3f} (one machine's cores: not a capacity figure)")
PY
echo "  redis-server's own figures for the whole run (INFO commandstats: calls, us per call):"
rcli info commandstats | awk -F'[:,=]' '/^cmdstat_/ {sub("cmdstat_", "", $1); printf "    %-18s %10d calls %8.2f us\n", $1, $3, $7}' | sort -k2 -nr | head -12
