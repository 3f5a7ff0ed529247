"""Memory under large buffered bodies: 500 concurrent HTTP/3 uploads of 2 MB
each (libcurl: 5 connections x 100 streams, the stream limit), through
`http-request wait-for-body time 60s at-least 1m` (the issue's 10 s: see
WAIT), into tests/limits/sink.py.

Run with LIMITS_MEMORY=1 (make test-limits-memory): it moves 1 GB through
HAProxy and takes minutes on a small machine.

Configuration: wait-for-body can only hold what a buffer holds, so
tune.bufsize is 1152 KiB (and tune.maxrewrite 64 KiB: its default, half the
buffer, would leave less than 1 MB for the body).

What the limits predict, per stream: HAProxy's request channel (one buffer,
where wait-for-body keeps the first 1 MiB) and the mux's receive buffer (one
buffer) while the body is being read, plus the backend side's output buffer
once it is forwarded: 2 to 3 buffers of 1152 KiB. Per connection, quiche
holds what HAProxy has not read yet, at most the connection's flow-control
window (initial_max_data 10 MiB, which quiche's auto-tuning may raise to 24
MiB) and at most a stream window (1 MiB, up to 16 MiB) per stream.

  fast      the sink reads as fast as it can: every upload completes; peak RSS
            (VmHWM) against 500 x 2 buffers + 5 x 10 MiB (expected) and
            500 x 3 buffers + 5 x 24 MiB (bound)
  slow      5 x 10 uploads of 20 MB into a sink reading 32 KiB/s per
            connection, much slower than the clients send, for 20 s: what
            HAProxy and quiche hold (bytes received from the clients, less
            what was written to the sink's sockets) must level off within
            5 x (10 x 2 buffers + 24 MiB), about 235 MB, however much the
            clients still have to send: flow control holds them back
"""

import json
import os
import subprocess
import sys
import threading
import time

import pytest

import curlclient
import hap
import limits

pytestmark = pytest.mark.skipif(not os.environ.get("LIMITS_MEMORY"),
                                reason="LIMITS_MEMORY=1 (make test-limits-memory): 1 GB of uploads")

MIB = 1024 * 1024
BUFSIZE = 1152 * 1024
CONNS, STREAMS = 5, 100
UPLOAD = 2 * MIB
CONN_WINDOW, CONN_WINDOW_MAX = 10 * MIB, 24 * MIB
# The issue's `time 10s` answers 408 to every upload whose first MiB takes
# longer than that: 500 uploads sharing about 35 MB/s (what this 2-core
# machine moves through 5 connections) get 70 KB/s each, and 491 of 500 did
# (measured). The time is raised so that the memory is measured with every
# upload buffered; LIMITS_WAIT_FOR_BODY=10s runs the setting.
WAIT = os.environ.get("LIMITS_WAIT_FOR_BODY", "60s")


def start_sink(tmp_path, rate: float):
    port_file, stats = tmp_path / f"sink-{rate}.port", tmp_path / f"sink-{rate}.json"
    p = subprocess.Popen([sys.executable, str(limits.HERE / "sink.py"), "--port-file", str(port_file),
                          "--stats", str(stats), "--rate", str(rate), "--max-seconds", "900"],
                         stdin=subprocess.DEVNULL, preexec_fn=hap._die_with_parent)
    hap.wait_for(lambda: port_file.exists() or p.poll() is not None, 10, what="sink port")
    assert p.poll() is None, "the sink exited"
    return p, int(port_file.read_text()), stats


def haproxy(binary, tmp_path, port, name):
    h = hap.HAProxy(binary, tmp_path / name, port, hap.Options(
        nbthread=2, max_streams=STREAMS,
        extra_global=f"tune.bufsize {BUFSIZE}\ntune.maxrewrite 65536\ntune.sndbuf.server 65536",
        extra_frontend=f"http-request wait-for-body time {WAIT} at-least 1m"))
    return h.start()


class Watch(threading.Thread):
    """Samples HAProxy's RSS, the bytes it received from the clients (`show
    quic` bytes_in, QUIC packets) and the bytes the sink has read (HAProxy's
    own `bin` is only counted when a stream ends)."""

    def __init__(self, h, sink_stats):
        super().__init__(daemon=True)
        self.h, self.proc, self.sink_stats = h, limits.Proc(h.pid), sink_stats
        self.stop = threading.Event()
        self.samples: list[tuple[float, int, int, int]] = []

    def run(self):
        t0 = time.monotonic()
        while not self.stop.is_set():
            try:
                s = self.proc.sample()
                q = limits.show_quic(self.h)
                sunk = json.loads(self.sink_stats.read_text())["bytes"] if self.sink_stats.exists() else 0
                self.samples.append((time.monotonic() - t0, s.rss_kb, q["bytes_in"], sunk))
            except (OSError, KeyError, ValueError, TimeoutError):
                pass
            self.stop.wait(0.25)


def run_uploads(h, timeout: float, conns: int = CONNS, streams: int = STREAMS, size: int = UPLOAD):
    specs = [[{"url": h.url(f"/upload?c={c}&s={s}"), "method": "POST", "body": curlclient.Upload(size),
               "keep": 64, "low_speed": 0}
              for s in range(streams)] for c in range(conns)]
    t0 = time.monotonic()
    results = curlclient.multi_load(specs, timeout=timeout)
    return [r for rs in results for r in rs], time.monotonic() - t0


