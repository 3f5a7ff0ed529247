"""The crash scenarios of HAProxy 3.0.x's QUIC stack, through the patched
HAProxy, meant for the ASan pair (make haproxy-asan):

  S1  GOAWAY from reloads (-sf every 1-2 s) while clients open new streams
      whose first frame is STOP_SENDING or RESET_STREAM (before and after
      the GOAWAY), interleaved with valid and cancelled GETs
  S2  rebind storm, per-connection sockets (quic-socket connection, the
      default): 200 connections moving to a new port every 200-500 ms with
      a new connection ID, CID rotation, abrupt closes replaced by new
      connections
  S3  dispatch storm: short connections from several processes, late and
      duplicated datagrams of closed connections (replayed by a relay),
      connection IDs retired while the NEW_CONNECTION_ID frames announcing
      them may still be queued for retransmission

Not collected by `make test-haproxy` (the name does not match test_*.py);
run it explicitly:

    HAPROXY_BIN=build/haproxy-asan/haproxy HAQUIC_STORM_SECONDS=60 \\
      build/venv/bin/python -m pytest -q -s -p no:cacheprovider tests/haproxy/storm_scenarios.py

HAQUIC_STORM_SECONDS (default 5) is each scenario's length. HAProxy runs
with nbthread 4, `-dMno-cache,no-global,no-merge` (HAQUIC_STORM_DM) and
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:halt_on_error=1:log_path=<dir>/asan,
so that every ASan or LeakSanitizer report lands in a file (leaks at exit in
HAProxy's own code, which stock 3.0.11 has too, are suppressed by
lsan-haproxy-core.supp; nothing of QUIC or haquic is). A scenario
passes with 0 report files, no "ERROR: AddressSanitizer" in any stderr,
0 failed valid requests, every answered valid request in HAProxy's own log
with status 200 (the log goes over UDP to a collector here, so that lines
are not lost to the contention `log stdout` gives up on), HAProxy still
serving a fresh GET at the end, and every HAProxy process exiting 0 on its
own. With HAQUIC_STORM_REQUIRE_ASAN=1 the binary must be an ASan build;
with HAQUIC_STORM_QLOG=<dir> the server writes one qlog per connection there
(a failure names the connection's trace id, scid0=..., the qlog's file
name). Figures: one line per scenario.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

import curlclient
import hap
import storm_load

HERE = Path(__file__).resolve().parent
SECONDS = float(os.environ.get("HAQUIC_STORM_SECONDS", "5"))
DM = os.environ.get("HAQUIC_STORM_DM", "-dMno-cache,no-global,no-merge")
REQUIRE_ASAN = os.environ.get("HAQUIC_STORM_REQUIRE_ASAN", "") not in ("", "0")
NBTHREAD = 4
# A directory for one qlog per connection (diagnostics: a failure names the
# server's trace id, scid0=..., which is the qlog file's name).
QLOG = os.environ.get("HAQUIC_STORM_QLOG", "")
# Leaks at exit in HAProxy's own code (stock 3.0.11 has them too): see the file.
LSAN_SUPP = HERE / "lsan-haproxy-core.supp"
ASAN_ERROR_RE = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|"
                           r"SUMMARY: (AddressSanitizer|LeakSanitizer)")


def asan_runtime(path: Path) -> str | None:
    """The ASan runtime the binary loads (ldd), or None when it has none."""
    out = subprocess.run(["ldd", str(path)], capture_output=True, text=True, timeout=20).stdout
    libs = [l.split()[0] for l in out.splitlines() if "asan" in l]
    return ",".join(libs) if libs else None


@pytest.fixture(scope="module")
def asan(binary):
    rt = asan_runtime(binary.path)
    if REQUIRE_ASAN:
        assert rt, f"{binary.path} is not an ASan build (ldd shows no ASan runtime)"
    return rt


class LogCollector:
    """A UDP syslog receiver on 127.0.0.1 (a thread of this process) that
    keeps every line HAProxy sends. With `log stdout` and 4 threads on 2
    cores HAProxy gives up lines when threads collide on the fd, and what a
    process drops while draining after a reload is counted nowhere we can
    read; datagrams do not collide."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="syslog", daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                data = self.sock.recv(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            self.lines.append(data.decode(errors="replace").rstrip("\n"))

    def close(self):
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


