#!/usr/bin/env python3
"""HAProxy 3.0.11, stock native QUIC against haquic (USE_RUST_QUIC=1), on one
configuration that differs only in the binary.

Each HAProxy runs pinned to core 0 (`taskset -c 0`, nbthread 1). The load
tools (this script: pycurl's libcurl with ngtcp2, aioquic) and the HTTP/1.1
backend (tests/haproxy/backend.py) are pinned to core 1. Everything is on
127.0.0.1. Server CPU is utime + stime from /proc/<pid>/stat over exactly
the measured phase, after a short warm-up.

Figures, each measured for both implementations, taking turns (stock, haquic,
stock, haquic, ...) for --rounds rounds, a fresh HAProxy for each
measurement:

  1. req/s and server CPU us/request: 1 KB from `http-request return`,
     CurlMulti with 16 connections x 8 streams (PIPE_MULTIPLEX, PIPEWAIT,
     M_MAX_HOST_CONNECTIONS=16, M_MAX_CONCURRENT_STREAMS=8), time-bounded
  2. new connections/s and CPU us/handshake: FRESH_CONNECT, FORBID_REUSE,
     no TLS session cache (every handshake full), one request each, 6 at once
  3. one connection downloads 100 MB from the backend: MB/s, CPU s/GB
  4. one connection uploads 100 MB to the backend (POST /sink): MB/s
  5. p50 and p99 latency, open loop: requests scheduled at a fixed rate of
     half stock's median req/s of figure 1 in this run, 16 connections x up
     to 4 streams; latency runs from the scheduled time to the completion
  6. RSS per idle connection: N aioquic connections (handshake done, then
     idle), VmRSS after minus before, divided by N (N = 1000, then 5000)
  7. the ceiling: raw UDP over loopback with GSO (1350-byte segments, 64 KB
     sends) to a UDP_GRO receiver on the other core, and `openssl speed
     -evp aes-128-gcm -bytes 1350`; the download's fraction of the lower

Usage: bench_haproxy.py --stock BIN --haquic BIN --crt PEM --out-dir DIR
                        [--rounds N] [--smoke] [--command TEXT]
Progress goes to stderr, the table to stdout; DIR/<date>.md and
DIR/<date>.png are written. --smoke: one round of short phases, then checks
that every figure is a finite positive number for both implementations,
ending with `N passed, M failed`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import math
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pycurl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "haproxy"))
import backend as origin  # noqa: E402  (the pattern the backend serves)
from hap import _die_with_parent, free_port, wait_for  # noqa: E402
from hap import stop_process  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
IMPLS = ("stock", "haquic")
SERVER_CORE, CLIENT_CORE = 0, 1
UDP_SEGMENT, UDP_GRO = 103, 104     # linux/udp.h
SO_RCVBUFFORCE = 33                 # asm-generic/socket.h
# the 1 KB answer: lf-file reads a log-format, so plain text without "%"
KB1 = (b"0123456789abcdef" * 64)[:1023] + b"\n"

CONFIG = """\
global
    nbthread 1
    limited-quic
    maxconn {maxconn}

defaults
    mode http
    timeout connect 5s
    timeout client 5m
    timeout server 5m

frontend fe
    bind quic4@127.0.0.1:{port} ssl crt {crt} alpn h3
    http-request return status 200 content-type text/plain lf-file {body} if {{ path /1k }}
    default_backend be

backend be
    server s1 127.0.0.1:{backend_port}
"""


@dataclass
class Plan:
    """Durations (s) and sizes of one run."""
    warmup: float
    req_secs: float
    hs_secs: float
    hs_parallel: int
    xfer_bytes: int
    lat_secs: float
    idle_counts: tuple[int, int]
    udp_secs: float
    aes_secs: int


FULL = Plan(warmup=1.0, req_secs=8.0, hs_secs=8.0, hs_parallel=6, xfer_bytes=100_000_000,
            lat_secs=8.0, idle_counts=(1000, 5000), udp_secs=3.0, aes_secs=3)
SMOKE = Plan(warmup=0.5, req_secs=4.0, hs_secs=4.0, hs_parallel=6, xfer_bytes=20_000_000,
             lat_secs=4.0, idle_counts=(100, 400), udp_secs=1.0, aes_secs=1)


@dataclass
class Metric:
    key: str
    label: str
    unit: str
    higher: bool                                # higher is better
    target: tuple[str, float] | None = None     # on the ratio haquic / stock
    fmt: str = "{:.0f}"


def metrics(plan: Plan) -> list[Metric]:
    n1, n2 = plan.idle_counts
    mb = plan.xfer_bytes // 1_000_000
    up, down = True, False
    return [
        Metric("req_s", "1. requests/s (1 KB, 16 conn x 8 streams)", "req/s", up, (">=", 1.0)),
        Metric("us_req", "1. server CPU per request", "µs", down, ("<=", 0.67), "{:.1f}"),
        Metric("conn_s", "2. new connections/s (full handshake)", "conn/s", up, (">=", 1.0)),
        Metric("us_hs", "2. server CPU per handshake", "µs", down, ("<=", 0.65)),
        Metric("dl_mb_s", f"3. download {mb} MB, 1 connection", "MB/s", up, (">=", 2.0), "{:.1f}"),
        Metric("dl_s_gb", "3. server CPU per GB downloaded", "CPU s/GB", down, ("<=", 0.5), "{:.2f}"),
        Metric("ul_mb_s", f"4. upload {mb} MB, 1 connection", "MB/s", up, None, "{:.1f}"),
        Metric("p50_ms", "5. p50 latency at half stock's req/s", "ms", down, None, "{:.2f}"),
        Metric("p99_ms", "5. p99 latency at half stock's req/s", "ms", down, ("<=", 1.0), "{:.2f}"),
        Metric("rss_n1", f"6. RSS per idle connection, N={n1}", "KiB", down, ("<=", 1.0), "{:.1f}"),
        Metric("rss_n2", f"6. RSS per idle connection, N={n2}", "KiB", down, ("<=", 1.0), "{:.1f}"),
        Metric("dl_frac", "7. download / min(UDP GSO, AES-GCM)", "fraction", up, None, "{:.3f}"),
    ]


class Overtime(BaseException):
    """The whole run's time bound (SIGALRM): not caught by a figure."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- processes -------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK    # fields 14, 15 of proc(5)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M).group(1))


