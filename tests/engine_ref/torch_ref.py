#!/usr/bin/python3
"""Independent reference for ferry's forward pass.

Builds tiny random Llama-family models (written as Hugging Face directories:
config.json + hand-written safetensors, no `transformers` or `safetensors`
package needed) and computes their logits for a fixed prompt with plain
torch in float64, from exactly the weights stored (after F16/BF16 rounding).

    torch_ref.py OUTDIR      writes OUTDIR/<model>/ and OUTDIR/<model>/ref.json
                             + ref_logits.f32 ([prompt_len x vocab] float32)

The math is written from the architectures' definitions (Hugging Face's
modeling_llama / modeling_mistral / modeling_qwen2 / modeling_qwen3): RMSNorm,
rotate-half RoPE with linear or llama3 frequency scaling, GQA attention with a
causal mask, SiLU-gated MLP, q/k/v biases for Qwen2, per-head RMSNorm on q and
k for Qwen3, tied or separate lm_head.

Models marked "gguf" are written instead as OUTDIR/<model>/model.gguf, the
way llama.cpp's converter writes them (its tensor names and metadata keys,
dims row length first; for llama the q/k rows permuted from rotate-half into
ggml's adjacent pairs, and llama3 scaling as a rope_freqs.weight tensor of
per-frequency divisors), and ref.json names that file: ferry's GGUF loader
must give the same logits as the Hugging Face math on the same weights.
"""
import json
import math
import os
import struct
import sys

import torch

DT = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}

