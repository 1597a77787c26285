#!/usr/bin/env bash
# ferry's whole test suite, from a fresh Debian 12 machine:
#   1. installs the Debian packages the build and tests need (deploy/install-deps.sh),
#   2. builds a normal tree (gcc, Release, CUDA when nvcc is found) in build/
#      and runs ctest there,
#   3. builds an ASan+UBSan tree (clang, libFuzzer targets) in build-asan/ and runs
#      ctest there, which also fuzzes each target for FERRY_FUZZ_SECONDS.
# Warnings are errors in both trees (FERRY_WERROR=ON; a plain configure leaves it off).
# Idempotent: re-running reuses both trees and rebuilds only what changed.
#
#   tests/run.sh               build both trees and run the suite once in each
#   tests/run.sh --stress N    build both trees, then run the suite N times in each
#                              while stress-ng keeps every core busy; prints the
#                              failures of each round and exits 1 if there were any
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

STRESS=0
while [[ $# -gt 0 ]]; do
    case $1 in
    --stress)
        [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: --stress takes a number of rounds" >&2; exit 2; }
        STRESS=$2
        shift 2
        ;;
    -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

./deploy/install-deps.sh
jobs=$(nproc)

echo "== normal build (gcc, Release) =="
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DFERRY_WERROR=ON -DFERRY_TEST_TIMEOUT=300
cmake --build build -j"$jobs"

echo "== ASan+UBSan build (clang, libFuzzer) =="
# The CUDA toolchain is proven by the normal build; nvcc is not run twice.
# Sanitizers slow the heaviest tests (1,000-stream sessions) 3-5x: a longer timeout.
CC=clang cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DFERRY_SANITIZE=address,undefined \
    -DFERRY_FUZZ=ON -DFERRY_CUDA=OFF -DFERRY_FUZZ_SECONDS="${FERRY_FUZZ_SECONDS:-30}" \
    -DFERRY_TEST_TIMEOUT=600 -DFERRY_WERROR=ON
cmake --build build-asan -j"$jobs"

if [[ $STRESS == 0 ]]; then
    echo "== ctest in build/ =="
    (cd build && ctest --output-on-failure -j"$jobs")
    echo "== ctest in build-asan/ =="
    (cd build-asan && ctest --output-on-failure -j"$jobs")
    echo "== all tests passed in build/ and build-asan/ =="
    exit 0
fi

# Stress: the suite with every core kept busy by stress-ng at the tests' own
# priority, so a test that depends on a timing window shows itself.
LOAD_PID=
stop_load() {
    if [[ -n $LOAD_PID ]]; then
        kill -TERM "$LOAD_PID" 2>/dev/null || true
        wait "$LOAD_PID" 2>/dev/null || true
        LOAD_PID=
    fi
}
trap stop_load EXIT
summary=()
failed_rounds=0
for ((round = 1; round <= STRESS; round++)); do
    stress-ng --cpu "$jobs" --cpu-method matrixprod --quiet &
    LOAD_PID=$!
    line="round $round/$STRESS:"
    bad=0
    for tree in build build-asan; do
        echo "== stress round $round/$STRESS: ctest in $tree/ with $jobs busy cores =="
        rm -f "$tree/Testing/Temporary/LastTestsFailed.log"
        if (cd "$tree" && ctest --output-on-failure -j"$jobs"); then
            line+=" $tree: 0 failed;"
        else
            names=$(sed 's/^[0-9]*://' "$tree/Testing/Temporary/LastTestsFailed.log" 2>/dev/null | tr '\n' ' ')
            line+=" $tree: FAILED ${names:-?};"
            bad=1
        fi
    done
    stop_load
    summary+=("$line")
    failed_rounds=$((failed_rounds + bad))
done
echo "== stress summary =="
printf '%s\n' "${summary[@]}"
if [[ $failed_rounds -gt 0 ]]; then
    echo "== $failed_rounds of $STRESS stress rounds had failures =="
    exit 1
fi
echo "== $STRESS stress rounds: every test passed in build/ and build-asan/ =="
