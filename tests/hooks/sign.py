#!/usr/bin/env python3
"""sign.py: webhook signatures made with Python's hmac module, an
implementation independent of the gateway's (mbedTLS), following each
provider's documentation.

  sign.py github SECRET_FILE BODY_FILE           -> sha256=<hex>
  sign.py stripe T BODY_FILE SECRET_FILE...      -> t=T,v1=<hex>[,v1=...]
  sign.py slack TS SECRET_FILE BODY_FILE         -> v0=<hex>
  sign.py hex SECRET_FILE BODY_FILE [TS]         -> <hex> (over "TS.body" with TS)
  sign.py base64 SECRET_FILE BODY_FILE [TS]      -> <base64>
A secret file's trailing newline is not part of the secret (as the CLI)."""
import base64
import hashlib
import hmac
import sys


def secret(path):
    with open(path, "rb") as f:
        return f.read().rstrip(b"\r\n")


def body(path):
    with open(path, "rb") as f:
        return f.read()


def mac(key, msg):
    return hmac.new(key, msg, hashlib.sha256)


kind = sys.argv[1]
if kind == "github":
    print("sha256=" + mac(secret(sys.argv[2]), body(sys.argv[3])).hexdigest())
elif kind == "stripe":
    t, b = sys.argv[2], body(sys.argv[3])
    sigs = [mac(secret(p), t.encode() + b"." + b).hexdigest() for p in sys.argv[4:]]
    print("t=" + t + "".join(",v1=" + s for s in sigs))
elif kind == "slack":
    ts = sys.argv[2]
    print("v0=" + mac(secret(sys.argv[3]), b"v0:" + ts.encode() + b":" + body(sys.argv[4])).hexdigest())
elif kind in ("hex", "base64"):
    msg = body(sys.argv[3])
    if len(sys.argv) > 4:
        msg = sys.argv[4].encode() + b"." + msg
    d = mac(secret(sys.argv[2]), msg)
    print(d.hexdigest() if kind == "hex" else base64.b64encode(d.digest()).decode())
else:
    sys.exit("unknown kind " + kind)
