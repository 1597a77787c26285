#!/usr/bin/env bash
# stories260K: what evaluation harnesses and the OpenAI SDK types send to
# /v1/completions. lm-evaluation-harness's local-completions log-likelihood
# request (echo, max_tokens 0, logprobs 1, temperature 0) scores a greedy
# continuation: each of its tokens' logprob equals the one the engine gave it
# while generating (within 1e-3: prefill and decode add in different
# orders), each is its position's argmax (is_greedy), the first prompt
# token's is null; as text and as batched token-id lists, streamed, n > 1,
# and again after a prefix-cache hit. max_tokens 0 without echo is a 400.
# Batches of prompts: choices prompt-major with the single requests' texts,
# usage summed, streamed with the right indexes, caps refused.
source "$(dirname "$0")/lib.sh"
need_stories
api_start "$STORIES"

pyapi "$STORIES/expected_greedy.json" <<'PY' || fail "scoring a continuation"
import json, sys
from apilib import call, status, sse, text_of
ctx = "Once upon a time"
gen = call("/v1/completions", {"prompt": ctx, "max_tokens": 40, "temperature": 0, "logprobs": 1})["choices"][0]
cont, glp = gen["text"], gen["logprobs"]
assert len(glp["tokens"]) == 40 and "".join(glp["tokens"]) == cont, glp["tokens"]
ctx_ids = call("/tokenize", {"prompt": ctx})["tokens"]
all_ids = call("/tokenize", {"prompt": ctx + cont})["tokens"]
assert len(all_ids) == len(ctx_ids) + 40 and all_ids[:len(ctx_ids)] == ctx_ids, "the text re-tokenizes differently"
n_ctx = len(ctx_ids)

