#!/usr/bin/env python3
"""A small HTTP/1.1 origin server for the HAProxy end-to-end tests and for
`make run` (stdlib only, one thread per connection, keep-alive).

    python backend.py --port 8080 [--host 127.0.0.1] [--port-file FILE]

Endpoints:
  GET  /                 a small HTML page
  GET  /bytes/<n>        n bytes of the test pattern (pattern() below), streamed
                         with a Content-Length; HEAD answers the head alone
  GET  /text/<n>         n bytes of compressible text/plain (for compression)
  GET  /f/<n>-<tag>      n bytes that differ from file to file: file_body()
                         below, so that a client that mixes up multiplexed
                         responses is caught (the interop matrix)
  POST|PUT /echo         the request body streamed back: with a Content-Length
                         when the request had one, chunked when it was chunked
  POST|PUT /sink         reads and drops the body (Content-Length or chunked),
                         then answers the number of bytes it got, as text
  GET  /headers          the request line and headers received, as JSON
  GET  /trailers         a chunked body followed by a trailer
                         `x-checksum: <sha256 of the body>`
  GET  /slow?ms=N[&n=B]  waits N ms (at most 30 s), then answers B bytes
                         (default 5) of the pattern
Anything else is a 404.
"""

import argparse
import hashlib
import json
import os
import random
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

KIB = 1024
MIB = 1024 * KIB
MAX_BYTES = 1 << 40     # /bytes/<n> is streamed, so n is bounded only for sanity
CHUNK = 256 * KIB       # the pattern's period (65536) divides it


def _pattern_period() -> bytes:
    # Byte i is (i*31 + (i >> 8)) & 0xff (as the interop tests' pattern): it
    # repeats every 65536 bytes.
    return bytes((31 * j + k) & 0xFF for k in range(256) for j in range(256))


