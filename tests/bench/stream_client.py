#!/usr/bin/env python3
"""stream_client.py: streamed completions against an OpenAI-compatible URL,
timed per SSE event (stdlib only, one thread per concurrent stream).

  stream_client.py URL CONCURRENCY REQUESTS_PER_STREAM BODY_JSON [--cacert F] [--key K]

Prints one JSON line: ttft_ms and itl_ms samples' p50/p99, tokens (events
with text), wall seconds, tokens_per_s."""
import http.client, json, ssl, sys, threading, time, urllib.parse

url, conc, per, body = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
cacert = key = None
args = sys.argv[5:]
for i, a in enumerate(args):
    if a == "--cacert": cacert = args[i + 1]
    if a == "--key": key = args[i + 1]
u = urllib.parse.urlsplit(url)
ctx = ssl.create_default_context(cafile=cacert) if u.scheme == "https" else None
headers = {"content-type": "application/json"}
if key: headers["authorization"] = "Bearer " + key
ttft, itl, tokens, errors = [], [], [0], []
lock = threading.Lock()

def one(conn):
    t0 = time.perf_counter()
    conn.request("POST", u.path, body=body, headers=headers)
    r = conn.getresponse()
    if r.status != 200:
        raise RuntimeError("status %d: %s" % (r.status, r.read()[:200]))
    first, last, n, my_itl = None, None, 0, []
    buf = b""
    while True:
        chunk = r.read1(65536)
        if not chunk: break
        now = time.perf_counter()
        buf += chunk
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            if not ev.startswith(b"data: {"): continue
            j = json.loads(ev[6:])
            if not any(c.get("text") or (c.get("delta") or {}).get("content") for c in j["choices"]): continue
            n += 1
            if first is None: first = now
            else: my_itl.append((now - last) * 1000)
            last = now
    with lock:
        if first is not None: ttft.append((first - t0) * 1000)
        itl.extend(my_itl)
        tokens[0] += n

def worker():
    conn = (http.client.HTTPSConnection(u.hostname, u.port, context=ctx) if ctx
            else http.client.HTTPConnection(u.hostname, u.port))
    try:
        for _ in range(per): one(conn)
    except Exception as e:  # noqa: BLE001 - reported in the output
        with lock: errors.append(str(e))

t0 = time.perf_counter()
ts = [threading.Thread(target=worker) for _ in range(conc)]
for t in ts: t.start()
for t in ts: t.join()
wall = time.perf_counter() - t0

def pct(v, p):
    v = sorted(v)
    return round(v[min(len(v) - 1, int(p / 100 * len(v)))], 3) if v else None

print(json.dumps({"ttft_p50": pct(ttft, 50), "ttft_p99": pct(ttft, 99), "itl_p50": pct(itl, 50),
                  "itl_p99": pct(itl, 99), "tokens": tokens[0], "wall_s": round(wall, 3),
                  "tokens_per_s": round(tokens[0] / wall, 1), "errors": errors[:3]}))
sys.exit(1 if errors else 0)
