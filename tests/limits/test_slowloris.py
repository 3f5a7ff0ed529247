"""Slowloris, ended by the idle and request timeouts.

HAProxy here: `tune.quic.frontend.max-idle-timeout 3s` (QUIC's idle
timeout, which any packet from the client restarts), and in the frontend
`timeout client 3s`, `timeout http-request 3s`, `timeout http-keep-alive 3s`
(HAProxy's, which a client that sends nothing useful must not be able to
restart). Each client is watched for 10 s.

  silent    handshake, one request, then nothing: the idle timeout ends it
  pinging   handshake, one request, then a PING every 0.5 s and no request:
            only HAProxy's keep-alive/client timeout can end it
  dribble   a request head sent one byte every 0.5 s (a 24-byte HEADERS
            frame takes 12 s): `timeout http-request` must end it

Stock HAProxy 3.0.11 ends `pinging` and `dribble` after 3.5 s with
CONNECTION_CLOSE H3_NO_ERROR (measured with this test's clients). With
haquic, a HEADERS frame is handed to HAProxy only once complete, and the
mux keeps no timer of its own: both live as long as the client wants.
"""

import asyncio
import time

import pytest

import limits

TIMEOUT = 3.0
WATCH = 10.0
CONFIG = dict(nbthread=2, extra_global=f"tune.quic.frontend.max-idle-timeout {int(TIMEOUT)}s",
              extra_frontend=f"timeout client {int(TIMEOUT)}s\ntimeout http-request {int(TIMEOUT)}s\n"
                             f"timeout http-keep-alive {int(TIMEOUT)}s")


async def silent(h):
    """Returns how long the server kept the connection after the client
    went quiet (None: still open after WATCH)."""
    async with limits.connect(h.port, idle_timeout=60) as c:
        await c.request("GET", "/bytes/10")
        q0 = limits.show_quic(h)
        t0 = time.monotonic()
        while time.monotonic() - t0 < WATCH:
            d = limits.quic_delta(limits.show_quic(h), q0)
            if d["conns_closed"] >= 1:
                return time.monotonic() - t0
            await asyncio.sleep(0.1)
        return None


async def pinging(h):
    """Returns (seconds until the server closed or None, close code)."""
    async with limits.connect(h.port, idle_timeout=60) as c:
        await c.request("GET", "/bytes/10")
        t0 = time.monotonic()
        while time.monotonic() - t0 < WATCH and not c.closed.is_set():
            c.inject([limits.ping()])
            await asyncio.sleep(0.5)
        return (time.monotonic() - t0 if c.closed.is_set() else None), c.close_code


async def dribble(h):
    """Returns (seconds until the server closed the connection or reset the
    stream, or None; bytes of the head sent; its length; close code)."""
    async with limits.connect(h.port, idle_timeout=60) as c:
        q = c._quic
        sid = q.get_next_available_stream_id()
        # the head as aioquic encodes it, held back and sent byte by byte
        held = []
        send = q.send_stream_data
        q.send_stream_data = lambda s, d, end_stream=False: held.append(d)
        c.http.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"https"),
                                  (b":authority", b"127.0.0.1"), (b":path", b"/bytes/10")],
                            end_stream=True)
        q.send_stream_data = send
        head = b"".join(held)
        resp = limits.aqclient.Response(sid, asyncio.get_running_loop().create_future(), True)
        c.pending[sid] = resp
        t0 = time.monotonic()
        i = 0
        while (time.monotonic() - t0 < WATCH and not c.closed.is_set() and not resp.future.done()
               and i < len(head) - 1):
            q.send_stream_data(sid, head[i:i + 1])
            c.transmit()
            i += 1
            await asyncio.sleep(0.5)
        ended = c.closed.is_set() or resp.reset_code is not None
        return (time.monotonic() - t0 if ended else None), i, len(head), c.close_code


def fmt(t, code=None):
    if t is None:
        return "still open"
    return f"ended after {t:.1f} s" + (f" ({limits.error_name(code)})" if code is not None else "")


def test_slowloris_idle_timeout(make_haproxy):
    h = make_haproxy(**CONFIG)
    t = limits.aqclient.run(silent(h), WATCH + 20)
    assert t is not None and t <= TIMEOUT + 2.5, f"silent connection {fmt(t)} (idle timeout {TIMEOUT} s)"
    limits.report("slowloris-idle", f"silent connection {fmt(t)}", f"idle timeout {TIMEOUT:.0f} s")


@pytest.mark.xfail(strict=True, reason=(
    "the haquic mux applies no HAProxy timeout to a connection: measured with timeouts of 3 s, an "
    "idle connection kept alive by a PING every 0.5 s and a request head dribbled one byte every "
    "0.5 s were both still open after 10 s (stock 3.0.11: both closed after 3.5 s, H3_NO_ERROR); "
    "an unfinished HEADERS frame never reaches HAProxy, so `timeout http-request` cannot start"))
def test_slowloris_request_timeout(make_haproxy):
    h = make_haproxy(**CONFIG)

    async def both():
        return await asyncio.gather(pinging(h), dribble(h))

    (t_ping, code_ping), (t_drib, sent, total, code_drib) = limits.aqclient.run(both(), WATCH + 30)
    limits.report("slowloris",
                  f"idle connection pinging every 0.5 s: {fmt(t_ping, code_ping)}; "
                  f"request head dribbled 1 byte/0.5 s: {fmt(t_drib, code_drib)} after {sent}/{total} bytes",
                  f"timeout client / http-keep-alive / http-request {TIMEOUT:.0f} s (+2 s)")
    assert t_ping is not None and t_ping <= TIMEOUT + 2.5, f"pinging idle connection {fmt(t_ping)}"
    assert t_drib is not None and t_drib <= TIMEOUT + 2.5, f"dribbled request head {fmt(t_drib)}"
