#!/usr/bin/python3
"""Independent reference for ferry's GGUF reader and dequantization.

Written from the format's definition (ggml's docs/gguf.md for the file,
ggml-common.h's block layouts for the types) with numpy only; it shares no
code with ferry's C.

    gguf_dequant.py DUMP_TOOL [GGUF_FILE...]

With no GGUF_FILE it takes every GGUF file of $FERRY_TESTDATA (gguf/*.gguf
and models/stories260K/stories260K.gguf), saying so when that is absent.
For each GGUF_FILE, and for files this script writes itself (every type
ferry reads, from random data quantized here, with every metadata type,
nested arrays, GGUF v2 and v3 and a non-default alignment), it runs
`DUMP_TOOL FILE OUTDIR` (tests/engine_ref/gguf_dump.c: ferry's reader and
dequantizer) and compares with its own parse:
  - the version, alignment, every metadata key with its type and value,
  - every tensor's name, type, dims and offset,
  - every tensor's dequantized float32 values, bit for bit.

Why bit for bit: in every block format each product (an fp16 d with 11
significant bits, a scale of at most 8 bits, a quant of at most 6) fits in
float32's 24-bit significand, so it is exact; a weight is the exact value
of its formula rounded once to float32. This script computes the formula
in float64 (exact for the products; the one add or subtract of two float32
values is then rounded twice, 64 then 32 bits, which gives the correctly
rounded float32 result since 53 >= 2*24 + 2) and rounds to float32.
Exit 0: all equal; 1: a difference (printed); 77 (skip): /usr/bin/python3
cannot import numpy.
"""
import glob
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:
    print("SKIP: this python cannot import numpy (install the Debian package python3-numpy)")
    sys.exit(77)

# --- The file format -----------------------------------------------------------------

VT = ["u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64",
      "f64"]
FIXED = {"u8": "<u1", "i8": "<i1", "u16": "<u2", "i16": "<i2", "u32": "<u4", "i32": "<i4",
         "f32": "<f4", "bool": "<u1", "u64": "<u8", "i64": "<i8", "f64": "<f8"}
FLOATBITS = {"f32": "<u4", "f64": "<u8"}

# ggml type id -> (name, weights per block, bytes per block) for the types ferry reads.
GGML = {0: ("F32", 1, 4), 1: ("F16", 1, 2), 30: ("BF16", 1, 2), 8: ("Q8_0", 32, 34),
        2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24),
        12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210)}
GGML_ID = {v[0]: k for k, v in GGML.items()}


class Reader:
    def __init__(self, buf):
        self.b, self.p = buf, 0

    def take(self, n):
        if self.p + n > len(self.b):
            raise ValueError("truncated at byte %d" % self.p)
        s = self.b[self.p:self.p + n]
        self.p += n
        return s

    def u(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self):
        return bytes(self.take(self.u("<Q")))

    def value(self, vt):
        """The value in the dump's representation: integers and bools as decimal
        strings, floats as the hex of their bits, strings as text, arrays as
        {"type", "items"}."""
        name = VT[vt]
        if name == "string":
            return text(self.string())
        if name == "array":
            et = self.u("<I")
            n = self.u("<Q")
            return {"type": VT[et], "items": [self.value(et) for _ in range(n)]}
        raw = self.take(np.dtype(FIXED[name]).itemsize)
        if name in FLOATBITS:
            return "0x%0*x" % (2 * len(raw), int.from_bytes(raw, "little"))
        return str(int(np.frombuffer(raw, FIXED[name])[0]))


def text(b):
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return {"hex": b.hex()}


def parse(buf):
    r = Reader(buf)
    assert r.take(4) == b"GGUF", "not GGUF"
    version = r.u("<I")
    nt, nkv = r.u("<Q"), r.u("<Q")
    kv = {}
    for _ in range(nkv):
        key = r.string().decode("utf-8")
        vt = r.u("<I")
        kv[key] = {"type": VT[vt], "value": r.value(vt)}
    align = 32
    if "general.alignment" in kv:
        align = int(kv["general.alignment"]["value"])
    tensors = []
    for _ in range(nt):
        name = r.string().decode("utf-8")
        nd = r.u("<I")
        dims = [r.u("<Q") for _ in range(nd)]
        ty = r.u("<I")
        off = r.u("<Q")
        tensors.append({"name": name, "type": GGML[ty][0], "dims": dims, "offset": off})
    start = (r.p + align - 1) // align * align
    for t in tensors:
        t["offset"] += start
    return {"version": version, "alignment": align, "kv": kv, "tensors": tensors}


