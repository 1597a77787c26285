#!/usr/bin/env bash
# ferry-runner quantize and perplexity, as a user runs them: every --type on
# the test data's GGUF files, each output reloaded by the engine (perplexity
# loads it), what a mix costs on a text the model did not write (Q8_0 within
# 1% of F32, Q4_K_M within 10%), stories260K's rows that no type fits
# reported, the Hugging Face directory converted (within 1% of its own
# perplexity), and the refusals.
FAIL_LOGS=('*.err')
source "$(dirname "$0")/../lib/proc.sh"
TD=${FERRY_TESTDATA:?}
ST=$TD/models/stories260K/stories260K.gguf
TINY=$TD/gguf/tiny256-F32.gguf
if [[ ! -r $ST || ! -r $TINY ]]; then
    echo "skipping: $ST or $TINY is absent"
    exit 0
fi

# A children's story in the TinyStories style, not the model's own output.
cat >"$TMP/text.txt" <<'EOF'
Once upon a time, there was a little girl named Lily. She loved to play in the park with her
red ball. One day, she saw a big dog near the tree. The dog was sad because it lost its toy.
Lily wanted to help the dog. She looked under the bench and behind the slide. Then she found
a small blue toy in the grass. She gave the toy to the dog, and the dog was very happy. It
wagged its tail and licked her hand. Lily smiled and said, "You are my friend now." They
played together until the sun went down. When it was time to go home, Lily waved goodbye.
The next day, Lily went back to the park. The dog was there again, waiting for her by the
tree. Her mom came too and brought a picnic with bread, apples and milk. They sat on a soft
blanket and ate the food. A bird sang in the tree, and the wind was warm. Lily gave a piece
of bread to the dog. Her mom laughed and said the dog was a good friend. From that day on,
Lily and the dog played in the park every day, and they were never lonely again.
EOF

ppl() { # ppl MODEL: the final estimate
    "$BIN/ferry-runner" perplexity --model "$1" --file "$TMP/text.txt" --ctx 128 --threads 2 \
        >"$TMP/ppl.out" 2>"$TMP/ppl.err" || fail "perplexity of $1: $(cat "$TMP/ppl.err")"
    sed -n 's/^Final estimate: PPL = \([0-9.]*\) .*/\1/p' "$TMP/ppl.out"
}
within() { # within A B PCT: |A - B| <= PCT% of A
    python3 -c "import sys; a, b, p = map(float, sys.argv[1:]); sys.exit(abs(a - b) > a * p / 100)" "$@"
}

base=$(ppl "$ST")
[[ -n $base ]] || fail "no perplexity for $ST: $(cat "$TMP/ppl.out")"
for t in f16 q8_0 q4_0 q4_k_m q5_k_m q6_k; do
    "$BIN/ferry-runner" quantize "$ST" "$TMP/st-$t.gguf" --type $t --threads 2 \
        >"$TMP/q.out" 2>"$TMP/q.err" || fail "quantize --type $t: $(cat "$TMP/q.err")"
    grep -q "^wrote $TMP/st-$t.gguf ($t," "$TMP/q.out" || fail "quantize $t said: $(cat "$TMP/q.out")"
    grep -q '^\[48/48\] done' "$TMP/q.err" || fail "no progress line: $(tail -2 "$TMP/q.err")"
    if [[ $t != f16 ]]; then # 172-wide ffn_down rows fit no 32- or 256-weight block
        grep -q 'kept a wider type' "$TMP/q.out" &&
            grep -q '  blk.4.ffn_down.weight: F16' "$TMP/q.out" ||
            fail "$t: the fallbacks are not listed: $(cat "$TMP/q.out")"
    fi
    p=$(ppl "$TMP/st-$t.gguf")
    echo "stories260K $t: perplexity $p (F32 $base)"
    case $t in
    f16 | q8_0) within "$base" "$p" 1 || fail "$t perplexity $p is not within 1% of F32's $base" ;;
    *) within "$base" "$p" 10 || fail "$t perplexity $p is not within 10% of F32's $base" ;;
    esac
done
pass "stories260K: every --type writes a file the engine loads; Q8_0 within 1%, the rest within 10%"

