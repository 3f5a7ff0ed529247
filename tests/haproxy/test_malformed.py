"""Malformed requests (RFC 9114 4.1.2, 4.2, 4.3.1), crafted with aioquic's
raw header lists: each one is a stream error (reset with H3_MESSAGE_ERROR,
or a 400 answer), the connection survives, and the next valid request on
the same connection succeeds.

Counters: the rust flavour counts each in h3_message_errors. Stock 3.0.11's
h3_message_error counts only the CONNECTION_CLOSE frames it *receives* with
that code, so it stays still for stream errors; what stock shows instead is
that a malformed header section never becomes a request (h3req does not
move) while a body/content-length mismatch does (its header section was
valid), then fails."""

import asyncio

import pytest

import aqclient
import hap
from backend import pattern

BASE = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost"),
        (b":path", b"/bytes/10")]

HEADER_CASES = {
    "uppercase-name": BASE + [(b"X-Upper", b"1")],
    "missing-path": BASE[:3],
    "connection-header": BASE + [(b"connection", b"keep-alive")],
    "te-not-trailers": BASE + [(b"te", b"gzip")],
    "pseudo-after-regular": BASE[:3] + [(b"x-a", b"1"), (b":path", b"/bytes/10")],
}
BODY_CASES = {"content-length-short": (10, 5), "content-length-long": (10, 100)}
CASES = list(HEADER_CASES) + list(BODY_CASES)


async def malformed_then_valid(c, case):
    if case in HEADER_CASES:
        _, bad = c.start(raw_headers=HEADER_CASES[case])
    else:
        size, declared = BODY_CASES[case]
        _, bad = c.start("POST", "/echo", body=b"x" * size, content_length=declared)
    await asyncio.wait_for(bad.future, 5)
    good = await asyncio.wait_for(c.request("GET", "/bytes/10"), 5)
    return bad, good


@pytest.mark.parametrize("case", CASES)
def test_malformed_request(hx1, binary, case):
    before = hx1.counters("requests", "message_errors", "req_tot", "hrsp_4xx")

    async def go():
        async with aqclient.connect(hx1.port) as c:
            bad, good = await malformed_then_valid(c, case)
            return bad, good, c.close_code

    bad, good, closed = aqclient.run(go(), 30)
    assert bad.reset_code == aqclient.H3_MESSAGE_ERROR or bad.status == 400, \
        f"{case}: status {bad.status}, {bad.error}"
    assert closed is None, f"{case}: the connection was closed (0x{closed:x})"
    assert good.ok and good.status == 200 and bytes(good.body) == pattern(10), good.error

    if binary.flavour == "rust":
        expected = {"message_errors": 1}
    elif case in HEADER_CASES:
        expected = {"message_errors": 0, "requests": 1}                 # the valid one only
    else:
        # the header section was valid: a request, answered 400 or aborted
        # depending on when the short/long body is noticed
        expected = {"message_errors": 0, "requests": 2}

    def delta():
        after = hx1.counters("requests", "message_errors", "req_tot", "hrsp_4xx")
        return {k: after[k] - before[k] for k in after}

    # counters move as streams end, a little after the answers: wait (bounded)
    try:
        hap.wait_for(lambda: all(delta()[k] == v for k, v in expected.items()), 5)
    except TimeoutError:
        pass
    d = delta()
    assert {k: d[k] for k in expected} == expected, d


def test_all_malformed_on_one_connection(hx1, binary):
    """Every case in turn on a single connection, each followed by a valid
    request: the connection carries on through all of them."""
    before = hx1.counters("message_errors")

    async def go():
        async with aqclient.connect(hx1.port) as c:
            out = [await malformed_then_valid(c, case) for case in CASES]
            return out, c.close_code

    out, closed = aqclient.run(go(), 60)
    assert closed is None
    for case, (bad, good) in zip(CASES, out):
        assert bad.reset_code == aqclient.H3_MESSAGE_ERROR or bad.status == 400, (case, bad.error)
        assert good.ok and good.status == 200, (case, good.error)
    want = len(CASES) if binary.flavour == "rust" else 0
    moved = lambda: hx1.counters("message_errors")["message_errors"] - before["message_errors"]  # noqa: E731
    try:
        hap.wait_for(lambda: moved() == want, 5)
    except TimeoutError:
        pass
    assert moved() == want


def test_stock_message_error_counts_received_close(hx1, binary):
    """What stock's h3_message_error does count: a CONNECTION_CLOSE with
    H3_MESSAGE_ERROR received from the client. (For the rust flavour the
    counter is about stream errors only; a close from the client is not
    one.)"""
    before = hx1.counters("message_errors")["message_errors"]

    async def go():
        async with aqclient.connect(hx1.port) as c:
            await c.request("GET", "/bytes/10")
            c.close(error_code=aqclient.H3_MESSAGE_ERROR, reason_phrase="e2e test")
            await asyncio.sleep(0.3)

    aqclient.run(go(), 20)
    if binary.flavour == "stock":
        hap.wait_for(lambda: hx1.counters("message_errors")["message_errors"] > before, 5,
                     what="h3_message_error to count the close")
        assert hx1.counters("message_errors")["message_errors"] == before + 1
    else:
        assert hx1.counters("message_errors")["message_errors"] == before
