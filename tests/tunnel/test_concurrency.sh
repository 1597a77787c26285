#!/usr/bin/env bash
# 1,000 concurrent requests over ONE tunnel connection of the real
# ferry-runner: every answer is its own (no mix-ups between streams), and
# they really are in flight at the same time (the runner holds 1,000 upstream
# calls at once). The public side is plain HTTP so the test measures the
# tunnel, not 1,000 public TLS handshakes on a 2-core machine.
source "$(dirname "$0")/lib.sh"
N=1000
P=4 # curl runs at most 300 transfers in parallel per process
ulimit -n 8192 2>/dev/null || true
gw_init
gw_start --log-level warn --public-plain
up_start
enroll r1 "$TMP/r1"
rn_start "$TMP/r1" --connections 1 --log-level warn
wait_conns r1 1
base=http://$PUB/r/r1

cfg_add() { # cfg_add PREFIX I TEXT: one transfer into file PREFIX.(I % P)
    local f=$1.$(($2 % P))
    [[ -s $f ]] && echo next >>"$f"
    printf '%b' "$3" >>"$f"
}
par_curl() { # par_curl PREFIX: the transfers of PREFIX.0 .. PREFIX.(P-1) at once
    local k pids=()
    for ((k = 0; k < P; k++)); do
        curl -sS --parallel --parallel-immediate --parallel-max 300 -K "$1.$k" 2>"$1.$k.err" &
        pids+=($!)
    done
    for k in "${pids[@]}"; do wait "$k" || return 1; done
}

for ((i = 0; i < N; i++)); do
    cfg_add "$TMP/echo.cfg" $i "url = \"$base/echo?i=$i\"\noutput = \"$TMP/out.$i\"\ndata = \"body-$i\"\nheader = \"$AUTH\"\nmax-time = 60\n"
done
t0=$(now_ms)
par_curl "$TMP/echo.cfg" || fail "curl: $(cat "$TMP"/echo.cfg.*.err | head -5)"
t1=$(now_ms)
python3 - "$TMP" $N <<'PY' || fail "answers mixed up or missing"
import hashlib, json, sys
tmp, n = sys.argv[1], int(sys.argv[2])
bad = 0
for i in range(n):
    try:
        d = json.load(open(f"{tmp}/out.{i}"))
        ok = d["target"] == f"/echo?i={i}" and \
            d["body_sha256"] == hashlib.sha256(f"body-{i}".encode()).hexdigest()
    except Exception:
        ok = False
    if not ok:
        bad += 1
        if bad < 4:
            print(f"request {i}: {open(f'{tmp}/out.{i}').read()[:300]!r}", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
pass "$N parallel POSTs over one tunnel connection, every answer its own ($((t1 - t0)) ms)"

# Held by the upstream until the test releases them: all of them must be in
# flight at once (none can end first, however slowly a loaded machine
# starts them).
for ((i = 0; i < N; i++)); do
    cfg_add "$TMP/gate.cfg" $i "url = \"$base/gate?name=all&i=$i\"\noutput = \"$TMP/gate.$i\"\nheader = \"$AUTH\"\nmax-time = 300\n"
done
par_curl "$TMP/gate.cfg" &
cpid=$!
PIDS+=("$cpid")
peak=0
all_in_flight() {
    local f
    f=$(in_flight r1 || echo 0)
    ((f > peak)) && peak=$f
    ((f == N))
}
wait_for 120 all_in_flight || fail "only $peak of $N requests were in flight at once"
wait_for 120 up_stat_is gated "$N" || fail "the upstream holds $(up_stat gated) of $N requests"
echo "  in flight on the one connection: $peak"
release all
wait $cpid || fail "curl (gated): $(cat "$TMP"/gate.cfg.*.err | head -5)"
ok=$(cat "$TMP"/gate.[0-9]* | grep -c '^released$' || true)
[[ $ok == "$N" ]] || fail "$ok of $N held requests answered"
[[ $(connections r1) == 1 ]] || fail "the tunnel connection did not survive"
rn_stop
gw_stop
pass "$N requests in flight at once on one connection (all $peak seen together), all answered"
