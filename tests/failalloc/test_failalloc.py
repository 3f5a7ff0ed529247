"""HAProxy's own allocation-failure injection on the USE_RUST_QUIC bridge.

build/haproxy-failalloc/haproxy (make haproxy-failalloc) runs with -dMfail:
`tune.fail-alloc <rate>` per cent of HAProxy's pool allocations return NULL
(connections, sessions, streams, buffers, tasks, the bridge's rquic_conn and
rquic_strm). It runs under ASan, with -dMno-cache,no-global,no-merge so that
every pool free reaches ASan.

HAProxy 3.0.11 has no CLI command to change the rate, and it cannot start
at high rates: the allocations each thread makes once MODE_STARTING is
cleared fail too ("failed to allocate resources for thread N"; 20 starts
out of 20 failed at 20 %). So each rate gets a fresh process started at
`tune.fail-alloc 0`; the test then sets the rate in the running process
(FailAllocHAProxy.set_fail_rate), drives the same bounded HTTP/3 load, and
sets it back to 0:

  curl     CURL_CONNS connections x CURL_STREAMS multiplexed streams, per
           round: GET 16 KiB, GET 256 KiB, POST /echo 64 KiB (checked)
  aioquic  AQ_CONNS connections, per round: two GETs and one POST that
           must finish, two large GETs cancelled (RESET_STREAM and
           STOP_SENDING) after their first bytes, one stream opened by
           STOP_SENDING and one by RESET_STREAM

and must show:
  - no ASan error and no leak allocated by the bridge or haquic, and no
    crash: the process is alive after the load and exits on SIGUSR1
    (LeakSanitizer runs at exit: leaks in HAProxy's own failure paths are
    reported apart, and make the exit code non-zero);
  - failures are errors, not hangs: every request ends (2xx, 4xx/5xx, a
    stream reset or a connection close) well before its timeout;
  - it still serves: at 0 % every request succeeds, and at every rate the
    first plain GET once the rate is back at 0 succeeds;
  - the failures really happened: PoolFailed (`show info`) counts them
    (tests/failalloc/count-injected-failures.patch makes 3.0.11 count the
    injected ones), > 0 for every rate above 0.

FAILALLOC_RATES="1 5 20 50" picks the rates; 0 always runs first.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import os
import re
import struct
import subprocess
import time
from pathlib import Path

import pytest

import aqclient
import curlclient
import hap
import storm_scenarios

KIB = 1024
RATES = [0] + [int(r) for r in os.environ.get("FAILALLOC_RATES", "1 5 20 50").split() if int(r)]
ROUNDS = 5
CURL_CONNS, CURL_STREAMS = 4, 8
AQ_CONNS = 2
# HAProxy's timeouts are shortened (TIMEOUTS) so that a request HAProxy
# gives up on is answered well within REQ_TIMEOUT: a request still running
# at REQ_TIMEOUT is a hang.
REQ_TIMEOUT = 25.0
TIMEOUTS = [("timeout client 30s", "timeout client 8s"),
            ("timeout server 30s", "timeout server 8s"),
            ("timeout http-request 10s", "timeout http-request 5s")]
PROBE_TRIES = 40
# A leak is the bridge's or haquic's when the code that allocated it is:
# the first frame past the allocator (malloc, the pools, the inline
# tasklet_new()/b_alloc() of include/) is in a bridge file, or any frame is
# Rust. A leak allocated by HAProxy's own code (for example stream_new()
# called by the bridge through sc_new_from_endp()) is HAProxy's failure path.
ALLOC_FRAME_RE = re.compile(r"^\s+#\d+ 0x[0-9a-f]+ in (\S+) (\S+)", re.M)
BRIDGE_FILES_RE = re.compile(r"src/(rquic|mux_rquic|cfgparse-rquic|rquic_stats)\.c:")


class FailAllocHAProxy(storm_scenarios.StormHAProxy):
    """The storms' HAProxy (ASan reports to files, every pool free handed to
    ASan, the log over UDP) plus -dMfail and shorter timeouts."""

    def render(self, **over) -> str:
        text = super().render(**over)
        for old, new in TIMEOUTS:
            assert old in text, old
            text = text.replace(old, new)
        return text

    def start(self, timeout: float = 60.0) -> "FailAllocHAProxy":
        p = self._spawn(["-dMfail"])
        self._wait_ready(p, timeout)
        return self

    def set_fail_rate(self, rate: int) -> None:
        """What `tune.fail-alloc <rate>` sets, changed in the running process:
        HAProxy 3.0.11 has no CLI command for it, so this writes src/pool.c's
        `mem_fail_rate` through /proc/<pid>/mem (as gdb's `set var` would),
        at the address nm gives, plus the load base for a PIE binary."""
        with open(self.binary.path, "rb") as f:
            pie = f.read(18)[16] == 3               # e_type ET_DYN
        syms = subprocess.run(["nm", str(self.binary.path)], capture_output=True, text=True,
                              timeout=60).stdout
        m = re.search(r"^([0-9a-f]+) [dDbB] mem_fail_rate$", syms, re.M)
        assert m, f"{self.binary.path} has no mem_fail_rate symbol"
        addr = int(m.group(1), 16)
        if pie:
            real = os.path.realpath(self.binary.path)
            for line in Path(f"/proc/{self.pid}/maps").read_text().splitlines():
                f = line.split()
                if len(f) >= 6 and f[5] == real and int(f[2], 16) == 0:
                    addr += int(f[0].split("-")[0], 16)
                    break
            else:
                raise AssertionError(f"{real} is not mapped in pid {self.pid}")
        with open(f"/proc/{self.pid}/mem", "r+b", buffering=0) as mem:
            mem.seek(addr)
            mem.write(struct.pack("<i", rate))
            mem.seek(addr)
            assert struct.unpack("<i", mem.read(4))[0] == rate


def classify(err: str | None, status: int, good: bool, elapsed: float) -> str:
    """ok, http_err (a 4xx/5xx answer), reset (a stream reset, a closed
    connection or another transfer error) or timeout (a hang)."""
    if err is None and good:
        return "ok"
    if elapsed >= REQ_TIMEOUT - 1 or (err and ("curl error 28" in err or "unfinished" in err)):
        return "timeout"
    if err is None and status >= 400:
        return "http_err"
    return "reset"


def curl_round(h, tag: str, tally: collections.Counter, errors: collections.Counter) -> None:
    body = os.urandom(64 * KIB)
    want_echo = hashlib.sha256(body).hexdigest()
    specs, expect = [], []
    for c in range(CURL_CONNS):
        conn = []
        for s in range(CURL_STREAMS):
            kind = s % 4
            q = f"?fa={tag}-{c}-{s}"
            if kind in (0, 1):
                conn.append({"url": h.url(f"/bytes/{16 * KIB}{q}"), "keep": False})
                expect.append(("len", 16 * KIB))
            elif kind == 2:
                conn.append({"url": h.url(f"/bytes/{256 * KIB}{q}"), "keep": False})
                expect.append(("len", 256 * KIB))
            else:
                conn.append({"url": h.url(f"/echo{q}"), "method": "POST", "body": body, "keep": False})
                expect.append(("sha", want_echo))
        specs.append(conn)
    results = [r for rs in curlclient.multi_load(specs, timeout=REQ_TIMEOUT) for r in rs]
    for r, (what, value) in zip(results, expect):
        good = r.status == 200 and (r.length == value if what == "len" else r.sha256 == value)
        kind = classify(r.error, r.status, good, r.elapsed)
        tally[kind] += 1
        if kind == "timeout":
            errors[f"timeout: {r.url} after {r.elapsed:.1f} s: {r.error}"] += 1
        elif kind != "ok":
            errors[f"{kind}: " + (r.error.split(":")[0] if r.error else f"curl HTTP {r.status}")] += 1


async def aq_conn(h, tag: str, tally: collections.Counter, errors: collections.Counter) -> None:
    body = os.urandom(32 * KIB)
    try:
        cm = aqclient.connect(h.port)
        c = await cm.__aenter__()
    except Exception as e:       # handshake failed or timed out: one failed connection
        tally["reset"] += 3
        errors[f"reset: aioquic connect {type(e).__name__}"] += 1
        return
    try:
        t0 = time.monotonic()
        plain = [c.start("GET", f"/bytes/4096?fa={tag}-g0"),
                 c.start("GET", f"/bytes/{64 * KIB}?fa={tag}-g1"),
                 c.start("POST", f"/echo?fa={tag}-p", body)]
        doomed = [c.start("GET", f"/bytes/{4 * 1024 * KIB}?fa={tag}-x{i}", keep_body=False)
                  for i in range(2)]
        c.stop_sending_first()
        c.reset_stream_first()
        tally["aborted"] += 4
        # cancel the large ones once their response has begun (or after 1 s)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and not all(r.length or r.future.done() for _, r in doomed):
            await asyncio.sleep(0.01)
        for sid, r in doomed:
            if not r.future.done():
                try:
                    c.cancel(sid)
                except ValueError:      # the server reset it meanwhile
                    pass
        for (sid, r), want in zip(plain, (4096, 64 * KIB, hashlib.sha256(body).hexdigest())):
            left = REQ_TIMEOUT - (time.monotonic() - t0)
            try:
                await asyncio.wait_for(asyncio.shield(r.future), max(left, 0.1))
                err = r.error
            except asyncio.TimeoutError:
                err = "unfinished"
            good = r.status == 200 and (r.length == want if isinstance(want, int) else r.sha256 == want)
            kind = classify(err, r.status, good, time.monotonic() - t0)
            tally[kind] += 1
            if kind == "timeout":
                errors[f"timeout: aioquic stream {sid} of {tag}, {r.length} bytes in: {err}"] += 1
            elif kind != "ok":
                errors[f"{kind}: aioquic " + (re.sub(r"stream \d+:? ?", "", err) if err else f"HTTP {r.status}")] += 1
    finally:
        try:
            await asyncio.wait_for(cm.__aexit__(None, None, None), 10)
        except Exception:
            pass


def aq_round(h, tag: str, tally: collections.Counter, errors: collections.Counter) -> None:
    async def go():
        await asyncio.gather(*(aq_conn(h, f"{tag}-a{i}", tally, errors) for i in range(AQ_CONNS)))
    aqclient.run(go(), REQ_TIMEOUT + 20)


def probe(h) -> int | None:
    """Tries a plain GET until one succeeds; the number of tries, or None."""
    for i in range(1, PROBE_TRIES + 1):
        r = curlclient.fetch(h.url(f"/bytes/100?fa=probe{i}"), timeout=10)
        if r.error is None and r.status == 200 and r.length == 100:
            return i
        time.sleep(0.05)
    return None


def pool_failures(show_pools: str) -> list[tuple[str, int]]:
    """(pool, failures) from `show pools`, most first, zeros left out."""
    out = []
    for m in re.finditer(r"Pool (\S+) \(\d+ bytes\) : .*?, (\d+) failures", show_pools):
        if int(m.group(2)):
            out.append((m.group(1), int(m.group(2))))
    return sorted(out, key=lambda p: -p[1])


def leak_is_ours(block: str) -> bool:
    for func, where in ALLOC_FRAME_RE.findall(block):
        if ".rs:" in where or func.startswith(("haquic", "quiche", "_ZN")):
            return True
        if where.startswith(("include/", "src/pool.c", "../")) or "libsanitizer" in where:
            continue            # the allocator and its inline wrappers
        return bool(BRIDGE_FILES_RE.match(where))
    return False


def split_reports(reports: list[str]) -> tuple[list[str], list[str]]:
    """(errors, leaks of HAProxy's own code): every ASan error, and every
    leak report through the bridge or haquic, is in the first list."""
    errors, core_leaks = [], []
    for rep in reports:
        for block in re.split(r"\n(?=(?:Direct|Indirect) leak of )", rep):
            if re.match(r"(Direct|Indirect) leak of ", block):
                (errors if leak_is_ours(block) else core_leaks).append(block)
            elif "ERROR: AddressSanitizer" in block or "runtime error:" in block:
                errors.append(block)
    return errors, core_leaks


@pytest.fixture(scope="module")
def asan_binary(binary):
    assert binary.flavour == "rust", f"{binary.path} is not a USE_RUST_QUIC build"
    assert storm_scenarios.asan_runtime(binary.path), \
        f"{binary.path} is not an ASan build: make haproxy-failalloc builds one"
    return binary


@pytest.mark.parametrize("rate", RATES, ids=lambda r: f"fail{r}pct")
def test_fail_alloc(rate, asan_binary, backend, tmp_path, request):
    figures = request.config.failalloc_figures
    fig = {"rate": rate}
    figures.append(fig)
    h = FailAllocHAProxy(asan_binary, tmp_path / "haproxy", backend,
                         hap.Options(nbthread=2, extra_global="tune.fail-alloc 0"),
                         asan_dir=tmp_path / "asan")
    try:
        h.start()
        h.set_fail_rate(rate)
        tally, errors = collections.Counter(), collections.Counter()
        for rnd in range(ROUNDS):
            curl_round(h, f"r{rnd}", tally, errors)
            aq_round(h, f"r{rnd}", tally, errors)
            if h.proc.poll() is not None:
                break
        fig["alive"] = "yes" if h.proc.poll() is None else f"no ({h.proc.returncode})"
        fig.update(tried=sum(tally[k] for k in ("ok", "http_err", "reset", "timeout")),
                   ok=tally["ok"], http_err=tally["http_err"], reset=tally["reset"],
                   timeout=tally["timeout"], aborted=tally["aborted"])
        fig["failed"] = fig["tried"] - fig["ok"]
        fig["errors"] = ", ".join(f"{k} x{n}" for k, n in sorted(errors.items()))

        if h.proc.poll() is None:
            h.set_fail_rate(0)
            tries = probe(h)
            fig["probe"] = tries if tries is not None else f"none in {PROBE_TRIES}"
            m = re.search(r"^PoolFailed: (\d+)$", h.cli("show info"), re.M)
            fig["pool_failed"] = int(m.group(1)) if m else "?"
            pools = pool_failures(h.cli("show pools"))
            fig["top_pools"] = ", ".join(f"{n} {c}" for n, c in pools[:8])
            h.soft_stop()
            try:
                fig["exit"] = h.wait_exit(timeout=40)
            except TimeoutError as e:
                fig["exit"] = "hung"
                print(e)
        else:
            fig["exit"] = h.proc.returncode
        asan_errors, core_leaks = split_reports(h.asan_reports())
        fig["asan"] = f"{len(asan_errors)}+{len(core_leaks)} core leaks" if core_leaks else len(asan_errors)
        print(f"\nfail-alloc {rate}%: {fig}")
        for block in asan_errors[:3]:
            print(block[:3000])
        for block in core_leaks[:2]:
            print("HAProxy-core leak (not the bridge):\n" + block[:1500])
    finally:
        h.kill()

    assert not asan_errors, f"{len(asan_errors)} ASan reports through the bridge or haquic"
    assert fig["alive"] == "yes", f"haproxy died under fail-alloc {rate}%"
    # LeakSanitizer makes the exit code non-zero for HAProxy's own leaks too
    assert fig["exit"] == 0 or (core_leaks and fig["exit"] != "hung"), f"exit {fig['exit']}"
    assert fig["timeout"] == 0, f"{fig['timeout']} requests hung (no answer, reset or close)"
    # back at 0 %, the first plain request succeeds
    assert fig["probe"] == 1, f"after the load at {rate} %, probe: {fig['probe']}"
    if rate == 0:
        assert fig["failed"] == 0, f"failures without injection: {fig['errors']}"
    else:
        assert isinstance(fig["pool_failed"], int) and fig["pool_failed"] > 0, \
            "no allocation failure was injected"
