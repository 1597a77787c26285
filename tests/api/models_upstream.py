#!/usr/bin/env python3
"""models_upstream.py: an OpenAI-shaped upstream for test_upstream_models.sh.

Usage: models_upstream.py DIR. Writes its port to DIR/port once listening.
GET /v1/models answers 200 with {"object": "list", "data": [{"id": ...}]}
built from DIR/models (a JSON array of ids, written by the test) or 404 when
that file is absent, like a plain HTTP server. POST /v1/chat/completions
answers a chat completion naming the model it was asked for, so the test can
tell which upstream a request reached. GET /stats counts /v1/models reads.
"""
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DIR = sys.argv[1]
READS = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        global READS
        if self.path == "/v1/models":
            READS += 1
            try:
                with open(os.path.join(DIR, "models")) as f:
                    ids = json.load(f)
            except FileNotFoundError:
                return self.reply(404, {"error": "not found"})
            data = [{"id": i, "object": "model", "owned_by": "test"} for i in ids]
            return self.reply(200, {"object": "list", "data": data})
        if self.path == "/stats":
            return self.reply(200, {"models_reads": READS})
        self.reply(404, {"error": "not found"})

    def do_POST(self):
        n = int(self.headers.get("content-length") or 0)
        req = json.loads(self.rfile.read(n) or b"{}")
        if self.path != "/v1/chat/completions":
            return self.reply(404, {"error": "not found"})
        self.reply(200, {
            "id": "chatcmpl-test", "object": "chat.completion", "created": 1,
            "model": req.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant",
                                     "content": "upstream answered for " + str(req.get("model"))}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
        })


srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(os.path.join(DIR, "port.tmp"), "w") as f:
    f.write("%d\n" % srv.server_address[1])
os.rename(os.path.join(DIR, "port.tmp"), os.path.join(DIR, "port"))
srv.serve_forever()