def test_upload_memory(binary, tmp_path):
    # -- fast sink --
    sink, port, stats = start_sink(tmp_path, 0)
    try:
        h = haproxy(binary, tmp_path, port, "fast")
        try:
            base = limits.Proc(h.pid).sample()
            w = Watch(h, stats)
            w.start()
            results, el = run_uploads(h, 300)
            w.stop.set()
            w.join(5)
            after = limits.Proc(h.pid).sample()
            q = limits.show_quic(h)
        finally:
            h.kill()
        sunk = json.loads(stats.read_text())
    finally:
        hap.stop_process(sink)
    if os.environ.get("LIMITS_DEBUG"):
        for smp in w.samples[::4]:
            print("t=%.1f rss=%d MB in=%d MB out=%d MB" % (smp[0], smp[1] // 1024, smp[2] // MIB, smp[3] // MIB))
    ok = [r for r in results if r.ok and r.status == 200 and r.body == str(UPLOAD).encode()]
    bad = [r for r in results if r not in ok]
    expected_kb = (CONNS * STREAMS * 2 * BUFSIZE + CONNS * CONN_WINDOW) / 1024
    bound_kb = (CONNS * STREAMS * 3 * BUFSIZE + CONNS * CONN_WINDOW_MAX) / 1024
    peak_kb = after.hwm_kb - base.rss_kb
    limits.report("upload-memory",
                  f"{len(ok)}/{len(results)} uploads of {UPLOAD // MIB} MB in {el:.0f} s "
                  f"({len(results) * UPLOAD / el / MIB:.0f} MB/s, sink got {sunk['bytes'] / MIB:.0f} MB, "
                  f"{sunk['peak_open']} backend connections at once): peak RSS {peak_kb / 1024:.0f} MB over "
                  f"{base.rss_kb / 1024:.0f} MB (HWM {after.hwm_kb / 1024:.0f} MB)",
                  f"expected {expected_kb / 1024:.0f} MB = {CONNS * STREAMS} x 2 x {BUFSIZE // 1024} KiB + "
                  f"{CONNS} x 10 MiB; bound {bound_kb / 1024:.0f} MB")
    assert not bad, f"{len(bad)} uploads failed, first: {bad[0].status} {bad[0].error}"
    assert peak_kb <= bound_kb, f"peak RSS {peak_kb / 1024:.0f} MB over the bound {bound_kb / 1024:.0f} MB"

    # -- slow sink: the clients send faster than HAProxy can drain --
    # Each stream can park 2 buffers in HAProxy and a stream window in quiche
    # (2.25 + 1 MiB): 2 MB uploads fit whole, so this part sends 20 MB each
    # on 5 x 10 streams, 1000 MB in all against a bound of about 235 MB.
    streams, size = SLOW_STREAMS, SLOW_UPLOAD
    slow_bound = CONNS * (streams * 2 * BUFSIZE + CONN_WINDOW_MAX)
    sink, port, stats = start_sink(tmp_path, SLOW_RATE)
    try:
        h = haproxy(binary, tmp_path, port, "slow")
        try:
            base = limits.Proc(h.pid).sample()
            w = Watch(h, stats)
            w.start()
            results, el = run_uploads(h, SLOW_SECONDS, CONNS, streams, size)
            w.stop.set()
            w.join(5)
            after = limits.Proc(h.pid).sample()
        finally:
            h.kill()
    finally:
        hap.stop_process(sink)
    if os.environ.get("LIMITS_DEBUG"):
        for smp in w.samples[::4]:
            print("t=%.1f rss=%d MB in=%d MB out=%d MB" % (smp[0], smp[1] // 1024, smp[2] // MIB, smp[3] // MIB))
    held = [(t, rin - rout) for t, rss, rin, rout in w.samples]
    assert len(held) >= 10, held
    peak_held = max(x[1] for x in held)
    second = max(x[1] for x in held if x[0] >= el / 2)
    first = max(x[1] for x in held if x[0] < el / 2)
    received, forwarded = w.samples[-1][2], w.samples[-1][3]
    total = CONNS * streams * size
    limits.report("upload-flow-control",
                  f"{CONNS} x {streams} uploads of {size // MIB} MB into a sink reading {SLOW_RATE // 1024} KiB/s "
                  f"per connection, {el:.0f} s: HAProxy received {received / MIB:.0f} of {total / MIB:.0f} MB and "
                  f"forwarded {forwarded / MIB:.0f} MB; held at most {peak_held / MIB:.0f} MB (first half "
                  f"{first / MIB:.0f} MB, second half {second / MIB:.0f} MB); peak RSS "
                  f"{(after.hwm_kb - base.rss_kb) / 1024:.0f} MB",
                  f"held <= {slow_bound / MIB:.0f} MB = {CONNS} x ({streams} x 2 x {BUFSIZE // 1024} KiB + 24 MiB), "
                  f"levelling off")
    assert peak_held <= slow_bound * 1.1, f"{peak_held / MIB:.0f} MB held"
    assert (after.hwm_kb - base.rss_kb) * 1024 <= slow_bound * 1.5, "peak RSS"
    # flow control holds the clients back: what is held levels off
    assert second <= first * 1.15 + 16 * MIB, (first, second)
    assert received < total * 0.5, "the clients were not held back"


SLOW_STREAMS = 10
SLOW_UPLOAD = 20 * MIB
SLOW_RATE = 32 * 1024
SLOW_SECONDS = 20.0
