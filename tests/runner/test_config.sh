#!/usr/bin/env bash
# deploy/: the example configs are real configs (each binary loads its own,
# keys = option names) and the systemd units pass systemd-analyze verify.
source "$(dirname "$0")/../tunnel/lib.sh"
SRC=${FERRY_SRC:?}

# The runner's example, as is: --check-config parses and validates it.
out=$("$BIN/ferry-runner" run --config "$SRC/deploy/examples/runner.json" --check-config) ||
    fail "runner.json does not load"
grep -q 'upstream  *http://127.0.0.1:8080' <<<"$out" || fail "check-config output: $out"
# The command line wins over the file; a bad key or value is a usage error.
out=$("$BIN/ferry-runner" run --config "$SRC/deploy/examples/runner.json" --connections 3 --check-config)
grep -q 'connections  *3' <<<"$out" || fail "command line does not override the config"
echo '{"upstream": "http://127.0.0.1:1", "data-dir": "/x", "no-such-key": 1}' >"$TMP/bad.json"
set +e
"$BIN/ferry-runner" run --config "$TMP/bad.json" --check-config >/dev/null 2>"$TMP/err"
rc1=$?
echo '{"upstream": "ftp://x", "data-dir": "/x"}' >"$TMP/bad2.json"
"$BIN/ferry-runner" run --config "$TMP/bad2.json" --check-config >/dev/null 2>&1
rc2=$?
set -e
[[ $rc1 == 2 ]] && grep -q no-such-key "$TMP/err" || fail "an unknown key: rc $rc1 $(cat "$TMP/err")"
[[ $rc2 == 2 ]] || fail "a bad upstream URL: rc $rc2"
pass "deploy/examples/runner.json loads; command line overrides; bad keys refused"

# Both examples drive real daemons: paths and ports rewritten for a test.
rewrite() { # rewrite IN OUT KEY=VALUE...
    python3 - "$@" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
for kv in sys.argv[3:]:
    k, v = kv.split('=', 1)
    assert k in j, k
    j[k] = v
json.dump(j, open(sys.argv[2], 'w'))
PY
}
gw_init
rewrite "$SRC/deploy/examples/gateway.json" "$TMP/gateway.json" "data-dir=$GW" \
    public-listen=127.0.0.1:0 tunnel-listen=127.0.0.1:0 admin-listen=127.0.0.1:0
rm -f "$GW/state.json"
"$BIN/ferry-gateway" run --config "$TMP/gateway.json" >>"$TMP/gw.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")
wait_for 10 grep -q "\"pid\": $GW_PID" "$GW/state.json" || fail "gateway did not start from gateway.json"
PUB=$(jget "$GW/state.json" "j['public']")
TUN=$(jget "$GW/state.json" "j['tunnel']")
grep -q '"level":"info"' "$TMP/gw.log" || fail "the gateway did not take log-format json from the file"
up_start
enroll ex "$TMP/ex"
rewrite "$SRC/deploy/examples/runner.json" "$TMP/runner.json" "data-dir=$TMP/ex" \
    "upstream=http://127.0.0.1:$UP"
FERRY_TEST_BACKOFF_MS=100 "$BIN/ferry-runner" run --config "$TMP/runner.json" >"$TMP/rn.1.log" 2>&1 &
RN_PID=$!
PIDS+=("$RN_PID")
wait_conns ex 2
[[ $(pub /r/ex/fixed) == "Hello from ferry" ]] || fail "request through the example configs"
grep -q '"msg":"started"' "$TMP/rn.1.log" || fail "the runner did not take log-format json"
rn_stop
gw_stop
pass "gateway.json and runner.json run real daemons that serve a request"

# systemd units: verified with the binaries' real paths substituted.
if command -v systemd-analyze >/dev/null; then
    mkdir -p "$TMP/units"
    for u in "$SRC"/deploy/systemd/*.service; do
        sed "s|/usr/local/bin/|$BIN/|g" "$u" >"$TMP/units/$(basename "$u")"
    done
    systemd-analyze verify "$TMP"/units/*.service >"$TMP/verify" 2>&1 || fail "systemd-analyze: $(cat "$TMP/verify")"
    [[ ! -s $TMP/verify ]] || fail "systemd-analyze warnings: $(cat "$TMP/verify")"
    for u in "$TMP"/units/*.service; do
        for k in NoNewPrivileges=yes ProtectSystem=strict DynamicUser=yes StateDirectory= Restart=on-failure; do
            grep -q "^$k" "$u" || fail "$(basename "$u") lacks $k"
        done
        score=$(systemd-analyze security --offline=true "$u" 2>/dev/null |
            sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
        echo "  $(basename "$u"): systemd exposure $score"
        [[ -n $score ]] && python3 -c "import sys; sys.exit(0 if $score <= 2.0 else 1)" ||
            fail "$(basename "$u") exposure '$score' above 2.0"
    done
    pass "systemd units verify and are hardened (exposure <= 2.0)"
else
    echo "skip: systemd-analyze not installed"
fi