class StormHAProxy(hap.HAProxy):
    """hap.HAProxy with the pool debugging options on the command line,
    ASan's reports sent to files in asan_dir, and the request log sent over
    UDP to a LogCollector."""

    def __init__(self, *a, asan_dir: Path, **kw):
        self.asan_dir = Path(asan_dir)
        self.asan_dir.mkdir(parents=True, exist_ok=True)
        self.syslog = LogCollector()
        super().__init__(*a, **kw)

    def render(self, **over) -> str:
        text = super().render(**over)
        assert "log stdout format raw local0" in text
        return text.replace("log stdout format raw local0",
                            f"log 127.0.0.1:{self.syslog.port} len 65535 format raw local0")

    def log_lines(self) -> list[dict]:
        out = []
        for line in list(self.syslog.lines):
            m = hap.LOG_RE.match(line.strip())
            if m:
                out.append(m.groupdict())
        return out

    def kill(self) -> None:
        super().kill()
        self.syslog.close()

    def _spawn(self, extra_args):
        n = len(self.procs)
        log = self.workdir / f"haproxy-{n}.log"
        err = self.workdir / f"haproxy-{n}.err"
        fo, fe = open(log, "wb"), open(err, "wb")
        self._files += [fo, fe]
        env = dict(os.environ,
                   ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:halt_on_error=1:"
                                f"log_path={self.asan_dir}/asan",
                   LSAN_OPTIONS=f"suppressions={LSAN_SUPP}:print_suppressions=0")
        dm = [DM] if DM else []
        p = subprocess.Popen([str(self.binary.path), "-db", "-f", str(self.cfg), *dm, *extra_args],
                             stdout=fo, stderr=fe, stdin=subprocess.DEVNULL, cwd=self.workdir,
                             env=env, preexec_fn=hap._die_with_parent)
        self.procs.append(p)
        self.logs.append(log)
        self.errs.append(err)
        return p

    def asan_reports(self) -> list[str]:
        """Every sanitizer report: the report files, and what stderr says."""
        out = []
        for f in sorted(self.asan_dir.glob("asan*")):
            text = f.read_text(errors="replace")
            if text.strip():
                out.append(f"--- {f.name}\n{text[:6000]}")
        for f in self.errs:
            text = f.read_text(errors="replace")
            if ASAN_ERROR_RE.search(text):
                out.append(f"--- {f.name}\n{text[-6000:]}")
        return out


def start(binary, backend, workdir: Path, **opts) -> StormHAProxy:
    if QLOG and binary.flavour == "rust":
        qdir = Path(QLOG) / workdir.parent.name
        qdir.mkdir(parents=True, exist_ok=True)
        opts["extra_global"] = f"tune.quic.rquic-qlog-dir {qdir}"
    h = StormHAProxy(binary, workdir, backend, hap.Options(nbthread=NBTHREAD, **opts),
                     asan_dir=workdir / "asan")
    try:
        h.start(timeout=30)
    except BaseException:
        h.kill()
        raise
    return h


def spawn_workers(scenario: str, h, workdir: Path, tag: str, procs: int, conns: int,
                  seconds: float, port: int | None = None) -> list[subprocess.Popen]:
    out = []
    for k in range(procs):
        f = workdir / f"{scenario}-{k}.json"
        log = open(workdir / f"{scenario}-{k}.log", "wb")
        p = subprocess.Popen([sys.executable, str(HERE / "storm_load.py"), scenario,
                              "--port", str(port or h.port), "--seconds", str(seconds),
                              "--tag", tag, "--out", str(f), "--conns", str(conns),
                              "--seed", str(random.randrange(1 << 30))],
                             stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"),
                             preexec_fn=hap._die_with_parent)
        log.close()
        p.result_file = f
        p.log_file = workdir / f"{scenario}-{k}.log"
        out.append(p)
    return out


