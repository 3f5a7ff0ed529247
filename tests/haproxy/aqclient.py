"""An HTTP/3 client on aioquic for the HAProxy tests: many streams on one
connection, raw header lists (to craft malformed requests), STOP_SENDING as
the first frame of a stream, GOAWAY and stream resets observed with their
codes, HEAD, trailers, session tickets and 0-RTT.

    async with connect(port) as c:
        r = await c.request("GET", "/bytes/1024")
        r = await c.request("POST", "/echo", body=Upload(n))
        sid, r = c.start(raw_headers=[(b":method", b"GET"), ...])

It follows tests/interop/h3client.py, with what the HAProxy suite needs on
top. Every wait is bounded by the callers (run() has a timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import ssl

from aioquic.asyncio.client import connect as quic_connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.buffer import Buffer, BufferReadError
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import (ConnectionTerminated, HandshakeCompleted, StopSendingReceived,
                                 StreamDataReceived, StreamReset)

from hap import CA_FILE

KIB = 1024
MIB = 1024 * KIB

H3_NO_ERROR = 0x100
H3_GENERAL_PROTOCOL_ERROR = 0x101
H3_INTERNAL_ERROR = 0x102
H3_REQUEST_REJECTED = 0x10B
H3_REQUEST_CANCELLED = 0x10C
H3_REQUEST_INCOMPLETE = 0x10D
H3_MESSAGE_ERROR = 0x10E

FRAME_GOAWAY = 0x7


class H3(H3Connection):
    """aioquic's H3Connection, which checks a response's content-length
    against its body whatever the method: a correct answer to HEAD (a
    content-length, no body; RFC 9114 section 4.1.2) would fail the
    connection. Streams listed in head_streams skip that check."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.head_streams: set[int] = set()

    def _check_content_length(self, stream) -> None:
        if stream.stream_id in self.head_streams:
            return
        super()._check_content_length(stream)


class Response:
    """A response as it arrives. Never raises: a reset stream or a closed
    connection is recorded (reset_code, stop_code, conn_error) and the
    future completes all the same."""

    def __init__(self, stream_id: int, future: asyncio.Future, keep_body: bool | int):
        self.stream_id = stream_id
        self.future = future
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.trailers: list[tuple[bytes, bytes]] = []
        self.length = 0
        self.complete = False
        self.reset_code: int | None = None
        self.stop_code: int | None = None
        self.conn_error: str | None = None
        self._sha = hashlib.sha256()
        self.keep = keep_body
        self.body = bytearray() if keep_body else None

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    @property
    def ok(self) -> bool:
        return self.complete and self.reset_code is None and self.conn_error is None

    @property
    def error(self) -> str | None:
        if self.ok:
            return None
        if self.reset_code is not None:
            return f"stream {self.stream_id} reset 0x{self.reset_code:x}"
        if self.conn_error is not None:
            return f"stream {self.stream_id}: {self.conn_error}"
        return f"stream {self.stream_id} incomplete"

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def add(self, data: bytes) -> None:
        self.length += len(data)
        self._sha.update(data)
        if self.body is not None and (self.keep is True or len(self.body) < self.keep):
            self.body += data

    def done(self) -> None:
        if not self.future.done():
            self.future.set_result(self)


