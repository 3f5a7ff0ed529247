"""Server options and lifecycle: --retry, and the graceful shutdown on
SIGTERM (an in-flight download finishes, the server exits 0)."""

import asyncio
import io
import re
import signal

import pycurl

from h3client import h3_connect, run
from interop_util import CA_FILE, MIB, Server, pattern, sha256


def test_retry(tmp_path):
    """--retry: every first Initial gets a Retry; both clients follow it."""
    with Server(tmp_path, workers=2, max_seconds=60, extra=("--retry",)) as srv:

        async def go():
            async with h3_connect(srv.port) as c:
                return await c.request("GET", "/size/4096")

        resp = run(go())
        assert (resp.status, bytes(resp.body)) == (200, pattern(4096))

        body = io.BytesIO()
        c = pycurl.Curl()
        try:
            c.setopt(pycurl.URL, srv.url("/size/4096"))
            c.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_3ONLY)
            c.setopt(pycurl.CAINFO, str(CA_FILE))
            c.setopt(pycurl.WRITEDATA, body)
            c.setopt(pycurl.TIMEOUT, 30)
            c.perform()
            assert c.getinfo(pycurl.RESPONSE_CODE) == 200
        finally:
            c.close()
        assert body.getvalue() == pattern(4096)
        assert srv.stop() == 0, srv.log()
        # the exit summary counts the Retry packets: at least one per
        # connection (a client may send more than one tokenless Initial)
        m = re.search(r"(\d+) connections, (\d+) requests, (\d+) retries", srv.log())
        assert m, srv.log()
        conns, reqs, retries = map(int, m.groups())
        assert (conns, reqs) == (2, 2) and retries >= 2, srv.log()


def test_sigterm_lets_inflight_request_finish(tmp_path):
    n = 10 * MIB
    with Server(tmp_path, workers=1, max_seconds=60) as srv:

        async def go():
            # small windows keep the download in flight long enough
            async with h3_connect(srv.port, max_data=1 * MIB, max_stream_data=256 * 1024) as c:
                task = asyncio.ensure_future(c.request("GET", f"/size/{n}", keep_body=False))
                # wait until the response is under way, then ask the server to stop
                for _ in range(1000):
                    if any(r.length > 0 for r in c.pending.values()) or task.done():
                        break
                    await asyncio.sleep(0.005)
                assert not task.done(), "the download finished before SIGTERM"
                srv.proc.send_signal(signal.SIGTERM)
                return await task

        resp = run(go())
        assert resp.status == 200
        assert resp.length == n
        assert resp.sha256 == sha256(pattern(n))
        rc = srv.proc.wait(10)
        assert rc == 0, srv.log()
        assert "shutting down" in srv.log()
