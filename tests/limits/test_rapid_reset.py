"""Rapid reset (CVE-2023-44487 for HTTP/3): open-and-reset loops.

The client opens as many request streams as the server's MAX_STREAMS allows
(GET /slow?ms=1000: each one makes HAProxy connect to the backend and wait
for it), lets their HEADERS leave, then resets each one (RESET_STREAM and
STOP_SENDING, H3_REQUEST_CANCELLED), and starts again as soon as credit
comes back, for 8 seconds.

The bound: the server grants new stream credit only as it finishes streams,
so the work in progress (HAProxy's streams, `show quic all`; its backend
connections, the backend's `scur`) never exceeds max-streams-bidi (100),
however fast the client churns; CPU per stream and memory stay bounded, and
the connection is still usable afterwards.
"""

import asyncio
import statistics
import threading
import time

import limits

MAX_STREAMS = 100
DURATION = 8.0


class Sampler(threading.Thread):
    """Samples, every 50 ms, HAProxy's streams per connection and its
    backend's current sessions; keeps the peaks."""

    def __init__(self, h):
        super().__init__(daemon=True)
        self.h = h
        self.stop = threading.Event()
        self.peak_streams = self.peak_backend = self.samples = 0
        self.errors: list[str] = []

    def run(self):
        while not self.stop.is_set():
            try:
                streams = max([int(x.get("streams", 0)) for x in limits.conn_lines(self.h)] or [0])
                be = self.h.stats().get(("be", "BACKEND"), {})
                self.peak_streams = max(self.peak_streams, streams)
                self.peak_backend = max(self.peak_backend, int(be.get("scur") or 0))
                self.samples += 1
            except Exception as e:      # noqa: BLE001 (kept for the report)
                self.errors.append(repr(e))
            self.stop.wait(0.05)


def test_rapid_reset(make_haproxy):
    h = make_haproxy(nbthread=2, max_streams=MAX_STREAMS)
    proc = limits.Proc(h.pid)
    sampler = Sampler(h)

    async def go():
        async with limits.connect(h.port) as c:
            await c.request("GET", "/bytes/10")
            q = c._quic
            q0, s0 = limits.show_quic(h), proc.sample()
            sampler.start()
            n = 0
            t0 = time.monotonic()
            while time.monotonic() - t0 < DURATION and not c.closed.is_set():
                opened = []
                while q.get_next_available_stream_id() // 4 < q._remote_max_streams_bidi and len(opened) < 200:
                    opened.append(c.start("GET", "/slow?ms=1000")[0])
                # the HEADERS leave first (a reset queued with them would
                # replace them), then the resets
                await limits.wait_until(lambda: all(q._streams[s].sender.buffer_is_empty
                                                    for s in opened if s in q._streams), 0.5, 0.001)
                for sid in opened:
                    c.cancel(sid)
                n += len(opened)
                await asyncio.sleep(0.001)
            el = time.monotonic() - t0
            sampler.stop.set()
            await asyncio.sleep(1.0)
            s1, q1 = proc.sample(), limits.show_quic(h)
            r = await asyncio.wait_for(c.request("GET", "/bytes/10"), 20)
            return n, el, q._remote_max_streams_bidi, list(c.max_streams_seen), s1 - s0, s1, \
                limits.quic_delta(q1, q0), r, c.close_code

    try:
        n, el, credit, seen, cost, after, d, r, code = limits.aqclient.run(go(), 90)
    finally:
        sampler.stop.set()
    sampler.join(5)
    assert code is None, limits.error_name(code)
    assert n >= 1000, f"only {n} open+reset in {el:.1f} s"
    assert sampler.samples >= 10 and not sampler.errors[:1], (sampler.samples, sampler.errors[:3])
    # the streams that reached HTTP/3 (HEADERS before the reset) and those
    # reset before their HEADERS were read account for every one
    assert d["requests"] + d["streams_aborted_before_headers"] >= 0.95 * n, (n, d)
    assert d["requests"] >= 0.5 * n, f"only {d['requests']} of {n} requests reached HAProxy: {d}"
    # credit is granted as streams finish: the work in progress stays within the window
    assert sampler.peak_streams <= MAX_STREAMS, f"{sampler.peak_streams} HAProxy streams at once"
    assert sampler.peak_backend <= MAX_STREAMS, f"{sampler.peak_backend} backend sessions at once"
    assert credit <= n + MAX_STREAMS + 1, (credit, n)
    per_stream_us = cost.cpu_s / n * 1e6
    assert per_stream_us < 1000, f"server CPU {cost.cpu_s:.2f} s for {n} streams"
    assert cost.rss_kb < 32 * 1024, f"RSS {limits.mb(cost.rss_kb)}"
    assert r.ok and r.status == 200, r.error
    increments = [b - a for (_, a), (_, b) in zip(seen, seen[1:]) if b > a]
    limits.report("rapid-reset",
                  f"{n} open+reset in {el:.1f} s ({n / el:.0f}/s), {d['requests']} reached HAProxy; at most "
                  f"{sampler.peak_streams} HAProxy streams and {sampler.peak_backend} backend sessions at once "
                  f"({sampler.samples} samples); credit granted {len(increments)} times, "
                  f"median {statistics.median(increments) if increments else 0:.0f} streams at a time; server CPU "
                  f"{cost.cpu_s:.2f} s ({per_stream_us:.0f} us/stream), RSS {limits.mb(cost.rss_kb)} "
                  f"(peak {after.hwm_kb / 1024:.0f} MB)",
                  f"<= {MAX_STREAMS} streams in progress; credit only for finished streams")