def pinned(core: int, argv: list[str], **kw) -> subprocess.Popen:
    """A process on one core, killed when this script dies, however."""
    return subprocess.Popen(["taskset", "-c", str(core)] + argv, stdin=subprocess.DEVNULL,
                            preexec_fn=_die_with_parent, **kw)


def snapshot(binary: str, dest: Path) -> tuple[str, dict]:
    """Copies an HAProxy binary, and the libhaquic it loads (through its
    RUNPATH, which LD_LIBRARY_PATH overrides), so that a rebuild during the
    run changes nothing. Returns the copy's path and its environment."""
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / "haproxy"
    shutil.copy2(binary, path)
    env = dict(os.environ)
    ldd = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"^\s*(libhaquic\.so\S*) => (/\S+)", ldd, re.M)
    if m:
        shutil.copy2(m.group(2), dest / m.group(1))
        env["LD_LIBRARY_PATH"] = str(dest)
    return str(path), env


def raise_nofile() -> int:
    """Soft RLIMIT_NOFILE up to the hard one (HAProxy and the idle-connection
    client inherit it); returns it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Backend:
    """tests/haproxy/backend.py on core 1, for the run's whole length."""

    def __init__(self, workdir: Path, max_seconds: int):
        port_file = workdir / "backend.port"
        self.proc = pinned(CLIENT_CORE, [sys.executable, str(REPO / "tests/haproxy/backend.py"),
                                         "--port", "0", "--port-file", str(port_file),
                                         "--max-seconds", str(max_seconds)],
                           stdout=subprocess.DEVNULL)
        wait_for(lambda: port_file.exists() or self.proc.poll() is not None, 10, what="backend port file")
        if self.proc.poll() is not None:
            raise RuntimeError(f"the backend exited with {self.proc.returncode}")
        self.port = int(port_file.read_text())


class HAProxy:
    """One HAProxy on the shared configuration, pinned to core 0."""

    def __init__(self, impl: str, binary: tuple[str, dict], workdir: Path, crt: str, body: Path,
                 backend_port: int, maxconn: int):
        self.impl, (self.binary, self.env) = impl, binary
        self.dir = workdir / impl
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port("udp", also_tcp=False)
        self.cfg = self.dir / "haproxy.cfg"
        self.cfg.write_text(CONFIG.format(maxconn=maxconn, port=self.port, crt=crt, body=body,
                                          backend_port=backend_port))

    def __enter__(self) -> "HAProxy":
        self.err = open(self.dir / "haproxy.err", "wb")
        self.proc = pinned(SERVER_CORE, [self.binary, "-db", "-f", str(self.cfg)],
                           stdout=self.err, stderr=self.err, cwd=self.dir, env=self.env)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 10
        while not get_ok(self.url("/1k"), 1024):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                stop_process(self.proc)
                self.err.close()
                raise RuntimeError(f"{self.impl} HAProxy did not answer: "
                                   f"{(self.dir / 'haproxy.err').read_text()[-2000:]}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        stop_process(self.proc)
        self.err.close()

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"


# ---- libcurl ------------------------------------------------------------------------

class Counted:
    """An easy handle (HTTP/3 only) that counts the body it receives."""

    def __init__(self, url: str, fresh: bool = False, timeout: float = 120.0):
        self.got = 0
        c = self.c = pycurl.Curl()
        c.setopt(pycurl.URL, url)
        c.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_3ONLY)
        c.setopt(pycurl.SSL_VERIFYPEER, 0)
        c.setopt(pycurl.SSL_VERIFYHOST, 0)
        c.setopt(pycurl.WRITEFUNCTION, self._write)
        c.setopt(pycurl.TIMEOUT, int(timeout))
        c.setopt(pycurl.CONNECTTIMEOUT, 5)
        if fresh:
            c.setopt(pycurl.FRESH_CONNECT, 1)
            c.setopt(pycurl.FORBID_REUSE, 1)
            c.setopt(pycurl.SSL_SESSIONID_CACHE, 0)
        else:
            c.setopt(pycurl.PIPEWAIT, 1)
        c.counted = self

    def _write(self, data: bytes) -> None:
        self.got += len(data)

    def ok(self, length: int) -> bool:
        good = self.c.getinfo(pycurl.RESPONSE_CODE) == 200 and self.got == length
        self.got = 0
        return good


