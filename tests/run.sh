#!/usr/bin/env bash
# ferry's whole test suite, from a fresh Debian 12 machine:
#   1. installs the Debian packages the build and tests need (deploy/install-deps.sh),
#   2. builds a normal tree (gcc, RelWithDebInfo, CUDA when nvcc is found) in build/
#      and runs ctest there,
#   3. builds an ASan+UBSan tree (clang, libFuzzer targets) in build-asan/ and runs
#      ctest there, which also fuzzes each target for FERRY_FUZZ_SECONDS.
# Idempotent: re-running reuses both trees and rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

./deploy/install-deps.sh
jobs=$(nproc)

echo "== normal build (gcc) =="
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j"$jobs"
(cd build && ctest --output-on-failure -j"$jobs")

echo "== ASan+UBSan build (clang, libFuzzer) =="
# The CUDA toolchain is proven by the normal build; nvcc is not run twice.
# Sanitizers slow the heaviest tests (1,000-stream sessions) 3-5x: a longer timeout.
CC=clang cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DFERRY_SANITIZE=address,undefined \
    -DFERRY_FUZZ=ON -DFERRY_CUDA=OFF -DFERRY_FUZZ_SECONDS="${FERRY_FUZZ_SECONDS:-30}" \
    -DFERRY_TEST_TIMEOUT=300
cmake --build build-asan -j"$jobs"
(cd build-asan && ctest --output-on-failure -j"$jobs")
echo "== all tests passed in build/ and build-asan/ =="
