"""Header bombs, bounded by the maximum field-section size.

haquic sets quiche's SETTINGS_MAX_FIELD_SECTION_SIZE to max_field_section_size
(64 KiB, the default HAProxy keeps): a HEADERS frame longer than 1.5 times
that is refused as it arrives, a section that decodes to more is refused as
it is decoded (RFC 9114 section 4.2.2 size: name + value + 32 per field),
both with H3_EXCESSIVE_LOAD on the connection. Below that, HAProxy's own
limits apply (tune.bufsize 16 KiB for the whole head, tune.max-http-hdr 101
fields): the stream is reset and the connection goes on.

The requests are raw HEADERS frames written on the stream (QPACK without the
dynamic table, which the server does not allow):

  qpack-bomb    2000 one-byte references to the static table entry
                accept-encoding: gzip, deflate, br: 2 KB on the wire, 128 KB
                decoded
  literal-100k  one 100 KB literal value (the frame is larger than 96 KiB)
  literal-60k   one 60 KB value: within haquic's limit, beyond HAProxy's buffer
  fields-200    200 small fields: beyond tune.max-http-hdr
  parked        100 streams that each send 94 KB of a 98 KB HEADERS frame and
                stop: what one connection can make the server hold
"""

import asyncio

import limits

MAX_FIELD_SECTION = 64 * 1024


def qint(v: int, prefix_bits: int, first: int) -> bytes:
    """A QPACK/HPACK prefixed integer."""
    mx = (1 << prefix_bits) - 1
    if v < mx:
        return bytes([first | v])
    out = [first | mx]
    v -= mx
    while v >= 128:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def literal(name: bytes, value: bytes) -> bytes:
    """Literal field line with a literal name (RFC 9204 4.5.6), no Huffman."""
    return qint(len(name), 3, 0x20) + name + qint(len(value), 7, 0x00) + value


def static(index: int) -> bytes:
    """Indexed field line, static table (RFC 9204 4.5.2)."""
    return qint(index, 6, 0xC0)


ACCEPT_ENCODING = 31        # accept-encoding: gzip, deflate, br (decoded size 64)
HEAD = static(17) + static(23) + literal(b":authority", b"127.0.0.1") + static(1)   # GET https /


def headers_frame(section: bytes) -> bytes:
    payload = b"\0\0" + section         # Required Insert Count 0, Base 0
    return limits.varint(0x01) + limits.varint(len(payload)) + payload


CASES = {
    "qpack-bomb": HEAD + static(ACCEPT_ENCODING) * 2000,
    "literal-100k": HEAD + literal(b"x-big", b"a" * 100_000),
    "literal-60k": HEAD + literal(b"x-big", b"a" * 60_000),
    "fields-200": HEAD + b"".join(literal(b"x-f%d" % i, b"v") for i in range(200)),
}


def test_header_bomb(make_haproxy):
    h = make_haproxy(nbthread=2)
    proc = limits.Proc(h.pid)

    async def one(section: bytes):
        async with limits.connect(h.port) as c:
            await c.request("GET", "/bytes/10")
            q = c._quic
            s0, q0 = proc.sample(), limits.show_quic(h)
            sid = q.get_next_available_stream_id()
            resp = limits.aqclient.Response(sid, asyncio.get_running_loop().create_future(), True)
            c.pending[sid] = resp
            frame = headers_frame(section)
            q.send_stream_data(sid, frame, end_stream=True)
            c.transmit()
            await limits.wait_until(lambda: resp.future.done() or c.closed.is_set(), 10)
            await asyncio.sleep(0.2)
            s1, q1 = proc.sample(), limits.show_quic(h)
            after = None
            if not c.closed.is_set():
                after = await asyncio.wait_for(c.request("GET", "/bytes/10"), 10)
            return len(frame), resp, c.close_code, s1 - s0, limits.quic_delta(q1, q0), after

    async def parked(streams: int = 100, frame_len: int = 98_000, sent: int = 94_000):
        async with limits.connect(h.port) as c:
            q = c._quic
            s0 = proc.sample()
            for _ in range(streams):
                sid = q.get_next_available_stream_id()
                head = limits.varint(0x01) + limits.varint(frame_len) + b"\0\0" + qint(5, 3, 0x20) + b"x-big"
                q.send_stream_data(sid, head + b"a" * (sent - len(head)), end_stream=False)
            c.transmit()
            await limits.wait_until(lambda: all(st.sender.buffer_is_empty for st in q._streams.values()), 60, 0.05)
            await asyncio.sleep(1.0)
            s1 = proc.sample()
            return streams * sent, s1 - s0, c.close_code

    results = {name: limits.aqclient.run(one(section), 60) for name, section in CASES.items()}
    lines = []
    for name, (size, resp, code, cost, d, after) in results.items():
        if name in ("qpack-bomb", "literal-100k"):
            assert code == limits.H3_EXCESSIVE_LOAD, f"{name}: {limits.error_name(code)}, {resp.error}"
            assert d["h3_conn_errors"] == 1, d
            outcome = f"connection {limits.error_name(code)}"
        else:
            # HAProxy's buffer or header count: the stream is refused, the
            # connection serves the next request
            assert code is None, f"{name}: {limits.error_name(code)}"
            assert resp.reset_code is not None or resp.status in (400, 431), f"{name}: {resp.status} {resp.error}"
            assert after is not None and after.ok and after.status == 200, after and after.error
            outcome = (f"stream reset {limits.error_name(resp.reset_code)}" if resp.reset_code is not None
                       else f"HTTP {resp.status}")
        assert cost.rss_kb < 4 * 1024, f"{name}: RSS {limits.mb(cost.rss_kb)}"
        lines.append(f"{name} ({size} B) -> {outcome}")

    held, cost, code = limits.aqclient.run(parked(), 120)
    assert code is None, limits.error_name(code)
    # what 100 streams x 1.5 x 64 KiB of partial HEADERS may take, with
    # allocator slack; the connection window (10 MiB) bounds it as well
    bound_kb = 100 * 1.5 * MAX_FIELD_SECTION / 1024
    assert cost.rss_kb < 2 * bound_kb, f"RSS {limits.mb(cost.rss_kb)} for {held} B of partial HEADERS"
    lines.append(f"parked: 100 streams x 94 KB of unfinished HEADERS held {limits.mb(cost.rss_kb)} RSS")
    limits.report("header-bomb", "; ".join(lines),
                  f"{MAX_FIELD_SECTION // 1024} KiB decoded / 96 KiB per frame in haquic, then HAProxy's "
                  f"16 KiB buffer and 101 fields; <= {bound_kb / 1024:.1f} MB per connection parked")
