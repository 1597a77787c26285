#!/usr/bin/env python3
"""sse_hold.py: opens COUNT concurrent server-sent-event streams and holds them.

    sse_hold.py [--tls] [--header 'NAME: VALUE']... [--parallel P] [--timeout S]
                HOST:PORT PATH COUNT

Each connection sends `GET PATH` (HTTP/1.1, with the --header lines; over
TLS with --tls, the certificate not checked: this is a load generator) and
waits for the response head (200) and the first event (a line starting with
"data:" ended by a blank line). At most P connections are being set up at
once. When every connection has its event or failed, prints one line

    open=N failed=F setup_s=T

on stdout, then holds the streams open, counting any the server closes, until
SIGTERM or SIGINT, when it prints `closed_while_held=K` and exits (status 0 if
nothing failed). Standard library only: selectors and non-blocking sockets.
"""
import argparse
import errno
import selectors
import signal
import socket
import ssl
import sys
import time


class Conn:
    __slots__ = ("sock", "state", "buf", "out")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--header", action="append", default=[])
    ap.add_argument("--parallel", type=int, default=128)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("addr")
    ap.add_argument("path")
    ap.add_argument("count", type=int)
    a = ap.parse_args()
    host, port = a.addr.rsplit(":", 1)
    port = int(port)
    extra = "".join(h + "\r\n" for h in a.header)
    request = (f"GET {a.path} HTTP/1.1\r\nHost: {a.addr}\r\n"
               f"Accept: text/event-stream\r\nUser-Agent: sse_hold\r\n{extra}\r\n").encode()
    ctx = None
    if a.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE

    sel = selectors.DefaultSelector()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    started = opened = failed = closed = 0
    setting_up = 0
    held = []
    errors = {}
    t0 = time.monotonic()

    def fail(c, why):
        nonlocal failed, setting_up
        failed += 1
        setting_up -= 1
        errors[why] = errors.get(why, 0) + 1
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    def want(c, ev):
        sel.modify(c.sock, ev, c)

    def start_one():
        nonlocal started, setting_up
        started += 1
        setting_up += 1
        c = Conn()
        c.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.sock.setblocking(False)
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.state = "connect"
        c.buf = b""
        c.out = request
        rc = c.sock.connect_ex((host, port))
        if rc not in (0, errno.EINPROGRESS):
            sel.register(c.sock, selectors.EVENT_WRITE, c)
            fail(c, f"connect: {errno.errorcode.get(rc, rc)}")
            return
        sel.register(c.sock, selectors.EVENT_WRITE, c)

    def step(c):
        """Advances C's state machine as far as it goes without blocking."""
        nonlocal opened, setting_up, closed
        try:
            if c.state == "connect":
                rc = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if rc:
                    return fail(c, f"connect: {errno.errorcode.get(rc, rc)}")
                if ctx:
                    sel.unregister(c.sock)
                    c.sock = ctx.wrap_socket(c.sock, do_handshake_on_connect=False)
                    sel.register(c.sock, selectors.EVENT_WRITE, c)
                    c.state = "handshake"
                else:
                    c.state = "send"
            if c.state == "handshake":
                c.sock.do_handshake()
                c.state = "send"
            if c.state == "send":
                while c.out:
                    n = c.sock.send(c.out)
                    c.out = c.out[n:]
                c.state = "read"
                want(c, selectors.EVENT_READ)
            if c.state == "read":
                while True:
                    d = c.sock.recv(65536)
                    if not d:
                        return fail(c, "closed before the first event")
                    c.buf += d
                    head, sep, body = c.buf.partition(b"\r\n\r\n")
                    if sep:
                        status = head.split(b"\r\n", 1)[0]
                        if b" 200 " not in status + b" ":
                            return fail(c, "status " + status.decode(errors="replace"))
                        if b"data:" in body and b"\n\n" in body[body.index(b"data:"):]:
                            c.state = "held"
                            c.buf = b""
                            opened += 1
                            setting_up -= 1
                            held.append(c)
                            return
            if c.state == "held":
                d = c.sock.recv(65536)
                if not d:
                    closed += 1
                    c.state = "closed"
                    sel.unregister(c.sock)
                    c.sock.close()
        except ssl.SSLWantReadError:
            want(c, selectors.EVENT_READ)
        except ssl.SSLWantWriteError:
            want(c, selectors.EVENT_WRITE)
        except BlockingIOError:
            want(c, selectors.EVENT_WRITE if c.state == "send" else selectors.EVENT_READ)
        except (OSError, ssl.SSLError) as e:
            if c.state == "held":
                closed += 1
                c.state = "closed"
                sel.unregister(c.sock)
                c.sock.close()
            else:
                fail(c, f"{c.state}: {type(e).__name__} {e}")

    reported = False
    while not stop:
        while started < a.count and setting_up < a.parallel:
            start_one()
        if not reported and opened + failed == a.count:
            print(f"open={opened} failed={failed} setup_s={time.monotonic() - t0:.1f}", flush=True)
            for why, n in sorted(errors.items()):
                print(f"sse_hold: {n} x {why}", file=sys.stderr)
            reported = True
        if not reported and time.monotonic() - t0 > a.timeout:
            print(f"open={opened} failed={failed + a.count - opened - failed} setup_s=timeout",
                  flush=True)
            for why, n in sorted(errors.items()):
                print(f"sse_hold: {n} x {why}", file=sys.stderr)
            reported = True
        for key, _ in sel.select(timeout=0.5):
            step(key.data)
    print(f"closed_while_held={closed}", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
