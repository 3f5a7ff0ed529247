"""The PATH_CHALLENGE and RETIRE_CONNECTION_ID queues stay bounded: the
classes of quiche's CVE-2023-6193 (path validation: answers queued without
limit while the attacker withholds its ACKs) and of its unbounded storage of
connection-ID retirements (quicwg/base-drafts#3509).

  path-challenge  1,000,000 PATH_CHALLENGE frames packed into ~57 KB
                  datagrams (the server accepts datagrams that large on
                  loopback), none of the server's packets acknowledged: quiche
                  keeps at most 3 challenges per path and drops the rest, so
                  the server answers at most 3 per datagram and its memory
                  does not follow the flood (queueing them all would take
                  8 MB at least)
  retire-cid      NEW_CONNECTION_ID frames whose Retire Prior To rises by one
                  each, acknowledgements withheld: each one makes the server
                  retire an ID; past 3 x active_connection_id_limit (12)
                  retirements owed it closes with CONNECTION_ID_LIMIT_ERROR
                  (RFC 9000 section 5.1.2). First 1000 in one datagram, then
                  one per round trip, so that the server answers each until
                  its congestion window, never acknowledged, is spent
"""

import asyncio
import os
import time

import limits

BIG_DATAGRAM = 60000
CHALLENGES = 1_000_000
PER_BATCH = 20_000


def test_path_challenge_queue(make_haproxy):
    h = make_haproxy(nbthread=2)
    proc = limits.Proc(h.pid)

    async def go():
        async with limits.connect(h.port, max_datagram_size=BIG_DATAGRAM) as c:
            await c.request("GET", "/bytes/10")
            c.no_ack = True
            q0, s0 = limits.show_quic(h), proc.sample()
            t0 = time.monotonic()
            for _ in range(CHALLENGES // PER_BATCH):
                c.inject([limits.path_challenge(os.urandom(8)) for _ in range(PER_BATCH)])
                if not await c.drain(20) or c.closed.is_set():
                    break
            el = time.monotonic() - t0
            await asyncio.sleep(1.0)
            s1, q1 = proc.sample(), limits.show_quic(h)
            # the connection is still usable once the client acknowledges again
            c.no_ack = False
            r = await asyncio.wait_for(c.request("GET", "/bytes/10"), 20)
            return (c.injected, c.injected_packets, el, c.frames_in["PATH_RESPONSE"], s1 - s0,
                    limits.quic_delta(q1, q0), r, c.close_code)

    n, packets, el, responses, cost, d, r, code = limits.aqclient.run(go(), 120)
    assert n == CHALLENGES, f"only {n} PATH_CHALLENGE sent"
    assert code is None, limits.error_name(code)
    # quiche's queue is 3 per path: at most 3 answers per datagram received
    assert responses <= 3 * max(d["packets_in"], packets) + 10, (responses, packets, d)
    assert cost.rss_kb < 4 * 1024, f"RSS {limits.mb(cost.rss_kb)} after {n} PATH_CHALLENGE"
    assert cost.cpu_s < 5, f"server CPU {cost.cpu_s:.2f} s"
    assert r.ok and r.status == 200, r.error
    limits.report("path-challenge",
                  f"{n} PATH_CHALLENGE in {packets} datagrams in {el:.1f} s, no ACKs: {responses} PATH_RESPONSE "
                  f"({responses / packets:.1f} per datagram), server CPU {cost.cpu_s:.2f} s, RSS {limits.mb(cost.rss_kb)}",
                  "<= 3 queued per path; memory flat")


RETIRE_MAX = 50_000
RETIRE_BATCH = 1000


def test_retire_connection_id_queue(make_haproxy):
    h = make_haproxy(nbthread=2)
    proc = limits.Proc(h.pid)

    async def burst():
        """1000 per datagram: far more owed at once than allowed."""
        async with limits.connect(h.port, max_datagram_size=BIG_DATAGRAM) as c:
            await c.request("GET", "/bytes/10")
            c.no_ack = True
            c.own_cids()
            c.inject([c.new_cid() for _ in range(RETIRE_BATCH)])
            await c.drain(10)
            await limits.wait_until(c.closed.is_set, 5)
            return c.injected, c.close_code

    async def paced():
        """One per round trip: the server answers each with its
        RETIRE_CONNECTION_ID until, its packets never acknowledged, its
        congestion window is spent and the retirements it owes pile up."""
        async with limits.connect(h.port) as c:
            await c.request("GET", "/bytes/10")
            c.no_ack = True
            c.own_cids()
            s0 = proc.sample()
            t0 = time.monotonic()
            n = 0
            while n < RETIRE_MAX and not c.closed.is_set() and time.monotonic() - t0 < 30:
                before = c.frames_in["RETIRE_CONNECTION_ID"]
                c.inject([c.new_cid()])
                n += 1
                await limits.wait_until(lambda: c.frames_in["RETIRE_CONNECTION_ID"] > before
                                        or c.closed.is_set(), 0.05, 0.0005)
            await limits.wait_until(c.closed.is_set, 5)
            el = time.monotonic() - t0
            s1 = proc.sample()
            return n, el, c.frames_in["RETIRE_CONNECTION_ID"], s1 - s0, c.close_code

    nb, code_b = limits.aqclient.run(burst(), 60)
    assert code_b == limits.CONNECTION_ID_LIMIT_ERROR, limits.error_name(code_b)
    n, el, retired, cost, code = limits.aqclient.run(paced(), 90)
    assert code == limits.CONNECTION_ID_LIMIT_ERROR, (
        f"{n} NEW_CONNECTION_ID with rising Retire Prior To, no ACKs, in {el:.1f} s: close "
        f"{limits.error_name(code)}, {retired} RETIRE_CONNECTION_ID seen, RSS {limits.mb(cost.rss_kb)}")
    # what it owed when it gave up: what it could not send, at most 12 (+1)
    assert n - retired <= 3 * 4 + 20, (n, retired)
    assert cost.rss_kb < 2 * 1024, f"RSS {limits.mb(cost.rss_kb)}"
    limits.report("retire-cid",
                  f"{nb} NEW_CONNECTION_ID in one datagram -> {limits.error_name(code_b)}; one per round "
                  f"trip with ACKs withheld: {retired} RETIRE_CONNECTION_ID answered, then closed with "
                  f"{limits.error_name(code)} after {n} ({el:.1f} s), server CPU {cost.cpu_s:.2f} s, "
                  f"RSS {limits.mb(cost.rss_kb)}",
                  "<= 12 retirements owed (3 x active_connection_id_limit 4)")
