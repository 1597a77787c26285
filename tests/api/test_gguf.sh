#!/usr/bin/env bash
# GGUF models through `ferry-runner run` and the local API, the way a user
# serves the files they have:
#   - --model stories260K.gguf: /v1/models names it by its general.name; the
#     greedy completion of "Once upon a time" (tokenized by the GGUF's own
#     vocabulary, BOS added) is expected_greedy.json's text, as text and as
#     ids, streamed too; the first token's top logprobs are llama.cpp's for
#     that file (llama_cpp_reference.json, within 1e-2); the file has no chat
#     template, so chat answers 400 until --chat-template gives one, whose
#     bos_token is the GGUF's "<s>";
#   - --model ollama:stories:260k from a store built here (manifest + blob,
#     OLLAMA_MODELS) is served as "stories:260k", and --served-model-name
#     still wins;
#   - start-up refusals name what is wrong: no such Ollama model, a corrupt
#     GGUF (truncated), a directory that is no model;
#   - --help names the Ollama layers ferry does not use.
source "$(dirname "$0")/lib.sh"
GGUF=$STORIES/stories260K.gguf
[[ -f $GGUF && -f $STORIES/expected_greedy.json ]] ||
    skip "stories260K.gguf not found under FERRY_TESTDATA ($STORIES)"
REF=${FERRY_TESTDATA}/gguf/llama_cpp_reference.json
want=$(expected_text)

completion_text() {
    python3 -c 'import json,sys; sys.stdout.write(json.load(open(sys.argv[1]))["choices"][0]["text"])' "$TMP/out"
}

# --- a GGUF file --------------------------------------------------------------------
api_start "$GGUF"
[[ $(get /v1/models) == 200 ]] || fail "/v1/models"
jcheck "$TMP/out" '[m["id"] for m in j["data"]] == ["llama"]' || fail "model id: $(cat "$TMP/out")"
body='{"model":"llama","prompt":"Once upon a time","max_tokens":196,"temperature":0}'
[[ $(post /v1/completions "$body") == 200 ]] || fail "completion: $(cat "$TMP/out")"
jcheck "$TMP/out" 'j["usage"]["prompt_tokens"] == 5 and j["usage"]["completion_tokens"] == 196' ||
    fail "usage"
[[ $(completion_text) == "$want" ]] || fail "greedy text differs:
got:  $(completion_text)
want: $want"
ids=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["prompt_ids_with_bos"])' "$STORIES/expected_greedy.json")
[[ $(post /v1/completions "{\"prompt\":$ids,\"max_tokens\":196,\"temperature\":0}") == 200 ]] || fail "ids prompt"
[[ $(completion_text) == "$want" ]] || fail "token-id prompt text differs"
sbody='{"prompt":"Once upon a time","max_tokens":196,"temperature":0,"stream":true}'
curl -sSN --max-time 120 -H 'content-type: application/json' --data "$sbody" \
    "http://$API/v1/completions" >"$TMP/sse" || fail "stream"
[[ $(sse_text "$TMP/sse") == "$want" ]] || fail "streamed text differs"
pass "stories260K.gguf: the GGUF's tokenizer and weights give expected_greedy.json's 196 tokens, as text, ids and streamed"

if [[ -f $REF ]]; then
    [[ $(post /v1/completions '{"prompt":"Once upon a time","max_tokens":1,"temperature":0,"logprobs":5}') == 200 ]] ||
        fail "logprobs"
    python3 - "$TMP/out" "$REF" <<'PY' || fail "logprobs vs llama.cpp"
import json, sys
got = json.load(open(sys.argv[1]))["choices"][0]["logprobs"]["top_logprobs"][0]
ref = json.load(open(sys.argv[2]))["stories260K-F32.gguf"][0]["top5_logprobs"][0]
g = sorted(got.values(), reverse=True)
assert len(g) == 5, got
for (tid, lp), mine in zip(ref, g):
    assert abs(lp - mine) <= 1e-2, (ref, got)
PY
    pass "stories260K.gguf: first-token top-5 logprobs = llama.cpp's within 1e-2"
fi

[[ $(post /v1/chat/completions '{"messages":[{"role":"user","content":"Once upon a time"}],"max_tokens":4}') == 400 ]] ||
    fail "chat without a template: $(cat "$TMP/out")"
grep -q 'no chat template' "$API_LOG" || fail "no warning about the missing chat template"
api_stop
pass "a GGUF without tokenizer.chat_template: chat answers 400, the start-up log says why"

