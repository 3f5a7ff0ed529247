#!/usr/bin/env python3
"""The soak test (`make soak`): the patched HAProxy holds many HTTP/3
connections, each making requests at a fixed rate, for minutes; then the
clients leave. See tests/soak/README.md.

    soak.py [--conns N] [--seconds S] [--rate R] [--ramp S] [--out DIR]
            [--client PATH] [--client-threads N]

The load is `quinn-client soak` (tests/interop/matrix/quinn-client); HAProxy
is started by tests/haproxy/hap.py (its configuration template, plus the
soak's path), its memory and CPU read by tests/limits/limits.py (Proc).

Acceptance criteria, each printed PASS or FAIL:
  1. rss       VmRSS grows less than 5% between the early sample (minute 2
               of a 10-minute run: a fifth of the run) and the end of the load
  2. requests  no request and no connection failed
  3. load      every connection was held to the end and the requests sent
               were at least 99% of the schedule (so a load that could not
               be sustained is a failure, not a pass on less)
  4. live      after the clients leave, within 30 s: haquic's conns_open 0,
               `show info` CurrConns 0 (the CLI's own connection is not
               counted there), and
               HAProxy's file descriptors back to their count before the load
The last line is `N passed, M failed`; the exit status is 1 when M > 0.
Everything is bounded: the client has its own limit and is killed past it,
every wait has a timeout.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "haproxy"))
sys.path.insert(0, str(REPO / "tests" / "limits"))

import hap      # noqa: E402  (tests/haproxy/hap.py: the HAProxy process)
import limits   # noqa: E402  (tests/limits/limits.py: Proc, show_quic)

RSS_GROWTH_MAX = 5.0        # percent, early sample to the end of the load
SCHEDULE_MIN = 0.99         # requests sent / requests scheduled
LEAVE_TIMEOUT = 30.0        # seconds for the live objects to reach 0
SAMPLE_EVERY = 2.0          # seconds between samples
PROGRESS_EVERY = 10.0       # seconds between progress lines
URL_PATH = "/soak"

# The soak's path through HAProxy: the H3 frontend of hap.py's template
# sends /soak to be_soak, whose server is this same HAProxy's TCP frontend
# `origin` answering a small 200 itself. So every request takes the full
# proxy path (H3 stream, HTTP/1.1 backend connection, reused) without an
# origin process to saturate first. `no log`: 10,000 lines a second would
# be the test. pool-purge-delay 1s: idle backend connections go quickly
# once the clients leave (they are live objects too).
FRONTEND_EXTRA = f"""\
no log
maxconn {{maxconn}}
use_backend be_soak if {{{{ path {URL_PATH} }}}}
"""
# --path return: the H3 frontend answers itself (no backend connection).
FRONTEND_RETURN = f"""\
no log
maxconn {{maxconn}}
http-request return status 200 content-type text/plain string "ok" if {{{{ path {URL_PATH} }}}}
"""
SECTIONS_EXTRA = """
backend be_soak
    server origin 127.0.0.1:{origin_port} pool-purge-delay 1s

frontend origin
    bind 127.0.0.1:{origin_port}
    no log
    maxconn {maxconn}
    http-request return status 200 content-type text/plain string "ok"
"""


@dataclass
class Row:
    t: float                    # seconds since the client started
    client: dict                # the client's last `soak` line
    rss_kb: int
    hap_cpu: float              # percent of one core over the last interval
    client_cpu: float
    hap_wait: float             # percent of the interval its threads waited for a CPU
    client_wait: float
    req_s: float                # requests answered per second, last interval
    conns_open: int | None = None   # haquic's, when read (every progress line)
    drops: tuple[int, int] | None = None    # UDP drops, HAProxy and client (idem)


@dataclass
class Client:
    """The load generator and its report lines (read by a thread)."""
    proc: subprocess.Popen
    last: dict = field(default_factory=dict)
    done: dict | None = None
    lines: list = field(default_factory=list)

    def read(self) -> None:
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            tag, _, rest = line.partition(" ")
            if tag in ("soak", "soak-done"):
                kv = dict(f.split("=", 1) for f in rest.split() if "=" in f)
                vals = {k: float(v) for k, v in kv.items()}
                if tag == "soak":
                    self.last = vals
                else:
                    self.done = vals
            else:
                print(f"client: {line}", flush=True)


def fds(pid: int) -> dict[str, str]:
    """The process's descriptors: number -> what it points to."""
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            pass
    return out


