#!/bin/sh
# ptxas_check.sh OBJDIR OUT: gathers the ptxas -v reports saved beside every
# CUDA object (kernels/cuda/ptxas_capture.sh) into OUT, one line per kernel
# and architecture, and fails when an attention kernel or a block-type
# matmul or embedding kernel (qmatmul.cu, embed.cu) uses a stack frame,
# spills registers or uses local memory on any architecture, or when the
# reports are missing (so the check cannot pass by finding nothing).
set -eu
objdir=$1
out=$2
mkdir -p "$(dirname "$out")"
demangle=cat
if command -v c++filt >/dev/null 2>&1; then
    demangle=c++filt
fi
found=0
for f in "$objdir"/*.ptxas.txt; do
    [ -e "$f" ] || continue
    found=1
done
if [ "$found" = 0 ]; then
    echo "FAIL: no ptxas reports in $objdir (is the CUDA library built?)"
    exit 1
fi
# ptxas prints, per kernel and architecture:
#   Compiling entry function 'NAME' for 'sm_XX'
#   Function properties for NAME
#       S bytes stack frame, SS bytes spill stores, SL bytes spill loads
#   Used R registers, ... [N bytes lmem] ...
cat "$objdir"/*.ptxas.txt | awk '
    /Compiling entry function/ {
        match($0, /function '\''[^'\'']*'\''/); name = substr($0, RSTART + 10, RLENGTH - 11)
        match($0, /for '\''sm_[0-9a-z]*'\''/); arch = substr($0, RSTART + 5, RLENGTH - 6)
        stack = 0; sst = 0; sld = 0; next
    }
    /bytes stack frame/ { stack = $1; sst = $5; sld = $9; next }
    /Used [0-9]+ registers/ {
        match($0, /Used [0-9]+ registers/); regs = substr($0, RSTART + 5, RLENGTH - 15)
        lmem = 0
        if (match($0, /[0-9]+ bytes lmem/)) { lmem = substr($0, RSTART, RLENGTH - 11) }
        smem = 0
        if (match($0, /[0-9]+ bytes smem/)) { smem = substr($0, RSTART, RLENGTH - 11) }
        if (name != "") {
            printf "%s\t%s\tregs=%d\tstack=%d\tspill_st=%d\tspill_ld=%d\tlmem=%d\tsmem_static=%d\n", arch, name, regs, stack, sst, sld, lmem, smem
        }
        name = ""
    }' | sort -u >"$out.raw"
$demangle <"$out.raw" >"$out"
rm -f "$out.raw"
echo "CUDA kernel resources ($(wc -l <"$out") kernel x arch entries) -> $out"
# The kernels held to no spills: attention (decode v1/v2, its reduce, and
# prefill), and the block-type matmul (decode fy_qmv_kernel, tensor-core
# fy_qmm_kernel) and embedding kernels, each of which must be there for every
# block type (8) on sm_80 and sm_90.
check_group() {
    what=$1
    pat=$2
    want=$3
    rows=$(grep -E "$pat" "$out" || true)
    if [ -z "$rows" ]; then
        echo "FAIL: no $what kernels in the ptxas reports"
        exit 1
    fi
    for arch in sm_80 sm_90; do
        n=$(printf '%s\n' "$rows" | grep -c "^$arch" || true)
        if [ "$n" -lt "$want" ]; then
            echo "FAIL: $n $what kernel(s) compiled for $arch, expected at least $want"
            exit 1
        fi
    done
    printf '%s\n' "$rows"
    bad=$(printf '%s\n' "$rows" | grep -E 'stack=[1-9]|spill_st=[1-9]|spill_ld=[1-9]|lmem=[1-9]' || true)
    if [ -n "$bad" ]; then
        echo "FAIL: $what kernels with a stack frame, register spills or local memory:"
        printf '%s\n' "$bad"
        exit 1
    fi
    echo "ok: no spills, stack frame or local memory in $(printf '%s\n' "$rows" | wc -l) $what kernel x arch entries"
}
check_group attention 'attention' 1
check_group "block-type decode matmul" 'fy_qmv_kernel' 8
check_group "block-type tensor-core matmul" 'fy_qmm_kernel' 8
check_group "block-type embedding" 'fy_embed_kernel<[1-9]' 8