MODELS = [
    # name, arch, dtype, shape and options
    dict(name="llama_gqa_f32", arch="LlamaForCausalLM", dtype="F32", vocab=64, hidden=32,
         inter=48, layers=2, heads=4, kv=2, tied=False),
    dict(name="llama_mha_bf16_tied", arch="LlamaForCausalLM", dtype="BF16", vocab=80, hidden=32,
         inter=40, layers=2, heads=4, kv=4, tied=True),
    dict(name="qwen2_f16_bias", arch="Qwen2ForCausalLM", dtype="F16", vocab=72, hidden=48,
         inter=64, layers=2, heads=4, kv=1, tied=False, theta=1000000.0),
    dict(name="mistral_headdim_linear", arch="MistralForCausalLM", dtype="F32", vocab=64,
         hidden=32, inter=48, layers=3, heads=4, kv=2, head_dim=12, tied=False,
         scaling={"type": "linear", "factor": 2.0}),
    dict(name="llama3_sharded_bf16", arch="LlamaForCausalLM", dtype="BF16", vocab=96, hidden=64,
         inter=96, layers=2, heads=4, kv=2, tied=False, no_lm_head=True, shards=2,
         theta=500000.0,
         scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                  "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
    # GGUF files (see above).
    dict(name="gguf_llama_gqa_f16", arch="LlamaForCausalLM", dtype="F16", vocab=64, hidden=32,
         inter=48, layers=2, heads=4, kv=2, tied=False, gguf=True),
    dict(name="gguf_llama3_rope_freqs", arch="LlamaForCausalLM", dtype="F32", vocab=96,
         hidden=64, inter=96, layers=2, heads=4, kv=2, tied=True, theta=500000.0, gguf=True,
         scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                  "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
    dict(name="gguf_qwen2_bias_bf16", arch="Qwen2ForCausalLM", dtype="BF16", vocab=72,
         hidden=48, inter=64, layers=2, heads=4, kv=1, tied=True, theta=1000000.0, gguf=True),
    dict(name="gguf_qwen3_qk_norm", arch="Qwen3ForCausalLM", dtype="F32", vocab=80, hidden=32,
         inter=48, layers=2, heads=4, kv=2, head_dim=16, tied=False, theta=1000000.0,
         gguf=True),
]
PROMPT_LEN = 24


def tensors_for(m, gen):
    hd = m.get("head_dim") or m["hidden"] // m["heads"]
    H, Q, KV, I = m["hidden"], m["heads"] * hd, m["kv"] * hd, m["inter"]
    t = {}

    def w(name, *shape, norm=False):
        x = torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 - 1
        x = 1 + 0.2 * x if norm else x * (0.5 if len(shape) == 1 else 1.5 / math.sqrt(shape[-1]))
        t[name] = x.to(DT[m["dtype"]])

    w("model.embed_tokens.weight", m["vocab"], H)
    w("model.norm.weight", H, norm=True)
    if not m["tied"] and not m.get("no_lm_head"):
        w("lm_head.weight", m["vocab"], H)
    for l in range(m["layers"]):
        p = f"model.layers.{l}."
        w(p + "input_layernorm.weight", H, norm=True)
        w(p + "self_attn.q_proj.weight", Q, H)
        w(p + "self_attn.k_proj.weight", KV, H)
        w(p + "self_attn.v_proj.weight", KV, H)
        if m["arch"] == "Qwen2ForCausalLM":
            w(p + "self_attn.q_proj.bias", Q)
            w(p + "self_attn.k_proj.bias", KV)
            w(p + "self_attn.v_proj.bias", KV)
        if m["arch"] == "Qwen3ForCausalLM":
            w(p + "self_attn.q_norm.weight", hd, norm=True)
            w(p + "self_attn.k_norm.weight", hd, norm=True)
        w(p + "self_attn.o_proj.weight", H, Q)
        w(p + "post_attention_layernorm.weight", H, norm=True)
        w(p + "mlp.gate_proj.weight", I, H)
        w(p + "mlp.up_proj.weight", I, H)
        w(p + "mlp.down_proj.weight", H, I)
    return t


def tensor_bytes(x):
    if x.dtype == torch.float32:
        return x.contiguous().numpy().tobytes()
    return x.contiguous().view(torch.int16).numpy().tobytes()


def write_safetensors(path, tensors, dtype):
    hdr, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, x in tensors.items():
        b = tensor_bytes(x)
        hdr[name] = {"dtype": dtype, "shape": list(x.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(hdr).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def write_model(d, m, tensors):
    os.makedirs(d, exist_ok=True)
    cfg = {"architectures": [m["arch"]], "vocab_size": m["vocab"], "hidden_size": m["hidden"],
           "intermediate_size": m["inter"], "num_hidden_layers": m["layers"],
           "num_attention_heads": m["heads"], "num_key_value_heads": m["kv"],
           "max_position_embeddings": 256, "rms_norm_eps": 1e-5,
           "rope_theta": m.get("theta", 10000.0), "rope_scaling": m.get("scaling"),
           "tie_word_embeddings": m["tied"], "bos_token_id": 1, "eos_token_id": 2,
           "hidden_act": "silu", "torch_dtype": "float32"}
    if "head_dim" in m:
        cfg["head_dim"] = m["head_dim"]
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    n = m.get("shards", 1)
    if n == 1:
        write_safetensors(os.path.join(d, "model.safetensors"), tensors, m["dtype"])
        return
    names = list(tensors)
    wm = {}
    for i in range(n):
        fn = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        part = {k: tensors[k] for k in names[i::n]}
        write_safetensors(os.path.join(d, fn), part, m["dtype"])
        wm.update({k: fn for k in part})
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": wm}, f)


GGUF_TYPE = {"F32": 0, "F16": 1, "BF16": 30}
GGUF_ARCH = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3"}
GGUF_NAMES = [("input_layernorm.weight", "attn_norm.weight"),
              ("self_attn.q_proj.weight", "attn_q.weight"), ("self_attn.k_proj.weight", "attn_k.weight"),
              ("self_attn.v_proj.weight", "attn_v.weight"), ("self_attn.q_proj.bias", "attn_q.bias"),
              ("self_attn.k_proj.bias", "attn_k.bias"), ("self_attn.v_proj.bias", "attn_v.bias"),
              ("self_attn.q_norm.weight", "attn_q_norm.weight"),
              ("self_attn.k_norm.weight", "attn_k_norm.weight"),
              ("self_attn.o_proj.weight", "attn_output.weight"),
              ("post_attention_layernorm.weight", "ffn_norm.weight"),
              ("mlp.gate_proj.weight", "ffn_gate.weight"), ("mlp.up_proj.weight", "ffn_up.weight"),
              ("mlp.down_proj.weight", "ffn_down.weight")]


def to_adjacent(x, heads):
    """Rows of each head from rotate-half order (i, i + hd/2) into ggml's
    adjacent pairs (2i, 2i + 1), as llama.cpp's converter does for llama."""
    hd = x.shape[0] // heads
    return x.reshape(heads, 2, hd // 2, *x.shape[1:]).transpose(1, 2).reshape(x.shape)


def write_gguf(path, m, t):
    arch = GGUF_ARCH[m["arch"]]
    hd = m.get("head_dim") or m["hidden"] // m["heads"]
    s = lambda b: struct.pack("<Q", len(b)) + b
    kvs = []

    def kv(key, vt, payload):
        kvs.append(s(key.encode()) + struct.pack("<I", vt) + payload)

    kv("general.architecture", 8, s(arch.encode()))
    kv("general.name", 8, s(m["name"].encode()))
    u32 = lambda k, v: kv(k, 4, struct.pack("<I", v))
    f32 = lambda k, v: kv(k, 6, struct.pack("<f", v))
    u32(arch + ".context_length", 256)
    u32(arch + ".embedding_length", m["hidden"])
    u32(arch + ".feed_forward_length", m["inter"])
    u32(arch + ".block_count", m["layers"])
    u32(arch + ".attention.head_count", m["heads"])
    u32(arch + ".attention.head_count_kv", m["kv"])
    u32(arch + ".attention.key_length", hd)
    u32(arch + ".attention.value_length", hd)
    u32(arch + ".rope.dimension_count", hd)
    f32(arch + ".rope.freq_base", m.get("theta", 10000.0))
    f32(arch + ".attention.layer_norm_rms_epsilon", 1e-5)
    u32("tokenizer.ggml.bos_token_id", 1)
    u32("tokenizer.ggml.eos_token_id", 2)
    sc = m.get("scaling")
    ten = [("token_embd.weight", t["model.embed_tokens.weight"]),
           ("output_norm.weight", t["model.norm.weight"])]
    if "lm_head.weight" in t:
        ten.append(("output.weight", t["lm_head.weight"]))
    if sc and sc.get("rope_type", sc.get("type")) == "llama3":
        plain = dict(m, scaling=None)
        ten.append(("rope_freqs.weight", (inv_freq(plain, hd) / inv_freq(m, hd)).to(torch.float32)))
    elif sc:
        kv(arch + ".rope.scaling.type", 8, s(sc.get("rope_type", sc.get("type")).encode()))
        f32(arch + ".rope.scaling.factor", sc["factor"])
    for l in range(m["layers"]):
        for hf, gg in GGUF_NAMES:
            x = t.get(f"model.layers.{l}." + hf)
            if x is None:
                continue
            if arch == "llama" and gg.startswith(("attn_q.", "attn_k.")):
                x = to_adjacent(x, m["heads"] if gg.startswith("attn_q.") else m["kv"])
            ten.append((f"blk.{l}." + gg, x))
    info, data = b"", b""
    for name, x in ten:
        while len(data) % 32:
            data += b"\0"
        ty = "F32" if x.dim() == 1 or name == "rope_freqs.weight" else m["dtype"]
        x = x.to(torch.float32) if ty == "F32" else x
        info += s(name.encode()) + struct.pack("<I", x.dim())
        info += b"".join(struct.pack("<Q", d) for d in reversed(x.shape))
        info += struct.pack("<IQ", GGUF_TYPE[ty], len(data))
        data += tensor_bytes(x)
    head = b"GGUF" + struct.pack("<IQQ", 3, len(ten), len(kvs)) + b"".join(kvs) + info
    head += b"\0" * ((32 - len(head) % 32) % 32)
    with open(path, "wb") as f:
        f.write(head + data)


def inv_freq(m, hd):
    theta = m.get("theta", 10000.0)
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    sc = m.get("scaling")
    if not sc:
        return inv
    kind = sc.get("rope_type", sc.get("type"))
    if kind == "linear":
        return inv / sc["factor"]
    assert kind == "llama3"
    old, lo, hi, fac = (sc["original_max_position_embeddings"], sc["low_freq_factor"],
                        sc["high_freq_factor"], sc["factor"])
    wl = 2 * math.pi / inv
    out = torch.where(wl > old / lo, inv / fac, inv)
    smooth = (old / wl - lo) / (hi - lo)
    blended = (1 - smooth) * inv / fac + smooth * inv
    mid = (wl <= old / lo) & (wl >= old / hi)
    return torch.where(mid, blended, out)


def rmsnorm(x, w, eps=1e-5):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def forward(m, t, ids):
    g = {k: v.to(torch.float64) for k, v in t.items()}
    hd = m.get("head_dim") or m["hidden"] // m["heads"]
    T, nh, nkv = len(ids), m["heads"], m["kv"]
    pos = torch.arange(T, dtype=torch.float64)
    ang = pos[:, None] * inv_freq(m, hd)[None, :]
    cos = torch.cat((ang.cos(), ang.cos()), -1)[:, None, :]
    sin = torch.cat((ang.sin(), ang.sin()), -1)[:, None, :]
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    x = g["model.embed_tokens.weight"][torch.tensor(ids)]
    for l in range(m["layers"]):
        p = f"model.layers.{l}."
        h = rmsnorm(x, g[p + "input_layernorm.weight"])
        q = h @ g[p + "self_attn.q_proj.weight"].T
        k = h @ g[p + "self_attn.k_proj.weight"].T
        v = h @ g[p + "self_attn.v_proj.weight"].T
        if m["arch"] == "Qwen2ForCausalLM":
            q = q + g[p + "self_attn.q_proj.bias"]
            k = k + g[p + "self_attn.k_proj.bias"]
            v = v + g[p + "self_attn.v_proj.bias"]
        q, k, v = q.view(T, nh, hd), k.view(T, nkv, hd), v.view(T, nkv, hd)
        if p + "self_attn.q_norm.weight" in g:  # Qwen3: per head, before RoPE
            q = rmsnorm(q, g[p + "self_attn.q_norm.weight"])
            k = rmsnorm(k, g[p + "self_attn.k_norm.weight"])
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(nh // nkv, dim=1)
        v = v.repeat_interleave(nh // nkv, dim=1)
        s = torch.einsum("thd,shd->hts", q, k) / math.sqrt(hd) + mask
        a = torch.einsum("hts,shd->thd", torch.softmax(s, -1), v).reshape(T, nh * hd)
        x = x + a @ g[p + "self_attn.o_proj.weight"].T
        h = rmsnorm(x, g[p + "post_attention_layernorm.weight"])
        gate = h @ g[p + "mlp.gate_proj.weight"].T
        up = h @ g[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(gate) * up) @ g[p + "mlp.down_proj.weight"].T
    x = rmsnorm(x, g["model.norm.weight"])
    head = g.get("lm_head.weight", g["model.embed_tokens.weight"])
    return x @ head.T


def main():
    out = sys.argv[1]
    for i, m in enumerate(MODELS):
        gen = torch.Generator().manual_seed(1000 + i)
        t = tensors_for(m, gen)
        d = os.path.join(out, m["name"])
        if m.get("gguf"):
            os.makedirs(d, exist_ok=True)
            write_gguf(os.path.join(d, "model.gguf"), m, t)
        else:
            write_model(d, m, t)
        ids = torch.randint(0, m["vocab"], (PROMPT_LEN,), generator=gen).tolist()
        logits = forward(m, t, ids).to(torch.float32)
        with open(os.path.join(d, "ref_logits.f32"), "wb") as f:
            f.write(logits.contiguous().numpy().tobytes())
        with open(os.path.join(d, "ref.json"), "w") as f:
            ref = {"prompt": ids, "vocab": m["vocab"], "dtype": m["dtype"]}
            if m.get("gguf"):
                ref["model"] = "model.gguf"
            json.dump(ref, f)
        print(m["name"])


if __name__ == "__main__":
    main()
