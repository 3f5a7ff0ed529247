"""An HTTP/2 backend behind the HTTP/3 frontend. The origin speaking HTTP/2
(cleartext, prior knowledge) is a second frontend of the same HAProxy, which
relays to the demo HTTP/1.1 backend; the path prefix /h2 selects it. So a
request goes HTTP/3 -> HAProxy -> HTTP/2 -> HAProxy -> HTTP/1.1 and back, and
each hop is logged with its own version."""

import pytest

import hap
from backend import pattern_sha256
from clients import CLIENTS, Upload, one, tag

SIZE = 3 * 1024 * 1024


@pytest.fixture(scope="module")
def h2x(binary, backend, tmp_path_factory):
    h2_port = hap.free_port("tcp", also_tcp=False)
    h = hap.HAProxy(binary, tmp_path_factory.mktemp("h2x"), backend, hap.Options(
        nbthread=2,
        extra_frontend="    use_backend be_h2 if { path_beg /h2/ }\n",
        extra=(
            "\nbackend be_h2\n"
            f"    server h2origin 127.0.0.1:{h2_port} proto h2\n"
            "\nfrontend fe_h2origin\n"
            f"    bind 127.0.0.1:{h2_port} proto h2\n"
            f"    log-format \"{hap.LOG_FORMAT}\"\n"
            "    http-request replace-path /h2(/.*) \\1\n"
            "    default_backend be\n"
        )))
    try:
        h.start()
        yield h
    finally:
        h.kill()


@pytest.mark.parametrize("client", CLIENTS)
def test_get_through_h2_backend(h2x, client):
    t = tag()
    r = one(client, h2x, "GET", f"/h2/bytes/{SIZE}?t={t}", keep=False)
    assert r.error is None and r.status == 200, r
    assert r.length == SIZE and r.sha256 == pattern_sha256(SIZE)
    lines = h2x.count_log(lambda l: f"t={t}" in l["u"], 2)
    assert sorted(l["hv"] for l in lines) == ["HTTP/2.0", "HTTP/3.0"], lines


@pytest.mark.parametrize("client", CLIENTS)
def test_post_echo_through_h2_backend(h2x, client):
    t = tag()
    up = Upload(SIZE)
    r = one(client, h2x, "POST", f"/h2/echo?t={t}", body=up, keep=False, timeout=60)
    assert r.error is None and r.status == 200, r
    assert r.length == SIZE and r.sha256 == up.sha256
    lines = h2x.count_log(lambda l: f"t={t}" in l["u"], 2)
    assert sorted(l["hv"] for l in lines) == ["HTTP/2.0", "HTTP/3.0"], lines