def get_ok(url: str, length: int) -> bool:
    h = Counted(url, timeout=2)
    try:
        h.c.perform()
        return h.ok(length)
    except pycurl.error:
        return False
    finally:
        h.c.close()


def multi(conns: int, streams: int | None) -> pycurl.CurlMulti:
    m = pycurl.CurlMulti()
    m.setopt(pycurl.M_PIPELINING, pycurl.PIPE_MULTIPLEX)
    m.setopt(pycurl.M_MAX_HOST_CONNECTIONS, conns)
    if streams:
        m.setopt(pycurl.M_MAX_CONCURRENT_STREAMS, streams)
    return m


def finished(m: pycurl.CurlMulti):
    """The easy handles CurlMulti has finished since the last call, as
    (Counted, ok-so-far: False when libcurl reported an error)."""
    out = []
    while True:
        queued, good, bad = m.info_read()
        out += [(c.counted, True) for c in good] + [(c.counted, False) for c, _, _ in bad]
        for c in good:
            m.remove_handle(c)
        for c, _, _ in bad:
            m.remove_handle(c)
        if not queued:
            return out


def closed_loop(h: HAProxy, conns: int, streams: int | None, fresh: bool,
                warmup: float, secs: float) -> dict:
    """conns x streams GETs of /1k always in flight: each finished request is
    replaced at once. Counts, over the `secs` after `warmup`, the requests
    answered (200, 1024 bytes), the failures, the connections made and the
    server's CPU."""
    m = multi(conns, streams)
    handles = [Counted(h.url("/1k"), fresh) for _ in range(conns * (streams or 1))]
    for e in handles:
        m.add_handle(e.c)
    t0 = time.monotonic()
    done = fails = connects = 0
    mark = None
    while True:
        now = time.monotonic()
        if mark is None and now >= t0 + warmup:
            mark = (done, fails, connects, h.cpu(), now)
        if now >= t0 + warmup + secs:
            end = (done, fails, connects, h.cpu(), now)
            break
        m.perform()
        for e, ok in finished(m):
            connects += e.c.getinfo(pycurl.NUM_CONNECTS)
            if e.ok(1024) and ok:
                done += 1
            else:
                fails += 1
            m.add_handle(e.c)
        m.select(0.01)
    for e in handles:
        m.remove_handle(e.c)
        e.c.close()
    m.close()
    n, f, k, cpu, t = (b - a for a, b in zip(mark, end))
    return {"requests": n, "failures": f, "connects": k, "connects_all": connects, "secs": t,
            "cpu": cpu, "server_busy": cpu / t}


def fig_requests(h: HAProxy, plan: Plan) -> dict:
    r = closed_loop(h, 16, 8, False, plan.warmup, plan.req_secs)
    if not r["requests"]:
        raise RuntimeError(f"no request answered ({r['failures']} failures)")
    return {"req_s": r["requests"] / r["secs"], "us_req": r["cpu"] / r["requests"] * 1e6,
            "raw": r}


def fig_handshakes(h: HAProxy, plan: Plan) -> dict:
    r = closed_loop(h, plan.hs_parallel, None, True, plan.warmup, plan.hs_secs)
    if not r["requests"]:
        raise RuntimeError(f"no connection completed ({r['failures']} failures)")
    # every request of the window made its own connection
    return {"conn_s": r["requests"] / r["secs"], "us_hs": r["cpu"] / r["requests"] * 1e6,
            "raw": r}


def one_connection(h: HAProxy, path: str, n: int, upload: bool, warm_bytes: int = 1 << 20):
    """On one connection: a warm-up transfer of warm_bytes, then the measured
    one of n bytes. Returns (seconds, server CPU seconds, bytes verified)."""
    e = Counted(h.url(path))
    c = e.c
    if upload:
        c.setopt(pycurl.POST, 1)
        c.setopt(pycurl.HTTPHEADER, ["Expect:", "Content-Type: application/octet-stream"])
        c.setopt(pycurl.UPLOAD_BUFFERSIZE, 2 * 1024 * 1024)
        body = bytearray()
        c.setopt(pycurl.WRITEFUNCTION, body.extend)
    else:
        c.setopt(pycurl.BUFFERSIZE, 512 * 1024)

    def transfer(size: int) -> tuple[float, float, int]:
        if upload:
            chunks = origin.pattern_chunks(size)
            pending = [b""]

            def read(want: int) -> bytes:
                if not pending[0]:
                    pending[0] = next(chunks, b"")
                out, pending[0] = pending[0][:want], pending[0][want:]
                return bytes(out)
            c.setopt(pycurl.READFUNCTION, read)
            c.setopt(pycurl.POSTFIELDSIZE_LARGE, size)
            body.clear()
        else:
            c.setopt(pycurl.URL, h.url(f"{path}/{size}"))
        e.got = 0
        cpu0, t0 = h.cpu(), time.monotonic()
        c.perform()
        secs, cpu = time.monotonic() - t0, h.cpu() - cpu0
        status = c.getinfo(pycurl.RESPONSE_CODE)
        got = int(body.decode() or -1) if upload else e.got
        if status != 200 or got != size:
            raise RuntimeError(f"{path}: status {status}, {got} bytes instead of {size}")
        return secs, cpu, got

    try:
        transfer(warm_bytes)
        connects = c.getinfo(pycurl.NUM_CONNECTS)
        r = transfer(n)
        if c.getinfo(pycurl.NUM_CONNECTS) != 0 or connects != 1:
            raise RuntimeError(f"{path}: the transfer did not reuse the warm connection")
        return r
    finally:
        c.close()


