#!/usr/bin/env python3
"""Instruction profile of one HAProxy (stock or patched) under callgrind, on
make bench's configuration: N requests (or N full handshakes) after a
warm-up, with instrumentation switched on only for them, so that start-up
and configuration parsing are not counted. callgrind's counts repeat from
run to run, unlike CPU times on a shared machine: this is how BENCHMARKS.md
splits the cost of a request between HAProxy and its QUIC stack.

    profile_haproxy.py --haproxy BIN --crt PEM [--requests 10000] [--fresh]
                       [--curves LIST] [--out FILE]

Prints the instructions per request (or handshake) and the functions with
the largest inclusive cost; the raw profile stays in FILE.1 for
callgrind_annotate. Progress goes to stderr. Needs valgrind.

libcurl opens a few new connections during the measured requests, with
either server (it says how many); their handshakes are counted, which is
why the default is 10,000 requests: they then weigh about 1 %.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pycurl

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_haproxy as bench  # noqa: E402  (the configuration and the libcurl helpers)

SERVER_CORE, CLIENT_CORE = "0", "1"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Load:
    """16 x 8 GETs of 1 KB multiplexed (or 6 fresh connections at once),
    kept across the warm-up and the measured phase, so that the measured
    requests reuse the warm-up's connections (unless --fresh)."""

    def __init__(self, url: str, fresh: bool):
        conns, streams = (6, None) if fresh else (16, 8)
        self.m = bench.multi(conns, streams)
        self.handles = [bench.Counted(url, fresh) for _ in range(conns * (streams or 1))]
        self.idle = list(self.handles)

    def run(self, n: int) -> int:
        """n more requests; returns how many were answered correctly."""
        started = done = good = 0
        self.connects = 0
        while self.idle and started < n:
            self.m.add_handle(self.idle.pop().c)
            started += 1
        deadline = time.monotonic() + 600
        while done < n and time.monotonic() < deadline:
            self.m.perform()
            for e, ok in bench.finished(self.m):
                done += 1
                good += e.ok(1024) and ok
                self.connects += e.c.getinfo(pycurl.NUM_CONNECTS)
                if started < n:
                    started += 1
                    self.m.add_handle(e.c)
                else:
                    self.idle.append(e)
            self.m.select(0.05)
        return good

    def close(self):
        for e in self.handles:
            try:
                self.m.remove_handle(e.c)
            except pycurl.error:
                pass        # finished: no longer attached
            e.c.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--haproxy", required=True)
    ap.add_argument("--crt", required=True)
    ap.add_argument("--requests", type=int, default=0, help="default 10000, or 200 with --fresh")
    ap.add_argument("--warm", type=int, default=300)
    ap.add_argument("--fresh", action="store_true", help="one full handshake per request")
    ap.add_argument("--curves", help="ssl-default-bind-curves for the run")
    ap.add_argument("--out", default="", help="callgrind output (default: a temporary file)")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    n = args.requests or (200 if args.fresh else 10000)
    if not shutil.which("valgrind"):
        log("profile_haproxy: valgrind is not installed")
        return 2

    work = Path(tempfile.mkdtemp(prefix="haquic-profile-"))
    body = work / "1k.txt"
    body.write_bytes(bench.KB1)
    port = bench.free_port("udp", also_tcp=False)
    cfg = bench.CONFIG.format(maxconn=4000, port=port, crt=os.path.abspath(args.crt), body=body, backend_port=9)
    if args.curves:
        cfg = cfg.replace("    limited-quic\n", f"    limited-quic\n    ssl-default-bind-curves {args.curves}\n")
    (work / "haproxy.cfg").write_text(cfg)
    out = Path(args.out or work / "callgrind.out").resolve()
    url = f"https://127.0.0.1:{port}/1k"

    log(f"profile: {args.haproxy} under callgrind, port {port}")
    proc = subprocess.Popen(["taskset", "-c", SERVER_CORE, "valgrind", "--tool=callgrind", "--instr-atstart=no",
                             f"--callgrind-out-file={out}", os.path.abspath(args.haproxy), "-db", "-f", str(work / "haproxy.cfg")],
                            stdout=open(work / "haproxy.log", "wb"), stderr=subprocess.STDOUT, cwd=work)
    try:
        deadline = time.monotonic() + 120
        while not bench.get_ok(url, 1024):
            if proc.poll() is not None or time.monotonic() > deadline:
                log((work / "haproxy.log").read_text()[-2000:])
                return 1
            time.sleep(0.5)
        os.sched_setaffinity(0, {int(CLIENT_CORE)})
        load = Load(url, args.fresh)
        log(f"profile: warm-up, {args.warm} requests")
        load.run(args.warm)
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, stdout=subprocess.DEVNULL)
        log(f"profile: {n} {'handshakes' if args.fresh else 'requests'}, instrumented")
        t0 = time.monotonic()
        good = load.run(n)
        load.close()
        log(f"profile: {good}/{n} answered in {time.monotonic() - t0:.1f} s, "
            f"{load.connects} new connections during them")
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, stdout=subprocess.DEVNULL)
    finally:
        bench.stop_process(proc)    # the profile is already dumped
    dump = Path(f"{out}.1")
    if not dump.exists():
        log(f"profile: no dump at {dump}")
        return 1
    ann = subprocess.run(["callgrind_annotate", "--inclusive=yes", str(dump)], capture_output=True, text=True).stdout
    lines = [line for line in ann.splitlines() if "(" in line and "%)" in line]
    total = int(lines[0].split()[0].replace(",", ""))
    what = "handshake" if args.fresh else "request"
    print(f"{args.haproxy}: {total:,} instructions for {good} {what}s: {total / max(good, 1):,.0f} per {what}")
    print(f"inclusive cost, top {args.top} (profile: {dump}):")
    for line in lines[1:args.top + 1]:
        print("  " + line.strip()[:160])
    return 0 if good == n else 1


if __name__ == "__main__":
    sys.exit(main())