def check_scored(c, prompt_text):
    lp = c["logprobs"]
    assert c["text"] == prompt_text, (c["text"], prompt_text)
    assert c["finish_reason"] == "length", c["finish_reason"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == len(lp["text_offset"]) == len(all_ids)
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert lp["tokens"][n_ctx:] == glp["tokens"], (lp["tokens"][n_ctx:], glp["tokens"])
    for i in range(40):
        assert abs(lp["token_logprobs"][n_ctx + i] - glp["token_logprobs"][i]) < 1e-3, (i, lp["token_logprobs"][n_ctx + i], glp["token_logprobs"][i])
    # lm-eval: sum over the continuation, greedy when each token is its top.
    s = sum(lp["token_logprobs"][n_ctx:])
    assert abs(s - sum(glp["token_logprobs"])) < 40e-3, s
    for t, top in zip(lp["token_logprobs"][n_ctx:], lp["top_logprobs"][n_ctx:]):
        assert len(top) == 1 and abs(max(top.values()) - t) < 1e-6, (t, top)
    # Offsets index the text: each token's text starts there (BOS reads empty).
    offs = lp["text_offset"]
    assert offs == sorted(offs) and offs[n_ctx] == len(ctx.encode()), offs
    raw = c["text"].encode()
    for tok, o in zip(lp["tokens"][2:], offs[2:]):
        assert raw[o:].startswith(tok.encode()), (tok, o)
    return lp

# The harness's request, as text.
body = {"prompt": ctx + cont, "echo": True, "max_tokens": 0, "logprobs": 1, "temperature": 0}
r = call("/v1/completions", body)
assert r["usage"]["prompt_tokens"] == len(all_ids) and r["usage"]["completion_tokens"] == 0, r["usage"]
a = check_scored(r["choices"][0], ctx + cont)
# Again: the blocks are in the prefix cache now, the positions still scored.
b = check_scored(call("/v1/completions", body)["choices"][0], ctx + cont)
assert all(x is None and y is None or abs(x - y) < 1e-5 for x, y in zip(a["token_logprobs"], b["token_logprobs"]))
# As lm-eval's tokenized requests: a batch of token-id lists, and n = 2.
other = call("/tokenize", {"prompt": "Lily went to the park."})["tokens"]
r = call("/v1/completions", dict(body, prompt=[all_ids, other], n=2))
assert [c["index"] for c in r["choices"]] == [0, 1, 2, 3]
for c in r["choices"][:2]:
    check_scored(c, ctx + cont)
for c in r["choices"][2:]:
    assert c["text"] == "Lily went to the park." and len(c["logprobs"]["tokens"]) == len(other)
assert r["usage"]["prompt_tokens"] == len(all_ids) + len(other), r["usage"]
# Older lm-eval: max_tokens 1, the last token dropped.
r = call("/v1/completions", dict(body, max_tokens=1))["choices"][0]
assert len(r["logprobs"]["tokens"]) == len(all_ids) + 1 and r["text"].startswith(ctx + cont)
# Streamed: the echo (with the prompt's logprobs) first, then the completion.
ev = sse("/v1/completions", dict(body, max_tokens=5, prompt=ctx))
first = ev[0]["choices"][0]
assert first["index"] == 0 and first["text"] == ctx and first["logprobs"]["token_logprobs"][0] is None, first
whole = call("/v1/completions", dict(body, max_tokens=5, prompt=ctx))["choices"][0]
assert text_of(ev)[0] == whole["text"] == ctx + cont[:len(whole["text"]) - len(ctx)], (text_of(ev), whole["text"])
toks = [t for e in ev for c in e["choices"] if c["logprobs"] for t in c["logprobs"]["tokens"]]
assert toks == whole["logprobs"]["tokens"], (toks, whole["logprobs"]["tokens"])
# echo without logprobs, and max_tokens 0 without echo (vLLM's 400).
r = call("/v1/completions", {"prompt": ctx, "echo": True, "max_tokens": 8, "temperature": 0})
assert r["choices"][0]["text"] == ctx + cont[:len(r["choices"][0]["text"]) - len(ctx)] and r["choices"][0]["logprobs"] is None
code, err = status("/v1/completions", {"prompt": ctx, "max_tokens": 0})
assert code == 400 and err["error"]["param"] == "max_tokens", (code, err)
PY
pass "echo + max_tokens 0 + logprobs scores a greedy continuation (lm-eval's request): logprobs = the generator's, is_greedy, text and ids, batched, streamed, cached"

pyapi <<'PY' || fail "batched prompts"
from apilib import call, status, sse, text_of
prompts = ["Once upon a time", "Lily", "The sun was", "One day, a"]
single = [call("/v1/completions", {"prompt": p, "max_tokens": 12, "temperature": 0}) for p in prompts]
r = call("/v1/completions", {"prompt": prompts, "max_tokens": 12, "temperature": 0, "n": 2})
ch = r["choices"]
assert [c["index"] for c in ch] == list(range(8)), [c["index"] for c in ch]
for i, s in enumerate(single):
    for j in range(2):
        assert ch[i * 2 + j]["text"] == s["choices"][0]["text"], (i, j, ch[i * 2 + j]["text"])
u = r["usage"]
assert u["prompt_tokens"] == sum(s["usage"]["prompt_tokens"] for s in single), u
assert u["completion_tokens"] == 2 * sum(s["usage"]["completion_tokens"] for s in single), u
assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
# Token-id lists give the same; streamed, each index its own text and one finish.
ids = [call("/tokenize", {"prompt": p})["tokens"] for p in prompts]
r2 = call("/v1/completions", {"prompt": ids, "max_tokens": 12, "temperature": 0})
assert [c["text"] for c in r2["choices"]] == [s["choices"][0]["text"] for s in single]
ev = sse("/v1/completions", {"prompt": prompts, "max_tokens": 12, "temperature": 0, "n": 2,
                             "stream_options": {"include_usage": True}})
got = text_of(ev)
assert got == {i: ch[i]["text"] for i in range(8)}, got
fins = sorted(c["index"] for e in ev for c in e["choices"] if c["finish_reason"])
assert fins == list(range(8)), fins
assert ev[-1]["choices"] == [] and ev[-1]["usage"] == u, ev[-1]
# A seeded sampled batch is reproducible and its prompts' samples differ.
b = {"prompt": prompts[:2], "max_tokens": 20, "temperature": 1, "n": 3, "seed": 5}
t1 = [c["text"] for c in call("/v1/completions", b)["choices"]]
assert t1 == [c["text"] for c in call("/v1/completions", b)["choices"]] and len(set(t1)) > 2, t1
# Caps and shapes: 400 naming prompt.
for bad in [["a"] * 129, [[1]] * 65, ["a", [1]], [[1], []], [[1, 99999]]]:
    body = {"prompt": bad, "max_tokens": 1}
    if len(bad) == 65:
        body["n"] = 2
    code, err = status("/v1/completions", body)
    assert code == 400 and err["error"]["param"] == "prompt" and err["error"]["type"] == "invalid_request_error", (bad[:3], code, err)
code, err = status("/v1/completions", {"prompt": ["a", "x" * 3000], "max_tokens": 1})
assert code == 400 and err["error"]["param"] == "prompt" and "prompt 1 of the batch" in err["error"]["message"], err
PY
pass "batched prompts: prompt-major choices equal the single requests, usage summed, streamed indexes, ids, seeds, caps"
api_stop
