#!/usr/bin/env python3
"""The load of the crash-scenario storms (storm_scenarios.py), one worker
process per invocation, on aioquic:

  s1  GOAWAY paths: connections that keep opening streams whose FIRST frame
      is STOP_SENDING or RESET_STREAM, interleaved with valid GETs and
      cancelled GETs; after a GOAWAY (the process is being reloaded), a few
      more such streams and a GET above the GOAWAY id on the old connection,
      then a new connection.
  s2  rebind storm: N connections requesting continuously, each moving to a
      new local port every 200-500 ms (a NAT rebinding, with a new
      connection ID), rotating its connection ID, and ending after a few
      seconds either cleanly or abruptly (the socket dropped, no
      CONNECTION_CLOSE), replaced by a new one.
  s3  dispatch storm: short connections (handshake, one GET, close) through
      an in-process UDP relay that records the client's datagrams,
      duplicates some (at once and late), and replays them after the
      connection closed (from the same address, from a stranger's, and on
      the path of another live connection); half of the connections retire
      connection IDs rapidly (RETIRE_CONNECTION_ID) right after the
      handshake while the relay drops datagrams both ways, so that the
      server's NEW_CONNECTION_ID frames (and the ACKs of them) are lost and
      retransmitted.

    python storm_load.py s1|s2|s3 --port P --seconds N --tag T --out FILE
                         [--conns N] [--seed N]

Writes a JSON tally to FILE. A valid request is a GET of /bytes/SIZE: it
counts as ok only when the whole body arrives intact (sha256); a request the
server provably did not process (reset with H3_REQUEST_REJECTED, or at or
above the GOAWAY id) is counted as rejected, one the client itself cancelled
or dropped as aborted; anything else is a failure. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from aioquic.asyncio.client import connect as quic_connect  # noqa: E402

import aqclient  # noqa: E402
from backend import pattern_sha256  # noqa: E402

SIZE = 1500
SHA = pattern_sha256(SIZE)
REQ_TIMEOUT = 30.0          # generous: 2 cores, an ASan HAProxy, other load
CONNECT_TIMEOUT = 15.0
CODES = (aqclient.H3_REQUEST_CANCELLED, aqclient.H3_NO_ERROR, 0x1234)


@dataclass
class Tally:
    scenario: str = ""
    seconds: float = 0.0
    conns: int = 0              # handshakes completed
    conn_failed: int = 0        # handshakes that did not complete (also failures)
    ok: int = 0                 # valid requests answered 200, body intact
    failed: int = 0             # valid requests that failed
    rejected: int = 0           # refused after GOAWAY (not processed): not failures
    aborted: int = 0            # cancelled or dropped by the client itself
    stop_sending_first: int = 0
    reset_first: int = 0
    after_goaway: int = 0       # first-frame streams and GETs sent after a GOAWAY
    after_goaway_answered: int = 0
    goaways: int = 0
    rebinds: int = 0
    cid_changes: int = 0
    abrupt_closes: int = 0
    replayed: int = 0           # datagrams replayed after their connection closed
    duplicated: int = 0         # datagrams sent twice (at once or late)
    dropped: int = 0            # datagrams the relay dropped on purpose
    late_answers: int = 0       # server datagrams for sessions already finished
    failures: list = field(default_factory=list)
    ok_ids: list = field(default_factory=list)

    def fail(self, what) -> None:
        self.failed += 1
        if len(self.failures) < 30:
            self.failures.append(str(what)[:400])


def classify(t: Tally, c: aqclient.Client, r: aqclient.Response, rid: str, goaway_ok: bool = True,
             note: str = "") -> str:
    """Counts the outcome of a valid GET."""
    if r.ok and r.status == 200 and r.length == SIZE and r.sha256 == SHA:
        t.ok += 1
        t.ok_ids.append(rid)
        return "ok"
    if goaway_ok and r.reset_code == aqclient.H3_REQUEST_REJECTED:
        t.rejected += 1
        return "rejected"
    if goaway_ok and r.conn_error and c.goaway_id is not None and r.stream_id >= c.goaway_id:
        t.rejected += 1
        return "rejected"
    t.fail(f"{rid}: {r.error} status={r.status} len={r.length} sid={r.stream_id} "
           f"goaway={c.goaway_id} close=({c.close_code}, {c.close_reason!r}) {note}")
    return "failed"


async def get(t: Tally, c: aqclient.Client, rid: str, tag: str, goaway_ok: bool = True,
              note: str = "") -> str:
    _, resp = c.start("GET", f"/bytes/{SIZE}?t={tag}&r={rid}", keep_body=False)
    try:
        r = await asyncio.wait_for(asyncio.shield(resp.future), REQ_TIMEOUT)
    except asyncio.TimeoutError:
        t.fail(f"{rid}: no answer in {REQ_TIMEOUT}s (sid {resp.stream_id}, goaway {c.goaway_id}, "
               f"closed {c.closed.is_set()}) {note}")
        return "failed"
    return classify(t, c, r, rid, goaway_ok, note)


# ---- connections ---------------------------------------------------------------

class _BlackHole:
    """Stands in for a dropped socket: whatever aioquic still sends (its
    CONNECTION_CLOSE) goes nowhere."""

    def sendto(self, data, addr=None):
        pass

    def close(self):
        pass

    def is_closing(self):
        return True

    def get_extra_info(self, name, default=None):
        return default


async def open_conn(port: int, host: str = "127.0.0.1"):
    """A connection (aioquic's connect context entered by hand, so that it
    can also end without a CONNECTION_CLOSE). Returns (cm, client)."""
    cm = quic_connect(host, port, configuration=aqclient.configuration(), create_protocol=aqclient.Client,
                      wait_connected=False)
    client = await cm.__aenter__()
    try:
        client.transmit()
        await asyncio.wait_for(client.wait_connected(), CONNECT_TIMEOUT)
    except BaseException:
        await close_conn(cm, client, abrupt=True)
        raise
    return cm, client


async def open_counted(port: int, t: Tally):
    """open_conn, with a failed handshake counted and reported in t and a
    short pause before the caller tries again. Returns (cm, client), or
    None after a failure."""
    try:
        return await open_conn(port)
    except Exception as e:
        t.conn_failed += 1
        t.fail(f"handshake: {e!r}")
        await asyncio.sleep(0.2)
        return None


async def close_conn(cm, client: aqclient.Client, abrupt: bool = False) -> None:
    """Ends a connection: CONNECTION_CLOSE, or (abrupt) the socket is dropped
    and the peer is told nothing."""
    if abrupt:
        real = client._transport
        client._transport = _BlackHole()
        if real is not None and not isinstance(real, _BlackHole):
            real.set_protocol(asyncio.DatagramProtocol())
            real.close()
    try:
        await asyncio.wait_for(cm.__aexit__(None, None, None), 5)
    except (asyncio.TimeoutError, Exception):
        tr = client._transport
        if tr is not None:
            tr.close()


def peer_cid(c: aqclient.Client) -> bytes:
    return c._quic._peer_cid.cid


def live(deadline: float) -> bool:
    return time.monotonic() < deadline


# ---- S1: GOAWAY with STOP_SENDING / RESET_STREAM as first frames ---------------

async def s1(args, t: Tally, rng: random.Random) -> None:
    deadline = time.monotonic() + args.seconds
    seq = itertools.count()

    def rid(n):
        return f"s1.{args.seed}.{n}.{next(seq)}"

    async def after_goaway(c: aqclient.Client, n: int) -> None:
        """The crash class: new streams after GOAWAY whose first frame is
        STOP_SENDING or RESET_STREAM, and a GET above the GOAWAY id."""
        t.goaways += 1
        ss = []
        try:
            for _ in range(rng.randint(1, 3)):
                ss.append(c.stop_sending_first(rng.choice(CODES)))
                t.stop_sending_first += 1
                c.reset_stream_first(rng.choice(CODES))
                t.reset_first += 1
                t.after_goaway += 2
            _, late = c.start("GET", f"/bytes/{SIZE}?t={args.tag}-late&r={rid(n)}", keep_body=False)
            t.after_goaway += 1
        except (ValueError, AssertionError):
            return              # the connection is already closing
        await asyncio.sleep(0.05)
        for sid in ss:
            try:
                c._quic.reset_stream(sid, aqclient.H3_REQUEST_CANCELLED)
            except (ValueError, AssertionError):
                pass
        c.transmit()
        try:
            r = await asyncio.wait_for(asyncio.shield(late.future), 10)
            if r.ok:
                t.after_goaway_answered += 1
        except asyncio.TimeoutError:
            pass

    async def session(c: aqclient.Client, n: int) -> None:
        pending_ss: list[int] = []
        while live(deadline):
            # The STOP_SENDING-first streams of the last round: end their
            # sending side too (RESET_STREAM), so that they close and give
            # their stream credit back.
            for sid in pending_ss:
                try:
                    c._quic.reset_stream(sid, aqclient.H3_REQUEST_CANCELLED)
                except (ValueError, AssertionError):
                    pass
            pending_ss = []
            c.transmit()
            if c.closed.is_set():
                return
            if c.goaway.is_set():
                await after_goaway(c, n)
                return
            x = rng.random()
            if x < 0.45:
                await get(t, c, rid(n), args.tag)
            elif x < 0.60:
                pending_ss.append(c.stop_sending_first(rng.choice(CODES)))
                t.stop_sending_first += 1
            elif x < 0.75:
                c.reset_stream_first(rng.choice(CODES))
                t.reset_first += 1
            elif x < 0.87:
                sid, resp = c.start("GET", f"/bytes/{SIZE}?t={args.tag}-cancel&r={rid(n)}", keep_body=False)
                await asyncio.sleep(rng.uniform(0, 0.02))
                if not resp.future.done():
                    c.cancel(sid, rng.choice(CODES))
                t.aborted += 1
            else:
                # a burst: first-frame streams and a GET in the same flight
                for _ in range(2):
                    pending_ss.append(c.stop_sending_first(rng.choice(CODES)))
                    c.reset_stream_first(rng.choice(CODES))
                t.stop_sending_first += 2
                t.reset_first += 2
                await get(t, c, rid(n), args.tag)
            await asyncio.sleep(rng.uniform(0, 0.01))

    async def slot(n: int) -> None:
        while live(deadline):
            opened = await open_counted(args.port, t)
            if opened is None:
                continue
            cm, c = opened
            t.conns += 1
            try:
                await session(c, n)
            except Exception as e:
                t.fail(f"session: {e!r}")
            finally:
                await close_conn(cm, c)

    await asyncio.gather(*(slot(n) for n in range(args.conns)))


# ---- S2: rebind storm ----------------------------------------------------------

async def s2(args, t: Tally, rng: random.Random) -> None:
    deadline = time.monotonic() + args.seconds
    seq = itertools.count()

    async def one(n: int) -> None:
        opened = await open_counted(args.port, t)
        if opened is None:
            return
        cm, c = opened
        t.conns += 1
        scid0 = peer_cid(c).hex()         # the server's trace id (qlog file name)
        rebinds = 0
        end = min(deadline, time.monotonic() + rng.uniform(4, 20))
        abrupt = end < deadline and rng.random() < 0.5
        stop = asyncio.Event()

        async def requests():
            while not stop.is_set() and not c.closed.is_set():
                rid = f"s2.{args.seed}.{n}.{next(seq)}"
                try:
                    outcome = await get(t, c, rid, args.tag, goaway_ok=False,
                                        note=f"scid0={scid0} rebinds={rebinds}")
                except asyncio.CancelledError:
                    t.aborted += 1      # dropped mid-request on purpose
                    raise
                if outcome != "ok":
                    return
                await asyncio.sleep(rng.uniform(0.02, 0.25))

        async def rebinder():
            nonlocal rebinds
            while not stop.is_set() and not c.closed.is_set():
                await asyncio.sleep(rng.uniform(0.2, 0.5))
                if stop.is_set() or c.closed.is_set():
                    return
                before = peer_cid(c)
                if rng.random() < 0.8:
                    await aqclient.rebind(c, change_cid=True)
                    t.rebinds += 1
                    rebinds += 1
                else:
                    c._quic.change_connection_id()      # rotation, same path
                # traffic on the new path right away (a PING), not only with
                # the next request
                c._quic.send_ping(next(seq))
                c.transmit()
                if peer_cid(c) != before:
                    t.cid_changes += 1

        rq = asyncio.ensure_future(requests())
        rb = asyncio.ensure_future(rebinder())
        await asyncio.wait([rq], timeout=max(0.0, end - time.monotonic()))
        stop.set()
        rb.cancel()
        if abrupt:
            rq.cancel()
            await asyncio.gather(rq, rb, return_exceptions=True)
            await close_conn(cm, c, abrupt=True)
            t.abrupt_closes += 1
        else:
            await asyncio.gather(rq, rb, return_exceptions=True)
            await close_conn(cm, c)

    async def slot(n: int) -> None:
        await asyncio.sleep(rng.uniform(0, min(2.0, args.seconds / 4)))   # spread the handshakes
        while live(deadline):
            await one(n)

    await asyncio.gather(*(slot(n) for n in range(args.conns)))


# ---- S3: dispatch storm through a relay ----------------------------------------

class Session:
    def __init__(self, client_addr):
        self.client_addr = client_addr
        self.up = None                      # the upstream socket (HAProxy sees its address)
        self.queue: list[bytes] = []        # datagrams before the upstream socket exists
        self.recorded: list[bytes] = []
        self.drop_until = 0.0
        self.drop_p = 0.0
        self.done = False


class Relay:
    """client <-> listen socket <-> one upstream socket per client <-> HAProxy."""

    MAX_RECORDED = 48

    def __init__(self, target, rng: random.Random, t: Tally):
        self.target = target
        self.rng = rng
        self.t = t
        self.loop = asyncio.get_running_loop()
        self.sessions: dict[int, Session] = {}
        self.finished: collections.deque[Session] = collections.deque()
        self.listen = None
        self.stranger = None
        self.port = 0

    async def start(self) -> None:
        relay = self

        class Listen(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                relay.from_client(data, addr)

        self.listen, _ = await self.loop.create_datagram_endpoint(Listen, local_addr=("127.0.0.1", 0))
        self.port = self.listen.get_extra_info("sockname")[1]
        self.stranger, _ = await self.loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                                    local_addr=("127.0.0.1", 0))

    def dropping(self, s: Session) -> bool:
        if time.monotonic() < s.drop_until and self.rng.random() < s.drop_p:
            self.t.dropped += 1
            return True
        return False

    def from_client(self, data: bytes, addr) -> None:
        s = self.sessions.get(addr[1])
        if s is None:
            s = self.sessions[addr[1]] = Session(addr)
            self.loop.create_task(self._open(s))
        if len(s.recorded) < self.MAX_RECORDED:
            s.recorded.append(data)
        if s.up is None:
            s.queue.append(data)
        else:
            self._c2s(s, data)

    def _c2s(self, s: Session, data: bytes) -> None:
        if self.dropping(s):
            return
        s.up.sendto(data)
        x = self.rng.random()
        if x < 0.05:
            s.up.sendto(data)
            self.t.duplicated += 1
        elif x < 0.10:
            self.loop.call_later(self.rng.uniform(0.02, 0.4), self._send, s.up, data)
            self.t.duplicated += 1

    @staticmethod
    def _send(transport, data: bytes) -> None:
        if transport is not None and not transport.is_closing():
            transport.sendto(data)

    async def _open(self, s: Session) -> None:
        relay = self

        class Up(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                relay.from_server(s, data)

            def error_received(self, exc):
                pass

        s.up, _ = await self.loop.create_datagram_endpoint(Up, remote_addr=self.target)
        queued, s.queue = s.queue, []
        for d in queued:
            self._c2s(s, d)

    def from_server(self, s: Session, data: bytes) -> None:
        if s.done:
            self.t.late_answers += 1
            return
        if self.dropping(s):
            return
        self.listen.sendto(data, s.client_addr)

    def session(self, port: int) -> Session | None:
        return self.sessions.get(port)

    def finish(self, port: int) -> None:
        """The client is done with this session: its datagrams come back
        later, from its own address, a stranger's and another connection's."""
        s = self.sessions.pop(port, None)
        if s is None:
            return
        s.done = True
        self.loop.call_later(self.rng.uniform(0.1, 1.5), self._replay, s)

    def _replay(self, s: Session) -> None:
        if not s.recorded or s.up is None:
            if s.up is not None:
                s.up.close()
            return
        others = [o for o in self.sessions.values() if o.up is not None]
        for d in self.rng.sample(s.recorded, min(len(s.recorded), self.rng.randint(1, 8))):
            for _ in range(2 if self.rng.random() < 0.3 else 1):
                x = self.rng.random()
                if x < 0.5:
                    s.up.sendto(d)                          # late, from its own address
                elif x < 0.8 or not others:
                    self.stranger.sendto(d, self.target)    # from an address never seen
                else:
                    self.rng.choice(others).up.sendto(d)    # on a live connection's path
                self.t.replayed += 1
        self.loop.call_later(1.0, s.up.close)


async def s3(args, t: Tally, rng: random.Random) -> None:
    deadline = time.monotonic() + args.seconds
    relay = Relay(("127.0.0.1", args.port), rng, t)
    await relay.start()
    seq = itertools.count()

    async def one(n: int) -> None:
        opened = await open_counted(relay.port, t)
        if opened is None:
            return
        cm, c = opened
        t.conns += 1
        port = c._transport.get_extra_info("sockname")[1]
        s = relay.session(port)
        scid0 = peer_cid(c).hex()         # the server's trace id (qlog file name)
        cid_mode = rng.random() < 0.5 and s is not None
        try:
            if cid_mode:
                # Retire connection IDs as fast as they arrive, while
                # datagrams are lost both ways: the NEW_CONNECTION_ID frames
                # that announced them (or the ACKs of those) are retransmitted.
                s.drop_until = time.monotonic() + 0.8
                s.drop_p = 0.3
                for _ in range(rng.randint(3, 8)):
                    before = peer_cid(c)
                    c.change_connection_id()
                    if peer_cid(c) != before:
                        t.cid_changes += 1
                    await asyncio.sleep(rng.uniform(0.005, 0.05))
            await get(t, c, f"s3.{args.seed}.{n}.{next(seq)}", args.tag, goaway_ok=False,
                      note=f"scid0={scid0} relay_port={port} cid_mode={cid_mode}")
        finally:
            abrupt = rng.random() < 0.1
            await close_conn(cm, c, abrupt=abrupt)
            t.abrupt_closes += abrupt
            relay.finish(port)

    async def slot(n: int) -> None:
        while live(deadline):
            await one(n)

    await asyncio.gather(*(slot(n) for n in range(args.conns)))
    await asyncio.sleep(2.0)        # the last replays


# ---- main ------------------------------------------------------------------------

SCENARIOS = {"s1": s1, "s2": s2, "s3": s3}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--tag", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--conns", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    t = Tally(scenario=args.scenario)
    rng = random.Random(args.seed)
    t0 = time.monotonic()

    async def go():
        await SCENARIOS[args.scenario](args, t, rng)

    try:
        # bounded: the scenario's time, plus the longest wait of its last round
        asyncio.run(asyncio.wait_for(go(), args.seconds + REQ_TIMEOUT + 30))
    except asyncio.TimeoutError:
        t.fail("worker did not finish in time")
    t.seconds = round(time.monotonic() - t0, 2)
    Path(args.out).write_text(json.dumps(asdict(t)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