# --- Dequantization, from the block layouts ---------------------------------------------

def f16(blk, at):
    """The fp16 at byte AT of every block, as float64 (exact)."""
    return blk[:, at:at + 2].copy().view("<f2")[:, 0].astype(np.float64)


def nibbles32(qs):
    """16 bytes per block -> 32 values: weight j is the low nibble of byte j,
    weight j+16 the high nibble."""
    return np.concatenate([qs & 15, qs >> 4], axis=1).astype(np.int64)


def fifth_bits(blk, at):
    """The u32 at AT: bit k is bit 4 of weight k."""
    qh = blk[:, at:at + 4].copy().view("<u4").astype(np.int64)
    return ((qh >> np.arange(32)) & 1) << 4  # (nblocks, 1) >> (32,) -> (nblocks, 32)


def k_scales(s):
    """Q4_K/Q5_K's 12 bytes -> 8 six-bit scales and 8 six-bit mins."""
    s = s.astype(np.int64)
    sc = np.empty((len(s), 8), np.int64)
    mn = np.empty((len(s), 8), np.int64)
    sc[:, :4] = s[:, 0:4] & 63
    mn[:, :4] = s[:, 4:8] & 63
    sc[:, 4:] = (s[:, 8:12] & 15) | ((s[:, 0:4] >> 6) << 4)
    mn[:, 4:] = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    return sc, mn