# The Hugging Face directory of the same model, converted as
# convert_hf_to_gguf.py does: the engine scores the GGUF as it scores the
# directory (F16 and Q8_0 within 1%).
HF=$TD/models/stories260K
hf_base=$(ppl "$HF")
[[ -n $hf_base ]] || fail "no perplexity for $HF: $(cat "$TMP/ppl.out")"
for t in f16 q8_0; do
    "$BIN/ferry-runner" quantize "$HF" "$TMP/hf-$t.gguf" --type $t --threads 2 \
        >"$TMP/q.out" 2>"$TMP/q.err" || fail "quantize $HF --type $t: $(cat "$TMP/q.err")"
    grep -q "^wrote $TMP/hf-$t.gguf ($t," "$TMP/q.out" || fail "quantize $HF said: $(cat "$TMP/q.out")"
    grep -q '^\[47/47\] done' "$TMP/q.err" || fail "no progress line: $(tail -2 "$TMP/q.err")"
    grep -q 'blk.0.attn_q.weight' "$TMP/q.err" || fail "no GGUF tensor names: $(cat "$TMP/q.err")"
    p=$(ppl "$TMP/hf-$t.gguf")
    echo "stories260K directory $t: perplexity $p (directory $hf_base)"
    within "$hf_base" "$p" 1 || fail "$t perplexity $p is not within 1% of the directory's $hf_base"
done
pass "stories260K directory: F16 and Q8_0 GGUFs score within 1% of the safetensors"

# tiny256: every matrix fits every type (llama.cpp wrote the input). Its
# weights are random, so its perplexity says nothing of quality: the files
# must reload and score finitely, no more.
for t in q8_0 q4_k_m; do
    "$BIN/ferry-runner" quantize "$TINY" "$TMP/t-$t.gguf" --type $t >"$TMP/q.out" 2>"$TMP/q.err" ||
        fail "tiny256 --type $t: $(cat "$TMP/q.err")"
    grep -q 'kept a wider type' "$TMP/q.out" && fail "tiny256 $t: a fallback where none is needed"
    p=$(ppl "$TMP/t-$t.gguf")
    python3 -c "import math, sys; sys.exit(not math.isfinite(float(sys.argv[1])))" "$p" ||
        fail "tiny256 $t: perplexity '$p'"
done
pass "tiny256: Q8_0 and Q4_K_M files reload and score"

# Refusals, each with its message and exit code 2.
expect_refusal() { # expect_refusal MESSAGE ARGS...
    local msg=$1
    shift
    set +e
    "$BIN/ferry-runner" "$@" >"$TMP/r.out" 2>"$TMP/r.err"
    local rc=$?
    set -e
    [[ $rc == 2 ]] || fail "ferry-runner $*: exit $rc, not 2"
    grep -qF -- "$msg" "$TMP/r.err" || fail "ferry-runner $*: no '$msg' in: $(cat "$TMP/r.err")"
}
expect_refusal "--type 'q3_k' is not one of f16|q8_0|q4_0|q4_k_m|q5_k_m|q6_k" \
    quantize "$ST" "$TMP/x.gguf" --type q3_k
expect_refusal "give IN, OUT.gguf and --type" quantize "$ST" --type q8_0
expect_refusal "/no/such.gguf" quantize /no/such.gguf "$TMP/x.gguf" --type q8_0
mkdir -p "$TMP/neox"
sed 's/LlamaForCausalLM/GPTNeoXForCausalLM/' "$HF/config.json" >"$TMP/neox/config.json"
expect_refusal "architecture 'GPTNeoXForCausalLM' is not supported" \
    quantize "$TMP/neox" "$TMP/x.gguf" --type q8_0
[[ ! -e $TMP/x.gguf ]] || fail "a refused quantize left $TMP/x.gguf"
expect_refusal "give --model PATH and --file TEXT" perplexity --model "$ST"
head -c 100 "$TMP/text.txt" >"$TMP/short.txt"
expect_refusal "at least --ctx (128) are needed" perplexity --model "$ST" --file "$TMP/short.txt" \
    --ctx 128
printf 'bad \xff utf-8' >"$TMP/bad.txt"
expect_refusal "not valid UTF-8" perplexity --model "$ST" --file "$TMP/bad.txt" --ctx 4
expect_refusal "beyond the model's context" perplexity --model "$TINY" --file "$TMP/text.txt" \
    --ctx 4096
pass "bad types, missing arguments and files, unknown architectures, short and invalid texts are refused by name"
