#!/usr/bin/env python3
"""An HTTP/1.1 sink for the upload memory test: reads each request body
(Content-Length) and answers `200` with the number of bytes read, with
keep-alive. Reading is rate-limited per connection (--rate bytes/s, 0 for
as fast as it comes), and the sockets' receive buffers are small
(--rcvbuf), so that a slow sink really holds the sender back instead of the
kernel absorbing megabytes.

    python sink.py --port-file FILE [--rate 65536] [--rcvbuf 65536] [--max-seconds S]

Counts (bytes read, requests, connections open) are written to --stats
every 0.2 s as JSON.
"""

import argparse
import asyncio
import json
import os
import socket
import sys
import time

CHUNK = 16384


class Sink:
    def __init__(self, rate: float):
        self.rate = rate
        self.bytes = 0
        self.requests = 0
        self.open = 0
        self.peak_open = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.peak_open = max(self.peak_open, self.open)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        length = int(v.strip())
                left = length
                t0 = time.monotonic()
                got = 0
                while left > 0:
                    d = await reader.read(min(CHUNK, left))
                    if not d:
                        return
                    left -= len(d)
                    got += len(d)
                    self.bytes += len(d)
                    if self.rate:
                        ahead = got / self.rate - (time.monotonic() - t0)
                        if ahead > 0:
                            await asyncio.sleep(ahead)
                self.requests += 1
                body = str(got).encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self.open -= 1
            writer.close()


async def main(args) -> int:
    sink = Sink(args.rate)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if args.rcvbuf:
        # inherited by the accepted sockets, and set before listen() so that
        # the window scale is chosen for it
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.rcvbuf)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(4096)
    server = await asyncio.start_server(sink.handle, sock=sock, backlog=4096)
    port = sock.getsockname()[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(port))
        os.replace(tmp, args.port_file)
    deadline = time.monotonic() + args.max_seconds
    async with server:
        while time.monotonic() < deadline:
            if args.stats:
                tmp = args.stats + ".tmp"
                with open(tmp, "w") as f:
                    json.dump({"bytes": sink.bytes, "requests": sink.requests, "open": sink.open,
                               "peak_open": sink.peak_open}, f)
                os.replace(tmp, args.stats)
            await asyncio.sleep(0.2)
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--stats")
    ap.add_argument("--rate", type=float, default=0.0, help="bytes/s per connection, 0: unlimited")
    ap.add_argument("--rcvbuf", type=int, default=65536)
    ap.add_argument("--max-seconds", type=float, default=600)
    sys.exit(asyncio.run(main(ap.parse_args())))
