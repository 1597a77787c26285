#!/usr/bin/env python3
"""recorder.py DIR: an upstream for the webhook tests. Records every request
it receives, byte for byte, so a test can check what reached the runner's
side: DIR/req.N.json (method, target, headers in order) and DIR/req.N.body
(the raw body), N = 1, 2, ... in arrival order. Answers with the status in
DIR/status when that file exists (to make the runner fail), else 200 with
"recorded N\\n". A request whose target has gate=G in its query is recorded
on arrival, then held until GET /release?name=G (the gate stays open after),
so a test can keep a delivery in flight for exactly as long as it needs.
Prints its port on stdout once listening."""
import http.server
import json
import os
import sys
import threading
import urllib.parse

DIR = sys.argv[1]
lock = threading.Lock()
count = [0]
gates = threading.Condition()
opened = set()


def gate_of(target):
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)
    return q.get("gate", [None])[0]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        status = 200
        try:
            with open(os.path.join(DIR, "status")) as f:
                status = int(f.read().strip())
        except (OSError, ValueError):
            pass
        with lock:
            count[0] += 1
            k = count[0]
            meta = {"method": self.command, "target": self.path,
                    "headers": [[a, b] for a, b in self.headers.items()], "status": status}
            with open(os.path.join(DIR, "req.%d.body" % k), "wb") as f:
                f.write(body)
            tmp = os.path.join(DIR, "req.%d.json.tmp" % k)
            with open(tmp, "w") as f:
                json.dump(meta, f)
            os.rename(tmp, os.path.join(DIR, "req.%d.json" % k))
        g = gate_of(self.path)
        if g is not None:
            with gates:
                gates.wait_for(lambda: g in opened)
        out = ("recorded %d\n" % k).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(out)))
        self.send_header("X-Recorder", "yes")
        self.end_headers()
        self.wfile.write(out)

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        if u.path != "/release":
            self.send_error(404)
            return
        with gates:
            opened.add(urllib.parse.parse_qs(u.query).get("name", [""])[0])
            gates.notify_all()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(srv.server_address[1], flush=True)
srv.serve_forever()