def fig_download(h: HAProxy, plan: Plan) -> dict:
    secs, cpu, n = one_connection(h, "/bytes", plan.xfer_bytes, upload=False)
    return {"dl_mb_s": n / secs / 1e6, "dl_s_gb": cpu / (n / 1e9),
            "raw": {"bytes": n, "secs": secs, "cpu": cpu}}


def fig_upload(h: HAProxy, plan: Plan) -> dict:
    secs, cpu, n = one_connection(h, "/sink", plan.xfer_bytes, upload=True)
    return {"ul_mb_s": n / secs / 1e6, "raw": {"bytes": n, "secs": secs, "cpu": cpu}}


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest rank."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def fig_latency(h: HAProxy, plan: Plan, rate: float) -> dict:
    """Open loop: request i is due at t0 + i / rate, whatever happened to
    the earlier ones; at most 16 connections x 4 streams are in flight, the
    rest wait (in libcurl's queue, or here when every handle is busy).
    Latency runs from the due time to the completion, so waiting counts."""
    m = multi(16, 4)
    free = [Counted(h.url("/1k")) for _ in range(256)]
    busy: dict[Counted, float] = {}
    backlog: deque[float] = deque()
    interval = 1.0 / rate
    t0 = time.monotonic() + 0.01
    t_measure = t0 + plan.warmup
    t_last = t_measure + plan.lat_secs          # nothing is due from then on
    hard_end = t_last + 10
    due_i = 0
    lat: list[float] = []
    fails = 0
    cpu0 = cpu1 = None

    def start(e: Counted, due: float) -> None:
        busy[e] = due
        m.add_handle(e.c)

    while True:
        now = time.monotonic()
        if cpu0 is None and now >= t_measure:
            cpu0 = h.cpu()
        if cpu1 is None and now >= t_last:
            cpu1, t_cpu1 = h.cpu(), now
        while True:
            due = t0 + due_i * interval
            if due > now or due >= t_last:
                break
            due_i += 1
            if free:
                start(free.pop(), due)
            else:
                backlog.append(due)
        m.perform()
        for e, ok in finished(m):
            due = busy.pop(e)
            good = e.ok(1024) and ok
            if due >= t_measure:
                if good:
                    lat.append(time.monotonic() - due)
                else:
                    fails += 1
            if backlog:
                start(e, backlog.popleft())
            else:
                free.append(e)
        if now >= t_last and not busy and not backlog:
            break
        if now >= hard_end:
            fails += sum(1 for d in list(busy.values()) + list(backlog) if d >= t_measure)
            break
        next_due = t0 + due_i * interval
        m.select(min(max(next_due - time.monotonic(), 0.0), 0.01) if next_due < t_last else 0.01)
    for e in list(busy) + free:
        if e in busy:
            m.remove_handle(e.c)
        e.c.close()
    m.close()
    if not lat:
        raise RuntimeError(f"no paced request answered ({fails} failures)")
    lat.sort()
    scheduled = len(lat) + fails
    return {"p50_ms": percentile(lat, 0.50) * 1e3, "p99_ms": percentile(lat, 0.99) * 1e3,
            "raw": {"rate": rate, "scheduled": scheduled, "answered": len(lat), "failures": fails,
                    "max_ms": lat[-1] * 1e3,
                    "us_req": (cpu1 - cpu0) / len(lat) * 1e6 if cpu1 is not None else None,
                    "secs": t_cpu1 - t_measure if cpu1 is not None else None}}


# ---- idle connections (aioquic) ------------------------------------------------------