def collect(workers, seconds: float) -> dict:
    """Waits (bounded) for the workers and sums their tallies."""
    deadline = time.monotonic() + seconds + storm_load.REQ_TIMEOUT + 60
    total: dict = {}
    for p in workers:
        try:
            p.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
        if not p.result_file.exists():
            raise AssertionError(f"worker {p.args[2]} (rc {p.returncode}) wrote no tally:\n"
                                 + p.log_file.read_text(errors="replace")[-3000:])
        t = json.loads(p.result_file.read_text())
        for k, v in t.items():
            if isinstance(v, bool) or k == "scenario":
                total[k] = v
            elif isinstance(v, (int, float)):
                total[k] = total.get(k, 0) + v if k != "seconds" else max(total.get(k, 0), v)
            elif isinstance(v, list):
                total.setdefault(k, []).extend(v)
    return total


def finish(name: str, h: StormHAProxy, t: dict, tag: str, elapsed: float, extra: dict,
           exits: list | None = None) -> None:
    """The checks common to the scenarios, after the load: a fresh GET, the
    log, a soft stop, the sanitizer reports; figures first, then asserts."""
    assert h.proc.poll() is None, f"haproxy died (rc {h.proc.returncode}):\n{h.stderr()}\n" + \
        "\n".join(h.asan_reports())
    fresh = curlclient.fetch(h.url(f"/bytes/{storm_load.SIZE}?t={tag}&r=fresh"), timeout=20)
    fresh_ok = fresh.error is None and fresh.status == 200 and fresh.length == storm_load.SIZE

    ok_ids = set(t.get("ok_ids", []))
    lines = h.h3_log(tag, len(ok_ids), timeout=20)
    logged_200 = {l["u"].rsplit("r=", 1)[1] for l in lines if l["st"] == "200"}
    unlogged = ok_ids - logged_200
    dropped = h.dropped_logs()

    rc = h.stop(timeout=40)
    exits = (exits or []) + [(h.proc.pid, rc, None)]
    h.kill()
    reports = h.asan_reports()

    req = t.get("ok", 0) + t.get("failed", 0)
    figures = {
        "duration_s": round(elapsed, 1), "connections": t.get("conns", 0),
        "requests_ok": t.get("ok", 0), "requests_failed": t.get("failed", 0),
        "handshakes_failed": t.get("conn_failed", 0), "rejected_after_goaway": t.get("rejected", 0),
        "aborted": t.get("aborted", 0), **extra, "req_per_s": round(req / elapsed, 1) if elapsed else 0,
        "logged_2xx": len(ok_ids & logged_200), "dropped_logs": dropped,
        "haproxy_processes": len(h.procs), "asan_reports": len(reports),
        "fresh_get": "ok" if fresh_ok else "FAILED",
    }
    print(f"\n{name} figures: " + ", ".join(f"{k}={v}" for k, v in figures.items()), flush=True)

    assert not reports, f"{len(reports)} sanitizer report(s):\n" + "\n".join(reports)[:20000]
    assert all(rc == 0 for _, rc, _ in exits), f"HAProxy exits (pid, rc, seconds): {exits}"
    assert fresh_ok, f"HAProxy no longer serves a fresh GET: {fresh}"
    assert t.get("failed", 0) == 0, f"{t['failed']} failed valid requests: {t['failures'][:10]}"
    assert t.get("ok", 0) > 0, "no valid request answered"
    assert len(unlogged) <= dropped, (f"answered but not logged with 200: {sorted(unlogged)[:10]} "
                                      f"({len(unlogged)}; {dropped} log lines dropped by HAProxy)")


def tag_() -> str:
    return uuid.uuid4().hex[:10]


# ---- S1 ------------------------------------------------------------------------

