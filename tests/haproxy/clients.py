"""One interface over the two HTTP/3 clients (libcurl through pycurl, and
aioquic), so that a test can be parametrized by client.

    r = one("curl", hx, "GET", "/bytes/1024")
    rs = load("aioquic", hx, connections=10, streams=100, path=lambda i, j: ...)

Results are R: status, length, sha256, body, headers and trailers (lower-case
str names), error (None when the transfer completed).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

import aqclient
import curlclient
from curlclient import Upload

CLIENTS = ("curl", "aioquic")


@dataclass
class R:
    status: int = 0
    length: int = 0
    sha256: str = ""
    body: bytes | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    trailers: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def __repr__(self):
        return (f"R(status={self.status}, length={self.length}, error={self.error!r}, "
                f"body={self.body[:80] if self.body else self.body!r})")


def tag() -> str:
    """A unique query-string value to find a test's requests in the log."""
    return uuid.uuid4().hex[:12]


def _from_curl(r: curlclient.Result) -> R:
    err = r.error
    if err is None and not r.h3:
        err = f"not HTTP/3 (curl http_version {r.http_version})"
    return R(r.status, r.length, r.sha256, r.body, r.headers, r.trailers, err)


def _dec(pairs) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in pairs]


def _from_aq(r: aqclient.Response) -> R:
    return R(r.status, r.length, r.sha256, bytes(r.body) if r.body is not None else None,
             _dec(r.headers), _dec(r.trailers), r.error)


def one(client: str, hx, method: str, path: str, body=None, headers=(), keep=True,
        timeout: float = 60.0, authority: str | None = None) -> R:
    """One request on a new connection. headers: (name, value) str pairs."""
    if client == "curl":
        url = hx.url(path)
        hdrs = [f"{k}: {v}" for k, v in headers]
        if authority:
            hdrs.append(f"Host: {authority}")
        return _from_curl(curlclient.fetch(url, method, body, headers=hdrs, keep=keep,
                                           timeout=timeout))
    if client == "aioquic":
        async def go():
            async with aqclient.connect(hx.port) as c:
                return await c.request(method, path, body, keep_body=keep,
                                       headers=[(k.lower().encode(), v.encode()) for k, v in headers],
                                       authority=authority.encode() if authority else None)
        return _from_aq(aqclient.run(go(), timeout))
    raise ValueError(client)


def load(client: str, hx, connections: int, streams: int, path, timeout: float = 120.0) -> list[list[R]]:
    """connections x streams GET requests, all at once: each connection
    carries `streams` concurrent requests. path(i, j) gives the path of
    request j on connection i. Returns the results per connection."""
    if client == "curl":
        specs = [[{"url": hx.url(path(i, j)), "keep": True} for j in range(streams)]
                 for i in range(connections)]
        out = curlclient.multi_load(specs, timeout=timeout)
        per_conn = []
        for rs in out:
            conv = [_from_curl(r) for r in rs]
            connects = sum(r.connects for r in rs)
            if connects != 1:
                for r in conv:
                    r.error = r.error or f"{connects} connections for one multiplexed set"
            per_conn.append(conv)
        return per_conn
    if client == "aioquic":
        async def conn(i):
            async with aqclient.connect(hx.port) as c:
                rs = await asyncio.gather(*(c.request("GET", path(i, j)) for j in range(streams)))
                return [_from_aq(r) for r in rs]

        async def go():
            return await asyncio.gather(*(conn(i) for i in range(connections)))
        return aqclient.run(go(), timeout)
    raise ValueError(client)