PERIOD = _pattern_period()
BLOCK = PERIOD * (CHUNK // len(PERIOD))     # CHUNK bytes, starting at offset 0


def pattern_chunks(n: int, chunk: int = CHUNK):
    """The first n bytes of the pattern, as memoryviews of at most `chunk`
    bytes (chunk must be a multiple of 65536 and at most CHUNK)."""
    view = memoryview(BLOCK)
    left = n
    while left > 0:
        k = min(left, chunk)
        yield view[:k]
        left -= k


MAX_FILE = 64 * MIB     # /f/ bodies are built in memory


def file_body(name: str) -> bytes | None:
    """The body of /f/<name>, where name is `<n>-<tag>`: n pseudo-random
    bytes seeded by the name itself; None when the name is not of that form
    or n is out of range."""
    size, sep, tag = name.partition("-")
    if not sep or not size.isdigit() or not tag or "/" in tag:
        return None
    n = int(size)
    if n > MAX_FILE:
        return None
    return random.Random(name).randbytes(n)


def pattern(n: int) -> bytes:
    return b"".join(pattern_chunks(n))


def pattern_sha256(n: int) -> str:
    h = hashlib.sha256()
    for c in pattern_chunks(n):
        h.update(c)
    return h.hexdigest()


TEXT_LINE = b"haquic says hello over HTTP/3, and this line compresses well.\n"

INDEX = b"""<!DOCTYPE html>
<html><head><title>haquic demo</title></head>
<body><h1>Hello from the haquic demo backend</h1>
<p>This page was served over HTTP/1.1 to HAProxy, which answered you.</p>
</body></html>
"""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def version_string(self):
        return "haquic-demo-backend/1"

    # quiet by default; --verbose turns the access log on
    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("backend: %s - %s\n" % (self.address_string(), fmt % args))

    # ---- helpers ----------------------------------------------------------

    def _head(self, status: int, ctype: str, length: int | None, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()

    def _simple(self, status: int, body: bytes, ctype: str = "text/plain", extra=()):
        self._head(status, ctype, len(body), extra)
        if self.command != "HEAD":
            self.wfile.write(body)

    def _chunk(self, data) -> None:
        if len(data):
            self.wfile.write(b"%x\r\n" % len(data))
            self.wfile.write(data)
            self.wfile.write(b"\r\n")

    def _drain_body(self) -> None:
        """Reads and drops a request body we do not use, so that the
        connection stays usable."""
        for _ in self._body_chunks():
            pass

    def _body_chunks(self):
        """The request body as it arrives, whatever its framing."""
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise ConnectionError("request body cut short")
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    # trailers, up to the empty line
                    while True:
                        line = self.rfile.readline(8192)
                        if line in (b"\r\n", b"\n", b""):
                            return
                left = size
                while left:
                    data = self.rfile.read(min(left, CHUNK))
                    if not data:
                        raise ConnectionError("request body cut short")
                    left -= len(data)
                    yield data
                self.rfile.readline(8)      # CRLF after the chunk
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                data = self.rfile.read1(min(left, CHUNK)) if hasattr(self.rfile, "read1") \
                    else self.rfile.read(min(left, CHUNK))
                if not data:
                    raise ConnectionError("request body cut short")
                left -= len(data)
                yield data

    # ---- methods ----------------------------------------------------------

    def do_GET(self):
        url = urlsplit(self.path)
        path = url.path
        if self.command in ("GET", "HEAD"):
            self._drain_body()
        if path == "/":
            return self._simple(200, INDEX, "text/html; charset=utf-8")
        if path.startswith("/bytes/"):
            try:
                n = int(path[len("/bytes/"):])
            except ValueError:
                return self._simple(400, b"bad size\n")
            if not 0 <= n <= MAX_BYTES:
                return self._simple(400, b"bad size\n")
            self._head(200, "application/octet-stream", n)
            if self.command != "HEAD":
                for c in pattern_chunks(n):
                    self.wfile.write(c)
            return
        if path.startswith("/f/"):
            body = file_body(path[len("/f/"):])
            if body is None:
                return self._simple(404, b"no such file\n")
            self._head(200, "application/octet-stream", len(body))
            if self.command != "HEAD":
                for i in range(0, len(body), CHUNK):
                    self.wfile.write(body[i:i + CHUNK])
            return
        if path.startswith("/text/"):
            try:
                n = int(path[len("/text/"):])
            except ValueError:
                return self._simple(400, b"bad size\n")
            reps = n // len(TEXT_LINE) + 1
            return self._simple(200, (TEXT_LINE * reps)[:n], "text/plain")
        if path == "/headers":
            body = json.dumps({
                "method": self.command,
                "path": self.path,
                "version": self.request_version,
                "headers": [[k.lower(), v] for k, v in self.headers.items()],
            }).encode() + b"\n"
            return self._simple(200, body, "application/json")
        if path == "/trailers":
            body = pattern(100 * KIB)
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Trailer", "x-checksum")
            self.end_headers()
            if self.command == "HEAD":
                return
            for c in pattern_chunks(len(body), 64 * KIB):
                self._chunk(c)
            self.wfile.write(b"0\r\nx-checksum: %s\r\n\r\n" % hashlib.sha256(body).hexdigest().encode())
            return
        if path == "/slow":
            q = parse_qs(url.query)
            ms = min(int(q.get("ms", ["1000"])[0]), 30000)
            n = min(int(q.get("n", ["5"])[0]), 1 << 30)
            time.sleep(ms / 1000)
            self._head(200, "application/octet-stream", n)
            if self.command != "HEAD":
                for c in pattern_chunks(n):
                    self.wfile.write(c)
            return
        return self._simple(404, b"not found\n")

    do_HEAD = do_GET

    def do_POST(self):
        path = urlsplit(self.path).path
        if path == "/sink":
            got = sum(len(data) for data in self._body_chunks())
            return self._simple(200, b"%d\n" % got)
        if path != "/echo":
            self._drain_body()
            return self._simple(404, b"not found\n")
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        ctype = self.headers.get("Content-Type", "application/octet-stream")
        if chunked:
            self._head(200, ctype, None)
            for data in self._body_chunks():
                self._chunk(data)
            self.wfile.write(b"0\r\n\r\n")
        else:
            n = int(self.headers.get("Content-Length") or 0)
            self._head(200, ctype, n)
            for data in self._body_chunks():
                self.wfile.write(data)

    do_PUT = do_POST

    def do_DELETE(self):
        self._drain_body()
        return self._simple(405, b"method not allowed\n")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, addr, verbose=False):
        self.verbose = verbose
        super().__init__(addr, Handler)

    def handle_error(self, request, client_address):
        # a client (HAProxy) closing a connection is not worth a traceback
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)) and not self.verbose:
            return
        super().handle_error(request, client_address)

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().server_bind()


def serve(host: str = "127.0.0.1", port: int = 0, verbose: bool = False) -> Server:
    """Starts a server in a background thread; returns it (.server_address)."""
    srv = Server((host, port), verbose)
    threading.Thread(target=srv.serve_forever, name="backend", daemon=True).start()
    return srv


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--port-file", help="write the bound port here once listening")
    ap.add_argument("--max-seconds", type=float, default=0,
                    help="exit after this many seconds (0: run until killed)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    srv = Server((args.host, args.port), args.verbose)
    port = srv.server_address[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.port_file)
    print(f"backend: listening on http://{args.host}:{port}/", flush=True)
    if args.max_seconds > 0:
        t = threading.Timer(args.max_seconds, srv.shutdown)
        t.daemon = True
        t.start()
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
