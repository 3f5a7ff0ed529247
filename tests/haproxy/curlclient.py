"""HTTP/3 requests with libcurl (ngtcp2 + nghttp3, through pycurl's wheel).

    r = fetch(url)                                  one request, HTTP/3 only
    r = fetch(url, "POST", body=Upload(100 * MIB))  streamed upload, known length
    r = fetch(url, "PUT", body=Upload(n, chunked=True))  unknown length
    results = multi_load(urls, connections=10, streams=100)

Response bodies are hashed (sha256) as they arrive and kept only when asked.
Every transfer has a TIMEOUT.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from dataclasses import dataclass, field

import pycurl

from hap import CA_FILE

KIB = 1024
MIB = 1024 * KIB


def has_http3() -> bool:
    return bool(pycurl.version_info()[4] & pycurl.VERSION_HTTP3)


class Upload:
    """A deterministic request body of n bytes, generated as it is sent (a
    seeded random block of an odd size, repeated), so that 100 MB uploads
    need no 100 MB buffer. `sha256` is known before sending; `sent` counts
    what libcurl has read. With chunked=True the length is not told to
    libcurl (PUT with unknown length); `delay` sleeps between reads."""

    BLOCK = random.Random(20240901).randbytes(1 * MIB + 7)

    def __init__(self, n: int, chunked: bool = False, delay: float = 0.0, read_size: int = 256 * KIB):
        self.n = n
        self.chunked = chunked
        self.delay = delay
        self.read_size = read_size
        self.sent = 0
        self._sha = None

    def chunks(self, size: int = 256 * KIB):
        off = 0
        while off < self.n:
            k = min(size, self.n - off)
            start = off % len(self.BLOCK)
            if start + k <= len(self.BLOCK):
                yield self.BLOCK[start:start + k]
            else:
                first = self.BLOCK[start:]
                yield first + self.BLOCK[:k - len(first)]
            off += k

    @property
    def sha256(self) -> str:
        if self._sha is None:
            h = hashlib.sha256()
            for c in self.chunks(1 * MIB):
                h.update(c)
            self._sha = h.hexdigest()
        return self._sha

    def reader(self):
        it = self.chunks(self.read_size)
        pending = b""

        def read(size: int) -> bytes:
            nonlocal pending
            if not pending:
                if self.delay:
                    time.sleep(self.delay)
                pending = next(it, b"")
            out, pending = pending[:size], pending[size:]
            self.sent += len(out)
            return out

        return read


@dataclass
class Result:
    url: str
    status: int = 0
    http_version: int = 0
    length: int = 0
    sha256: str = ""
    body: bytes | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    trailers: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None
    connects: int = 0
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def h3(self) -> bool:
        return self.http_version == pycurl.CURL_HTTP_VERSION_3

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


class _Collector:
    def __init__(self, res: Result, keep: bool | int):
        self.res = res
        self.keep = keep
        self.sha = hashlib.sha256()
        self.buf = bytearray() if keep else None
        self._in_body = False
        self._status_lines = 0

    def write(self, data: bytes) -> None:
        self._in_body = True
        self.res.length += len(data)
        self.sha.update(data)
        if self.buf is not None and (self.keep is True or len(self.buf) < self.keep):
            self.buf += data

    def header(self, line: bytes) -> None:
        text = line.decode("latin-1").rstrip("\r\n")
        if not text:
            return
        if text.startswith("HTTP/"):
            # a new header block (interim responses, redirects): start over
            self.res.headers.clear()
            return
        if ":" not in text:
            return
        k, v = text.split(":", 1)
        pair = (k.strip().lower(), v.strip())
        # libcurl hands trailers to the header callback after the body
        (self.res.trailers if self._in_body else self.res.headers).append(pair)

    def finish(self) -> None:
        self.res.sha256 = self.sha.hexdigest()
        if self.buf is not None:
            self.res.body = bytes(self.buf)


def easy(url: str, method: str = "GET", body: bytes | Upload | None = None,
         headers: list[str] | tuple = (), resolve: list[str] | tuple = (),
         cainfo=CA_FILE, verify: bool = True, timeout: float = 60.0, keep: bool | int = True,
         accept_encoding: str | None = None, low_speed: float = 15, curves: str | None = None):
    """A configured Curl handle and its collector (see fetch())."""
    res = Result(url)
    col = _Collector(res, keep)
    c = pycurl.Curl()
    c.setopt(pycurl.URL, url)
    c.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_3ONLY)
    if verify:
        c.setopt(pycurl.CAINFO, str(cainfo))
    else:
        c.setopt(pycurl.SSL_VERIFYPEER, 0)
        c.setopt(pycurl.SSL_VERIFYHOST, 0)
    if resolve:
        c.setopt(pycurl.RESOLVE, list(resolve))
    if curves:
        c.setopt(pycurl.SSL_EC_CURVES, curves)
    c.setopt(pycurl.WRITEFUNCTION, col.write)
    c.setopt(pycurl.HEADERFUNCTION, col.header)
    c.setopt(pycurl.TIMEOUT_MS, int(timeout * 1000))
    c.setopt(pycurl.CONNECTTIMEOUT_MS, int(min(10.0, timeout) * 1000))
    c.setopt(pycurl.NOSIGNAL, 1)
    if low_speed:
        # a stalled transfer fails after low_speed seconds without a byte
        # instead of waiting for TIMEOUT
        c.setopt(pycurl.LOW_SPEED_LIMIT, 1)
        c.setopt(pycurl.LOW_SPEED_TIME, max(1, int(low_speed)))
    if accept_encoding is not None:
        # raw bytes: libcurl does not decode them, the test does
        c.setopt(pycurl.HTTP_CONTENT_DECODING, 0)
    hdrs = list(headers)
    if accept_encoding is not None:
        hdrs.append(f"Accept-Encoding: {accept_encoding}")
    if method == "HEAD":
        c.setopt(pycurl.NOBODY, 1)
    elif method in ("POST", "PUT"):
        if isinstance(body, Upload):
            c.setopt(pycurl.UPLOAD, 1)
            c.setopt(pycurl.READFUNCTION, body.reader())
            if not body.chunked:
                c.setopt(pycurl.INFILESIZE_LARGE, body.n)
            # no "Expect: 100-continue" round trip
            hdrs.append("Expect:")
        else:
            data = body or b""
            c.setopt(pycurl.POSTFIELDSIZE_LARGE, len(data))
            c.setopt(pycurl.POSTFIELDS, data)
        c.setopt(pycurl.CUSTOMREQUEST, method)
    elif method != "GET":
        c.setopt(pycurl.CUSTOMREQUEST, method)
    if hdrs:
        c.setopt(pycurl.HTTPHEADER, hdrs)
    return c, col


def _finish(c: pycurl.Curl, col: _Collector, error: str | None, t0: float) -> Result:
    res = col.res
    col.finish()
    res.error = error
    res.status = c.getinfo(pycurl.RESPONSE_CODE)
    res.http_version = c.getinfo(pycurl.INFO_HTTP_VERSION)
    res.connects = c.getinfo(pycurl.NUM_CONNECTS)
    res.elapsed = time.monotonic() - t0
    return res


def fetch(url: str, method: str = "GET", body: bytes | Upload | None = None, **kw) -> Result:
    """One request over HTTP/3 only. Never raises for transfer errors: they
    are in Result.error."""
    c, col = easy(url, method, body, **kw)
    t0 = time.monotonic()
    err = None
    try:
        c.perform()
    except pycurl.error as e:
        err = f"curl error {e.args[0]}: {e.args[1]}"
    try:
        return _finish(c, col, err, t0)
    finally:
        c.close()


def run_multi(specs: list[dict], max_host_connections: int = 1, timeout: float = 60.0) -> list[Result]:
    """Runs transfers on one CurlMulti: with max_host_connections=1 and
    PIPEWAIT they all share one connection (HTTP/3 multiplexing). Each spec
    is fetch()'s keyword arguments (url, method, ...). Bounded by `timeout`."""
    m = pycurl.CurlMulti()
    m.setopt(pycurl.M_PIPELINING, pycurl.PIPE_MULTIPLEX)
    m.setopt(pycurl.M_MAX_HOST_CONNECTIONS, max_host_connections)
    handles = []
    t0 = time.monotonic()
    try:
        for spec in specs:
            spec = dict(spec)
            url = spec.pop("url")
            c, col = easy(url, spec.pop("method", "GET"), spec.pop("body", None),
                          timeout=timeout, **spec)
            c.setopt(pycurl.PIPEWAIT, 1)
            m.add_handle(c)
            handles.append((c, col))
        errors: dict[int, str] = {}
        by_handle = {id(c): i for i, (c, _) in enumerate(handles)}
        deadline = time.monotonic() + timeout + 5
        active = len(handles)
        while time.monotonic() < deadline:
            ret, active = m.perform()
            while ret == pycurl.E_CALL_MULTI_PERFORM:
                ret, active = m.perform()
            while True:
                queued, _ok, failed = m.info_read()
                for c, code, msg in failed:
                    errors[by_handle[id(c)]] = f"curl error {code}: {msg}"
                if not queued:
                    break
            if not active:
                break
            m.select(0.05)
        out = []
        for i, (c, col) in enumerate(handles):
            err = errors.get(i)
            if err is None and active:
                err = f"unfinished after {timeout}s"
            out.append(_finish(c, col, err, t0))
        return out
    finally:
        for c, _ in handles:
            m.remove_handle(c)
            c.close()
        m.close()


def multi_load(specs_per_connection: list[list[dict]], timeout: float = 60.0) -> list[list[Result]]:
    """N connections at once, one thread and one CurlMulti each (so each
    has its own connection), each carrying its list of multiplexed
    transfers."""
    results: list[list[Result] | None] = [None] * len(specs_per_connection)
    excs: list[BaseException] = []

    def one(i, specs):
        try:
            results[i] = run_multi(specs, 1, timeout)
        except BaseException as e:      # reported below
            excs.append(e)

    threads = [threading.Thread(target=one, args=(i, s), daemon=True)
               for i, s in enumerate(specs_per_connection)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 30)
    if excs:
        raise excs[0]
    if any(r is None for r in results):
        raise TimeoutError("a load thread did not finish")
    return results
