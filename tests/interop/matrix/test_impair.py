"""Unit tests for impair.py (the UDP impairment proxy), on 127.0.0.1."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import types

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import impair  # noqa: E402

V1 = 1
V2 = impair.QUIC_V2


# --------------------------------------------------------------------------
# helpers

def udp(host: str = "127.0.0.1", family=socket.AF_INET) -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((host, 0))
    s.settimeout(2.0)
    return s


def recv_until(sock, count: int | None = None, quiet: float = 0.15, limit: float = 5.0):
    """Datagrams as (data, addr, time): until `count` arrived, or `quiet` s of silence."""
    out = []
    end = time.monotonic() + limit
    while time.monotonic() < end and (count is None or len(out) < count):
        sock.settimeout(quiet if count is None else max(0.01, end - time.monotonic()))
        try:
            data, addr = sock.recvfrom(65535)
        except (socket.timeout, TimeoutError):
            break
        out.append((data, addr, time.monotonic()))
    return out


def wait_for(pred, timeout: float = 3.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.005)
    return pred()


def numbered(i: int, size: int = 64) -> bytes:
    # first byte 0x00: a "short header" to the parser, like any non-QUIC payload
    return b"\x00" + i.to_bytes(4, "big") + bytes(size - 5)


def number_of(data: bytes) -> int:
    return int.from_bytes(data[1:5], "big")


@pytest.fixture
def net():
    server = udp()
    client = udp()
    proxies = []

    def make(**kw):
        p = impair.Proxy("127.0.0.1:0", server.getsockname(), impair.Config(**kw))
        addr = p.start()
        proxies.append(p)
        return p, addr

    yield types.SimpleNamespace(server=server, client=client, make=make)
    for p in proxies:
        p.stop()
    server.close()
    client.close()


def send_numbered_c2s(net, n: int, **cfg):
    """Send n numbered datagrams through a new proxy; return (proxy, received numbers)."""
    p, addr = net.make(**cfg)
    for i in range(n):
        net.client.sendto(numbered(i), addr)
    assert wait_for(lambda: p.stats()["c2s"]["datagrams"] == n)
    fwd = p.stats()["c2s"]["forwarded"]
    got = recv_until(net.server, count=fwd)
    return p, [number_of(d) for d, _, _ in got]


def predicted_draws(seed: int, direction: str, n: int):
    rng = random.Random(f"{seed}:{direction}")
    return [[rng.random() for _ in range(6)] for _ in range(n)]


def varint(v: int) -> bytes:
    if v < 0x40:
        return bytes([v])
    if v < 0x4000:
        return (0x4000 | v).to_bytes(2, "big")
    return (0x80000000 | v).to_bytes(4, "big")


TYPE_BITS = {V1: {"initial": 0, "0rtt": 1, "handshake": 2, "retry": 3},
             V2: {"initial": 1, "0rtt": 2, "handshake": 3, "retry": 0}}


def long_pkt(kind: str, dcid: bytes, scid: bytes, size: int, version: int = V1,
             token: bytes = b"") -> bytes:
    """A synthetic long-header packet of exactly `size` bytes."""
    b0 = 0xC0 | (TYPE_BITS[version][kind] << 4) | 0x01
    hdr = bytes([b0]) + version.to_bytes(4, "big") + bytes([len(dcid)]) + dcid \
        + bytes([len(scid)]) + scid
    if kind == "retry":
        return hdr + bytes(max(0, size - len(hdr)))
    if kind == "initial":
        hdr += varint(len(token)) + token
    length = size - len(hdr) - 2          # 2-byte Length varint
    assert length >= 0
    return hdr + (0x4000 | length).to_bytes(2, "big") + bytes(length)


def short_pkt(dcid: bytes, size: int) -> bytes:
    return bytes([0x41]) + dcid + bytes(size - 1 - len(dcid))


def vneg_pkt(dcid: bytes, scid: bytes) -> bytes:
    return bytes([0x80]) + bytes(4) + bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid \
        + V1.to_bytes(4, "big")


# --------------------------------------------------------------------------
# parsing

def test_parse_coalesced_initial_handshake_short():
    dcid, scid = bytes(range(8)), b"\xaa" * 5
    i = long_pkt("initial", dcid, scid, 300, token=b"tok")
    h = long_pkt("handshake", dcid, scid, 200)
    s = short_pkt(dcid, 50)
    pkts = impair.parse_datagram(i + h + s)
    assert [p.kind for p in pkts] == ["initial", "handshake", "short"]
    assert [(p.offset, p.length) for p in pkts] == [(0, 300), (300, 200), (500, 50)]
    assert pkts[0].dcid == dcid and pkts[0].scid == scid and pkts[0].token_len == 3
    assert pkts[1].token_len == 0 and pkts[1].version == V1
    # zero padding after the last long packet is not a short-header packet
    pkts = impair.parse_datagram(i + bytes(100))
    assert [(p.kind, p.length) for p in pkts] == [("initial", 300)]


def test_parse_v2_types_retry_vneg_truncated():
    d, s = b"\x01\x02", b"\x03\x04\x05\x06"
    for kind in ("initial", "0rtt", "handshake"):
        for version in (V1, V2):
            pkts = impair.parse_datagram(long_pkt(kind, d, s, 100, version=version))
            assert [(p.kind, p.version, p.length) for p in pkts] == [(kind, version, 100)]
    # a v2 packet with type bits 0 is a Retry (v1 Initial bits), and vice versa
    v2_retry = long_pkt("retry", d, s, 60, version=V2)
    assert (v2_retry[0] >> 4) & 3 == 0
    assert [p.kind for p in impair.parse_datagram(v2_retry)] == ["retry"]
    v1_retry = long_pkt("retry", d, s, 60)
    assert [(p.kind, p.dcid, p.scid) for p in impair.parse_datagram(v1_retry)] == [("retry", d, s)]
    # v2 coalesced Initial + Handshake
    pkts = impair.parse_datagram(long_pkt("initial", d, s, 120, version=V2)
                                 + long_pkt("handshake", d, s, 80, version=V2))
    assert [(p.kind, p.length) for p in pkts] == [("initial", 120), ("handshake", 80)]
    vn = vneg_pkt(s, d)
    assert [(p.kind, p.dcid, p.scid, p.length) for p in impair.parse_datagram(vn)] == \
        [("vneg", s, d, len(vn))]
    assert [p.kind for p in impair.parse_datagram(b"\x40abc")] == ["short"]
    assert impair.parse_datagram(b"") == []
    # truncated header: nothing; Length beyond the end: reported up to the end
    assert impair.parse_datagram(long_pkt("initial", d, s, 100)[:8]) == []
    full = long_pkt("handshake", d, s, 100)
    assert [(p.kind, p.length) for p in impair.parse_datagram(full[:70])] == [("handshake", 70)]


def test_bad_input_is_refused(capsys):
    up = "127.0.0.1:4433"
    cases = [
        ["--listen", "10.0.0.1:0", "--upstream", up],
        ["--listen", "127.0.0.1:0", "--upstream", "192.168.1.1:443"],
        ["--listen", "[2001:db8::1]:0", "--upstream", up],
        ["--listen", "example.com:0", "--upstream", up],
        ["--listen", "127.0.0.1:0", "--upstream", up, "--drop-rate", "1.5"],
        ["--listen", "127.0.0.1:0", "--upstream", up, "--corrupt", "-0.1"],
        ["--listen", "127.0.0.1:0", "--upstream", up, "--drop-c2s", "3-1"],
        ["--listen", "127.0.0.1:0", "--upstream", up, "--drop-s2c", "1,x"],
        ["--listen", "127.0.0.1:0", "--upstream", up, "--blackhole", "1"],
        ["--listen", "127.0.0.1:0", "--upstream", "[::1]:4433", "--rebind", "addr"],
        ["--listen", "127.0.0.1", "--upstream", up],
    ]
    for argv in cases:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            raise SystemExit(impair.main(argv))
        assert exc.value.code == 2, argv
        out = capsys.readouterr()
        assert "error" in out.err and out.out == "", argv
    capsys.readouterr()
    impair.main(["--listen", "10.0.0.1:0", "--upstream", up])
    assert "not a loopback address" in capsys.readouterr().err
    assert impair.parse_spec("1-5,9") == [(1, 5), (9, 9)]


# --------------------------------------------------------------------------
# random impairments

def test_drop_pattern_is_deterministic(net):
    n, rate = 300, 0.3
    runs = {}
    for seed in (5, 5, 6):
        p, got = send_numbered_c2s(net, n, seed=seed, drop_rate=rate)
        dropped = sorted(set(range(n)) - set(got))
        assert p.stats()["c2s"]["dropped"] == len(dropped)
        runs.setdefault(seed, []).append(dropped)
    assert runs[5][0] == runs[5][1]
    assert runs[5][0] != runs[6][0]
    # the decision for datagram i is the first of six draws of Random("seed:c2s")
    expect = [i for i, d in enumerate(predicted_draws(5, "c2s", n)) if d[0] < rate]
    assert runs[5][0] == expect
    assert 0.2 * n < len(expect) < 0.4 * n


def test_drop_burst_bound(net):
    n = 400
    _, got = send_numbered_c2s(net, n, seed=3, drop_rate=0.9, drop_burst=3)
    got_set = set(got)
    runs, cur = [], 0
    for i in range(n):
        if i in got_set:
            runs.append(cur)
            cur = 0
        else:
            cur += 1
    runs.append(cur)
    assert max(runs) == 3
    assert 0.6 * n < n - len(got) < 0.8 * n
    # without the bound the same seed has longer bursts
    _, got = send_numbered_c2s(net, n, seed=3, drop_rate=0.9)
    assert len(got) < 0.2 * n
    got_set, longest, cur = set(got), 0, 0
    for i in range(n):
        cur = 0 if i in got_set else cur + 1
        longest = max(longest, cur)
    assert longest > 3


def test_drop_by_index_both_directions(net):
    p, addr = net.make(drop_c2s="1-3,7", drop_s2c="0,2")
    for i in range(10):
        net.client.sendto(numbered(i), addr)
    got = recv_until(net.server, count=6)
    assert [number_of(d) for d, _, _ in got] == [0, 4, 5, 6, 8, 9]
    for data, src, _ in got:
        net.server.sendto(data, src)
    back = recv_until(net.client, count=4)
    assert [number_of(d) for d, _, _ in back] == [4, 6, 8, 9]
    assert all(src[:2] == addr for _, src, _ in back)
    st = p.stats()
    assert (st["c2s"]["dropped"], st["c2s"]["forwarded"]) == (4, 6)
    assert (st["s2c"]["dropped"], st["s2c"]["forwarded"]) == (2, 4)
    assert recv_until(net.client, quiet=0.05) == []


def test_impair_dir_restricts_random_impairments(net):
    p, addr = net.make(drop_rate=1.0, impair_dir="s2c")
    for i in range(5):
        net.client.sendto(numbered(i), addr)
    got = recv_until(net.server, count=5)
    assert len(got) == 5
    for data, src, _ in got:
        net.server.sendto(data, src)
    assert wait_for(lambda: p.stats()["s2c"]["datagrams"] == 5)
    assert recv_until(net.client, quiet=0.05) == []
    st = p.stats()
    assert st["c2s"]["dropped"] == 0 and st["s2c"]["dropped"] == 5


def test_corruption_one_byte_within_first_50(net):
    p, addr = net.make(corrupt=1.0, seed=9)
    rng = random.Random(1)
    offsets = set()
    sizes = [200] * 40 + [20] * 10 + [1]
    for size in sizes:
        sent = bytes(rng.randrange(256) for _ in range(size))
        net.client.sendto(sent, addr)
        (data, _, _), = recv_until(net.server, count=1)
        assert len(data) == size
        diff = [k for k in range(size) if data[k] != sent[k]]
        assert len(diff) == 1
        assert diff[0] < min(50, size)
        offsets.add(diff[0])
    assert len(offsets) > 10
    assert p.stats()["c2s"]["corrupted"] == len(sizes)


def test_duplicate(net):
    n, prob = 60, 0.4
    p, addr = net.make(duplicate=prob, seed=4, impair_dir="c2s")
    for i in range(n):
        net.client.sendto(numbered(i), addr)
    expect_dup = [i for i, d in enumerate(predicted_draws(4, "c2s", n)) if d[2] < prob]
    got = recv_until(net.server, count=n + len(expect_dup))
    nums = [number_of(d) for d, _, _ in got]
    assert sorted(nums) == sorted(list(range(n)) + expect_dup)
    assert recv_until(net.server, quiet=0.05) == []
    st = p.stats()["c2s"]
    assert (st["forwarded"], st["duplicated"]) == (n, len(expect_dup))


def test_reorder_swaps_pairs_and_releases_after_5ms(net):
    p, addr = net.make(reorder=1.0)
    msgs = [numbered(i) for i in range(10)]
    for m in msgs:
        net.client.sendto(m, addr)
    got = recv_until(net.server, count=10)
    assert [number_of(d) for d, _, _ in got] == [1, 0, 3, 2, 5, 4, 7, 6, 9, 8]
    assert p.stats()["c2s"]["reordered"] == 5
    # a lone datagram is held back ~5 ms, then released
    t = time.monotonic()
    net.client.sendto(numbered(99), addr)
    (data, _, t_recv), = recv_until(net.server, count=1)
    assert number_of(data) == 99
    assert 0.004 <= t_recv - t < 1.0


def test_delay(net):
    p, addr = net.make(delay_ms=40)
    for i in range(3):
        t = time.monotonic()
        net.client.sendto(numbered(i), addr)
        (data, src, t1), = recv_until(net.server, count=1)
        assert 0.040 <= t1 - t < 1.0
        net.server.sendto(data, src)
        (data, _, t2), = recv_until(net.client, count=1)
        assert number_of(data) == i
        assert 0.080 <= t2 - t < 2.0


def test_rate_limit_and_tail_drop(net):
    # 1 Mbit/s: 1250 bytes take 10 ms
    p, addr = net.make(rate_mbit=1.0)
    t = time.monotonic()
    for i in range(10):
        net.client.sendto(numbered(i, 1250), addr)
    got = recv_until(net.server, count=10)
    assert [number_of(d) for d, _, _ in got] == list(range(10))
    assert got[-1][2] - t >= 0.095
    assert got[-1][2] - got[0][2] >= 0.085
    # a queue of 3 datagrams: a burst of 20 loses most of them at the tail
    p, addr = net.make(rate_mbit=1.0, queue_packets=3)
    for i in range(20):
        net.client.sendto(numbered(i, 1250), addr)
    assert wait_for(lambda: p.stats()["c2s"]["datagrams"] == 20)
    st = p.stats()["c2s"]
    assert st["dropped_queue"] >= 10
    assert st["forwarded"] + st["dropped_queue"] == 20
    got = recv_until(net.server, count=st["forwarded"])
    nums = [number_of(d) for d, _, _ in got]
    assert nums[:3] == [0, 1, 2] and nums == sorted(nums) and len(nums) == st["forwarded"]


def test_blackhole_schedule(net):
    on, off = 0.25, 0.25
    p, addr = net.make(blackhole=(on, off))
    sent = {}
    t0 = time.monotonic()
    for i in range(100):
        sent[i] = time.monotonic() - t0
        net.client.sendto(numbered(i), addr)
        time.sleep(0.01)
    got = {number_of(d) for d, _, _ in recv_until(net.server, quiet=0.1)}
    margin = 0.04
    checked_on = checked_off = 0
    for i, ts in sent.items():
        phase = ts % (on + off)
        if margin < phase < on - margin:
            assert i in got, (i, ts)
            checked_on += 1
        elif on + margin < phase < on + off - margin:
            assert i not in got, (i, ts)
            checked_off += 1
    assert checked_on > 20 and checked_off > 20
    st = p.stats()["c2s"]
    assert st["dropped_blackhole"] == 100 - len(got)
    assert st["forwarded"] == len(got)


# --------------------------------------------------------------------------
# NAT rebinding

def _rebind_run(net, mode):
    p, addr = net.make(rebind=mode, rebind_first=0.15, rebind_every=0.25)
    sources = []
    end = time.monotonic() + 3.0
    i = 0
    while time.monotonic() < end and len(set(sources)) < 3:
        net.client.sendto(numbered(i), addr)
        i += 1
        got = recv_until(net.server, count=1, limit=1.0)
        assert got
        src = got[0][1]
        if sources and src != sources[-1]:
            # the server answers on the old path: the proxy drops it as stale
            before = p.stats()["s2c"]["dropped_stale"]
            net.server.sendto(b"\x00old", sources[-1])
            assert wait_for(lambda: p.stats()["s2c"]["dropped_stale"] == before + 1)
            # and on the new path: it reaches the client
            net.server.sendto(b"\x00new", src)
            (data, _, _), = recv_until(net.client, count=1)
            assert data == b"\x00new"
        sources.append(src)
        time.sleep(0.02)
    distinct = list(dict.fromkeys(sources))
    assert len(distinct) >= 3
    st = p.stats()
    assert st["rebinds"] >= 2
    assert st["flows"][0]["sources"][:3] == [impair.fmt_addr(a) for a in distinct[:3]]
    assert st["s2c"]["dropped_stale"] >= 2
    assert recv_until(net.client, quiet=0.05) == []
    return distinct


def test_rebind_port(net):
    distinct = _rebind_run(net, "port")
    assert {a[0] for a in distinct} == {"127.0.0.1"}
    assert len({a[1] for a in distinct}) == len(distinct)


def test_rebind_addr(net):
    distinct = _rebind_run(net, "addr")
    assert [a[0] for a in distinct[:3]] == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]


# --------------------------------------------------------------------------
# connections and amplification accounting

def _exchange(net, addr, c2s: list[bytes], s2c: list[bytes]):
    """Client sends c2s datagrams, then the server sends s2c ones; both delivered."""
    src = None
    for d in c2s:
        net.client.sendto(d, addr)
        (data, src, _), = recv_until(net.server, count=1)
        assert data == d
    for d in s2c:
        net.server.sendto(d, src or net.src)
        (data, _, _), = recv_until(net.client, count=1)
        assert data == d
    if src:
        net.src = src


def test_connection_attribution_and_amplification(net):
    p, addr = net.make()
    A, B, C, S = b"\xa1" * 8, b"\xb2" * 8, b"\xc3" * 4, b"\x5e" * 8
    # connection A: 1200-byte Initial, 3400 bytes of server flight, then Handshake
    c_init = long_pkt("initial", S, A, 1200)
    s1 = long_pkt("initial", A, S, 200) + long_pkt("handshake", A, S, 1000)
    s2 = long_pkt("handshake", A, S, 1200)
    s3 = long_pkt("handshake", A, S, 1000)
    _exchange(net, addr, [c_init], [s1, s2, s3])
    c_fin = long_pkt("initial", S, A, 100) + long_pkt("handshake", S, A, 150)
    s4 = long_pkt("handshake", A, S, 300) + short_pkt(A, 200)
    _exchange(net, addr, [c_fin, short_pkt(S, 80)], [s4, short_pkt(A, 120)])
    # connection B on the same flow: Initial with a (NEW_TOKEN) token + 0-RTT
    b1 = long_pkt("initial", S, B, 1000, token=b"t" * 16) + long_pkt("0rtt", S, B, 200)
    _exchange(net, addr, [b1, long_pkt("0rtt", S, B, 300)], [long_pkt("initial", B, S, 500)])
    # connection C, v2: not validated; a short-header datagram is attributed to it
    c1 = long_pkt("initial", S, C, 1200, version=V2)
    _exchange(net, addr, [c1, short_pkt(S, 100)],
              [long_pkt("initial", C, S, 1100, version=V2), short_pkt(C, 250)])
    st = p.stats()
    conns = {c["client_scid"]: c for c in st["connections"]}
    assert list(conns) == [A.hex(), B.hex(), C.hex()]
    a, b, c = conns[A.hex()], conns[B.hex()], conns[C.hex()]
    client = impair.fmt_addr(net.client.getsockname())
    assert a["flow"] == b["flow"] == c["flow"] == client
    assert a["validated"] and b["validated"] and not c["validated"]
    assert a["server_handshake_bytes"] == 3400 + 300
    assert a["prevalidation_c2s_bytes"] == 1200
    assert a["prevalidation_s2c_bytes"] == 3400
    assert a["amplification"] == pytest.approx(3400 / 1200, abs=1e-3)
    assert (a["c2s_0rtt_packets"], a["retry_packets"]) == (0, 0)
    assert (b["c2s_0rtt_packets"], b["c2s_0rtt_bytes"]) == (2, 500)
    assert b["prevalidation_c2s_bytes"] == 0 and b["amplification"] is None
    assert b["server_handshake_bytes"] == 500
    assert c["prevalidation_c2s_bytes"] == 1300
    assert c["prevalidation_s2c_bytes"] == 1100 + 250
    assert c["server_handshake_bytes"] == 1100
    assert 0 <= a["first_seen_s"] <= b["first_seen_s"] <= c["first_seen_s"] < st["duration_s"]
    assert st["c2s"]["types"] == {"initial": 4, "0rtt": 2, "handshake": 1, "retry": 0,
                                  "vneg": 0, "short": 2}
    assert st["s2c"]["types"] == {"initial": 3, "0rtt": 0, "handshake": 4, "retry": 0,
                                  "vneg": 0, "short": 3}
    assert st["flows"] == [{"client": client, "sources": st["flows"][0]["sources"],
                            "datagrams_c2s": 7, "datagrams_s2c": 8}]


def test_retry_validation_and_vneg(net):
    p, addr = net.make(corrupt=0.0)
    R, S, S2 = b"\x11" * 8, b"\x22" * 8, b"\x33" * 8
    _exchange(net, addr, [long_pkt("initial", S, R, 1200, version=V2)],
              [long_pkt("retry", R, S2, 60, version=V2)])
    _exchange(net, addr, [long_pkt("initial", S2, R, 1200, version=V2, token=b"retry-token")],
              [long_pkt("initial", R, S, 900, version=V2)])
    # a version negotiation for another connection
    X = b"\x44" * 8
    grease = bytearray(long_pkt("initial", S, X, 1200))
    grease[1:5] = (0x1A2A3A4A).to_bytes(4, "big")     # unknown version: v1 layout
    _exchange(net, addr, [bytes(grease)], [vneg_pkt(X, S)])
    st = p.stats()
    r, x = st["connections"]
    assert r["client_scid"] == R.hex() and r["retry_packets"] == 1 and r["validated"]
    assert r["prevalidation_c2s_bytes"] == 1200 and r["prevalidation_s2c_bytes"] == 60
    assert r["server_handshake_bytes"] == 900
    assert x["client_scid"] == X.hex() and not x["validated"]
    assert x["prevalidation_s2c_bytes"] == len(vneg_pkt(X, S))
    assert st["s2c"]["types"]["retry"] == 1 and st["s2c"]["types"]["vneg"] == 1
    # long-header packets by version: the v2 case of the matrix reads these
    assert st["c2s"]["versions"] == {f"{V2:08x}": 2, "1a2a3a4a": 1}
    assert st["s2c"]["versions"] == {f"{V2:08x}": 2, "00000000": 1}


def test_corrupted_handshake_does_not_validate(net):
    # the corrupted byte lies in the first 50 bytes, i.e. in the Handshake packet
    p, addr = net.make(corrupt=1.0, impair_dir="c2s")
    S, A = b"\x01" * 8, b"\x02" * 8
    net.client.sendto(long_pkt("initial", S, A, 1200), addr)
    net.client.sendto(long_pkt("handshake", S, A, 400), addr)
    assert len(recv_until(net.server, count=2)) == 2
    (c,) = p.stats()["connections"]
    assert not c["validated"]
    assert c["prevalidation_c2s_bytes"] == 1600


# --------------------------------------------------------------------------
# lifetime, IPv6, CLI

def test_max_seconds_and_stats_file(tmp_path, net):
    path = tmp_path / "s.json"
    p = impair.Proxy("127.0.0.1:0", net.server.getsockname(),
                     impair.Config(max_seconds=1.4, stats_path=str(path), seed=42))
    p.start()
    # written every second while running, then on exit
    assert wait_for(path.exists, 1.3) and not p.wait(0)
    assert json.loads(path.read_text())["duration_s"] < 1.4
    assert p.wait(3.0)
    st = json.loads(path.read_text())
    assert st["seed"] == 42 and 1.35 <= st["duration_s"] < 3.0
    assert not [f for f in os.listdir(tmp_path) if f != "s.json"]


def test_ipv6_listen(net):
    try:
        client6 = udp("::1", socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback")
    with client6:
        p = impair.Proxy("[::1]:0", net.server.getsockname(), impair.Config())
        host, port = p.start()
        try:
            assert p.listen_str == f"[::1]:{port}"
            client6.sendto(b"\x00six", ("::1", port))
            (data, src, _), = recv_until(net.server, count=1)
            assert data == b"\x00six" and src[0] == "127.0.0.1"
            net.server.sendto(b"\x00back", src)
            (data, src6, _), = recv_until(client6, count=1)
            assert data == b"\x00back" and src6[:2] == ("::1", port)
            assert p.stats()["flows"][0]["client"] == impair.fmt_addr(client6.getsockname())
        finally:
            p.stop()


EXPECTED_DIR_KEYS = {"datagrams", "bytes", "forwarded", "dropped", "dropped_blackhole",
                     "dropped_queue", "corrupted", "duplicated", "reordered", "types", "versions"}


def test_cli_listening_line_and_stats_on_sigterm(tmp_path, net):
    stats, log = tmp_path / "stats.json", tmp_path / "log.txt"
    up = impair.fmt_addr(net.server.getsockname())
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "impair.py"), "--listen", "127.0.0.1:0",
         "--upstream", up, "--seed", "7", "--drop-c2s", "1", "--stats", str(stats),
         "--log", str(log)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening 127.0.0.1:") and line.endswith("\n")
        port = int(line.split(":")[1])
        S, A = b"\x01" * 8, b"\x02" * 8
        net.client.sendto(long_pkt("initial", S, A, 1200), ("127.0.0.1", port))
        net.client.sendto(numbered(1), ("127.0.0.1", port))
        net.client.sendto(long_pkt("initial", S, A, 300) + long_pkt("handshake", S, A, 100),
                          ("127.0.0.1", port))
        got = recv_until(net.server, count=2)
        assert [len(d) for d, _, _ in got] == [1200, 400]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out == ""          # the listening line is the only output
    st = json.loads(stats.read_text())
    assert set(st) == {"seed", "duration_s", "rebinds", "c2s", "s2c", "flows", "connections"}
    assert set(st["c2s"]) == EXPECTED_DIR_KEYS
    assert set(st["s2c"]) == EXPECTED_DIR_KEYS | {"dropped_stale"}
    assert set(st["c2s"]["types"]) == {"initial", "0rtt", "handshake", "retry", "vneg", "short"}
    assert st["seed"] == 7 and st["rebinds"] == 0
    c2s = st["c2s"]
    assert (c2s["datagrams"], c2s["bytes"], c2s["forwarded"], c2s["dropped"]) == (3, 1664, 2, 1)
    assert c2s["types"]["initial"] == 2 and c2s["types"]["handshake"] == 1
    assert c2s["types"]["short"] == 1
    (conn,) = st["connections"]
    assert set(conn) == {"client_scid", "flow", "first_seen_s", "server_handshake_bytes",
                         "c2s_0rtt_packets", "c2s_0rtt_bytes", "retry_packets", "validated",
                         "prevalidation_c2s_bytes", "prevalidation_s2c_bytes", "amplification"}
    assert conn["validated"] and conn["prevalidation_c2s_bytes"] == 1200
    assert conn["amplification"] == 0
    (flow,) = st["flows"]
    assert set(flow) == {"client", "sources", "datagrams_c2s", "datagrams_s2c"}
    assert flow["sources"] == [impair.fmt_addr(got[0][1])]
    lines = log.read_text().splitlines()
    assert {ln.split()[2] for ln in lines} == {flow["client"]}
    assert [ln.split()[1:2] + ln.split()[3:] for ln in lines] == [
        ["c2s", "0", "1200", "initial", "forward"],
        ["c2s", "1", "64", "short", "drop-index"],
        ["c2s", "2", "400", "initial,handshake", "forward"]]


def test_corruption_spares_version_negotiation(net):
    # a client whose VN lost its version list must give up (RFC 9000 6.2):
    # that would measure the proxy, not the server
    p, addr = net.make(corrupt=1.0, impair_dir="s2c")
    R, S = b"\x11" * 8, b"\x22" * 8
    _exchange(net, addr, [long_pkt("initial", S, R, 1200)], [])
    vn = vneg_pkt(R, S)
    net.server.sendto(vn, net.src)
    (got, _, _), = recv_until(net.client, count=1)
    assert got == vn
    init = long_pkt("initial", R, S, 300)
    net.server.sendto(init, net.src)
    (got, _, _), = recv_until(net.client, count=1)
    assert got != init and len(got) == len(init)
    assert p.stats()["s2c"]["corrupted"] == 1