def fds_extra(pid: int, before: dict[str, str]) -> list[str]:
    """The descriptors the process holds now and did not before the load."""
    return sorted(f"{fd}->{t}" for fd, t in fds(pid).items() if before.get(fd) != t)


def runq_wait_s(pid: int) -> float:
    """Seconds the process's threads have spent runnable but waiting for a
    CPU (the second field of /proc/PID/task/TID/schedstat): what tells a
    process starved by others from one saturated by its own work."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tids:
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return total / 1e9


def udp_drops(pids: list[int]) -> list[int]:
    """Datagrams the kernel dropped on each process's UDP sockets (a full
    receive buffer): the `drops` column of /proc/net/udp{,6}, summed over
    the sockets each process holds now."""
    owner = {}
    for i, pid in enumerate(pids):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    owner[link[8:-1]] = i
        except OSError:
            pass
    out = [0] * len(pids)
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) >= 13 and f[9] in owner:
                out[owner[f[9]]] += int(f[12])
    return out


def info_field(h: hap.HAProxy, name: str) -> int:
    m = re.search(rf"^{name}: (\d+)$", h.cli("show info"), re.M)
    return int(m.group(1)) if m else -1


def raise_fd_limit(need: int) -> int:
    """HAProxy holds a socket per QUIC connection: raise RLIMIT_NOFILE (the
    child inherits it) to `need`, or at least to the hard limit when the
    hard limit cannot be raised (no CAP_SYS_RESOURCE, as in a container).
    Returns the soft limit set; exits when it is below `need`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return soft
    for limit in ((need, max(need, hard)), (hard, hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limit)
            break
        except (ValueError, OSError):
            continue
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        sys.exit(f"soak: {need} file descriptors needed, the limit is {soft}/{hard}: "
                 f"raise it (ulimit -Hn) or lower --conns")
    return soft


def at(rows: list[Row], t: float) -> Row:
    """The sample nearest to t."""
    return min(rows, key=lambda r: abs(r.t - t))


def write_csv(rows: list[Row], path: Path) -> None:
    keys = ["open", "opened", "connect_failed", "lost", "ok", "failed", "missed", "inflight",
            "p50_ms", "p99_ms", "max_ms"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_s", "rss_kb", "req_s", "haproxy_cpu_pct", "client_cpu_pct",
                    "haproxy_runq_wait_pct", "client_runq_wait_pct", "haquic_conns_open",
                    "udp_drops_haproxy", "udp_drops_client"] + [f"client_{k}" for k in keys])
        for r in rows:
            w.writerow([f"{r.t:.1f}", r.rss_kb, f"{r.req_s:.0f}", f"{r.hap_cpu:.0f}",
                        f"{r.client_cpu:.0f}", f"{r.hap_wait:.0f}", f"{r.client_wait:.0f}",
                        "" if r.conns_open is None else r.conns_open]
                       + (list(r.drops) if r.drops else ["", ""])
                       + [r.client.get(k, "") for k in keys])