def k_quants4(qs):
    """128 bytes -> 8 sub-blocks of 32: sub-block j reads bytes 32*(j//2)..+32,
    low nibbles for even j, high for odd."""
    q = np.empty((len(qs), 8, 32), np.int64)
    for j in range(8):
        chunk = qs[:, 32 * (j // 2):32 * (j // 2) + 32].astype(np.int64)
        q[:, j] = chunk & 15 if j % 2 == 0 else chunk >> 4
    return q


def dequant(tname, raw, n):
    _, bw, bb = GGML[GGML_ID[tname]]
    if tname == "F32":
        return raw.view("<f4").astype(np.float32)
    if tname == "F16":
        return raw.view("<f2").astype(np.float32)
    if tname == "BF16":
        return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
    blk = raw.reshape(-1, bb)
    if tname == "Q8_0":
        w = f16(blk, 0)[:, None] * blk[:, 2:34].view(np.int8).astype(np.float64)
    elif tname == "Q4_0":
        w = f16(blk, 0)[:, None] * (nibbles32(blk[:, 2:18]) - 8)
    elif tname == "Q4_1":
        w = f16(blk, 0)[:, None] * nibbles32(blk[:, 4:20]) + f16(blk, 2)[:, None]
    elif tname == "Q5_0":
        w = f16(blk, 0)[:, None] * ((nibbles32(blk[:, 6:22]) | fifth_bits(blk, 2)) - 16)
    elif tname == "Q5_1":
        q = nibbles32(blk[:, 8:24]) | fifth_bits(blk, 4)
        w = f16(blk, 0)[:, None] * q + f16(blk, 2)[:, None]
    elif tname in ("Q4_K", "Q5_K"):
        sc, mn = k_scales(blk[:, 4:16])
        if tname == "Q4_K":
            q = k_quants4(blk[:, 16:144])
        else:
            q = k_quants4(blk[:, 48:176])
            qh = blk[:, 16:48].astype(np.int64)  # bit j of qh[l]: bit 4 of weight l of sub-block j
            q |= ((qh[:, None, :] >> np.arange(8)[None, :, None]) & 1) << 4
        d, dmin = f16(blk, 0)[:, None, None], f16(blk, 2)[:, None, None]
        w = (d * sc[:, :, None] * q - dmin * mn[:, :, None]).reshape(len(blk), 256)
    elif tname == "Q6_K":
        ql, qh = blk[:, 0:128].astype(np.int64), blk[:, 128:192].astype(np.int64)
        sc = blk[:, 192:208].view(np.int8).astype(np.int64)
        d = f16(blk, 208)
        w = np.empty((len(blk), 256), np.float64)
        for idx in range(256):
            h, r = divmod(idx, 128)
            g, l = divmod(r, 32)
            lo = ql[:, 64 * h + l + 32 * (g & 1)]
            lo = lo & 15 if g < 2 else lo >> 4
            hi = (qh[:, 32 * h + l] >> (2 * g)) & 3
            s = sc[:, 8 * h + 2 * g + l // 16]
            w[:, idx] = d * s * ((lo | (hi << 4)) - 32)
    else:
        raise ValueError(tname)
    return w.reshape(-1).astype(np.float32)


# --- A writer, for the types and metadata no published file has -------------------------

def enc_str(s):
    b = s if isinstance(s, bytes) else s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def enc_value(vt, v):
    if vt == "string":
        return enc_str(v)
    if vt == "array":
        et, items = v
        return struct.pack("<IQ", VT.index(et), len(items)) + b"".join(
            enc_value(et, x) for x in items)
    return np.array([v], FIXED[vt]).tobytes()


def to_f16_bytes(x):
    return x.astype("<f2").tobytes()


def quantize(tname, x):
    """Row-major float32 X (a multiple of the block) -> the type's bytes, by
    the usual rounding rules; the test compares dequantizations of whatever
    bytes come out, and checks the round trip error against the scale."""
    x = x.astype(np.float32)
    if tname == "F32":
        return x.astype("<f4").tobytes()
    if tname == "F16":
        return to_f16_bytes(x)
    if tname == "BF16":
        u = x.view(np.uint32).astype(np.uint64)
        u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16  # round to nearest even
        return u.astype("<u2").tobytes()
    b = x.reshape(-1, 32).astype(np.float64)
    out = []
    if tname == "Q8_0":
        d = np.abs(b).max(1) / 127
        q = np.round(b / np.where(d == 0, 1, d)[:, None]).clip(-127, 127).astype(np.int8)
        for i in range(len(b)):
            out.append(to_f16_bytes(d[i:i + 1]) + q[i].tobytes())
    elif tname in ("Q4_0", "Q5_0"):
        top = 8 if tname == "Q4_0" else 16
        idx = np.abs(b).argmax(1)
        d = b[np.arange(len(b)), idx] / -top
        d16 = d.astype(np.float16).astype(np.float64)
        q = np.floor(b / np.where(d16 == 0, 1, d16)[:, None] + top + 0.5)
        q = q.clip(0, 2 * top - 1).astype(np.int64)
        for i in range(len(b)):
            out.append(to_f16_bytes(d16[i:i + 1]) + pack_nibbles(q[i], tname == "Q5_0"))
    else:  # Q4_1, Q5_1
        top = 15 if tname == "Q4_1" else 31
        lo, hi = b.min(1), b.max(1)
        d16 = ((hi - lo) / top).astype(np.float16).astype(np.float64)
        m16 = lo.astype(np.float16).astype(np.float64)
        q = np.round((b - m16[:, None]) / np.where(d16 == 0, 1, d16)[:, None]).clip(0, top)
        q = q.astype(np.int64)
        for i in range(len(b)):
            out.append(to_f16_bytes(d16[i:i + 1]) + to_f16_bytes(m16[i:i + 1]) +
                       pack_nibbles(q[i], tname == "Q5_1"))
    return b"".join(out)


def pack_nibbles(q, fifth):
    """32 quants -> (qh u32 when FIFTH) + 16 bytes, the layout nibbles32 reads."""
    qs = ((q[:16] & 15) | ((q[16:] & 15) << 4)).astype(np.uint8).tobytes()
    if not fifth:
        return qs
    qh = sum(int((q[k] >> 4) & 1) << k for k in range(32))
    return struct.pack("<I", qh) + qs


def random_blocks(tname, nblocks, rng):
    """Arbitrary block bytes (every bit pattern of the quants and scales is
    valid) with finite fp16 scales, including 0, negative and subnormal ones."""
    _, _, bb = GGML[GGML_ID[tname]]
    blk = rng.integers(0, 256, (nblocks, bb), dtype=np.uint8)
    scales = rng.standard_normal(nblocks * 2).astype(np.float16)
    special = [0.0, -0.0, 6e-8, -3e-5]  # zero, -0, subnormals
    scales[:min(4, scales.size)] = special[:scales.size]
    scales = scales.view(np.uint8).reshape(nblocks, 4)
    at = [208] if tname == "Q6_K" else [0, 2]
    for k, a in enumerate(at):
        blk[:, a:a + 2] = scales[:, 2 * k:2 * k + 2]
    return blk.tobytes()


def write_gguf(path, version, align, kvs, tensors):
    """KVS: [(key, type, value)]; TENSORS: [(name, type, dims, bytes)]."""
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    meta = b"".join(enc_str(k) + struct.pack("<I", VT.index(t)) + enc_value(t, v)
                    for k, t, v in kvs)
    infos, data = b"", b""
    for name, tname, dims, raw in tensors:
        data += b"\0" * (-len(data) % align)
        infos += enc_str(name) + struct.pack("<I", len(dims)) + b"".join(
            struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", GGML_ID[tname], len(data))
        data += raw
    body = head + meta + infos
    body += b"\0" * (-len(body) % align)
    with open(path, "wb") as f:
        f.write(body + data)


def synthetic_files(outdir):
    rng = np.random.default_rng(1234)
    kvs = [
        ("general.architecture", "string", "llama"),
        ("general.alignment", "u32", 64),
        ("t.u8", "u8", 255), ("t.i8", "i8", -128), ("t.u16", "u16", 65535),
        ("t.i16", "i16", -32768), ("t.u32", "u32", 4294967295), ("t.i32", "i32", -2147483648),
        ("t.f32", "f32", -1.5e-42), ("t.bool", "bool", 1), ("t.str.empty", "string", ""),
        ("t.str.utf8", "string", "h\u00e9llo \u2581w\u00f6rld"),
        ("t.str.bytes", "string", b"\xff\xfe\x00x"),
        ("t.u64", "u64", 18446744073709551615), ("t.i64", "i64", -9223372036854775808),
        ("t.f64", "f64", float("nan")), ("t.f64.neg0", "f64", -0.0),
        ("t.arr.empty", "array", ("f32", [])),
        ("t.arr.f32", "array", ("f32", [0.5, -2.0, float("inf")])),
        ("t.arr.bool", "array", ("bool", [0, 1, 1])),
        ("t.arr.str", "array", ("string", ["a", "", "<0x0A>", "\u2581the"])),
        ("t.arr.nested", "array", ("array", [("i16", [1, -2]), ("string", ["x", "yz"]),
                                             ("array", [("u8", [7])]), ("u64", [])])),
    ]
    tensors = []
    shapes = {"F32": [64, 3], "F16": [32, 2, 2], "BF16": [96], "Q8_0": [64, 4],
              "Q4_0": [32, 5], "Q4_1": [96, 2], "Q5_0": [64, 3], "Q5_1": [32, 1, 2, 3]}
    for tname, dims in shapes.items():
        n = int(np.prod(dims))
        x = rng.standard_normal(n).astype(np.float32) * rng.choice([1e-3, 1.0, 50.0])
        if tname in ("F16", "BF16"):
            x[:4] = [6.0e-8, -1e-40, float("inf"), -0.0]  # subnormals, inf, -0
        tensors.append(("q." + tname, tname, dims, quantize(tname, x), x))
    for tname in ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"):
        tensors.append(("rand." + tname, tname, [64, 3], random_blocks(tname, 6, rng), None))
    for tname in ("Q4_K", "Q5_K", "Q6_K"):
        tensors.append(("rand." + tname, tname, [512, 3], random_blocks(tname, 6, rng), None))
    files = []
    for version, align in ((3, 64), (2, 32)):
        path = os.path.join(outdir, "synthetic_v%d.gguf" % version)
        kv = [k for k in kvs if k[0] != "general.alignment" or align != 32]
        write_gguf(path, version, align, kv, [t[:4] for t in tensors])
        files.append(path)
    # The quantizers above are this script's own: their round trip shows the
    # reader of the layouts and the writer agree (error within a step).
    for name, tname, dims, raw, x in tensors:
        if x is None or tname in ("F32", "F16", "BF16"):
            continue
        y = dequant(tname, np.frombuffer(raw, np.uint8), x.size)
        b = x.reshape(-1, 32).astype(np.float64)
        # The quantization step: amax/127, amax/8, amax/16, range/15, range/31;
        # an error within one step (plus fp16 rounding of the scales) is right,
        # a misplaced nibble or bit is off by many steps.
        span = {"Q8_0": np.abs(b).max(1) / 127, "Q4_0": np.abs(b).max(1) / 8,
                "Q5_0": np.abs(b).max(1) / 16, "Q4_1": np.ptp(b, 1) / 15,
                "Q5_1": np.ptp(b, 1) / 31}[tname]
        tol = (span + np.abs(b).max(1) / 512).repeat(32)
        if not np.all(np.abs(y - x) <= tol):
            raise SystemExit("FAIL: %s: this script's own quantize/dequantize disagree" % name)
    return files


# --- Comparison ------------------------------------------------------------------------

def check_file(tool, path, tmp):
    buf = np.fromfile(path, np.uint8)
    ref = parse(memoryview(buf.tobytes()))
    out = os.path.join(tmp, "dump")
    os.makedirs(out, exist_ok=True)
    r = subprocess.run([tool, path, out], capture_output=True, text=True)
    if r.returncode != 0:
        print("FAIL: %s: %s refused it: %s" % (path, tool, r.stderr.strip()))
        return 1
    with open(os.path.join(out, "dump.json")) as f:
        got = json.load(f)
    bad = 0
    for field in ("version", "alignment"):
        if got[field] != ref[field]:
            print("FAIL: %s: %s %r, reference %r" % (path, field, got[field], ref[field]))
            bad += 1
    if got["kv"] != ref["kv"]:
        for k in sorted(set(got["kv"]) | set(ref["kv"])):
            if got["kv"].get(k) != ref["kv"].get(k):
                print("FAIL: %s: key %s: ferry %.200r, reference %.200r" %
                      (path, k, got["kv"].get(k), ref["kv"].get(k)))
        bad += 1
    if [(t["name"], t["type"], t["dims"], t["offset"]) for t in got["tensors"]] != \
            [(t["name"], t["type"], t["dims"], t["offset"]) for t in ref["tensors"]]:
        print("FAIL: %s: the tensor lists differ" % path)
        return bad + 1
    types = {}
    for i, t in enumerate(ref["tensors"]):
        _, bw, bb = GGML[GGML_ID[t["type"]]]
        n = int(np.prod(t["dims"]))
        raw = buf[t["offset"]:t["offset"] + n // bw * bb]
        want = dequant(t["type"], raw, n)
        have = np.fromfile(os.path.join(out, got["tensors"][i]["file"]), np.float32)
        if have.shape != want.shape or not np.array_equal(have.view(np.uint32),
                                                          want.view(np.uint32)):
            diff = np.flatnonzero(have.view(np.uint32) != want.view(np.uint32)) \
                if have.shape == want.shape else [0]
            j = diff[0]
            if bad >= 8:
                bad += 1
                continue
            print("FAIL: %s: tensor %s (%s): %d of %d weights differ; first at %d: ferry %r, "
                  "reference %r" % (path, t["name"], t["type"], len(diff), n, j,
                                    have[j] if j < have.size else None, want[j]))
            bad += 1
        types[t["type"]] = types.get(t["type"], 0) + 1
        os.unlink(os.path.join(out, got["tensors"][i]["file"]))
    print("%s: %s: %d keys, tensors %s" % ("ok" if not bad else "FAIL", os.path.basename(path),
                                           len(ref["kv"]), types))
    return bad


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    tool, files = sys.argv[1], sys.argv[2:]
    td = os.environ.get("FERRY_TESTDATA", "")
    if not files and os.path.isdir(os.path.join(td, "gguf")):
        files = sorted(glob.glob(os.path.join(td, "gguf", "*.gguf")))
        files.append(os.path.join(td, "models", "stories260K", "stories260K.gguf"))
        if len(files) < 7:
            raise SystemExit("FAIL: %s/gguf holds %d GGUF files, expected 6" % (td, len(files) - 1))
    elif not files:
        print("note: FERRY_TESTDATA/gguf is absent: only this script's own files are compared")
    bad, seen = 0, set()
    with tempfile.TemporaryDirectory(prefix="fy_gguf_ref.") as tmp:
        for path in synthetic_files(tmp) + files:
            bad += check_file(tool, path, tmp)
            seen |= {t["type"] for t in parse(memoryview(open(path, "rb").read()))["tensors"]}
    missing = set(GGML_ID) - seen
    if missing:
        print("FAIL: no tensor of type %s was compared" % sorted(missing))
        bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