def test_s1_goaway_reload_first_frame_stop_sending_reset(binary, backend, asan, tmp_path):
    h = start(binary, backend, tmp_path / "haproxy")
    tag = tag_()
    t0 = time.monotonic()
    workers = spawn_workers("s1", h, tmp_path, tag, procs=2, conns=4, seconds=SECONDS)
    olds = []           # (process, reload time)
    exits = []
    exit_limit = 25.0
    reload_failures = []
    try:
        time.sleep(min(1.0, SECONDS / 5))
        while time.monotonic() - t0 < SECONDS - 0.5:
            old = h.proc
            try:
                h.reload(timeout=30, wait_old=None)
            except (RuntimeError, TimeoutError) as e:
                reload_failures.append(repr(e)[:2000])
                break
            olds.append((old, time.monotonic()))
            for p, at in list(olds):          # reap the ones done
                if p.poll() is not None:
                    exits.append((p.pid, p.returncode, round(time.monotonic() - at, 1)))
                    olds.remove((p, at))
                elif time.monotonic() - at > exit_limit:
                    exits.append((p.pid, "did not exit", round(time.monotonic() - at, 1)))
                    olds.remove((p, at))
                    p.kill()
            time.sleep(random.uniform(1.0, 2.0))
    finally:
        t = collect(workers, SECONDS)
    elapsed = time.monotonic() - t0
    for p, at in olds:
        left = max(1.0, exit_limit - (time.monotonic() - at))
        try:
            exits.append((p.pid, p.wait(left), round(time.monotonic() - at, 1)))
        except subprocess.TimeoutExpired:
            exits.append((p.pid, "did not exit", round(time.monotonic() - at, 1)))
            p.kill()
    assert not reload_failures, reload_failures
    extra = {"reloads": len(h.procs) - 1, "goaways_seen": t["goaways"],
             "stop_sending_first": t["stop_sending_first"], "reset_stream_first": t["reset_first"],
             "after_goaway_streams": t["after_goaway"],
             "max_old_exit_s": max((s for _, _, s in exits if s is not None), default=0)}
    finish("S1", h, t, tag, elapsed, extra, exits)
    assert t["goaways"] > 0, "no connection saw a GOAWAY"
    assert t["stop_sending_first"] > 0 and t["reset_first"] > 0


# ---- S2 ------------------------------------------------------------------------

S2_CONNS = 200
S2_PROCS = 4


def run_workers(h, workers, t0: float) -> dict:
    """Waits SECONDS from t0 (or until a worker ends), checking that HAProxy
    is still running, and returns the workers' collected tally."""
    try:
        while time.monotonic() - t0 < SECONDS and all(p.poll() is None for p in workers):
            assert h.proc.poll() is None, f"haproxy died:\n{h.stderr()}"
            time.sleep(0.5)
    finally:
        t = collect(workers, SECONDS)
    return t


def test_s2_rebind_storm_per_connection_sockets(binary, backend, asan, tmp_path):
    h = start(binary, backend, tmp_path / "haproxy", bind_extra="quic-socket connection")
    tag = tag_()
    t0 = time.monotonic()
    workers = spawn_workers("s2", h, tmp_path, tag, procs=S2_PROCS, conns=S2_CONNS // S2_PROCS,
                            seconds=SECONDS)
    t = run_workers(h, workers, t0)
    elapsed = time.monotonic() - t0
    extra = {"rebinds": t["rebinds"], "cid_changes": t["cid_changes"],
             "abrupt_closes": t["abrupt_closes"]}
    finish("S2", h, t, tag, elapsed, extra)
    assert t["rebinds"] > 0 and t["cid_changes"] > 0 and t["conns"] >= S2_CONNS


# ---- S3 ------------------------------------------------------------------------

S3_PROCS = 4
S3_CONNS = 3


def test_s3_dispatch_storm_late_duplicate_retired_cids(binary, backend, asan, tmp_path):
    h = start(binary, backend, tmp_path / "haproxy")
    tag = tag_()
    t0 = time.monotonic()
    workers = spawn_workers("s3", h, tmp_path, tag, procs=S3_PROCS, conns=S3_CONNS, seconds=SECONDS)
    t = run_workers(h, workers, t0)
    elapsed = time.monotonic() - t0
    extra = {"cid_changes": t["cid_changes"], "replayed_datagrams": t["replayed"],
             "duplicated_datagrams": t["duplicated"], "dropped_datagrams": t["dropped"],
             "late_server_datagrams": t["late_answers"], "abrupt_closes": t["abrupt_closes"]}
    finish("S3", h, t, tag, elapsed, extra)
    assert t["replayed"] > 0 and t["duplicated"] > 0 and t["cid_changes"] > 0