class Client(QuicConnectionProtocol):
    authority = b"127.0.0.1"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.http = H3(self._quic)
        self.pending: dict[int, Response] = {}
        self.goaway_id: int | None = None
        self.goaway = asyncio.Event()
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason: str = ""
        self.early_data_accepted: bool | None = None
        self.session_resumed: bool | None = None
        self.handshake_done = asyncio.Event()
        self.resets: dict[int, int] = {}
        self.stops: dict[int, int] = {}
        self._uni: dict[int, bytearray] = {}
        self._other_uni: set[int] = set()
        self._control: int | None = None
        self._control_off = 0

    # ---- requests -------------------------------------------------------

    def start(self, method: str = "GET", path: str = "/", body=None, *,
              headers: list[tuple[bytes, bytes]] = (), raw_headers=None,
              keep_body: bool | int = True, end_stream: bool = True,
              content_length: int | None = None, authority: bytes | None = None,
              trailers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, Response]:
        """Sends a request; returns its stream id and its Response (await
        .future). body: bytes, or an object with .chunks() and .n (an
        Upload), sent as flow control allows. raw_headers replaces the whole
        header list (pseudo-headers included) and is sent as given."""
        sid = self._quic.get_next_available_stream_id()
        if raw_headers is not None:
            hdrs = list(raw_headers)
            if any(k == b":method" and v == b"HEAD" for k, v in hdrs):
                self.http.head_streams.add(sid)
        else:
            hdrs = [(b":method", method.encode()), (b":scheme", b"https"),
                    (b":authority", authority or self.authority), (b":path", path.encode()),
                    (b"user-agent", b"haquic-e2e-aioquic")]
            if (content_length is None and end_stream and body is not None and not trailers
                    and not getattr(body, "chunked", False)):
                content_length = len(body) if isinstance(body, (bytes, bytearray)) else body.n
            if content_length is not None:
                hdrs.append((b"content-length", str(content_length).encode()))
            hdrs += list(headers)
            if method == "HEAD":
                self.http.head_streams.add(sid)
        resp = Response(sid, self._loop.create_future(), keep_body)
        self.pending[sid] = resp
        if body is not None and not isinstance(body, (bytes, bytearray)) and body.n == 0:
            body = b""
        if isinstance(body, (bytes, bytearray)) and not body:
            body = None
        self.http.send_headers(sid, hdrs, end_stream=body is None and end_stream and not trailers)
        self.transmit()
        if body is not None:
            fin = end_stream and not trailers
            if isinstance(body, (bytes, bytearray)):
                self.http.send_data(sid, bytes(body), end_stream=fin)
                self.transmit()
                if trailers:
                    self.http.send_headers(sid, trailers, end_stream=end_stream)
                    self.transmit()
            else:
                self._loop.create_task(self._feed(sid, body, fin, trailers, end_stream))
        elif trailers:
            self.http.send_headers(sid, trailers, end_stream=end_stream)
            self.transmit()
        return sid, resp

    async def _feed(self, sid, upload, fin, trailers, end_stream, high_water=4 * MIB):
        """Streams an Upload, keeping at most high_water bytes unsent in
        aioquic's buffer."""
        try:
            for chunk in upload.chunks(256 * KIB):
                while True:
                    stream = self._quic._streams.get(sid)
                    if stream is None or sid not in self.pending:
                        return       # reset or finished early
                    if len(stream.sender._buffer) < high_water:
                        break
                    await asyncio.sleep(0.002)
                self.http.send_data(sid, chunk, end_stream=False)
                self.transmit()
            if trailers:
                self.http.send_headers(sid, trailers, end_stream=end_stream)
            elif fin:
                # a bare FIN, not an empty DATA frame (see test_http.py's
                # test_empty_data_frame_with_fin for why this matters)
                self._quic.send_stream_data(sid, b"", end_stream=True)
            self.transmit()
        except Exception as e:       # the stream went away under us
            resp = self.pending.pop(sid, None)
            if resp is not None:
                resp.conn_error = f"upload failed: {e!r}"
                resp.done()

    async def request(self, method: str = "GET", path: str = "/", body=None, **kw) -> Response:
        _, resp = self.start(method, path, body, **kw)
        return await resp.future

    def stop_sending_first(self, code: int = H3_REQUEST_CANCELLED) -> int:
        """Opens a new request stream whose very first frame is STOP_SENDING
        (no STREAM frame before it). Returns the stream id."""
        sid = self._quic.get_next_available_stream_id()
        self._quic._get_or_create_stream_for_send(sid)
        self._quic.stop_stream(sid, code)
        self.transmit()
        return sid

    def reset_stream_first(self, code: int = H3_REQUEST_CANCELLED) -> int:
        """Opens a new request stream whose very first frame is RESET_STREAM
        (final size 0, no STREAM frame before it). Returns the stream id."""
        sid = self._quic.get_next_available_stream_id()
        self._quic._get_or_create_stream_for_send(sid)
        self._quic.reset_stream(sid, code)
        self.transmit()
        return sid

    def cancel(self, sid: int, code: int = H3_REQUEST_CANCELLED) -> None:
        self.pending.pop(sid, None)
        self._quic.reset_stream(sid, code)
        self._quic.stop_stream(sid, code)
        self.transmit()

    # ---- events ---------------------------------------------------------

    def _watch_uni(self, event: StreamDataReceived) -> None:
        """Reads the server's control stream alongside aioquic (which drops
        GOAWAY) to see GOAWAY frames and their stream id."""
        sid = event.stream_id
        if sid in self._other_uni or (self._control is not None and sid != self._control):
            return
        buf = self._uni.setdefault(sid, bytearray())
        buf += event.data
        if self._control is None:
            try:
                b = Buffer(data=bytes(buf[:8]))
                stype = b.pull_uint_var()
            except BufferReadError:
                return
            if stype != 0:
                self._other_uni.add(sid)
                del self._uni[sid]
                return
            self._control = sid
            self._control_off = b.tell()
        while True:
            b = Buffer(data=bytes(buf[self._control_off:]))
            try:
                ftype = b.pull_uint_var()
                flen = b.pull_uint_var()
                payload = b.pull_bytes(flen)
            except BufferReadError:
                return
            self._control_off += b.tell()
            if ftype == FRAME_GOAWAY:
                self.goaway_id = Buffer(data=payload).pull_uint_var()
                self.goaway.set()

    def quic_event_received(self, event) -> None:
        if isinstance(event, StreamDataReceived) and event.stream_id % 4 == 3:
            self._watch_uni(event)
        if isinstance(event, HandshakeCompleted):
            self.early_data_accepted = event.early_data_accepted
            self.session_resumed = event.session_resumed
            self.handshake_done.set()
        if isinstance(event, StreamReset):
            self.resets[event.stream_id] = event.error_code
            resp = self.pending.pop(event.stream_id, None)
            if resp is not None:
                resp.reset_code = event.error_code
                resp.done()
            # let aioquic's H3 layer forget the stream too
        if isinstance(event, StopSendingReceived):
            self.stops[event.stream_id] = event.error_code
            resp = self.pending.get(event.stream_id)
            if resp is not None:
                resp.stop_code = event.error_code
            return
        if isinstance(event, ConnectionTerminated):
            self.close_code = event.error_code
            self.close_reason = event.reason_phrase
            for resp in self.pending.values():
                resp.conn_error = f"connection closed: 0x{event.error_code:x} {event.reason_phrase}"
                resp.done()
            self.pending.clear()
            self.closed.set()
            self.handshake_done.set()
            return
        for ev in self.http.handle_event(event):
            resp = self.pending.get(ev.stream_id)
            if resp is None:
                continue
            if isinstance(ev, HeadersReceived):
                if resp.status == 0:
                    status = dict(ev.headers).get(b":status", b"0")
                    if status.startswith(b"1"):
                        continue            # interim response
                    resp.status = int(status)
                    resp.headers = [(k, v) for k, v in ev.headers if k != b":status"]
                else:
                    resp.trailers += list(ev.headers)
            elif isinstance(ev, DataReceived):
                resp.add(ev.data)
            if getattr(ev, "stream_ended", False):
                self.pending.pop(ev.stream_id, None)
                resp.complete = True
                resp.done()

    def peer_certificate(self):
        return self._quic.tls._peer_certificate