def chart(rows: list[Row], path: Path, title: str, marks: tuple[float, float], rate: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r.t for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    ax = axes[0]
    ax.plot(t, [r.rss_kb / 1024 for r in rows], color="#1f77b4")
    for m in marks:
        ax.axvline(m, color="#999", ls="--", lw=0.8)
    ax.set_ylabel("HAProxy RSS (MB)")
    ax.set_ylim(bottom=0)
    ax = axes[1]
    ax.plot(t, [r.req_s for r in rows], color="#2ca02c", label="answered")
    ax.plot(t, [r.client.get("open", 0) * rate for r in rows], color="#999", ls=":", lw=1,
            label="scheduled (connections open x rate)")
    ax.set_ylabel("requests/s")
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower right", fontsize=8)
    ax = axes[2]
    ax.plot(t, [r.client.get("open", 0) for r in rows], color="#ff7f0e", label="connections open (client)")
    ax2 = ax.twinx()
    ax2.plot(t, [r.hap_cpu for r in rows], color="#d62728", lw=0.8, label="HAProxy CPU %")
    ax2.plot(t, [r.client_cpu for r in rows], color="#9467bd", lw=0.8, label="client CPU %")
    ax2.plot(t, [r.hap_wait for r in rows], color="#d62728", lw=0.8, ls=":", label="HAProxy waiting for a CPU %")
    ax2.plot(t, [r.client_wait for r in rows], color="#9467bd", lw=0.8, ls=":", label="client waiting for a CPU %")
    ax2.set_ylabel("% of one core")
    ax2.set_ylim(0, max([200.0] + [r.hap_wait for r in rows] + [r.client_wait for r in rows]) * 1.05)
    ax.set_ylabel("connections")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("seconds")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="lower center", fontsize=7, ncol=2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run(a: argparse.Namespace) -> int:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    # HAProxy's connections: the QUIC ones (one socket each) and, on the
    # origin path, the origin frontend's side of the pooled backend
    # connections (a few hundred at most). HAProxy wants two descriptors per
    # maxconn (a frontend and a backend side) and, with strict-limits (its
    # default), refuses to start below that; this configuration uses about
    # one, so where the hard limit is lower (a container cannot raise it),
    # `no strict-limits` lets HAProxy start with a warning.
    maxconn = a.conns + 1000
    nofile = raise_fd_limit(a.conns + 3000)
    extra_global = f"maxconn {maxconn}"
    if nofile < 2 * maxconn + 100:
        extra_global += "\nno strict-limits"

    binary = hap.detect()
    if binary.flavour != "rust":
        sys.exit(f"soak: {binary.path} is not the patched (USE_RUST_QUIC) HAProxy")
    origin_port = hap.free_port("tcp")
    opts = hap.Options(
        nbthread=2,
        extra_global=extra_global,
        extra_frontend=(FRONTEND_EXTRA if a.path == "origin" else FRONTEND_RETURN).format(maxconn=maxconn),
        extra=SECTIONS_EXTRA.format(origin_port=origin_port, maxconn=maxconn),
    )
    early_t = a.seconds * 0.2
    ramp = a.ramp if a.ramp is not None else min(60.0, a.seconds / 10)
    target_rps = a.conns * a.rate
    print(f"soak: {a.conns} connections x {a.rate:g} req/s for {a.seconds:g} s (ramp {ramp:g} s), "
          f"HAProxy {binary.version} nbthread 2 maxconn {maxconn}, client {a.client_threads} thread(s)",
          flush=True)

    rows: list[Row] = []
    with hap.HAProxy(binary, out / "run", origin_port, opts) as h:
        hp = limits.Proc(h.pid)
        fds_before = fds(h.pid)
        cmd = [a.client, "soak", "--conns", str(a.conns), "--seconds", str(a.seconds),
               "--rate", str(a.rate), "--ramp", str(ramp), "--threads", str(a.client_threads),
               "--ca", str(hap.CA_FILE), "--sni", "localhost", h.url(URL_PATH)]
        client = Client(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1,
                                         preexec_fn=hap._die_with_parent))
        reader = threading.Thread(target=client.read, daemon=True)
        reader.start()
        cp = limits.Proc(client.proc.pid)
        t0 = time.monotonic()
        deadline = t0 + a.seconds + 120
        prev_h, prev_c, prev_t = hp.sample(), cp.sample(), 0.0
        prev_hw, prev_cw = runq_wait_s(h.pid), runq_wait_s(client.proc.pid)
        prev_ok, prev_ct = 0.0, 0.0          # the client's count and clock
        next_progress = PROGRESS_EVERY
        while client.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(SAMPLE_EVERY)
            try:
                sh, sc = hp.sample(), cp.sample()
            except (OSError, AttributeError):
                break                               # the client has exited
            now = time.monotonic() - t0
            dt = max(now - prev_t, 1e-3)
            last = dict(client.last)
            # the rate over the client's own clock: its lines and these
            # samples are not in step
            ok, ct = last.get("ok", 0.0), last.get("t", 0.0)
            req_s = (ok - prev_ok) / (ct - prev_ct) if ct > prev_ct else 0.0
            hw, cw = runq_wait_s(h.pid), runq_wait_s(client.proc.pid)
            row = Row(now, last, sh.rss_kb,
                      100 * (sh.cpu_s - prev_h.cpu_s) / dt, 100 * (sc.cpu_s - prev_c.cpu_s) / dt,
                      100 * (hw - prev_hw) / dt, 100 * (cw - prev_cw) / dt, req_s)
            prev_h, prev_c, prev_t, prev_ok, prev_ct = sh, sc, now, ok, ct
            prev_hw, prev_cw = hw, cw
            if now >= next_progress:
                next_progress += PROGRESS_EVERY
                row.conns_open = limits.show_quic(h).get("conns_open", -1)
                row.drops = tuple(udp_drops([h.pid, client.proc.pid]))
                c = row.client
                print(f"t={now:5.0f}s conns={c.get('open', 0):.0f} (haquic {row.conns_open}) "
                      f"ok={c.get('ok', 0):.0f} failed={c.get('failed', 0) + c.get('connect_failed', 0):.0f} "
                      f"missed={c.get('missed', 0):.0f} req/s={row.req_s:.0f} "
                      f"p99={c.get('p99_ms', -1):g}ms RSS={sh.rss_kb / 1024:.1f}MB "
                      f"cpu haproxy={row.hap_cpu:.0f}% client={row.client_cpu:.0f}% "
                      f"runq wait haproxy={row.hap_wait:.0f}% client={row.client_wait:.0f}% "
                      f"udp drops haproxy={row.drops[0]} client={row.drops[1]}", flush=True)
            rows.append(row)
        # The loop also ends when the client is exiting (its /proc entry
        # loses VmRSS before the process can be reaped): wait for it, up to
        # the deadline, before calling it hung.
        try:
            client_rc = client.proc.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print("soak: the client did not finish in time: killed", flush=True)
            client.proc.kill()
            client_rc = client.proc.wait(10)
        reader.join(10)
        left_t = time.monotonic() - t0

        # The clients have left: the live objects must go back to 0.
        live = {}
        extra: list[str] = []
        leave_deadline = time.monotonic() + LEAVE_TIMEOUT
        while True:
            live = {"conns_open": limits.show_quic(h).get("conns_open", -1),
                    "CurrConns": info_field(h, "CurrConns"),
                    "fds_over_baseline": len(extra := fds_extra(h.pid, fds_before))}
            if all(v == 0 for v in (live["conns_open"], live["CurrConns"])) and live["fds_over_baseline"] <= 0:
                break
            if time.monotonic() >= leave_deadline:
                break
            time.sleep(0.5)
        settle_s = time.monotonic() - t0 - left_t
        counters = limits.show_quic(h)
        rss_after = hp.sample().rss_kb

    # ---- the verdict ----
    done = client.done or client.last
    results = []

    def check(name: str, ok: bool, text: str) -> None:
        results.append(ok)
        print(f"{'PASS' if ok else 'FAIL'} {name}: {text}", flush=True)

    print("", flush=True)
    load_rows = [r for r in rows if r.t <= a.seconds]
    if len(load_rows) >= 2:
        early, late = at(load_rows, early_t), load_rows[-1]
        growth = 100.0 * (late.rss_kb - early.rss_kb) / early.rss_kb
        print(f"RSS at {early.t:.0f} s: {early.rss_kb / 1024:.1f} MB; at {late.t:.0f} s: "
              f"{late.rss_kb / 1024:.1f} MB; growth {growth:+.2f}%; after the clients left: "
              f"{rss_after / 1024:.1f} MB; peak {max(r.rss_kb for r in rows) / 1024:.1f} MB")
    else:
        early = late = None
        growth = float("inf")
    ok_n = int(done.get("ok", 0))
    failed = int(done.get("failed", 0))
    cfail = int(done.get("connect_failed", 0))
    lost = int(done.get("lost", 0))
    missed = int(done.get("missed", 0))
    opened = int(done.get("opened", 0))
    held = [r.client.get("open", 0) for r in rows if ramp + 5 < r.t <= a.seconds - 2]
    steady = [r.req_s for r in rows if ramp + 5 < r.t <= a.seconds - 2]
    sent = ok_n + failed
    # Each connection's schedule: from its own opening to the end of the load.
    scheduled = sum(a.rate * (a.seconds - ramp * i / a.conns) for i in range(a.conns))
    print(f"requests: {sent} sent, {ok_n} ok, {failed} failed, {missed} missed slots; "
          f"{sent / scheduled * 100 if scheduled else 0:.1f}% of the {scheduled:.0f} scheduled")
    if steady:
        print(f"req/s after the ramp: mean {sum(steady) / len(steady):.0f}, min {min(steady):.0f}, "
              f"max {max(steady):.0f} (target {target_rps:g})")
    print(f"connections: {opened} opened of {a.conns}, held after the ramp min {min(held, default=0):.0f} "
          f"max {max(held, default=0):.0f}; {cfail} failed to open, {lost} lost, "
          f"{int(done.get('closed', 0))} closed cleanly")
    after = [r for r in rows if ramp < r.t <= a.seconds]
    if after:
        def mean(f):
            return sum(f(r) for r in after) / len(after)
        print(f"CPU after the ramp (% of one core): HAProxy mean {mean(lambda r: r.hap_cpu):.0f} "
              f"(2 threads), client mean {mean(lambda r: r.client_cpu):.0f} ({a.client_threads} thread(s)); "
              f"waiting for a CPU: HAProxy {mean(lambda r: r.hap_wait):.0f}%, client "
              f"{mean(lambda r: r.client_wait):.0f}%; machine load average {os.getloadavg()[0]:.1f}")
    print(f"live objects {settle_s:.1f} s after the clients left: conns_open={live['conns_open']} "
          f"CurrConns={live['CurrConns']} fds over the baseline={live['fds_over_baseline']} "
          f"(haquic totals: accepted {counters.get('conns_accepted')}, closed {counters.get('conns_closed')}, "
          f"requests {counters.get('requests')}, lost {counters.get('lost')}, "
          f"drop_queue_full {counters.get('drop_queue_full')})")
    if extra:
        print(f"descriptors over the baseline: {', '.join(extra)}")
    print(f"wall time: {left_t:.0f} s of load and leaving, client exit status {client_rc}")
    print("", flush=True)

    if early is not None:
        check("rss", growth < RSS_GROWTH_MAX,
              f"VmRSS {early.rss_kb / 1024:.1f} MB at {early.t:.0f} s -> {late.rss_kb / 1024:.1f} MB "
              f"at {late.t:.0f} s: {growth:+.2f}% (< {RSS_GROWTH_MAX:g}%)")
    else:
        check("rss", False, "not enough samples")
    check("requests", failed == 0 and cfail == 0 and sent > 0,
          f"{failed} requests and {cfail} connections failed of {sent} and {a.conns}")
    check("load", opened == a.conns and lost == 0 and scheduled and sent >= SCHEDULE_MIN * scheduled,
          f"{opened}/{a.conns} connections held, {lost} lost; {sent} requests of {scheduled:.0f} "
          f"scheduled ({sent / scheduled * 100 if scheduled else 0:.1f}%, >= {SCHEDULE_MIN * 100:g}%)")
    check("live", live["conns_open"] == 0 and live["CurrConns"] == 0 and live["fds_over_baseline"] <= 0,
          f"conns_open={live['conns_open']} CurrConns={live['CurrConns']} "
          f"fds over the baseline={live['fds_over_baseline']} within {LEAVE_TIMEOUT:g} s")

    if rows:
        write_csv(rows, out / "samples.csv")
        chart(rows, out / "soak.png",
              f"make soak: {a.conns} connections x {a.rate:g} req/s, {a.seconds:g} s "
              f"(RSS {growth:+.2f}% from {early_t:.0f} s to the end)",
              (early.t, late.t) if early else (early_t, a.seconds), a.rate)
        print(f"samples: {out / 'samples.csv'}, chart: {out / 'soak.png'}")
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed", flush=True)
    return 0 if passed == len(results) else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--conns", type=int, default=10000)
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--rate", type=float, default=1.0, help="requests per second per connection")
    p.add_argument("--ramp", type=float, default=None, help="seconds to open the connections over "
                   "(default: a tenth of the run, at most 60)")
    p.add_argument("--out", default=str(REPO / "build" / "soak"))
    p.add_argument("--client", default=str(REPO / "build" / "quinn-client" / "release" / "quinn-client"))
    p.add_argument("--client-threads", type=int, default=1)
    p.add_argument("--path", choices=("origin", "return"), default="return",
                   help="origin: through a backend connection to HAProxy's own origin frontend; "
                   "return: answered by the H3 frontend itself")
    a = p.parse_args()
    try:
        return run(a)
    finally:
        hap.kill_all()


if __name__ == "__main__":
    sys.exit(main())
