#!/usr/bin/env bash
# max_connections: beyond the cap a connection is accepted and closed at once;
# capacity comes back when a connection ends.
source "$(dirname "$0")/lib.sh"
start_server --max-conns 3
u=http://127.0.0.1:$PORT
# Hold three connections open (silent clients, inside the header timeout).
exec {c1}<>"/dev/tcp/127.0.0.1/$PORT"
exec {c2}<>"/dev/tcp/127.0.0.1/$PORT"
exec {c3}<>"/dev/tcp/127.0.0.1/$PORT"
sleep 0.3
set +e
curl -sS --max-time 5 -o /dev/null "$u/fixed" 2>"$TMP/err"
rc=$?
set -e
[[ $rc == 52 || $rc == 56 ]] || fail "a 4th connection: curl exit $rc ($(cat "$TMP/err")), want 52 or 56 (closed)"
pass "4th connection closed at once"
exec {c1}>&-
sleep 0.3
[[ $(curl -sS --max-time 5 "$u/fixed") == "Hello from ferry" ]] || fail "no capacity after one closed"
[[ $(stat rejected) -ge 1 ]] || fail "rejected counter: $(stat rejected)"
pass "capacity returns when a connection ends"
exec {c2}>&- {c3}>&-
stop_server
