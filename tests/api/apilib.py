"""apilib.py: what the API tests' Python snippets share (pyapi in lib.sh).

call(path, body) POSTs JSON to the API and returns the parsed answer (a
status other than 200 fails an assertion naming it; status() returns the
status and the answer); sse(path, body)
returns a stream's events, checking that [DONE] ends it; text_of(events)
concatenates the choices' text per index. The API is http://$API, or
$API_BASE (e.g. a gateway's https://host:port/r/runner) with $API_KEY as a
bearer key and $API_CA as the CA to verify it with."""
import json
import os
import ssl
import urllib.error
import urllib.request

BASE = os.environ.get("API_BASE") or "http://" + os.environ["API"]
KEY = os.environ.get("API_KEY")
CTX = ssl.create_default_context(cafile=os.environ["API_CA"]) if os.environ.get("API_CA") else None


def request(path, body, base=None, timeout=120):
    """POSTs to BASE + PATH (or to another BASE: an https one gets the key
    and CA too, a plain http one neither)."""
    url = (base or BASE) + path
    gateway = not base or url.startswith("https:")
    headers = {"content-type": "application/json"}
    if KEY and gateway:
        headers["authorization"] = "Bearer " + KEY
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    ctx = CTX if gateway and url.startswith("https:") else None
    return urllib.request.urlopen(req, timeout=timeout, context=ctx).read().decode()


def status(path, body, base=None):
    """(status, parsed body) without raising for errors."""
    try:
        return 200, json.loads(request(path, body, base))
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode() or "null")


def call(path, body, base=None):
    """The answer to a request that must succeed (an AssertionError names it)."""
    code, answer = status(path, body, base)
    assert code == 200, "%s %s: %d %s" % (path, json.dumps(body)[:300], code, json.dumps(answer)[:500])
    return answer


def sse(path, body, base=None):
    ev = [l[6:] for l in request(path, dict(body, stream=True), base).split("\n") if l.startswith("data: ")]
    assert ev and ev[-1] == "[DONE]", ev[-2:]
    return [json.loads(e) for e in ev[:-1]]


def text_of(events):
    """{index: concatenated text} of a completion or chat stream."""
    out = {}
    for e in events:
        for c in e["choices"]:
            t = c.get("text")
            if t is None:
                t = (c.get("delta") or {}).get("content") or ""
            out[c["index"]] = out.get(c["index"], "") + t
    return out
