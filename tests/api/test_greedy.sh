#!/usr/bin/env bash
# stories260K on the local listener: a completion at temperature 0 of "Once
# upon a time" (BOS added by the tokenizer's post-processor, as in
# expected_greedy.json's prompt_ids_with_bos) returns the reference text
# exactly; the streamed version's deltas concatenate to it; usage is right;
# logprobs have the shape OpenAI's SDKs read. The completion is the text the
# model wrote after the prompt, leading space included: for prompts cut from
# the reference at many token positions (as ids and as text), prompt +
# completion = the decode of all the ids, streamed and not.
source "$(dirname "$0")/lib.sh"
need_stories
api_start "$STORIES"
want=$(expected_text)
body='{"model":"stories260K","prompt":"Once upon a time","max_tokens":196,"temperature":0}'

[[ $(post /v1/completions "$body") == 200 ]] || fail "completion: $(cat "$TMP/out")"
jcheck "$TMP/out" 'j["object"] == "text_completion" and j["id"].startswith("cmpl-") and j["model"] == "stories260K" and isinstance(j["created"], int)' ||
    fail "envelope"
jcheck "$TMP/out" 'j["usage"] == {"prompt_tokens": 5, "completion_tokens": 196, "total_tokens": 201, "prompt_tokens_details": {"cached_tokens": j["usage"]["prompt_tokens_details"]["cached_tokens"]}}' ||
    fail "usage"
jcheck "$TMP/out" 'j["choices"][0]["finish_reason"] == "length"' || fail "finish_reason"
got=$(python3 -c 'import json,sys; sys.stdout.write(json.load(open(sys.argv[1]))["choices"][0]["text"])' "$TMP/out")
[[ $got == "$want" ]] || fail "greedy text differs:
got:  $got
want: $want"
pass "greedy completion = expected_greedy.json (196 tokens, usage 5 + 196)"

# Prompt as token ids (with BOS) gives the same.
ids=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["prompt_ids_with_bos"])' "$STORIES/expected_greedy.json")
[[ $(post /v1/completions "{\"prompt\":$ids,\"max_tokens\":196,\"temperature\":0}") == 200 ]] || fail "ids prompt"
got=$(python3 -c 'import json,sys; sys.stdout.write(json.load(open(sys.argv[1]))["choices"][0]["text"])' "$TMP/out")
[[ $got == "$want" ]] || fail "token-id prompt text differs"
pass "a token-id prompt gives the same text"

# Streamed, with usage: concatenated deltas equal the text; [DONE] last.
sbody='{"prompt":"Once upon a time","max_tokens":196,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}'
curl -sSN --max-time 120 -D "$TMP/hdr" -H 'content-type: application/json' --data "$sbody" \
    "http://$API/v1/completions" >"$TMP/sse" || fail "stream"
grep -qi '^content-type: text/event-stream' "$TMP/hdr" || fail "content type: $(cat "$TMP/hdr")"
got=$(sse_text "$TMP/sse") || fail "stream: $(tail -c 300 "$TMP/sse")"
[[ $got == "$want" ]] || fail "streamed text differs:
got:  $got"
python3 - "$TMP/sse" <<'PY' || fail "stream chunks"
import json, sys
ev = [json.loads(l[6:]) for l in open(sys.argv[1]).read().split("\n") if l.startswith("data: {")]
assert all(e["object"] == "text_completion" for e in ev)
assert len({e["id"] for e in ev}) == 1
fin = [c["finish_reason"] for e in ev for c in e["choices"] if c["finish_reason"]]
assert fin == ["length"], fin
last = ev[-1]
assert last["choices"] == [] and last["usage"]["prompt_tokens"] == 5 and last["usage"]["completion_tokens"] == 196, last
PY
pass "streamed deltas = expected text; one finish_reason; final usage chunk"

# Stop strings end the text before the stop; logprobs shape.
[[ $(post /v1/completions '{"prompt":"Once upon a time","max_tokens":50,"temperature":0,"stop":["Lily"],"logprobs":2}') == 200 ]] ||
    fail "stop: $(cat "$TMP/out")"
jcheck "$TMP/out" 'j["choices"][0]["text"] == ", there was a little girl named " and j["choices"][0]["finish_reason"] == "stop"' ||
    fail "stop string: $(cat "$TMP/out")"
jcheck "$TMP/out" 'len(j["choices"][0]["logprobs"]["tokens"]) == len(j["choices"][0]["logprobs"]["token_logprobs"]) > 0 and all(len(t) <= 2 for t in j["choices"][0]["logprobs"]["top_logprobs"])' ||
    fail "logprobs: $(cat "$TMP/out")"
