#!/usr/bin/env bash
# run_fuzzer.sh FUZZER CORPUS SECONDS: fuzzes for a bounded time from a scratch
# copy of the committed corpus. Any crash, leak or timeout fails the test and
# the reproducer is kept in the build tree's fuzz/artifacts/.
set -euo pipefail
fuzzer=$1 corpus=$2 seconds=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$corpus"/. "$work"/
art="$(dirname "$fuzzer")/artifacts/$(basename "$fuzzer")"
mkdir -p "$art"
exec "$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -artifact_prefix="$art/" -print_final_stats=1 "$work"