def configuration(server_name: str = "localhost", *, cafile=CA_FILE, verify: bool = True,
                  max_data: int = 32 * MIB, max_stream_data: int = 16 * MIB,
                  idle_timeout: float = 30.0, session_ticket=None) -> QuicConfiguration:
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=H3_ALPN,
        server_name=server_name,
        verify_mode=ssl.CERT_REQUIRED if verify else ssl.CERT_NONE,
        max_data=max_data,
        max_stream_data=max_stream_data,
        idle_timeout=idle_timeout,
        session_ticket=session_ticket,
    )
    if verify:
        config.load_verify_locations(cafile=str(cafile))
    return config


@contextlib.asynccontextmanager
async def connect(port: int, host: str = "127.0.0.1", *, config: QuicConfiguration | None = None,
                  wait_connected: bool = True, session_ticket_handler=None,
                  connect_timeout: float = 10.0, create_protocol=None, **kw):
    """One connection to HAProxy's QUIC listener. kw go to configuration();
    create_protocol is a Client subclass (default Client)."""
    config = config or configuration(**kw)
    cm = quic_connect(host, port, configuration=config, create_protocol=create_protocol or Client,
                      session_ticket_handler=session_ticket_handler, wait_connected=False)
    # aioquic's connect() with wait_connected=False does not send the
    # Initial: the first transmit() does (start() for a 0-RTT request).
    client = await cm.__aenter__()
    try:
        if wait_connected:
            client.transmit()
            await asyncio.wait_for(client.wait_connected(), connect_timeout)
        yield client
    finally:
        # CONNECTION_CLOSE, and wait (bounded) for the connection to end
        try:
            await asyncio.wait_for(cm.__aexit__(None, None, None), 5)
        except (asyncio.TimeoutError, Exception):
            if client._transport is not None:
                client._transport.close()


async def rebind(client: Client, change_cid: bool = True) -> int:
    """Moves the client's connection to a new UDP socket (a new local port),
    as a client behind a NAT rebinding would, with a fresh connection ID
    when change_cid (and one is available). The old socket goes away
    without telling the connection. Returns the new port."""
    loop = asyncio.get_running_loop()

    class Forward(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            client.datagram_received(data, addr)

    old = client._transport
    # the same family as aioquic's own socket (dual-stack IPv6, with
    # IPv4-mapped addresses)
    family = old.get_extra_info("socket").family
    local = ("::", 0) if family == socket.AF_INET6 else ("127.0.0.1", 0)
    transport, _ = await loop.create_datagram_endpoint(Forward, local_addr=local, family=family)
    client._transport = transport
    if change_cid:
        client.change_connection_id()
    old.set_protocol(asyncio.DatagramProtocol())
    old.close()
    return transport.get_extra_info("sockname")[1]


def run(coro, timeout: float = 60.0):
    """Runs a coroutine to completion, bounded by `timeout` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))
