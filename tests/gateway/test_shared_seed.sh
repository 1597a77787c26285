#!/usr/bin/env bash
# `ferry-gateway init --shared`, against a real redis-server: the first init
# seeds the deployment (every file in FY_SH_DEPLOY, byte for byte), a second
# run changes nothing, a second data dir joins with identical files and
# modes, a data dir of another deployment is refused naming both runner CAs,
# two inits racing on an empty Redis end with one deployment in both dirs,
# the password comes from a file (right, wrong, missing), and an unreachable
# or malformed URL is one clear line and exit 1.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/../lib/redis.sh"
FAIL_LOGS+=(redis.*/log)

G=$BIN/ferry-gateway
DEPLOY='ferry:{cat}:deploy'
SEED_FILES=(runner-ca.crt runner-ca.key ca.crt ca.key server.crt server.key admin.token gateway.json)

# same_as_redis DIR: every seed file of DIR is the seed's value in Redis.
same_as_redis() {
    local f
    for f in "${SEED_FILES[@]}"; do
        # redis-cli --raw ends the value with a newline of its own.
        cmp -s <(redis_cli --raw hget "$DEPLOY" "$f") <(cat "$1/$f" && echo) ||
            fail "$1/$f differs from the seed in redis"
    done
}
# same_dirs A B: the seed files of A and B are identical, modes included.
same_dirs() {
    local f
    for f in "${SEED_FILES[@]}"; do
        cmp -s "$1/$f" "$2/$f" || fail "$1/$f and $2/$f differ"
        [[ $(stat -c %a "$1/$f") == $(stat -c %a "$2/$f") ]] || fail "$f: modes differ"
    done
}
snapshot() { # snapshot DIR: the files' checksums and mtimes, and the seed in redis
    (cd "$1" && sha256sum "${SEED_FILES[@]}" && stat -c '%n %Y %a' "${SEED_FILES[@]}")
    redis_cli --raw hgetall "$DEPLOY"
}

redis_start >/dev/null

# --- the first init seeds -------------------------------------------------------
"$G" init --data-dir "$TMP/a" --shared "$REDIS_URL" >"$TMP/a.out" 2>&1 || fail "init --shared: $(cat "$TMP/a.out")"
grep -q '^seeded the shared deployment' "$TMP/a.out" || fail "first init: $(cat "$TMP/a.out")"
[[ $(redis_cli hlen "$DEPLOY") == 9 ]] || fail "seed fields: $(redis_cli hkeys "$DEPLOY")"
same_as_redis "$TMP/a"
created=$(redis_cli --raw hget "$DEPLOY" created_at)
((created > 1600000000)) || fail "created_at: $created"
[[ -f $TMP/a/gateway.db ]] || fail "no store"
for f in runner-ca.key ca.key server.key admin.token; do
    [[ $(stat -c %a "$TMP/a/$f") == 600 ]] || fail "$f mode $(stat -c %a "$TMP/a/$f")"
done
pass "init --shared on an empty Redis creates the data dir and seeds every file"

snapshot "$TMP/a" >"$TMP/snap1"
"$G" init --data-dir "$TMP/a" --shared "$REDIS_URL" >"$TMP/a2.out" 2>&1 || fail "second init: $(cat "$TMP/a2.out")"
grep -q 'nothing changed' "$TMP/a2.out" || fail "second init: $(cat "$TMP/a2.out")"
snapshot "$TMP/a" >"$TMP/snap2"
cmp -s "$TMP/snap1" "$TMP/snap2" || fail "second init changed something: $(diff "$TMP/snap1" "$TMP/snap2")"
pass "a second init --shared changes nothing and says so"

# --- a second replica joins -------------------------------------------------------
"$G" init --data-dir "$TMP/b" --shared "$REDIS_URL" >"$TMP/b.out" 2>&1 || fail "join: $(cat "$TMP/b.out")"
grep -q '^joined the shared deployment' "$TMP/b.out" || fail "join: $(cat "$TMP/b.out")"
same_dirs "$TMP/a" "$TMP/b"
[[ -f $TMP/b/gateway.db ]] || fail "the joining replica has no store"
[[ $(stat -c %a "$TMP/b") == 700 ]] || fail "data dir mode $(stat -c %a "$TMP/b")"
"$G" init --data-dir "$TMP/b" --shared "$REDIS_URL" 2>&1 | grep -q 'nothing changed' || fail "second join"
pass "a second data dir joins with identical files and modes; joining again changes nothing"

# --- another deployment is refused ----------------------------------------------------
"$G" init --data-dir "$TMP/other" >/dev/null || fail "plain init"
c=0
"$G" init --data-dir "$TMP/other" --shared "$REDIS_URL" >"$TMP/o.out" 2>"$TMP/o.err" || c=$?
[[ $c == 1 && $(wc -l <"$TMP/o.err") == 1 ]] || fail "other deployment: exit $c: $(cat "$TMP/o.err")"
[[ $(grep -o 'sha256:[0-9a-f]\{64\}' "$TMP/o.err" | sort -u | wc -l) == 2 ]] ||
    fail "the error does not name both runner CAs: $(cat "$TMP/o.err")"
c=0
"$G" migrate --data-dir "$TMP/other" --to "$REDIS_URL" >/dev/null 2>"$TMP/m.err" || c=$?
[[ $c == 1 ]] && grep -q 'another deployment' "$TMP/m.err" || fail "migrate of another deployment: $c $(cat "$TMP/m.err")"
same_as_redis "$TMP/a"
pass "a data dir of another deployment is refused (init --shared and migrate), naming both runner CAs"

