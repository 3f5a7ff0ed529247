"""A small HTTP/3 client on aioquic (its own example client is not installed
with the package): one QUIC connection, any number of concurrent requests.

    async with h3_connect(port) as client:
        resp = await client.request("GET", "/size/1024")
"""

import asyncio
import contextlib
import hashlib
import ssl

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StopSendingReceived, StreamReset

from interop_util import CA_FILE, MIB, SERVER_NAME


class Response:
    """A response as it arrives: status, headers, length and sha256 of the
    body, and the body itself when asked to keep it."""

    def __init__(self, future: asyncio.Future, keep_body: bool):
        self.future = future
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.length = 0
        self._sha = hashlib.sha256()
        self.body = bytearray() if keep_body else None

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def add(self, data: bytes) -> None:
        self.length += len(data)
        self._sha.update(data)
        if self.body is not None:
            self.body += data

    def fail(self, exc: Exception) -> None:
        if not self.future.done():
            self.future.set_exception(exc)

    def finish(self) -> None:
        if not self.future.done():
            self.future.set_result(self)


class H3Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic)
        self.pending: dict[int, Response] = {}

    def start(self, method: str, path: str, body: bytes | None = None, keep_body: bool = True,
              end_stream: bool = True, content_length: int | None = None) -> tuple[int, Response]:
        """Sends a request; returns its stream id and the Response to await.
        With end_stream False the body is left open (for cancelling)."""
        stream_id = self._quic.get_next_available_stream_id()
        headers = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", SERVER_NAME.encode()),
            (b":path", path.encode()),
            (b"user-agent", b"haquic-interop-aioquic"),
        ]
        if content_length is None and body is not None and end_stream:
            content_length = len(body)
        if content_length is not None:
            headers.append((b"content-length", str(content_length).encode()))
        resp = Response(self._loop.create_future(), keep_body)
        self.pending[stream_id] = resp
        self.http.send_headers(stream_id, headers, end_stream=body is None and end_stream)
        if body is not None:
            # aioquic buffers the whole body and sends it as flow control allows
            self.http.send_data(stream_id, body, end_stream=end_stream)
        self.transmit()
        return stream_id, resp

    async def request(self, method: str, path: str, body: bytes | None = None,
                      keep_body: bool = True) -> Response:
        _, resp = self.start(method, path, body, keep_body)
        return await resp.future

    def cancel(self, stream_id: int, code: int = 0x10C) -> None:
        """Abandons a request both ways (RESET_STREAM and STOP_SENDING with
        H3_REQUEST_CANCELLED), as a browser does when the user navigates away."""
        self.pending.pop(stream_id, None)
        self._quic.reset_stream(stream_id, code)
        self._quic.stop_stream(stream_id, code)
        self.transmit()

    def quic_event_received(self, event) -> None:
        if isinstance(event, (StreamReset, StopSendingReceived)):
            resp = self.pending.pop(event.stream_id, None)
            if resp is not None:
                resp.fail(ConnectionError(f"stream {event.stream_id}: {type(event).__name__} "
                                          f"0x{event.error_code:x}"))
            return
        if isinstance(event, ConnectionTerminated):
            for resp in self.pending.values():
                resp.fail(ConnectionError(f"connection closed: 0x{event.error_code:x} {event.reason_phrase}"))
            self.pending.clear()
            return
        for ev in self.http.handle_event(event):
            resp = self.pending.get(ev.stream_id)
            if resp is None:
                continue
            if isinstance(ev, HeadersReceived):
                for name, value in ev.headers:
                    if name == b":status":
                        resp.status = int(value)
                    else:
                        resp.headers[name] = value
            elif isinstance(ev, DataReceived):
                resp.add(ev.data)
            if getattr(ev, "stream_ended", False):
                self.pending.pop(ev.stream_id, None)
                resp.finish()


@contextlib.asynccontextmanager
async def h3_connect(port: int, host: str = "127.0.0.1", *, max_data: int = 16 * MIB,
                     max_stream_data: int = 8 * MIB):
    """One connection. The default flow-control windows are large enough that
    10 MB transfers are not window-bound; small ones make the server wait."""
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=H3_ALPN,
        server_name=SERVER_NAME,
        verify_mode=ssl.CERT_REQUIRED,
        max_data=max_data,
        max_stream_data=max_stream_data,
        idle_timeout=30.0,
    )
    config.load_verify_locations(cafile=str(CA_FILE))
    async with connect(host, port, configuration=config, create_protocol=H3Client) as client:
        yield client


def run(coro, timeout: float = 30.0):
    """Runs a coroutine to completion, bounded by `timeout` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))
