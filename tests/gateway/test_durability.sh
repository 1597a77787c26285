#!/usr/bin/env bash
# Keys survive kill -9: 1,000 keys created with the CLI (4 clients at once,
# revoking one key in ten as they go) while kill -9 hits the gateway at a
# random moment; after a restart every key the CLI reported as created works,
# and every key it reported as revoked stays revoked.
source "$(dirname "$0")/lib.sh"
N=1000
W=4
gw_init
gw_start --log-level warn
upstream_start
tenroll alpha "$TMP/ra"
trunner_start "$TMP/ra"

# worker W: creates N/W keys; what the CLI acknowledged goes to created.W
# ("id key") and revoked.W ("id"). Failures (the gateway is down) are skipped.
# It goes on past N/W until it has had a key acknowledged by the restarted
# gateway ($TMP/restarted exists once it is up), so keys made after the
# restart never depend on how long a loaded machine takes to restart it.
worker() {
    local w=$1 i out id restarted=0 after=0
    local -a ids=()
    for ((i = 0; i < N / W || !after; i++)); do
        [[ -e $TMP/restarted ]] && restarted=1
        if out=$("$BIN/ferry" --data-dir "$GW" keys create --name "w$w-$i" 2>/dev/null); then
            id=$(sed -n 's/^API key \(key_[^ ]*\) .*/\1/p' <<<"$out")
            echo "$id $(tail -n1 <<<"$out")" >>"$TMP/created.$w"
            ids+=("$id")
            after=$restarted
        else
            sleep 0.05 # the gateway is down: do not spin
        fi
        if ((i % 10 == 9 && ${#ids[@]} > 5)); then
            id=${ids[${#ids[@]} - 5]}
            if "$BIN/ferry" --data-dir "$GW" keys revoke "$id" >/dev/null 2>&1; then
                echo "$id" >>"$TMP/revoked.$w"
            fi
        fi
    done
}
acked() { cat "$TMP"/created.* 2>/dev/null | wc -l; }
acked_ge() { (($(acked) >= $1)); }

# The moment: after a random number of acknowledged keys, mid-run.
R=$((100 + RANDOM % (N - 300)))
touch "$TMP/created.0"
WPIDS=()
for ((w = 0; w < W; w++)); do
    worker "$w" &
    WPIDS+=($!)
    PIDS+=($!)
done
wait_for 300 acked_ge "$R" || fail "only $(acked) keys created"
kill9 "$GW_PID"
killed_at=$(acked)
echo "  kill -9 after $killed_at keys acknowledged (target $R)"
GW_SAME_PORTS=1 gw_start --log-level warn
touch "$TMP/restarted"
for p in "${WPIDS[@]}"; do wait "$p" || fail "worker failed"; done
wait_for 10 conns_are alpha 1 || fail "runner did not reconnect"
created=$(acked)
revoked=$(cat "$TMP"/revoked.* 2>/dev/null | wc -l)
((created > killed_at)) || fail "no key created after the restart"
echo "  $created keys acknowledged, $revoked of them revoked"

# Every acknowledged key, one request each (one keep-alive connection).
python3 - "$TMP" "$PUB" "$CA" <<'PY' || fail "keys lost or revocations undone"
import glob, http.client, ssl, sys
tmp, pub, ca = sys.argv[1:]
created = dict(l.split() for f in glob.glob(f"{tmp}/created.*") for l in open(f) if l.strip())
revoked = {l.strip() for f in glob.glob(f"{tmp}/revoked.*") for l in open(f) if l.strip()}
assert revoked <= set(created), "revoked keys that were never created"
host, port = pub.rsplit(":", 1)
ctx = ssl.create_default_context(cafile=ca)
conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=30)
bad = []
for kid, key in created.items():
    conn.request("GET", "/r/alpha/fixed", headers={"Authorization": "Bearer " + key})
    r = conn.getresponse()
    body = r.read()
    want = 401 if kid in revoked else 200
    if r.status != want:
        bad.append((kid, r.status, want, body[:120]))
print(f"  {len(created) - len(revoked)} keys work, {len(revoked)} stay revoked; {len(bad)} wrong")
for b in bad[:5]:
    print("  wrong:", b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
gw_stop
pass "kill -9 during 1,000 key creations: every acknowledged key works, every revocation holds"