# n = 3 with a seed: three choices, reproducible.
b3='{"prompt":"Once upon a time","max_tokens":20,"temperature":1,"n":3,"seed":7}'
post /v1/completions "$b3" >/dev/null
cp "$TMP/out" "$TMP/n1"
post /v1/completions "$b3" >/dev/null
python3 - "$TMP/n1" "$TMP/out" <<'PY' || fail "n=3 seeded"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
ta = [c["text"] for c in a["choices"]]
assert len(ta) == 3 and [c["index"] for c in a["choices"]] == [0, 1, 2]
assert ta == [c["text"] for c in b["choices"]], (ta, b)
PY
pass "stop string, logprobs, n=3 with a seed reproducible"

# The reference's ids cut at token M: the greedy completion of ids[:M] is
# decode(ids[:M+K]) minus decode(ids[:M]) (/detokenize decodes; BOS left out,
# it is special), whole and streamed; as text too, where the text encodes
# back to ids[:M]. M = 4 is "Once upon a" -> " time, there...".
pyapi "$STORIES/expected_greedy.json" <<'PY' || fail "completion text after cut prompts"
import json, sys
from apilib import call, sse, text_of
exp = json.load(open(sys.argv[1]))
streamed = lambda body: text_of(sse("/v1/completions", body)).get(0, "")
dec = lambda x: call("/detokenize", {"tokens": x[1:]})["prompt"]
ids = exp["prompt_ids_with_bos"] + exp["completion_ids"]
K, as_text = 12, 0
for m in list(range(4, 40)) + [60, 100, 150]:
    head, full = dec(ids[:m]), dec(ids[:m + K])
    assert full.startswith(head), (m, head, full)
    want = full[len(head):]
    body = {"prompt": ids[:m], "max_tokens": K, "temperature": 0}
    got = call("/v1/completions", body)["choices"][0]["text"]
    assert got == want, (m, head, got, want)
    assert streamed(body) == want, (m, "streamed")
    if call("/tokenize", {"prompt": head})["tokens"] == ids[:m]:
        as_text += 1
        body["prompt"] = head
        assert call("/v1/completions", body)["choices"][0]["text"] == want, (m, "text")
        assert head + streamed(body) == full, (m, "text streamed")
assert as_text >= 20, as_text
r = call("/v1/completions", {"prompt": "Once upon a", "max_tokens": 3, "temperature": 0})
assert r["choices"][0]["text"] == " time, there", r
# Prompts that end in a space, inside a word, in a multi-byte character:
# the completion continues the prompt's text (the prompt's tokens and the
# completion's, decoded together, are the prompt and then the completion).
for p in ["Once upon a ", "Once upon a ti", "Lily saw a caf\u00e9", "The sun \u2600", "One day, "]:
    r = call("/v1/completions", {"prompt": p, "max_tokens": 16, "temperature": 0, "logprobs": 0})
    c = r["choices"][0]
    toks = "".join(c["logprobs"]["tokens"])
    assert c["text"] == toks, (p, c["text"], toks)
    assert c["logprobs"]["text_offset"][0] == 0 and c["logprobs"]["text_offset"] == sorted(c["logprobs"]["text_offset"]), c
    assert streamed({"prompt": p, "max_tokens": 16, "temperature": 0}) == c["text"], p
PY
pass "completion text = decode(prompt + completion ids) minus decode(prompt), at 39 cut points, streamed too"

# logit_bias: -100 on the reference's first token (",", id 432) makes the
# runner-up come first; the logprobs are the raw ones (',' still the best).
pyapi "$STORIES/expected_greedy.json" <<'PY' || fail "logit_bias"
import json, sys
from apilib import call
first = json.load(open(sys.argv[1]))["completion_ids"][0]
body = {"prompt": "Once upon a time", "max_tokens": 1, "temperature": 0, "logprobs": 2}
plain = call("/v1/completions", body)["choices"][0]["logprobs"]
tops = sorted(plain["top_logprobs"][0].items(), key=lambda kv: -kv[1])
assert plain["tokens"] == [","] and tops[0][0] == ",", plain
body["logit_bias"] = {str(first): -100}
lp = call("/v1/completions", body)["choices"][0]["logprobs"]
assert lp["tokens"] == [tops[1][0]], (lp, tops)
assert abs(lp["token_logprobs"][0] - tops[1][1]) < 1e-6 and max(lp["top_logprobs"][0], key=lp["top_logprobs"][0].get) == ",", lp
PY
pass "logit_bias -100 bans the greedy token; logprobs stay raw"
api_stop
