"""Stream-limit abuse: a client that opens streams beyond MAX_STREAMS.

HAProxy's `tune.quic.frontend.max-streams-bidi 100` (the template's) becomes
haquic's initial_max_streams_bidi, and the unidirectional limit is 3 (the
control and two QPACK streams of HTTP/3). aioquic honours the server's
limits, so the test lifts them on the client's side (its
_remote_max_streams_*) and opens one stream more than allowed:

  bidi   100 requests held open (/slow, 4 s) fill the window; the server
         runs exactly that many, then stream 101 -> STREAM_LIMIT_ERROR
  uni    a 4th unidirectional stream -> STREAM_LIMIT_ERROR
"""

import asyncio

import limits

MAX_STREAMS = 100


def test_stream_limit(make_haproxy):
    h = make_haproxy(nbthread=2, max_streams=MAX_STREAMS)

    async def bidi():
        async with limits.connect(h.port) as c:
            q = c._quic
            held = []

            def fill():
                while q.get_next_available_stream_id() // 4 < q._remote_max_streams_bidi:
                    held.append(c.start("GET", "/slow?ms=4000")[1])

            fill()
            # the server runs every stream it allowed, and no more
            await limits.wait_until(lambda: any(int(x.get("streams", 0)) >= MAX_STREAMS
                                                for x in limits.conn_lines(h)), 5, 0.1)
            running = max([int(x.get("streams", 0)) for x in limits.conn_lines(h)] or [0])
            fill()      # credit that came back in the meantime
            limit = q._remote_max_streams_bidi
            q._remote_max_streams_bidi = 1 << 20
            sid, extra = c.start("GET", "/bytes/10")
            await limits.wait_until(c.closed.is_set, 10)
            return running, limit, sid, len(held), c.close_code

    async def uni():
        async with limits.connect(h.port) as c:
            await c.request("GET", "/bytes/10")
            q = c._quic
            limit = q._remote_max_streams_uni
            q._remote_max_streams_uni = 1 << 20
            sid = q.get_next_available_stream_id(is_unidirectional=True)
            # a stream type HTTP/3 ignores (reserved 0x21): only the count matters
            q.send_stream_data(sid, limits.varint(0x21) + b"x", end_stream=False)
            c.transmit()
            await limits.wait_until(c.closed.is_set, 10)
            return limit, sid, c.close_code

    async def fresh():
        async with limits.connect(h.port) as c:
            return await asyncio.wait_for(c.request("GET", "/bytes/10"), 20)

    running, limit, sid, held, code = limits.aqclient.run(bidi(), 60)
    assert running == MAX_STREAMS, f"the server ran {running} streams at once (limit {MAX_STREAMS})"
    assert code == limits.STREAM_LIMIT_ERROR, (
        f"stream {sid} (index {sid // 4}, limit {limit}): {limits.error_name(code)}")
    ulimit, usid, ucode = limits.aqclient.run(uni(), 60)
    assert ulimit == 3, ulimit
    assert ucode == limits.STREAM_LIMIT_ERROR, f"uni stream {usid}: {limits.error_name(ucode)}"
    r = limits.aqclient.run(fresh(), 30)
    assert r.ok and r.status == 200, r.error
    limits.report("stream-limit",
                  f"{held} requests held open, {running} running at the server; bidi stream {sid} "
                  f"(#{sid // 4 + 1}, limit {limit}) -> {limits.error_name(code)}; uni stream {usid} "
                  f"(#{usid // 4 + 1}, limit {ulimit}) -> {limits.error_name(ucode)}; other connections unaffected",
                  f"<= {MAX_STREAMS} bidi, 3 uni")
