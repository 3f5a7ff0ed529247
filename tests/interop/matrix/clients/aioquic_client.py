#!/usr/bin/env python3
"""The interop matrix's aioquic client (see tests/interop/matrix/README.md,
"the client contract"): aioquic's asyncio API with its H3Connection, every URL
requested concurrently over one connection.

- Stream limit: aioquic queues the streams opened beyond the peer's
  MAX_STREAMS (it marks them blocked, sends STREAMS_BLOCKED, and sends them
  when MAX_STREAMS rises), so every request is started at once and aioquic
  keeps within the server's limit.
- --resume: the first connection keeps the last session ticket it receives
  (waiting for one after its transfer), the second offers it; resumed=1|0
  comes from the TLS state (tls.session_resumed).
- --zerortt: the second connection is opened without waiting for the
  handshake and its requests are sent at once, in 0-RTT packets when the
  ticket allows early data; early_data=accepted|rejected comes from the TLS
  state (the server's EncryptedExtensions). Requests of a rejected 0-RTT
  are retransmitted in 1-RTT by aioquic.
- --key-update: request_key_update() once the handshake is confirmed;
  key_update=1 once a 1-RTT packet from the server decrypts with the new keys
  (aioquic drops the old receive keys, so such a packet proves the server
  switched too).
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys

sys.dont_write_bytecode = True      # no __pycache__ in the tree for common.py
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import aioquic  # noqa: E402
from aioquic.asyncio.client import connect  # noqa: E402
from aioquic.asyncio.protocol import QuicConnectionProtocol  # noqa: E402
from aioquic.h3.connection import H3_ALPN, H3Connection  # noqa: E402
from aioquic.h3.events import DataReceived, HeadersReceived  # noqa: E402
from aioquic.quic.configuration import QuicConfiguration  # noqa: E402
from aioquic.quic.packet import QuicProtocolVersion  # noqa: E402
from aioquic.quic.events import (ConnectionTerminated, HandshakeCompleted,  # noqa: E402
                                 StreamReset)
from aioquic.tls import CipherSuite, Epoch, SessionTicket  # noqa: E402

from common import (Failure, Result, Sink, Target, fail, finish, parse_args,  # noqa: E402
                    remaining, report, split_for_resume, warn)

MIB = 1024 * 1024
TICKET_WAIT = 3.0          # seconds to wait for a ticket after the first transfer
KEY_UPDATE_WAIT = 3.0      # seconds to wait for the server to answer a key update


class Request:
    def __init__(self, target: Target, future: asyncio.Future):
        self.target = target
        self.future = future
        self.result = Result(target)
        self.sink = Sink(target.out)

    def done(self, error: str | None = None) -> None:
        if self.future.done():
            return
        if error is None:
            self.sink.close()
        else:
            self.sink.abort()
            self.result.error = error
        self.result.length = self.sink.length
        self.future.set_result(self.result)


class Client(QuicConnectionProtocol):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.http = H3Connection(self._quic)
        self.pending: dict[int, Request] = {}
        self.handshake = asyncio.Event()
        self.closed = asyncio.Event()
        self.close_reason: str | None = None
        self.early_data_accepted: bool | None = None
        self.session_resumed: bool | None = None
        self.want_key_update = False
        self.key_update_requested = False
        self.key_update_phase: int | None = None
        self.key_update_acked = asyncio.Event()

    # ---- requests ---------------------------------------------------------

    def get(self, target: Target) -> asyncio.Future:
        sid = self._quic.get_next_available_stream_id()
        req = Request(target, self._loop.create_future())
        self.pending[sid] = req
        self.http.send_headers(sid, [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", target.authority.encode()),
            (b":path", target.path.encode()),
            (b"user-agent", f"haquic-interop-aioquic/{aioquic.__version__}".encode()),
        ], end_stream=True)
        return req.future

    # ---- key update -------------------------------------------------------

    def _start_key_update(self) -> None:
        """Called once the handshake is confirmed (HANDSHAKE_DONE received)."""
        if self.key_update_requested:
            return
        self.key_update_requested = True
        pair = self._quic._cryptos[Epoch.ONE_RTT]
        self._quic.request_key_update()
        self.key_update_phase = pair.key_phase        # the phase we move to
        orig = pair.decrypt_packet

        def decrypt_packet(packet, encrypted_offset, expected_packet_number):
            out = orig(packet, encrypted_offset, expected_packet_number)
            # A short-header packet that decrypted in the new phase: with
            # aioquic the old receive keys are gone once we switch, so this
            # is the server sending with its updated keys.
            phase = (out[0][0] & 0x04) >> 2
            if phase == self.key_update_phase and not pair._update_key_requested:
                self.key_update_acked.set()
            return out

        pair.decrypt_packet = decrypt_packet
        self.transmit()

    def _maybe_key_update(self) -> None:
        if (self.want_key_update and not self.key_update_requested
                and self._quic._handshake_confirmed):
            self._start_key_update()

    # ---- events -----------------------------------------------------------

    def quic_event_received(self, event) -> None:
        if isinstance(event, HandshakeCompleted):
            self.early_data_accepted = event.early_data_accepted
            self.session_resumed = event.session_resumed
            self.handshake.set()
        elif isinstance(event, ConnectionTerminated):
            self.close_reason = (f"connection closed: error 0x{event.error_code:x}"
                                 f"{' ' + event.reason_phrase if event.reason_phrase else ''}")
            for req in self.pending.values():
                req.done(self.close_reason)
            self.pending.clear()
            self.closed.set()
            self.handshake.set()
            return
        elif isinstance(event, StreamReset):
            req = self.pending.pop(event.stream_id, None)
            if req is not None:
                req.done(f"stream reset by the server: error 0x{event.error_code:x}")
        for ev in self.http.handle_event(event):
            req = self.pending.get(getattr(ev, "stream_id", -1))
            if req is None:
                continue
            if isinstance(ev, HeadersReceived):
                if req.result.status == 0:
                    status = dict(ev.headers).get(b":status", b"0")
                    if not status.startswith(b"1"):       # skip interim responses
                        req.result.status = int(status)
            elif isinstance(ev, DataReceived):
                req.sink.write(ev.data)
            if getattr(ev, "stream_ended", False):
                del self.pending[ev.stream_id]
                req.done(None if req.result.status == 200 else f"status {req.result.status}")
        self._maybe_key_update()

    def datagram_received(self, data, addr) -> None:
        super().datagram_received(data, addr)
        # the handshake is confirmed by HANDSHAKE_DONE, which raises no event
        if self.want_key_update and not self.key_update_requested:
            self._maybe_key_update()


def configuration(args, ticket: SessionTicket | None = None) -> QuicConfiguration:
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=H3_ALPN,
        server_name=args.sni,
        verify_mode=ssl.CERT_REQUIRED,
        max_data=64 * MIB,
        max_stream_data=16 * MIB,
        # the run's deadline bounds it; a lossy handshake can back off long
        idle_timeout=max(30.0, args.timeout),
        session_ticket=ticket,
    )
    if args.ca:
        config.load_verify_locations(cafile=args.ca)
    # without --ca aioquic verifies against certifi's store
    if args.chacha20:
        config.cipher_suites = [CipherSuite.CHACHA20_POLY1305_SHA256]
    if args.v2:
        # the first Initial in version 2; version 1 stays acceptable for a
        # server that negotiates down
        config.original_version = QuicProtocolVersion.VERSION_2
        config.supported_versions = [QuicProtocolVersion.VERSION_2, QuicProtocolVersion.VERSION_1]
    if args.keylog:
        config.secrets_log_file = open(args.keylog, "a")
    return config


async def one_connection(args, targets: list[Target], *, ticket=None, zerortt=False,
                         want_ticket=False, key_update=False) -> tuple[list[Result], Client, list]:
    """Fetches `targets` over one connection. Returns the results, the
    client (for its TLS state) and the session tickets received."""
    tickets: list[SessionTicket] = []
    config = configuration(args, ticket)
    cm = connect(args.host, args.port, configuration=config, create_protocol=Client,
                 session_ticket_handler=tickets.append, wait_connected=False)
    # with wait_connected=False, connect() sends nothing: the first
    # transmit() sends the Initial (and 0-RTT packets, when there are any)
    client = await cm.__aenter__()
    ok = False
    try:
        client.want_key_update = key_update
        futures = []
        if zerortt:
            # the requests first, so that they go in 0-RTT packets when the
            # ticket allows early data
            futures = [client.get(t) for t in targets]
        client.transmit()
        try:
            await asyncio.wait_for(client.handshake.wait(), remaining(args))
        except asyncio.TimeoutError:
            raise Failure(f"no handshake with {args.host}:{args.port} within {args.timeout:g}s")
        if client.session_resumed is None:       # closed before the handshake completed
            raise Failure(f"handshake with {args.host}:{args.port} failed: {client.close_reason}")
        if not zerortt:
            futures = [client.get(t) for t in targets]
            client.transmit()

        await asyncio.wait(futures, timeout=remaining(args))
        results = []
        for t, f in zip(targets, futures):
            results.append(f.result() if f.done()
                           else Result(t, error=f"unfinished after {args.timeout:g}s"))

        if key_update:
            if not client.key_update_requested:
                warn("key update: the handshake was not confirmed, no key update started")
            elif not client.key_update_acked.is_set() and not client.closed.is_set():
                # the transfers ended first: a PING makes the server answer
                # in the new key phase
                client._quic.send_ping(0)
                client.transmit()
                await _wait_for(client.key_update_acked.is_set,
                                min(KEY_UPDATE_WAIT, remaining(args)))

        if want_ticket and not client.closed.is_set():
            await _wait_for(lambda: bool(tickets), min(TICKET_WAIT, remaining(args)))
        ok = True
    finally:
        # CONNECTION_CLOSE, and a bounded wait for the connection to end
        try:
            grace = min(2.0, remaining(args) + 0.5) if ok else 0.2
            await asyncio.wait_for(cm.__aexit__(None, None, None), grace)
        except (asyncio.TimeoutError, Exception):
            if client._transport is not None:
                client._transport.close()
    return results, client, tickets


async def _wait_for(cond, timeout: float, step: float = 0.01) -> bool:
    """Polls cond() until it is true or `timeout` seconds have passed."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() >= end:
            return False
        await asyncio.sleep(step)
    return True