# --- two inits racing on an empty Redis --------------------------------------------------
for round in 1 2 3; do
    redis_cli flushall >/dev/null
    rm -rf "$TMP/r1" "$TMP/r2"
    "$G" init --data-dir "$TMP/r1" --shared "$REDIS_URL" >"$TMP/r1.out" 2>&1 &
    p1=$!
    "$G" init --data-dir "$TMP/r2" --shared "$REDIS_URL" >"$TMP/r2.out" 2>&1 &
    p2=$!
    wait $p1 || fail "racing init 1: $(cat "$TMP/r1.out")"
    wait $p2 || fail "racing init 2: $(cat "$TMP/r2.out")"
    [[ $(cat "$TMP/r1.out" "$TMP/r2.out" | grep -c '^seeded the shared deployment') == 1 ]] ||
        fail "round $round: not exactly one seeder: $(cat "$TMP/r1.out" "$TMP/r2.out")"
    [[ $(redis_cli hlen "$DEPLOY") == 9 ]] || fail "round $round: seed fields"
    same_as_redis "$TMP/r1"
    same_as_redis "$TMP/r2"
done
pass "two inits racing on an empty Redis end with one deployment, in both data dirs"

redis_cli flushall >/dev/null
(cd "$TMP/a" && sha256sum "${SEED_FILES[@]}") >"$TMP/sum1"
"$G" init --data-dir "$TMP/a" --shared "$REDIS_URL" >"$TMP/a3.out" 2>&1 || fail "re-seed: $(cat "$TMP/a3.out")"
grep -q '^seeded the shared deployment' "$TMP/a3.out" || fail "re-seed: $(cat "$TMP/a3.out")"
grep -q '^initialised' "$TMP/a3.out" && fail "an initialised dir was initialised again"
same_as_redis "$TMP/a"
(cd "$TMP/a" && sha256sum "${SEED_FILES[@]}") | cmp -s - "$TMP/sum1" || fail "seeding changed the data dir"
pass "an initialised data dir seeds an empty Redis with its own files, unchanged"

# --- the password file -------------------------------------------------------------------
mkdir -p "$TMP/redis.pw"
echo "s3cret-pw-$$" >"$TMP/redis.pw/password"
redis_start pw >/dev/null
echo "s3cret-pw-$$" >"$TMP/pw.ok"
echo "wrong-pw-$$" >"$TMP/pw.bad"
"$G" init --data-dir "$TMP/p" --shared "$REDIS_URL" --shared-password-file "$TMP/pw.ok" >"$TMP/p.out" 2>&1 ||
    fail "init with the password: $(cat "$TMP/p.out")"
same_as_redis "$TMP/p"
grep -q "s3cret" "$TMP/p.out" && fail "the password was printed"
c=0
"$G" init --data-dir "$TMP/p2" --shared "$REDIS_URL" --shared-password-file "$TMP/pw.bad" >/dev/null 2>"$TMP/e" || c=$?
[[ $c == 1 && $(wc -l <"$TMP/e") == 1 ]] && grep -q 'password refused' "$TMP/e" ||
    fail "wrong password: exit $c: $(cat "$TMP/e")"
grep -q "pw-$$" "$TMP/e" && fail "the password is in the error"
c=0
"$G" init --data-dir "$TMP/p2" --shared "$REDIS_URL" >/dev/null 2>"$TMP/e" || c=$?
[[ $c == 1 ]] && grep -q 'needs a password' "$TMP/e" || fail "no password: exit $c: $(cat "$TMP/e")"
[[ ! -e $TMP/p2 ]] || fail "a refused init left a data dir"
c=0
"$G" init --data-dir "$TMP/p2" --shared "$REDIS_URL" --shared-password-file "$TMP/none" >/dev/null 2>"$TMP/e" || c=$?
[[ $c == 1 ]] && grep -q 'password file' "$TMP/e" || fail "missing password file: exit $c: $(cat "$TMP/e")"
c=0
"$G" init --data-dir "$TMP/p2" --shared-password-file "$TMP/pw.ok" >/dev/null 2>"$TMP/e" || c=$?
[[ $c == 2 ]] || fail "--shared-password-file without --shared: exit $c"
pass "the password comes from the file; a wrong or missing one is one clear line and exit 1"

# --- unreachable and malformed ---------------------------------------------------------------
for url in "unix://$TMP/no-such.sock" "redis://127.0.0.1:1" "http://127.0.0.1" "redis://user:pw@127.0.0.1"; do
    c=0
    "$G" init --data-dir "$TMP/u" --shared "$url" >/dev/null 2>"$TMP/e" || c=$?
    [[ $c == 1 && $(wc -l <"$TMP/e") == 1 ]] || fail "$url: exit $c: $(cat "$TMP/e")"
    grep -q '^ferry-gateway init: .*redis' "$TMP/e" || fail "$url: $(cat "$TMP/e")"
    [[ ! -e $TMP/u ]] || fail "$url: a failed init left a data dir"
done
grep -q 'unix://' <("$G" init --data-dir "$TMP/u" --shared "unix://$TMP/no-such.sock" 2>&1) || fail "the error does not say where"
"$G" init --help | grep -q -- '--shared URL' || fail "help text"
pass "an unreachable or malformed URL is one clear line and exit 1, and creates nothing"