async def _idle(h: HAProxy, counts: tuple[int, ...], parallel: int = 32) -> dict:
    from aioquic.asyncio.client import connect
    from aioquic.h3.connection import H3_ALPN
    from aioquic.quic.configuration import QuicConfiguration

    cfg = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_NONE,
                            idle_timeout=600.0)
    held = []
    sem = asyncio.Semaphore(parallel)

    async def open_one():
        async with sem:
            cm = connect("127.0.0.1", h.port, configuration=cfg)
            client = await asyncio.wait_for(cm.__aenter__(), 10)
            held.append((cm, client))     # cm too: collected, it closes the connection

    async def open_many(n: int):
        t0 = time.monotonic()
        step = max(n // 5, 1)
        base = len(held)
        tasks = [asyncio.ensure_future(open_one()) for _ in range(n)]
        for i, t in enumerate(asyncio.as_completed(tasks), 1):
            await t
            if i % step == 0 or i == n:
                log(f"      {h.impl}: {base + i} idle connections open "
                    f"({time.monotonic() - t0:.1f} s)")

    async def close_all():
        for _, c in held:
            c.close()
        await asyncio.sleep(0.3)
        for _, c in held:
            if c._transport is not None:
                c._transport.close()
        held.clear()

    async def settle():
        await asyncio.sleep(1.0)
        dead = [c for _, c in held if c._closed.is_set()]
        if dead:
            why = {}
            for c in dead:
                ev = c._quic._close_event
                key = f"0x{ev.error_code:x} {ev.reason_phrase!r}" if ev else "?"
                why[key] = why.get(key, 0) + 1
            raise RuntimeError(f"{len(dead)} of {len(held)} idle connections were closed: {why}")
        return rss_kib(h.pid)

    async def keepalive():
        # stock's transport idle timeout is 30 s (tune.quic.frontend.max-idle-timeout):
        # a PING every 10 s keeps every connection open however long the opening takes
        while True:
            await asyncio.sleep(10)
            for _, c in held:
                if not c._closed.is_set():
                    c._quic.send_ping(0)
                    c.transmit()

    pinger = asyncio.ensure_future(keepalive())
    try:
        # warm-up: a few handshakes, closed again
        for _ in range(3):
            await open_one()
        await close_all()
        before = rss_kib(h.pid)
        out = {"rss_before_kib": before}
        for n in counts:
            await open_many(n - len(held))
            out[f"rss_at_{n}_kib"] = await settle()
        return out
    finally:
        pinger.cancel()
        await close_all()


def fig_idle(h: HAProxy, plan: Plan) -> dict:
    n1, n2 = plan.idle_counts
    raw = asyncio.run(asyncio.wait_for(_idle(h, (n1, n2)), 60 + n2 / 20))
    before = raw["rss_before_kib"]
    return {"rss_n1": (raw[f"rss_at_{n1}_kib"] - before) / n1,
            "rss_n2": (raw[f"rss_at_{n2}_kib"] - before) / n2, "raw": raw}


# ---- the ceiling ---------------------------------------------------------------------

def udp_gso_ceiling(secs: float) -> float:
    """MB/s delivered by raw UDP over loopback: 64 KB sends cut into 1350-byte
    segments (UDP_SEGMENT) from this core, a UDP_GRO receiver on the other."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    try:
        rx.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
    except OSError:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    rx.setsockopt(socket.SOL_UDP, UDP_GRO, 1)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:        # the receiver
        code = 1
        try:
            os.close(rfd)
            os.sched_setaffinity(0, {SERVER_CORE})
            rx.settimeout(0.5)
            buf = bytearray(256 * 1024)
            total, first, last = 0, None, None
            deadline = time.monotonic() + secs + 10
            os.write(wfd, b"r")
            while time.monotonic() < deadline:
                try:
                    n = rx.recv_into(buf)
                except socket.timeout:
                    if first is not None:
                        break
                    continue
                last = time.monotonic()
                if first is None:
                    first = last
                else:
                    total += n      # bytes after the first receive, over last - first
            os.write(wfd, f"{total} {(last or 0) - (first or 0)}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    os.read(rfd, 1)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setsockopt(socket.SOL_UDP, UDP_SEGMENT, 1350)
    tx.connect(rx.getsockname())
    payload = bytes(1350 * 48)          # 64,800 bytes a send
    end = time.monotonic() + secs
    while time.monotonic() < end:
        try:
            tx.send(payload)
        except OSError:
            pass
    tx.close()
    rx.close()
    answer = b""
    while True:
        chunk = os.read(rfd, 100)
        if not chunk:
            break
        answer += chunk
    os.close(rfd)
    os.waitpid(pid, 0)
    total, span = answer.split()
    return int(total) / float(span) / 1e6 if float(span) > 0 else 0.0


def aes_gcm_ceiling(secs: int) -> float:
    """`openssl speed -evp aes-128-gcm -bytes 1350`, on the server's core, in MB/s."""
    out = subprocess.run(["taskset", "-c", str(SERVER_CORE), "openssl", "speed", "-evp", "aes-128-gcm",
                          "-bytes", "1350", "-seconds", str(secs)],
                         capture_output=True, text=True, timeout=secs + 60).stdout
    m = re.search(r"^aes-128-gcm\s+([\d.]+)k\s*$", out, re.M | re.I)
    if not m:
        raise RuntimeError(f"no AES-128-GCM figure in openssl speed's output:\n{out}")
    return float(m.group(1)) * 1000 / 1e6


# ---- the run -------------------------------------------------------------------------

FIGURES = {"requests": fig_requests, "handshakes": fig_handshakes, "download": fig_download,
           "upload": fig_upload, "latency": fig_latency, "idle": fig_idle}


class Run:
    def __init__(self, args, plan: Plan, workdir: Path):
        self.args, self.plan, self.workdir = args, plan, workdir
        self.bins = {impl: snapshot(getattr(args, impl), workdir / "bin" / impl) for impl in IMPLS}
        self.machine = machine(self)
        self.values: dict[str, dict[str, list[float]]] = {i: {} for i in IMPLS}
        self.raw: list[tuple[int, str, str, dict]] = []      # (round, impl, figure, raw)
        self.ceiling: list[dict] = []
        self.errors: list[str] = []
        self.rate = float("nan")
        self.body = workdir / "1k.txt"
        self.body.write_bytes(KB1)
        hard = raise_nofile()
        # HAProxy wants about 2 x maxconn file descriptors
        self.maxconn = min(20000, (hard - 200) // 2 // 100 * 100)
        if self.maxconn < plan.idle_counts[1] + 100:
            raise SystemExit(f"RLIMIT_NOFILE {hard} is too low for {plan.idle_counts[1]} connections")
        self.backend = Backend(workdir, args.max_seconds + 60)

    def measure(self, rnd: int, figure: str, impl: str, *extra) -> None:
        h = HAProxy(impl, self.bins[impl], self.workdir, self.args.crt, self.body,
                    self.backend.port, self.maxconn)
        try:
            with h:
                r = FIGURES[figure](h, self.plan, *extra)
        except Exception as e:          # recorded, reported, and failing the run
            msg = f"round {rnd} {impl} {figure}: {type(e).__name__}: {e}"
            self.errors.append(msg)
            log(f"    {msg}")
            return
        raw = r.pop("raw")
        self.raw.append((rnd, impl, figure, raw))
        for k, v in r.items():
            self.values[impl].setdefault(k, []).append(v)
        shown = ", ".join(f"{k} {v:.4g}" for k, v in r.items())
        log(f"  round {rnd} {impl:6} {figure:10} {shown}")

    def measure_ceiling(self, rnd: int) -> None:
        c = {}
        for key, f, secs in (("udp_mb_s", udp_gso_ceiling, self.plan.udp_secs),
                             ("aes_mb_s", aes_gcm_ceiling, self.plan.aes_secs)):
            try:
                c[key] = f(secs)
            except Exception as e:
                self.errors.append(f"round {rnd} ceiling {key}: {type(e).__name__}: {e}")
                c[key] = float("nan")
        self.ceiling.append(c)
        log(f"  round {rnd} ceiling    UDP GSO {c['udp_mb_s']:.0f} MB/s, "
            f"AES-128-GCM {c['aes_mb_s']:.0f} MB/s")

    def go(self) -> None:
        rounds = range(1, self.args.rounds + 1)
        log(f"bench: {self.args.rounds} round(s), maxconn {self.maxconn}, backend on port "
            f"{self.backend.port}")
        for rnd in rounds:
            for impl in IMPLS:
                self.measure(rnd, "requests", impl)
        stock_rps = self.values["stock"].get("req_s")
        if not stock_rps:
            raise SystemExit("stock HAProxy gave no req/s: no rate for the latency figure")
        self.rate = statistics.median(stock_rps) / 2
        log(f"bench: latency figure at {self.rate:.0f} req/s (half stock's median)")
        for rnd in rounds:
            self.measure_ceiling(rnd)
            for figure in ("handshakes", "download", "upload", "latency", "idle"):
                for impl in IMPLS:
                    self.measure(rnd, figure, impl, *((self.rate,) if figure == "latency" else ()))
        # the download's fraction of the ceiling, round by round
        for rnd, impl, figure, raw in self.raw:
            if figure == "download":
                c = self.ceiling[rnd - 1]
                mb_s = raw["bytes"] / raw["secs"] / 1e6
                self.values[impl].setdefault("dl_frac", []).append(
                    mb_s / min(c["udp_mb_s"], c["aes_mb_s"]))


# ---- the report ----------------------------------------------------------------------

def summary(values: dict[str, dict[str, list[float]]], m: Metric) -> dict:
    """Median, min and max per implementation, the ratio of the medians
    (haquic / stock), and the verdict against the metric's target."""
    out = {}
    for impl in IMPLS:
        v = values[impl].get(m.key, [])
        out[impl] = (statistics.median(v), min(v), max(v)) if v else None
    s, q = out["stock"], out["haquic"]
    out["ratio"] = q[0] / s[0] if s and q and s[0] else float("nan")
    if m.target is None or math.isnan(out["ratio"]):
        out["verdict"] = "—" if m.target is None else "no figure"
    else:
        op, bound = m.target
        met = out["ratio"] <= bound if op == "<=" else out["ratio"] >= bound
        out["verdict"] = "met" if met else "missed"
    return out


def table(values: dict[str, dict[str, list[float]]], ms: list[Metric]) -> str:
    rows = ["| figure | unit | stock median (min–max) | haquic median (min–max) | haquic/stock "
            "| target | met? |", "|---|---|---|---|---|---|---|"]
    for m in ms:
        s = summary(values, m)

        def cell(x):
            if x is None:
                return "no figure"
            med, lo, hi = (m.fmt.format(v) for v in x)
            return f"{med} ({lo}–{hi})"
        target = f"{m.target[0].replace('<=', '≤').replace('>=', '≥')} {m.target[1]:g}" if m.target else "—"
        rows.append(f"| {m.label} | {m.unit} | {cell(s['stock'])} | {cell(s['haquic'])} | "
                    f"{s['ratio']:.2f} | {target} | {s['verdict']} |")
    return "\n".join(rows)


def chart(run: Run, ms: list[Metric], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 4
    rows = math.ceil(len(ms) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows))
    colors = {"stock": "#7f7f7f", "haquic": "#1f77b4"}
    for ax, m in zip(axes.flat, ms):
        s = summary(run.values, m)
        for x, impl in enumerate(IMPLS):
            if s[impl] is None:
                continue
            med, lo, hi = s[impl]
            ax.bar(x, med, color=colors[impl], yerr=[[med - lo], [hi - med]], capsize=4)
            ax.annotate(m.fmt.format(med), (x, hi), textcoords="offset points", xytext=(0, 3),
                        ha="center", fontsize=9)
        ax.set_xticks(range(len(IMPLS)), IMPLS)
        ax.set_title(f"{m.label}\n({m.unit}, {'higher' if m.higher else 'lower'} is better; "
                     f"ratio {s['ratio']:.2f}"
                     f"{', ' + s['verdict'] if m.target else ''})", fontsize=8.5)
        ax.margins(y=0.15)
    for ax in list(axes.flat)[len(ms):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def tree_state() -> str:
    """The work tree's commit when the run started, and whether the sources
    that go into the binaries had uncommitted changes (the binaries may
    still be older than either: make bench rebuilds them first)."""
    def git(*argv):
        r = subprocess.run(["git", "-C", str(REPO), *argv], capture_output=True, text=True, timeout=30)
        return r.stdout.strip() if r.returncode == 0 else None
    head = git("rev-parse", "--short", "HEAD")
    if head is None:
        return "not a git checkout"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "src", "include",
                "haproxy-patches", "Cargo.toml", "Cargo.lock")
    return f"commit {head}" + (f", with uncommitted changes in: "
                               f"{' '.join(sorted({l[3:] for l in dirty.splitlines()}))}" if dirty else "")


def machine(run: Run) -> list[str]:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        m = re.search(r"^model name\s*:\s*(.*)$", f.read(), re.M)
        if m:
            cpu = m.group(1)
    lines = [f"- CPU: {cpu}, {os.cpu_count()} cores; kernel {platform.release()}"]
    for impl in IMPLS:
        binary, env = run.bins[impl]
        vv = subprocess.run([binary, "-vv"], capture_output=True, text=True, timeout=20, env=env).stdout
        keep = [l.strip() for l in vv.splitlines()
                if re.match(r"^(HAProxy version|Running on OpenSSL|QUIC and HTTP/3 provided|  OPTIONS)", l)]
        lines.append(f"- {impl} ({getattr(run.args, impl)}, copied at the start): " + "; ".join(keep))
    lines.append(f"- work tree at the start: {tree_state()}")
    lines.append(f"- load tools: {pycurl.version}")
    try:
        import aioquic
        lines.append(f"- idle connections: aioquic {aioquic.__version__}; Python {platform.python_version()}")
    except ImportError:
        pass
    return lines


def raw_section(run: Run) -> list[str]:
    out = ["| round | implementation | figure | raw |", "|---|---|---|---|"]
    for rnd, impl, figure, raw in run.raw:
        text = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in raw.items())
        out.append(f"| {rnd} | {impl} | {figure} | {text} |")
    for i, c in enumerate(run.ceiling, 1):
        out.append(f"| {i} | machine | ceiling | UDP GSO {c['udp_mb_s']:.0f} MB/s, "
                   f"AES-128-GCM {c['aes_mb_s']:.0f} MB/s |")
    per = ["", "Per-round values (in the order measured):", ""]
    for impl in IMPLS:
        for k, v in run.values[impl].items():
            per.append(f"- {impl} {k}: " + ", ".join(f"{x:.4g}" for x in v))
    return out + per


def ceiling_line(ceiling: list[dict]) -> str:
    def med(key):
        v = [c[key] for c in ceiling]
        return f"{statistics.median(v):.0f} ({min(v):.0f}–{max(v):.0f})" if v else "no figure"
    return (f"Ceiling (figure 7), median (min–max): UDP over loopback with GSO {med('udp_mb_s')} MB/s; "
            f"`openssl speed -evp aes-128-gcm -bytes 1350` {med('aes_mb_s')} MB/s.")


def report(run: Run, ms: list[Metric], md: Path, png: Path, wall: float) -> str:
    plan = run.plan
    tab = table(run.values, ms) + "\n\n" + ceiling_line(run.ceiling)
    lines = [
        f"# HAProxy 3.0.11: stock native QUIC against haquic ({md.stem}{', smoke' if run.args.smoke else ''})",
        "",
        f"Command: `{run.args.command}` (`{shlex.join(sys.argv)}`), {run.args.rounds} round(s), "
        f"{wall / 60:.1f} min.",
        "",
        *run.machine,
        "",
        "Both HAProxys run the same configuration (nbthread 1, `limited-quic`, "
        f"maxconn {run.maxconn}, `timeout client 5m`), pinned to core 0; the load tools and the "
        "HTTP/1.1 backend are pinned to core 1. Server CPU is utime + stime of the HAProxy "
        f"process over the measured phase only, after a {plan.warmup:g} s warm-up. Median of "
        "the rounds, min–max in brackets; the ratio is haquic's median over stock's.",
        "",
        f"- Figure 1: {plan.req_secs:g} s of GETs, 16 connections x 8 streams always in flight.",
        f"- Figure 2: {plan.hs_secs:g} s of fresh connections (FRESH_CONNECT, FORBID_REUSE, no "
        f"session cache), {plan.hs_parallel} at once, one GET each.",
        f"- Figures 3 and 4: {plan.xfer_bytes / 1e6:g} MB over one connection already warmed by "
        "a 1 MiB transfer; byte counts verified.",
        f"- Figure 5: open loop at {run.rate:.0f} req/s (half stock's median of figure 1), "
        f"{plan.lat_secs:g} s measured, 16 connections x at most 4 streams. Latency is measured "
        "from each request's scheduled time (not its send time) to its completion.",
        f"- Figure 6: aioquic connections (handshake done, no request, then idle but for a PING "
        f"every 10 s: stock's transport idle timeout is 30 s), VmRSS after minus before, "
        f"divided by N; N={plan.idle_counts[0]} then {plan.idle_counts[1]} in the same process.",
        "- Figure 7: the ceiling, measured once a round (below the table); the download's "
        "fraction of the lower of the two, round by round, is the table's last row.",
        "- CPU times come in clock ticks (10 ms): the download's CPU per GB is good to a few "
        "per cent.",
        "",
        tab,
        "",
        f"![stock against haquic]({png.name})",
        "",
    ]
    if run.errors:
        lines += ["## Errors", ""] + [f"- {e}" for e in run.errors] + [""]
    lines += ["## Raw per-round numbers", ""] + raw_section(run) + [""]
    md.write_text("\n".join(lines))
    return tab


def smoke_checks(run: Run, ms: list[Metric], md: Path, png: Path) -> int:
    passed = failed = 0

    def check(ok: bool, what: str) -> None:
        nonlocal passed, failed
        print(f"{'ok  ' if ok else 'FAIL'} {what}", flush=True)
        passed += ok
        failed += not ok
    for m in ms:
        for impl in IMPLS:
            v = run.values[impl].get(m.key, [])
            check(bool(v) and all(math.isfinite(x) and x > 0 for x in v),
                  f"{impl} {m.key} ({m.unit}): {', '.join(f'{x:.4g}' for x in v) or 'none'}")
    for c in ("udp_mb_s", "aes_mb_s"):
        v = [x[c] for x in run.ceiling]
        check(bool(v) and all(math.isfinite(x) and x > 0 for x in v), f"ceiling {c}: {v}")
    check(not run.errors, f"no measurement failed ({len(run.errors)} did)")
    check(md.is_file() and md.stat().st_size > 0, f"{md} written")
    check(png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{png} written")
    print(f"{passed} passed, {failed} failed", flush=True)
    return failed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stock", required=True, help="stock HAProxy (USE_QUIC=1)")
    ap.add_argument("--haquic", required=True, help="patched HAProxy (USE_RUST_QUIC=1)")
    ap.add_argument("--crt", required=True, help="certificate and key, one PEM")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--date", default=datetime.date.today().isoformat())
    ap.add_argument("--command", default="make bench", help="the command shown in the report")
    ap.add_argument("--max-seconds", type=int, default=0,
                    help="stop the whole run after this long (default: 19 min, smoke 5 min)")
    args = ap.parse_args()
    if args.smoke:
        args.rounds = 1
    args.max_seconds = args.max_seconds or (300 if args.smoke else 1140)
    if not pycurl.version_info()[4] & pycurl.VERSION_HTTP3:
        sys.exit("pycurl's libcurl has no HTTP/3: cannot benchmark")
    for name in ("stock", "haquic", "crt"):
        path = os.path.abspath(getattr(args, name))
        if not os.path.isfile(path):
            sys.exit(f"{path}: no such file")
        setattr(args, name, path)
    plan = SMOKE if args.smoke else FULL
    ms = metrics(plan)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, png = out / f"{args.date}.md", out / f"{args.date}.png"

    def too_long(*_):
        raise Overtime(f"the run took more than {args.max_seconds} s")
    signal.signal(signal.SIGALRM, too_long)
    signal.alarm(args.max_seconds)
    os.sched_setaffinity(0, {CLIENT_CORE})
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="haquic-bench-") as tmp:
        run = Run(args, plan, Path(tmp))
        try:
            run.go()
        except Overtime as e:       # report what was measured, and fail
            run.errors.append(str(e))
            log(f"bench: {e}")
        finally:
            stop_process(run.backend.proc)
    signal.alarm(0)
    wall = time.monotonic() - start
    tab = report(run, ms, md, png, wall)
    chart(run, ms, png, f"HAProxy 3.0.11: stock native QUIC against haquic, {args.date}"
          f"{' (smoke)' if args.smoke else ''}: median, min–max bars")
    print(tab)
    log(f"bench: wrote {md} and {png} in {wall / 60:.1f} min")
    if args.smoke:
        return 1 if smoke_checks(run, ms, md, png) else 0
    for e in run.errors:
        log(f"bench: FAILED {e}")
    return 1 if run.errors else 0


if __name__ == "__main__":
    sys.exit(main())