async def main_async(args) -> list[Result]:
    if not (args.resume or args.zerortt):
        results, client, _ = await one_connection(args, args.targets, key_update=args.key_update)
        if args.key_update:
            report("key_update", client.key_update_acked.is_set())
        return results

    first, second = split_for_resume(args.targets)
    r1, c1, tickets = await one_connection(args, first, want_ticket=True,
                                           key_update=args.key_update)
    if not all(r.ok for r in r1):
        return r1
    ticket = tickets[-1] if tickets else None
    if ticket is None:
        warn("the first connection received no session ticket: the second cannot resume")
    elif args.zerortt and ticket.max_early_data_size is None:
        warn("the server's ticket does not allow early data: no 0-RTT sent")
    r2, c2, _ = await one_connection(args, second, ticket=ticket, zerortt=args.zerortt,
                                     key_update=args.key_update)
    report("resumed", bool(c2.session_resumed))
    if args.zerortt:
        report("early_data", "accepted" if c2.early_data_accepted else "rejected")
    if args.key_update:
        report("key_update", c1.key_update_acked.is_set() or c2.key_update_acked.is_set())
    return r1 + r2


def main() -> None:
    args = parse_args("aioquic", __doc__)
    report("version", f"aioquic {aioquic.__version__}")
    if not args.ca:
        warn("no --ca: aioquic verifies the server's certificate against certifi's CA store")
    try:
        results = asyncio.run(asyncio.wait_for(main_async(args), args.timeout + 1))
    except Failure as e:
        fail(str(e))
    except asyncio.TimeoutError:
        fail(f"timed out after {args.timeout:g}s")
    except (OSError, ValueError, ssl.SSLError) as e:
        fail(f"{type(e).__name__}: {e}")
    finish(results)


if __name__ == "__main__":
    main()
