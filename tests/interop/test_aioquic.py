"""The example server against aioquic's HTTP/3 client."""

import asyncio

from h3client import h3_connect, run
from interop_util import KIB, MIB, pattern, sha256, upload_body


def test_get_1k(server):
    async def go():
        async with h3_connect(server.port) as c:
            return await c.request("GET", "/size/1024")

    resp = run(go())
    assert resp.status == 200
    assert resp.headers[b"content-length"] == b"1024"
    assert bytes(resp.body) == pattern(1024)


def test_get_10m(server):
    n = 10 * MIB

    async def go():
        async with h3_connect(server.port) as c:
            return await c.request("GET", f"/size/{n}", keep_body=False)

    resp = run(go())
    assert resp.status == 200
    assert resp.length == n
    assert resp.sha256 == sha256(pattern(n))


def test_post_10m_echo(server):
    body = upload_body(10 * MIB)

    async def go():
        async with h3_connect(server.port) as c:
            return await c.request("POST", "/echo", body=body, keep_body=False)

    resp = run(go())
    assert resp.status == 200
    assert resp.length == len(body)
    assert resp.sha256 == sha256(body)


def test_echo_backpressure(server):
    """Small client windows: the server's sends come up short, its echo
    buffer fills, it stops reading and resumes on STREAM_WRITABLE. Two
    uploads at once on one connection."""
    bodies = [upload_body(3 * MIB), upload_body(3 * MIB)[::-1]]

    async def go():
        async with h3_connect(server.port, max_data=256 * KIB, max_stream_data=64 * KIB) as c:
            return await asyncio.gather(*(c.request("PUT", f"/up/{i}", body=b, keep_body=False)
                                          for i, b in enumerate(bodies)))

    for body, resp in zip(bodies, run(go())):
        assert resp.status == 200
        assert resp.length == len(body)
        assert resp.sha256 == sha256(body)


def test_cancelled_requests(server):
    """A download and an upload abandoned half-way (STOP_SENDING and
    RESET_STREAM from the client): the server drops them, and the connection
    goes on serving."""

    async def go():
        async with h3_connect(server.port, max_stream_data=256 * KIB) as c:
            down, down_resp = c.start("GET", f"/size/{1 << 30}", keep_body=False)
            up, _ = c.start("POST", "/echo", body=upload_body(64 * KIB), end_stream=False,
                            content_length=10 * MIB)
            for _ in range(400):
                if down_resp.length > 0:
                    break
                await asyncio.sleep(0.005)
            assert down_resp.length > 0, "the download did not start"
            c.cancel(down)
            c.cancel(up)
            await asyncio.sleep(0.1)
            return await asyncio.gather(*(c.request("GET", f"/size/{n}") for n in (10, 100_000)))

    small, large = run(go())
    assert (small.status, bytes(small.body)) == (200, pattern(10))
    assert (large.status, bytes(large.body)) == (200, pattern(100_000))


def test_100_concurrent_streams(server):
    # 100 is the server's default stream limit: all of them at once.
    sizes = [1 * KIB + 37 * i for i in range(100)]

    async def go():
        async with h3_connect(server.port) as c:
            return await asyncio.gather(*(c.request("GET", f"/size/{n}") for n in sizes))

    resps = run(go())
    assert len(resps) == 100
    for n, resp in zip(sizes, resps):
        assert resp.status == 200
        assert bytes(resp.body) == pattern(n)


def test_more_requests_than_the_stream_limit(server):
    """300 requests at once on one connection: the server's limit is 100
    streams, so the rest wait for MAX_STREAMS as the first ones finish."""

    async def go():
        async with h3_connect(server.port) as c:
            return await asyncio.gather(*(c.request("GET", f"/size/{1000 + i}") for i in range(300)))

    for i, resp in enumerate(run(go())):
        assert (resp.status, bytes(resp.body)) == (200, pattern(1000 + i))


def test_malformed_bodies_and_trailers(server):
    """A request body shorter or longer than its content-length is reset
    with H3_MESSAGE_ERROR, and the connection goes on; a trailer section
    ends an echoed body normally."""

    async def one(case):
        async with h3_connect(server.port) as c:
            if case == "trailers":
                sid, resp = c.start("POST", "/echo", body=b"hello", end_stream=False)
                c.http.send_headers(sid, [(b"x-checksum", b"5")], end_stream=True)
                c.transmit()
            else:
                declared = 100 if case == "short" else 5
                _, resp = c.start("POST", "/echo", body=b"x" * 10, content_length=declared)
            try:
                result = await resp.future
            except ConnectionError as e:
                result = str(e)
            after = await c.request("GET", "/size/10")
            return result, after

    for case in ("short", "long", "trailers"):
        result, after = run(one(case))
        if case == "trailers":
            assert (result.status, bytes(result.body)) == (200, b"hello")
        else:
            assert "StreamReset 0x10e" in result, f"{case} body: {result!r}"
        assert (after.status, bytes(after.body)) == (200, pattern(10))


def test_files_and_errors(server):
    """Files under --root, 404, 405, and a raw ".." path (aioquic sends the
    path as given, unlike curl, which normalises it). HEAD is tested with
    pycurl: aioquic checks a response's content-length against its body
    whatever the method, so it fails a connection on a correct HEAD answer
    (RFC 9114 section 4.1.2 allows it)."""

    async def go():
        async with h3_connect(server.port) as c:
            return await asyncio.gather(
                c.request("GET", "/hello.txt"),
                c.request("GET", "/blob.bin"),
                c.request("GET", "/sub/"),
                c.request("GET", "/missing"),
                c.request("GET", "/../etc/passwd"),
                c.request("GET", "/sub/%2e%2e/%2E%2E/etc/passwd"),
                c.request("DELETE", "/hello.txt"),
            )

    hello, blob, index, missing, up, up_encoded, delete = run(go())
    assert (hello.status, bytes(hello.body)) == (200, b"hello from haquic\n")
    assert hello.headers[b"content-type"].startswith(b"text/plain")
    assert (blob.status, bytes(blob.body)) == (200, pattern(300 * KIB))
    assert (index.status, bytes(index.body)) == (200, b"<h1>index</h1>\n")
    assert index.headers[b"content-type"].startswith(b"text/html")
    assert missing.status == 404
    assert up.status == 403
    assert up_encoded.status == 403
    assert delete.status == 405
