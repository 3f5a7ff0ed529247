#!/usr/bin/env python3
"""Engine benchmark: haquic's example server against quiche's own
examples/http3-server, one after the other in one run, each pinned to one
core and driven by the same pycurl (libcurl + ngtcp2) load tool pinned to the
other core.

On two cores the client saturates first, so the figures that count are the
server's CPU per unit of work, read from /proc/<pid>/stat (utime + stime):

  - req/s and CPU us/request: many GETs of a 1 KB file multiplexed over one
    connection (CurlMulti, CURLPIPE_MULTIPLEX, one connection);
  - CPU us/handshake: one fresh connection per request (FRESH_CONNECT), a
    few in parallel; the server's CPU divided by the connections made;
  - MB/s: one 100 MB GET over one connection.

quiche's example always validates addresses with Retry, so haquic's server
runs with --retry too: both pay the same extra round trip per handshake.

Usage: bench_engine.py --haquic BIN --quiche BIN --cert CRT --key KEY
                       [--requests N] [--handshakes N] [--out FILE.md]
Prints progress to stderr, the table to stdout, and writes the Markdown
report (with an SVG chart beside it) when --out is given.
"""

import argparse
import hashlib
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pycurl

CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[11] and [12] are utime and stime (14 and 15 in proc(5)).
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wait_udp_port(port, proc, timeout=10.0):
    """Waits until something is bound to UDP port `port` on 127.0.0.1."""
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return
        finally:
            s.close()
        time.sleep(0.05)
    raise RuntimeError(f"nothing bound UDP port {port} within {timeout}s")


def easy(url, sink, fresh=False):
    c = pycurl.Curl()
    c.setopt(pycurl.URL, url)
    c.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_3ONLY)
    c.setopt(pycurl.SSL_VERIFYPEER, 0)
    c.setopt(pycurl.SSL_VERIFYHOST, 0)
    c.setopt(pycurl.WRITEDATA, sink)
    c.setopt(pycurl.TIMEOUT, 60)
    if fresh:
        c.setopt(pycurl.FRESH_CONNECT, 1)
        c.setopt(pycurl.FORBID_REUSE, 1)
    return c


def run_multi(handles, parallel):
    """Runs easy handles through one CurlMulti, `parallel` at a time.
    Returns (seconds, failures)."""
    m = pycurl.CurlMulti()
    m.setopt(pycurl.M_PIPELINING, pycurl.PIPE_MULTIPLEX)
    m.setopt(pycurl.M_MAX_HOST_CONNECTIONS, parallel)
    pending = list(handles)
    active = 0
    failures = 0
    start = time.time()
    while pending or active:
        while pending and active < parallel:
            m.add_handle(pending.pop())
            active += 1
        m.perform()
        while True:
            queued, ok, bad = m.info_read()
            for c in ok:
                if c.getinfo(pycurl.RESPONSE_CODE) != 200:
                    failures += 1
                m.remove_handle(c)
                active -= 1
            for c, _, _ in bad:
                failures += 1
                m.remove_handle(c)
                active -= 1
            if not queued:
                break
        if active:
            m.select(0.01)
    secs = time.time() - start
    m.close()
    return secs, failures


