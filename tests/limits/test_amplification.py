"""At most 3x amplification before the client's address is validated
(RFC 9000 section 8.1).

HAProxy serves a certificate with 300 names (about 12 KB), so that its first
flight needs far more than three times a client Initial: the limit, not the
flight, decides what is sent.

  spoofed   one real Initial (aioquic's ClientHello) from a socket that never
            answers, as from a forged source address: everything the server
            sends to it, over several probe timeouts, is counted
  lossy     aioquic through the interop matrix's relay (impair.py), which
            drops the client's datagrams 2 to 6 and counts the bytes of each
            connection before validation
"""

import asyncio
import os
import sys
import time

import hap
import limits

sys.path.insert(0, str(limits.HERE.parent / "interop" / "matrix"))
import impair  # noqa: E402

FACTOR = 3


def big_cert_haproxy(make_haproxy, tmp_path, **opts):
    cert = limits.cert_with_many_names(tmp_path / "certs")
    h = make_haproxy(start=False, **opts)
    h.cfg.write_text(h.render().replace(str(hap.COMBINED_PEM), str(cert)))
    return h.start()


def test_amplification(make_haproxy, tmp_path):
    h = big_cert_haproxy(make_haproxy, tmp_path, extra_global="tune.quic.frontend.max-idle-timeout 20s")

    # -- spoofed: one Initial, then silence --
    forge = limits.InitialForge()
    initial = forge.forge(os.urandom(8))
    s = limits.udp_socket()
    before = limits.show_quic(h)
    s.sendto(initial, ("127.0.0.1", h.port))
    got = limits.Received()
    t0 = time.monotonic()
    # probe timeouts start at about 1 s (initial RTT 333 ms) and double:
    # 4.5 s covers the first two
    while time.monotonic() - t0 < 4.5:
        time.sleep(0.1)
        got.add(limits.drain_socket(s))
    s.close()
    d = limits.quic_delta(limits.show_quic(h), before)
    assert d["conns_accepted"] == 1, d
    spoof_ratio = got.bytes / len(initial)
    assert got.bytes <= FACTOR * len(initial), (
        f"{got.bytes} bytes sent to an unvalidated address for {len(initial)} received "
        f"({spoof_ratio:.2f}x), datagrams {dict(got.by_type)}")
    # the flight is larger than the budget, so the limit was what stopped it
    assert got.bytes > (FACTOR - 1) * len(initial), f"only {got.bytes} bytes: the limit was not reached"

    # -- lossy: aioquic's datagrams 2 to 6 lost, the handshake completes --
    proxy = impair.Proxy("127.0.0.1:0", f"127.0.0.1:{h.port}", impair.Config(seed=1, drop_c2s="1-5"))
    _, pport = proxy.start()
    try:
        async def fetch():
            async with limits.connect(pport, verify=False, connect_timeout=30) as c:
                return await asyncio.wait_for(c.request("GET", "/bytes/1000"), 20)
        r = limits.aqclient.run(fetch(), 60)
        stats = proxy.stats()
    finally:
        proxy.stop()
    assert r.ok and r.status == 200 and r.length == 1000, r.error
    conns = stats["connections"]
    assert len(conns) == 1, conns
    c = conns[0]
    c2s, s2c = c["prevalidation_c2s_bytes"], c["prevalidation_s2c_bytes"]
    assert c["validated"], c
    assert s2c <= FACTOR * c2s, f"{s2c} bytes sent before validation for {c2s} received"
    assert c["server_handshake_bytes"] > FACTOR * c2s, (
        f"the flight ({c['server_handshake_bytes']} B) did not need more than {FACTOR}x: nothing was tested")

    limits.report("amplification",
                  f"spoofed Initial: {got.bytes} bytes sent for {len(initial)} received = "
                  f"{spoof_ratio:.2f}x in {time.monotonic() - t0:.1f} s ({got.datagrams} datagrams); "
                  f"aioquic with datagrams 2-6 lost: {s2c} bytes for {c2s} = {s2c / c2s:.2f}x before "
                  f"validation, flight {c['server_handshake_bytes']} B",
                  f"<= {FACTOR}x")
