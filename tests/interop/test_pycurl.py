"""The example server against libcurl's HTTP/3 (ngtcp2 + nghttp3), through
pycurl's wheel."""

import hashlib
import io
import time

import pycurl
import pytest

from interop_util import CA_FILE, KIB, MIB, pattern, sha256, upload_body


def test_libcurl_has_http3():
    info = pycurl.version_info()
    features = info[4]
    assert features & pycurl.VERSION_HTTP3, (
        f"this pycurl's libcurl has no HTTP/3 support ({pycurl.version}): "
        "the HTTP/3 interop tests cannot run with it")


def require_http3():
    if not pycurl.version_info()[4] & pycurl.VERSION_HTTP3:
        pytest.fail(f"pycurl's libcurl lacks HTTP/3 ({pycurl.version})")


class Sink:
    """Collects a response body: its length, sha256 and, if asked, bytes."""

    def __init__(self, keep: bool = True):
        self.length = 0
        self.sha = hashlib.sha256()
        self.body = bytearray() if keep else None

    def write(self, data: bytes) -> None:
        self.length += len(data)
        self.sha.update(data)
        if self.body is not None:
            self.body += data


def easy(server, path: str, sink: Sink, body: bytes | None = None) -> pycurl.Curl:
    c = pycurl.Curl()
    c.setopt(pycurl.URL, server.url(path))
    c.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_3ONLY)
    c.setopt(pycurl.CAINFO, str(CA_FILE))
    c.setopt(pycurl.WRITEFUNCTION, sink.write)
    c.setopt(pycurl.TIMEOUT, 30)
    c.setopt(pycurl.CONNECTTIMEOUT, 10)
    if body is not None:
        c.setopt(pycurl.POST, 1)
        c.setopt(pycurl.READDATA, io.BytesIO(body))
        c.setopt(pycurl.POSTFIELDSIZE_LARGE, len(body))
    return c


def perform(server, path: str, body: bytes | None = None, keep: bool = True) -> tuple[int, Sink]:
    require_http3()
    sink = Sink(keep)
    c = easy(server, path, sink, body)
    try:
        c.perform()
        assert c.getinfo(pycurl.INFO_HTTP_VERSION) == pycurl.CURL_HTTP_VERSION_3
        return c.getinfo(pycurl.RESPONSE_CODE), sink
    finally:
        c.close()


def test_get_1k(server):
    status, sink = perform(server, "/size/1024")
    assert status == 200
    assert bytes(sink.body) == pattern(1024)


def test_get_10m(server):
    n = 10 * MIB
    status, sink = perform(server, f"/size/{n}", keep=False)
    assert status == 200
    assert sink.length == n
    assert sink.sha.hexdigest() == sha256(pattern(n))


def test_post_10m_echo(server):
    body = upload_body(10 * MIB)
    status, sink = perform(server, "/echo", body=body, keep=False)
    assert status == 200
    assert sink.length == len(body)
    assert sink.sha.hexdigest() == sha256(body)


def test_100_concurrent_streams(server):
    """100 transfers on one multiplexed connection (CurlMulti)."""
    require_http3()
    sizes = [1 * KIB + 37 * i for i in range(100)]
    m = pycurl.CurlMulti()
    m.setopt(pycurl.M_PIPELINING, pycurl.PIPE_MULTIPLEX)
    m.setopt(pycurl.M_MAX_HOST_CONNECTIONS, 1)
    handles = []
    try:
        for n in sizes:
            sink = Sink()
            c = easy(server, f"/size/{n}", sink)
            # wait for the first connection's handshake and multiplex on it
            c.setopt(pycurl.PIPEWAIT, 1)
            m.add_handle(c)
            handles.append((c, n, sink))
        deadline = time.monotonic() + 30
        active = len(handles)
        while active and time.monotonic() < deadline:
            ret, active = m.perform()
            while ret == pycurl.E_CALL_MULTI_PERFORM:
                ret, active = m.perform()
            if active:
                m.select(0.1)
        failed = []
        while True:
            queued, _, errs = m.info_read()
            failed += errs
            if not queued:
                break
        assert not failed, f"failed transfers: {[(e, msg) for _, e, msg in failed]}"
        assert active == 0, "transfers still running after 30 s"
        connects = 0
        for c, n, sink in handles:
            assert c.getinfo(pycurl.RESPONSE_CODE) == 200
            assert c.getinfo(pycurl.INFO_HTTP_VERSION) == pycurl.CURL_HTTP_VERSION_3
            assert bytes(sink.body) == pattern(n), f"/size/{n}: wrong body"
            connects += c.getinfo(pycurl.NUM_CONNECTS)
        assert connects == 1, f"{connects} connections for 100 multiplexed transfers"
    finally:
        for c, _, _ in handles:
            m.remove_handle(c)
            c.close()
        m.close()


def test_head_and_path_as_is(server):
    """HEAD answers the head alone; a ".." kept as is (curl normalises paths
    unless told not to) is refused with 403."""
    require_http3()
    sink = Sink()
    c = easy(server, "/size/5000", sink)
    c.setopt(pycurl.NOBODY, 1)
    headers = []
    c.setopt(pycurl.HEADERFUNCTION, headers.append)
    try:
        c.perform()
        assert c.getinfo(pycurl.RESPONSE_CODE) == 200
        assert c.getinfo(pycurl.CONTENT_LENGTH_DOWNLOAD_T) == 5000
        assert sink.length == 0
    finally:
        c.close()
    c = easy(server, "/../../etc/passwd", sink)
    c.setopt(pycurl.PATH_AS_IS, 1)
    try:
        c.perform()
        assert c.getinfo(pycurl.RESPONSE_CODE) == 403
    finally:
        c.close()