class Server:
    def __init__(self, name, argv, cwd, port):
        self.name, self.argv, self.cwd, self.port = name, argv, cwd, port

    def __enter__(self):
        self.proc = subprocess.Popen(["taskset", "-c", "0"] + self.argv, cwd=self.cwd,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_udp_port(self.port, self.proc)
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def cpu(self):
        return cpu_seconds(self.proc.pid)


def measure(server, requests, handshakes, big_sha):
    base = f"https://127.0.0.1:{server.port}"
    out = {}
    # warm-up: caches, first handshake
    run_multi([easy(base + "/1k", io.BytesIO()) for _ in range(50)], 1)

    log(f"  {server.name}: {requests} multiplexed GETs of 1 KB")
    sinks = [io.BytesIO() for _ in range(requests)]
    cpu0 = server.cpu()
    secs, fail = run_multi([easy(base + "/1k", s) for s in sinks], 1)
    cpu = server.cpu() - cpu0
    bad = fail + sum(1 for s in sinks if len(s.getvalue()) != 1024)
    out["req_s"] = requests / secs
    out["us_per_req"] = cpu / requests * 1e6
    out["req_failures"] = bad

    log(f"  {server.name}: {handshakes} fresh connections")
    sinks = [io.BytesIO() for _ in range(handshakes)]
    cpu0 = server.cpu()
    secs, fail = run_multi([easy(base + "/1k", s, fresh=True) for s in sinks], 4)
    cpu = server.cpu() - cpu0
    out["hs_s"] = handshakes / secs
    out["us_per_hs"] = cpu / handshakes * 1e6
    out["hs_failures"] = fail + sum(1 for s in sinks if len(s.getvalue()) != 1024)

    log(f"  {server.name}: one 100 MB GET")
    sink = io.BytesIO()
    cpu0 = server.cpu()
    secs, fail = run_multi([easy(base + "/100m", sink)], 1)
    cpu = server.cpu() - cpu0
    ok = fail == 0 and hashlib.sha256(sink.getvalue()).hexdigest() == big_sha
    out["mb_s"] = len(sink.getvalue()) / secs / 1e6 if ok else 0.0
    out["us_per_mb"] = cpu / (len(sink.getvalue()) / 1e6) * 1e6 if ok else 0.0
    out["big_ok"] = ok
    return out


def svg_chart(results, path):
    """Grouped bars: server CPU per request, per handshake and per MB
    (lower is better), one panel each, scaled per panel."""
    metrics = [("us_per_req", "CPU µs / request"), ("us_per_hs", "CPU µs / handshake"),
               ("us_per_mb", "CPU µs / MB")]
    names = list(results)
    colors = ["#1f77b4", "#ff7f0e"]
    w, h, top, left = 760, 300, 40, 20
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
             f'<text x="{w/2}" y="20" text-anchor="middle" font-size="14">Server CPU per unit of work (lower is better)</text>']
    panel = (w - left) / len(metrics)
    for mi, (key, label) in enumerate(metrics):
        vmax = max(results[n][key] for n in names) or 1
        x0 = left + mi * panel
        for ni, n in enumerate(names):
            v = results[n][key]
            bh = (h - top - 60) * v / vmax
            bx = x0 + 30 + ni * 90
            by = h - 40 - bh
            parts.append(f'<rect x="{bx:.0f}" y="{by:.0f}" width="70" height="{bh:.0f}" fill="{colors[ni % 2]}"/>')
            parts.append(f'<text x="{bx+35:.0f}" y="{by-4:.0f}" text-anchor="middle">{v:.1f}</text>')
            parts.append(f'<text x="{bx+35:.0f}" y="{h-24}" text-anchor="middle">{n}</text>')
        parts.append(f'<text x="{x0 + 30 + 80:.0f}" y="{h-6}" text-anchor="middle" font-weight="bold">{label}</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--haquic", required=True)
    ap.add_argument("--quiche", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--handshakes", type=int, default=1000)
    ap.add_argument("--out")
    args = ap.parse_args()

    if not pycurl.version_info()[4] & pycurl.VERSION_HTTP3:
        sys.exit("pycurl's libcurl has no HTTP/3: cannot benchmark")

    work = tempfile.mkdtemp(prefix="haquic-bench-")
    try:
        root = os.path.join(work, "examples", "root")
        os.makedirs(root)
        shutil.copy(args.cert, os.path.join(work, "examples", "cert.crt"))
        shutil.copy(args.key, os.path.join(work, "examples", "cert.key"))
        with open(os.path.join(root, "1k"), "wb") as f:
            f.write(bytes((i * 31) & 0xFF for i in range(1024)))
        big = bytes(range(256)) * (100 * 1024 * 1024 // 256)
        with open(os.path.join(root, "100m"), "wb") as f:
            f.write(big)
        big_sha = hashlib.sha256(big).hexdigest()
        del big

        servers = [
            Server("haquic", [args.haquic, "--cert", args.cert, "--key", args.key, "--listen", "127.0.0.1:4434",
                              "--root", root, "--workers", "1", "--retry"], work, 4434),
            Server("quiche", [args.quiche], work, 4433),
        ]
        os.sched_setaffinity(0, {1})
        results = {}
        for s in servers:
            log(f"benchmarking {s.name}")
            with s:
                results[s.name] = measure(s, args.requests, args.handshakes, big_sha)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    head = "| server | req/s (1 KB, multiplexed) | CPU µs/request | handshakes/s | CPU µs/handshake | MB/s (100 MB, 1 conn) | CPU µs/MB | failures |"
    rows = [head, "|---|---|---|---|---|---|---|---|"]
    for n, r in results.items():
        rows.append(f"| {n} | {r['req_s']:.0f} | {r['us_per_req']:.1f} | {r['hs_s']:.0f} | {r['us_per_hs']:.0f} | "
                    f"{r['mb_s']:.1f} | {r['us_per_mb']:.0f} | {r['req_failures'] + r['hs_failures'] + (0 if r['big_ok'] else 1)} |")
    table = "\n".join(rows)
    print(table)
    h, q = results["haquic"], results["quiche"]
    verdict = []
    for key, what in (("us_per_req", "CPU per request"), ("us_per_hs", "CPU per handshake")):
        ratio = h[key] / q[key] if q[key] else float("inf")
        verdict.append(f"- {what}: haquic {h[key]:.1f} µs vs quiche {q[key]:.1f} µs "
                       f"(ratio {ratio:.2f}, {'met' if ratio <= 1.0 else 'MISSED'})")
    print("\n".join(verdict))
    failures = sum(r["req_failures"] + r["hs_failures"] + (0 if r["big_ok"] else 1) for r in results.values())
    if args.out:
        chart = os.path.splitext(args.out)[0] + ".svg"
        svg_chart(results, chart)
        with open(args.out, "w") as f:
            f.write(table + "\n\n" + "\n".join(verdict) + "\n\n" + f"![chart]({os.path.basename(chart)})\n")
        log(f"wrote {args.out} and {chart}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
