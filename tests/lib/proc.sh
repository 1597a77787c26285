# proc.sh: what every integration test script shares (sourced by each area's
# lib.sh, not run): strict mode, a temp dir, a record of the processes a test
# starts (all killed on exit), fail/pass, and bounded waits.
#
# Before sourcing, an area may set FAIL_LOGS (globs relative to $TMP) and
# FAIL_LOG_LINES: fail() prints the tail of each log that exists.
set -euo pipefail
BIN=${FERRY_BIN:?FERRY_BIN must point at the build bin directory}
TBIN=${FERRY_BUILD:?FERRY_BUILD must point at the build directory}/tests
TMP=$(mktemp -d)
PIDS=()
# Sanitizer builds run several times slower; tests relax their sizes there.
SANITIZED=0
if grep -q '^FERRY_SANITIZE:[A-Z]*=.\+' "$FERRY_BUILD/CMakeCache.txt" 2>/dev/null; then
    SANITIZED=1
fi
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if [[ ${KEEP_TMP:-} == 1 ]]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*" >&2
    local g f
    for g in "${FAIL_LOGS[@]}"; do
        for f in "$TMP"/$g; do
            [[ -f $f ]] || continue
            echo "--- $(basename "$f") (last ${FAIL_LOG_LINES:-25} lines)" >&2
            tail -n "${FAIL_LOG_LINES:-25}" "$f" >&2
        done
    done
    exit 1
}
pass() { echo "ok: $*"; }

# wait_for SECONDS CMD...: retries CMD every 0.05 s until it succeeds.
wait_for() {
    local t=$1 i
    shift
    for ((i = 0; i < t * 20; i++)); do
        if "$@" 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    return 1
}

# npm_install_once PACKAGE_JSON DEST: installs PACKAGE_JSON's dependencies
# into DEST/node_modules (normally under the build dir), once: again only when
# the package.json (or its lock file) changed. With a package-lock.json beside
# it, `npm ci` installs exactly the pinned versions. Returns 1 (log in
# $TMP/npm.log) when npm fails.
npm_install_once() {
    local pkg=$1 dest=$2 lock
    lock=$(dirname "$1")/package-lock.json
    command -v node >/dev/null && command -v npm >/dev/null || return 1
    mkdir -p "$dest"
    # Tests sharing DEST may run at once (ctest -j): one installs, the
    # others wait for it on the lock and then find it done.
    exec {NPM_LOCK_FD}>"$dest.lock"
    flock -w 600 "$NPM_LOCK_FD" || return 1
    npm_install_locked "$pkg" "$dest" "$lock"
    local rc=$?
    flock -u "$NPM_LOCK_FD"
    exec {NPM_LOCK_FD}>&-
    return $rc
}
npm_install_locked() {
    local pkg=$1 dest=$2 lock=$3
    if cmp -s "$pkg" "$dest/package.json" && [[ -f $dest/.installed ]] &&
        { [[ ! -f $lock ]] || cmp -s "$lock" "$dest/package-lock.json"; }; then
        return 0
    fi
    rm -f "$dest/.installed"
    cp "$pkg" "$dest/package.json"
    local cmd=install
    if [[ -f $lock ]]; then
        cp "$lock" "$dest/package-lock.json"
        cmd=ci
    fi
    (cd "$dest" && timeout 300 npm "$cmd" --no-audit --no-fund --loglevel=error) >"$TMP/npm.log" 2>&1 || return 1
    touch "$dest/.installed"
}
