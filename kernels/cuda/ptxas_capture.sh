#!/bin/sh
# ptxas_capture.sh: compiler launcher for the CUDA objects. Runs the nvcc
# command it is given (compiled with -Xptxas=-v) and saves ptxas's resource
# report (registers, stack frame, spill stores/loads, shared and constant
# memory per kernel and per architecture) to <object>.ptxas.txt, keeping the
# build log free of it. Everything else nvcc prints still reaches stderr.
out=""
prev=""
for a in "$@"; do
    if [ "$prev" = "-o" ]; then
        out="$a"
    fi
    prev="$a"
done
if [ -z "$out" ]; then
    exec "$@"
fi
log="$out.ptxas.txt"
"$@" 2>"$log.all"
rc=$?
pat='^(ptxas info|ptxas +info|[[:space:]]+[0-9]+ bytes stack frame)'
grep -v -E "$pat" "$log.all" >&2
grep -E "$pat" "$log.all" >"$log"
rm -f "$log.all"
exit $rc
