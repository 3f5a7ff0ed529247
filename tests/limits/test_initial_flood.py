"""An Initial flood switches to Retry past the threshold, and CPU stays
bounded.

The flood: real client Initials (aioquic's ClientHello, captured once and
re-protected for a new destination and source connection ID per datagram:
limits.InitialForge), sent from 64 source ports at about 2500 a second,
never followed by anything. Each one is a new connection to the server,
which can only stay half-open.

`tune.quic.retry-threshold N` (haquic: handshakes in progress per worker)
makes the engine answer with a stateless Retry once N are half-open, so
that at most N x nbthread connections are ever created, and each further
Initial costs a token and a ~100-byte datagram. HAProxy's own default for
the keyword is 100 (QUIC_DFLT_RETRY_THRESHOLD); stock 3.0.11 under the
default configuration accepts 100 of 1000 flooded Initials and answers the
other 900 with Retry. The patched HAProxy has the same default, counted per
worker (at most 100 x nbthread half-open connections); before patch 0006
set it, it never sent Retry unless the keyword was given (1000 flooded
Initials: 1000 connections, 0 Retry, RSS +31 MB).
"""

import asyncio
import os
import time


import limits

SOCKETS = 64


def flood(h, n: int):
    """Sends n forged Initials to h; returns what came back, the counter
    deltas, the server's CPU and memory deltas and the kernel's drops."""
    forge = limits.InitialForge()
    datagrams = [forge.forge(os.urandom(8)) for _ in range(n)]
    socks = [limits.udp_socket() for _ in range(SOCKETS)]
    proc = limits.Proc(h.pid)
    drops0 = limits.udp_drops(h.port)
    q0, s0 = limits.show_quic(h), proc.sample()
    t0 = time.monotonic()
    for i, d in enumerate(datagrams):
        socks[i % SOCKETS].sendto(d, ("127.0.0.1", h.port))
        if i % 50 == 49:
            time.sleep(0.02)
    sent_s = time.monotonic() - t0
    got = limits.Received()
    # what the server does with the flood is done once every datagram is
    # accounted for (bounded wait), plus a second for the answers to arrive
    limits.wait_quic(h, lambda c: sum(c.get(k, 0) - q0.get(k, 0) for k in
                                      ("conns_accepted", "retries_sent", "drop_queue_full",
                                       "drop_conn_limit", "drop_unparsable", "drop_bad_token"))
                     >= n - (limits.udp_drops(h.port) - drops0), timeout=15)
    time.sleep(1.0)
    for s in socks:
        got.add(limits.drain_socket(s))
        s.close()
    s1, q1 = proc.sample(), limits.show_quic(h)
    return got, limits.quic_delta(q1, q0), s1 - s0, s1, limits.udp_drops(h.port) - drops0, sent_s


async def legit_get(port):
    async with limits.connect(port) as c:
        return await asyncio.wait_for(c.request("GET", "/bytes/100"), 20)


THRESHOLD = 20
NBTHREAD = 2
N = 3000


def test_initial_flood_retry(make_haproxy):
    h = make_haproxy(nbthread=NBTHREAD, extra_global=f"tune.quic.retry-threshold {THRESHOLD}")
    got, d, cost, after, kdrops, sent_s = flood(h, N)
    seen = N - kdrops
    accepted, retries = d["conns_accepted"], d["retries_sent"]
    bound = THRESHOLD * NBTHREAD
    assert accepted <= bound + 2, f"{accepted} connections created (threshold {THRESHOLD} x {NBTHREAD} workers): {d}"
    others = sum(d.get(k, 0) for k in ("drop_queue_full", "drop_conn_limit", "drop_unparsable"))
    assert retries >= seen - accepted - others - 5, f"{retries} Retry for {seen} Initials: {d}"
    assert got.by_type["retry"] >= 0.95 * retries, dict(got.by_type)
    retry_size = got.bytes_by_type["retry"] / max(1, got.by_type["retry"])
    # a Retry is stateless and small: no amplification, and no handshake cost
    assert retry_size < 200, retry_size
    per_initial_us = cost.cpu_s / N * 1e6
    # measured about 0.05 s for the 3000 (15 us each); a full handshake
    # costs about 300 us of CPU
    assert cost.cpu_s < 1.5, f"server CPU {cost.cpu_s:.2f} s for {N} Initials"
    assert cost.rss_kb < 16 * 1024, f"server RSS {limits.mb(cost.rss_kb)}"
    # a real client still gets through, by way of a Retry (the flood's
    # connections are still half-open)
    q0 = limits.show_quic(h)
    r = limits.aqclient.run(legit_get(h.port), 40)
    assert r.ok and r.status == 200, r.error
    legit = limits.quic_delta(limits.show_quic(h), q0)
    assert legit["retries_sent"] >= 1 and legit["handshakes"] == 1, legit
    limits.report("initial-flood",
                  f"{N} Initials from {SOCKETS} ports in {sent_s:.1f} s ({kdrops} dropped by the kernel): "
                  f"{accepted} connections, {retries} Retry of {retry_size:.0f} B "
                  f"({got.bytes_by_type['retry'] / (got.by_type['retry'] * 1200):.2f}x of the Initials' bytes), "
                  f"server CPU {cost.cpu_s:.2f} s ({per_initial_us:.0f} us/Initial), RSS {limits.mb(cost.rss_kb)}; "
                  f"a real client then connects through Retry",
                  f"<= {THRESHOLD} half-open x {NBTHREAD} workers, then Retry")


N_DEFAULT = 1000
STOCK_DEFAULT = 100     # HAProxy's QUIC_DFLT_RETRY_THRESHOLD


def test_initial_flood_default_config(make_haproxy):
    h = make_haproxy(nbthread=NBTHREAD)
    got, d, cost, after, kdrops, sent_s = flood(h, N_DEFAULT)
    accepted, retries = d["conns_accepted"], d["retries_sent"]
    limits.report("initial-flood-default",
                  f"{N_DEFAULT} Initials, default configuration: {accepted} connections "
                  f"({d.get('conn_sockets_opened', 0)} sockets), {retries} Retry, {got.bytes} B sent for "
                  f"{(N_DEFAULT - kdrops) * 1200} B received, server CPU {cost.cpu_s:.2f} s, RSS {limits.mb(cost.rss_kb)}",
                  f"HAProxy's default threshold: <= {STOCK_DEFAULT} half-open per worker, then Retry")
    assert retries > 0 and accepted <= STOCK_DEFAULT * NBTHREAD + 2, (
        f"{accepted} connections and {retries} Retry for {N_DEFAULT} Initials: {d}")
