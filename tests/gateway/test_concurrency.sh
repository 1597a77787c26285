#!/usr/bin/env bash
# 1,000 concurrent public requests over one tunnel connection: every answer
# is its own (no mix-ups), and they really are in flight at the same time.
source "$(dirname "$0")/lib.sh"
N=1000
ulimit -n 8192 2>/dev/null || true
gw_init
# The streams under test are the tunnel's (TLS, one connection); the public
# side is plain HTTP here because 1,000 public TLS handshakes at once on a
# loaded 2-core machine can outlast the handshake timeout, which would test
# mbedTLS's ECDSA speed rather than the tunnel. Public HTTPS is covered by
# every other test.
gw_start --log-level warn --public-plain
upstream_start
enroll alpha "$TMP/ra"
runner_start alpha "$TMP/ra"

# curl runs at most 300 transfers in parallel per process: use several.
P=4
# par_curl PREFIX: runs the transfers in PREFIX.0 .. PREFIX.$((P-1)) at once.
par_curl() {
    local k pids=()
    for ((k = 0; k < P; k++)); do
        curl -sS --parallel --parallel-immediate --parallel-max 300 -K "$1.$k" 2>"$1.$k.err" &
        pids+=($!)
    done
    for k in "${pids[@]}"; do wait "$k" || return 1; done
}
# cfg_add FILE-PREFIX I LINES: one transfer; "next" keeps each transfer's
# options its own (repeated data would otherwise be merged).
cfg_add() {
    local f=$1.$(($2 % P))
    [[ -s $f ]] && echo next >>"$f"
    printf '%b' "$3" >>"$f"
}

# Each request posts its own body to /echo and must get back its own target
# and its own body checksum.
base=$(pub_url /r/alpha)
for ((i = 0; i < N; i++)); do
    cfg_add "$TMP/echo.cfg" $i "url = \"$base/echo?i=$i\"\noutput = \"$TMP/out.$i\"\ndata = \"body-$i\"\ncacert = \"$CA\"\nheader = \"$AUTH\"\nmax-time = 60\n"
done
t0=$SECONDS
par_curl "$TMP/echo.cfg" || fail "curl --parallel failed: $(cat "$TMP"/echo.cfg.*.err | head -5)"
python3 - "$TMP" $N <<'PY' || fail "answers mixed up or missing"
import hashlib, json, sys
tmp, n = sys.argv[1], int(sys.argv[2])
bad = 0
for i in range(n):
    try:
        d = json.load(open(f"{tmp}/out.{i}"))
        ok = d["target"] == f"/echo?i={i}" and \
            d["body_sha256"] == hashlib.sha256(f"body-{i}".encode()).hexdigest()
    except Exception as e:
        ok = False
    if not ok:
        bad += 1
        if bad < 4:
            print(f"request {i}: {open(f'{tmp}/out.{i}').read()[:300]!r}", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
pass "$N parallel POSTs, every answer its own ($((SECONDS-t0)) s)"

# Concurrency proof: requests the upstream holds until the test releases
# them; the admin API must see every one of them in flight on the tunnel at
# once (they cannot end before the release, however long a loaded machine
# takes to start them all).
for ((i = 0; i < N; i++)); do
    cfg_add "$TMP/gate.cfg" $i "url = \"$base/gate?name=all&i=$i\"\noutput = \"$TMP/gate.$i\"\ncacert = \"$CA\"\nheader = \"$AUTH\"\nmax-time = 300\n"
done
par_curl "$TMP/gate.cfg" &
cpid=$!
PIDS+=("$cpid")
peak=0
all_in_flight() {
    local f
    f=$(admin GET /admin/v1/runners | sed -n 's/.*"in_flight":\([0-9]*\).*/\1/p')
    ((f > peak)) && peak=$f
    ((f == N))
}
wait_for 120 all_in_flight || fail "only $peak of $N requests were in flight at once"
wait_for 120 up_stat_is gated "$N" || fail "the upstream holds $(up_stat gated) of $N requests"
release all
wait $cpid || fail "curl --parallel (gated) failed: $(cat "$TMP"/gate.cfg.*.err | head -5)"
ok=$(cat "$TMP"/gate.[0-9]* | grep -c '^released$' || true)
[[ $ok == "$N" ]] || fail "$ok of $N held requests answered"
pass "$N requests in flight at once on one tunnel connection (all $peak seen together), all answered"
gw_stop
