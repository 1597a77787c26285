#!/usr/bin/env bash
# test_cli.sh VERSION: checks --help, --version and option errors of every binary.
set -euo pipefail
version=$1
bin=${FERRY_BIN:?}
rev=$(git -C "${FERRY_SRC:?}" describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)
fail() { echo "FAIL: $*" >&2; exit 1; }

for b in ferry-gateway ferry-runner ferry; do
    out=$("$bin/$b" --version)
    first=$(head -n1 <<<"$out")
    [[ $first == "$b $version (git "* ]] || fail "$b --version first line: '$first'"
    # The commit baked in at configure time is this tree's commit (modulo -dirty).
    baked=$(sed -n 's/.*(git \([^,]*\),.*/\1/p' <<<"$first")
    [[ ${baked%-dirty} == "${rev%-dirty}" || $baked == unknown ]] || fail "$b built from '$baked', tree is '$rev'"
    grep -q "libuv 1\.44" <<<"$out" || fail "$b --version lacks the libuv version"
    grep -q "mbedTLS 2\.28" <<<"$out" || fail "$b --version lacks the mbedTLS version"
    grep -q "llhttp 8\.1" <<<"$out" || fail "$b --version lacks the llhttp version"

    help=$("$bin/$b" --help)
    grep -q "^Usage: $b " <<<"$help" || fail "$b --help has no usage line"
    for opt in --help --version --log-level --log-format; do
        grep -q -- "$opt" <<<"$help" || fail "$b --help does not list $opt"
    done

    set +e
    err=$("$bin/$b" --no-such-option 2>&1 >/dev/null); rc=$?
    set -e
    [[ $rc == 2 ]] || fail "$b with an unknown option exited $rc, want 2"
    grep -q "unknown option '--no-such-option'" <<<"$err" || fail "$b unknown-option message: $err"
    set +e
    err=$("$bin/$b" --log-level loud --version 2>&1 >/dev/null); rc=$?
    set -e
    [[ $rc == 2 ]] || fail "$b with a bad log level exited $rc"
    grep -q "is not debug, info, warn, error or off" <<<"$err" || fail "$b log-level message: $err"
done

# Each ferry command takes only its own options (and the shared ones): one of
# another command is refused before any gateway is reached, with one message.
foreign() { # foreign WORDS OPTION VALUE [ARGS...]: `ferry WORDS ARGS... OPTION VALUE` (VALUE '': a flag) exits 2 and says so
    local words=$1 opt=$2 value=$3
    shift 3
    set +e
    # shellcheck disable=SC2086 # WORDS are the command's words
    err=$("$bin/ferry" $words "$@" "$opt" ${value:+"$value"} --data-dir /nonexistent 2>&1 >/dev/null); rc=$?
    set -e
    [[ $rc == 2 ]] || fail "ferry $words $opt: exited $rc, want 2"
    grep -qF -- "ferry: $opt does not go with '$words' (it can only go with " <<<"$err" ||
        fail "ferry $words $opt: $err"
}
foreign 'keys create' --ttl 1h --name k
foreign 'keys list' --burst 3
foreign 'hooks create' --grace 24h --name h
foreign 'hooks rotate-secret' --async '' hk_x --secret-file /dev/null
foreign status --key key_abc
foreign usage --name x
foreign 'tokens create' --rpm 5 --name r1
set +e
err=$("$bin/ferry" keys list --burst 3 2>&1 >/dev/null)
set -e
grep -qF "(it can only go with 'keys create' and 'keys update')" <<<"$err" || fail "foreign option: $err"

# The runner reports its compute backends.
"$bin/ferry-runner" --version | grep -q "backend cpu: .*cores" || fail "runner does not list the CPU backend"
"$bin/ferry-runner" --version | grep -q "backend cuda: " || fail "runner does not list the CUDA backend"
# The CUDA libraries (cudart, cuBLAS, NCCL: ~200 MB resident) are in a module
# loaded only for --device cuda: the runner does not link them, and listing
# the backends does not load them.
if "$bin/ferry-runner" --version | grep -q "backend cuda: compiled"; then
    "$bin/ferry-runner" --version | grep -q "backend cuda: compiled, not probed (module .*libferry_cuda.so)" ||
        fail "runner --version: $("$bin/ferry-runner" --version | grep 'backend cuda')"
    ! ldd "$bin/ferry-runner" | grep -E 'libcudart|libcublas|libnccl' || fail "the runner links the CUDA libraries"
    loaded=$(LD_DEBUG=libs "$bin/ferry-runner" --version 2>&1 >/dev/null | grep -E 'calling init: .*(libferry_cuda|libcudart)' || true)
    [[ -z $loaded ]] || fail "runner --version loaded CUDA: $loaded"
fi
echo "cli: ok"
