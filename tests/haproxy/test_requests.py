"""Requests through HAProxy's HTTP/3 frontend to the HTTP/1.1 backend, with
nbthread 2 and 4 (the hx fixture) and both clients. Every response is
checked byte for byte (sha256), and the HAProxy log must hold one HTTP/3.0
line per request."""

import pytest

from backend import pattern, pattern_sha256
from clients import CLIENTS, Upload, load, one, tag

KIB = 1024
MIB = 1024 * KIB
BIG = 100 * MIB

pytestmark = pytest.mark.parametrize("client", CLIENTS)


def logged(hx, t, n, status="200"):
    """The log lines of the n requests tagged t: one each, except those
    HAProxy itself reports as dropped (its stdout log drops a line rather
    than block when threads collide, and says so)."""
    lines = hx.h3_log(t, n)
    dropped = hx.dropped_logs()
    assert n - dropped <= len(lines) <= n, \
        f"{len(lines)} HTTP/3.0 log lines for {n} requests tagged {t} ({dropped} dropped)"
    assert all(l["st"] == status for l in lines), [l for l in lines if l["st"] != status][:3]
    assert all(l["ci"] == "127.0.0.1" for l in lines)
    return lines


def test_get_1k(hx, client):
    t = tag()
    r = one(client, hx, "GET", f"/bytes/1024?t={t}")
    assert r.error is None and r.status == 200, r
    assert r.body == pattern(1024)
    assert r.header("content-length") == "1024"
    logged(hx, t, 1)


def test_get_100m(hx, client):
    t = tag()
    r = one(client, hx, "GET", f"/bytes/{BIG}?t={t}", keep=False, timeout=120)
    assert r.error is None and r.status == 200, r
    assert r.length == BIG
    assert r.sha256 == pattern_sha256(BIG)
    [line] = logged(hx, t, 1)
    assert int(line["b"]) >= BIG


def test_post_100m_echo(hx, client):
    t = tag()
    up = Upload(BIG)
    r = one(client, hx, "POST", f"/echo?t={t}", body=up, keep=False, timeout=120)
    assert r.error is None and r.status == 200, r
    assert r.length == BIG
    assert r.sha256 == up.sha256
    logged(hx, t, 1)


def test_put_unknown_length(hx, client):
    """A request body of unknown length (no content-length; the backend
    receives it chunked and echoes it chunked)."""
    t = tag()
    up = Upload(8 * MIB + 12345, chunked=True)
    r = one(client, hx, "PUT", f"/echo?t={t}", body=up, keep=False, timeout=60)
    assert r.error is None and r.status == 200, r
    assert r.length == up.n
    assert r.sha256 == up.sha256
    assert r.header("content-length") is None
    [line] = logged(hx, t, 1)
    assert line["m"] == "PUT"


def test_head(hx, client):
    t = tag()
    r = one(client, hx, "HEAD", f"/bytes/5000?t={t}")
    assert r.error is None and r.status == 200, r
    assert r.header("content-length") == "5000"
    assert r.length == 0
    [line] = logged(hx, t, 1)
    assert line["m"] == "HEAD"


def test_1000_requests_10_connections(hx, client):
    """10 connections with 100 concurrent streams each."""
    t = tag()
    size = lambda i, j: 100 + 7 * j + i        # noqa: E731
    per_conn = load(client, hx, 10, 100, lambda i, j: f"/bytes/{size(i, j)}?t={t}&c={i}&s={j}")
    assert len(per_conn) == 10
    bad = []
    for i, rs in enumerate(per_conn):
        assert len(rs) == 100
        for j, r in enumerate(rs):
            if r.error is not None or r.status != 200 or r.body != pattern(size(i, j)):
                bad.append((i, j, r))
    assert not bad, f"{len(bad)} bad responses, first: {bad[:3]}"
    logged(hx, t, 1000)