# --chat-template: the GGUF's BOS string is the template's bos_token.
printf '%s' "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}" >"$TMP/t.jinja"
api_start "$GGUF" --chat-template "$TMP/t.jinja" --served-model-name tiny-stories
[[ $(get /v1/models) == 200 ]] && jcheck "$TMP/out" '[m["id"] for m in j["data"]] == ["tiny-stories"]' ||
    fail "--served-model-name: $(cat "$TMP/out")"
[[ $(post /v1/chat/completions '{"messages":[{"role":"user","content":"Once upon a time"}],"max_tokens":20,"temperature":0}') == 200 ]] ||
    fail "chat: $(cat "$TMP/out")"
jcheck "$TMP/out" 'j["usage"]["prompt_tokens"] == 5' || fail "chat prompt: BOS once, then the 4 tokens"
got=$(python3 -c 'import json,sys; sys.stdout.write(json.load(open(sys.argv[1]))["choices"][0]["message"]["content"])' "$TMP/out")
[[ $want == "$got"* && -n $got ]] || fail "chat text: $got"
api_stop
pass "--chat-template with the GGUF's <s> as bos_token; --served-model-name overrides general.name"

# --- ollama: -------------------------------------------------------------------------
store=$TMP/ollama
mkdir -p "$store/blobs" "$store/manifests/registry.ollama.ai/library/stories"
hex=$(sha256sum "$GGUF" | cut -d' ' -f1)
size=$(stat -c %s "$GGUF")
ln -s "$GGUF" "$store/blobs/sha256-$hex"
cat >"$store/manifests/registry.ollama.ai/library/stories/260k" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
 "config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:$(printf '0%.0s' {1..64})","size":2},
 "layers":[{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:$hex","size":$size},
  {"mediaType":"application/vnd.ollama.image.params","digest":"sha256:$(printf '1%.0s' {1..64})","size":3}]}
EOF
OLLAMA_MODELS=$store api_start ollama:stories:260k
[[ $(get /v1/models) == 200 ]] && jcheck "$TMP/out" '[m["id"] for m in j["data"]] == ["stories:260k"]' ||
    fail "ollama model id: $(cat "$TMP/out")"
[[ $(post /v1/completions '{"model":"stories:260k","prompt":"Once upon a time","max_tokens":30,"temperature":0}') == 200 ]] ||
    fail "ollama completion: $(cat "$TMP/out")"
[[ $want == "$(completion_text)"* ]] || fail "ollama text: $(completion_text)"
api_stop
pass "ollama:stories:260k from OLLAMA_MODELS: served as stories:260k, the same greedy text"

# --- refusals at start-up ------------------------------------------------------------
refused() { # refused WANT ARGS...: the runner exits 2 at once and says WANT (on stderr)
    local want=$1 rc=0
    shift
    "$BIN/ferry-runner" run --listen 127.0.0.1:0 "$@" >"$TMP/refused.log" 2>&1 || rc=$?
    [[ $rc == 2 ]] || fail "exit status $rc, not 2, for $*: $(cat "$TMP/refused.log")"
    grep -qF -- "$want" "$TMP/refused.log" || fail "for $*: no '$want' in: $(cat "$TMP/refused.log")"
}
OLLAMA_MODELS=$store refused "ollama:nosuch:latest: no such model in the Ollama store $store" --model ollama:nosuch
OLLAMA_MODELS=$store refused "ollama:stories:7b: no tag '7b'" --model ollama:stories:7b
OLLAMA_MODELS=$TMP/none refused "no Ollama store: OLLAMA_MODELS is $TMP/none, which is not a directory" --model ollama:stories
head -c 100000 "$GGUF" >"$TMP/cut.gguf"
refused "cannot load the model: $TMP/cut.gguf: " --model "$TMP/cut.gguf"
mkdir "$TMP/empty"
refused "cannot load the model: " --model "$TMP/empty"
pass "start-up refusals: no Ollama model, no tag, no store, a truncated GGUF, an empty directory"

"$BIN/ferry-runner" run --help >"$TMP/help" || fail "--help"
for word in template params system license projector adapter "ollama:NAME" "FILE.gguf"; do
    grep -q -- "$word" "$TMP/help" || fail "--help does not name '$word'"
done
pass "--help names GGUF files, ollama: and the Ollama layers ferry does not use"
