#!/usr/bin/env python3
"""The interop matrix: the QUIC interop runner's cases, rebuilt on one
machine, against HAProxy 3.0.11 (patched with haquic, or stock).

    run.py [--server haquic|stock] [--cases a,b] [--clients x,y] [--seed N]
           [--doc INTEROP.md] [--png FILE] [--quick] [--allow-fail]

Each cell (case x client) gets a fresh HAProxy with the case's bind options,
a fresh impairment proxy (impair.py) between the client and HAProxy, and one
run of the client (several for the handshake-loss cases). A cell passes when
the client exits 0, every body it saved is byte-identical to what the
backend served, HAProxy logged every request with status 200 over
HTTP/3.0, HAProxy is still alive, and the case's own check on the wire
(the proxy's statistics) holds. A client that cannot do what a case needs
exits 127: the cell is `unsupported`, with its reason. Cases the server
cannot do (QUIC v2 and ECN for quiche) are `unsupported` too, never run.

With INTEROP_QLOG=1 the patched HAProxy writes a qlog per connection into
the cell's haproxy/qlog/ (tune.quic.rquic-qlog-dir).

Progress goes to stderr, one line per cell. The matrix is printed at the
end, followed by `N passed, M failed` (unsupported cells are counted apart).
Every run leaves build/interop/matrix-<server>.json and the logs of each
cell under build/interop/<server>/<case>-<client>/. With --doc, the results
are also kept as docs/interop/matrix-<server>.json (committed with the
document), and the matrix is written into that Markdown file between the
markers below, next to the other server's last recorded results, so that
INTEROP.md compares both side by side.
Exit status: 1 if any cell failed, unless --allow-fail (used for the stock
server, whose failures are findings, not regressions).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO / "tests" / "haproxy"))

import backend  # noqa: E402  (tests/haproxy/backend.py: file_body())
import hap      # noqa: E402  (tests/haproxy/hap.py: the HAProxy process)

BUILD = REPO / "build"
OUT = BUILD / "interop"
PYTHON = Path(os.environ.get("INTEROP_PYTHON", BUILD / "venv" / "bin" / "python"))
QUINN_BIN = Path(os.environ.get("QUINN_CLIENT", BUILD / "quinn-client" / "release" / "quinn-client"))
NGTCP2_DIR = Path(os.environ.get("NGTCP2_DIR", BUILD / "ngtcp2"))
DOC_RESULTS = REPO / "docs" / "interop"
BEGIN = "<!-- interop-matrix:begin (written by make interop) -->"
END = "<!-- interop-matrix:end -->"

KB = 1000
MB = 1000 * 1000


# ---- clients ------------------------------------------------------------------

@dataclass
class Client:
    name: str
    argv: list[str]
    needs: Path            # the file that must exist for the client to run
    how: str               # how to get it

    def available(self) -> str | None:
        if not self.needs.exists():
            return f"{self.needs} is missing ({self.how})"
        return None


CLIENTS = {
    "aioquic": Client("aioquic", [str(PYTHON), str(HERE / "clients" / "aioquic_client.py")],
                      PYTHON, "make interop installs it"),
    "pycurl": Client("pycurl", [str(PYTHON), str(HERE / "clients" / "pycurl_client.py")],
                     PYTHON, "make interop installs it"),
    "ngtcp2": Client("ngtcp2", [str(PYTHON), str(HERE / "clients" / "ngtcp2_client.py")],
                     NGTCP2_DIR / "root" / "usr" / "bin" / "gtlsclient", "make ngtcp2-client"),
    "quinn": Client("quinn", [str(QUINN_BIN)], QUINN_BIN, "make quinn-client"),
}


# ---- cases --------------------------------------------------------------------

@dataclass
class Case:
    name: str
    what: str
    files: list[str]                       # /f/<name> bodies to fetch
    client_opts: list[str] = field(default_factory=list)
    proxy_opts: list[str] = field(default_factory=list)
    bind: str = ""                         # extra bind keywords
    large_chain: bool = False
    ipv6: bool = False
    runs: int = 1                          # separate client runs (one connection each)
    parallel: int = 1                      # how many of them at once
    timeout: float = 60.0                  # per client run
    global_extra: str = ""                 # extra lines in HAProxy's global section
    unsupported: dict[str, str] = field(default_factory=dict)   # flavour -> reason

    def check(self, r: "CellRun") -> str | None:
        """The case's own check on the wire; a reason when it fails."""
        return None


def conns(st: dict) -> list[dict]:
    return st.get("connections", [])


class Handshake(Case):
    def check(self, r):
        if r.stats["s2c"]["types"]["retry"]:
            return "the server sent a Retry where none was configured"
        if len(conns(r.stats)) != 1:
            return f"{len(conns(r.stats))} connections seen, expected 1"


class OneConnection(Case):
    def check(self, r):
        n = len(conns(r.stats))
        if n != 1:
            return f"{n} connections seen by the proxy, expected 1"


class Retry(Case):
    def check(self, r):
        n = r.stats["s2c"]["types"]["retry"]
        if n < 1:
            return "no Retry packet from the server on the wire"
        if not any(c.get("retry_packets") for c in conns(r.stats)):
            return "the Retry was not attributed to the client's connection"


class Resumption(Case):
    def check(self, r):
        cs = sorted(conns(r.stats), key=lambda c: c["first_seen_s"])
        if len(cs) < 2:
            return f"{len(cs)} connection(s) seen, expected 2"
        full, second = cs[0]["server_handshake_bytes"], cs[-1]["server_handshake_bytes"]
        r.detail = f"server handshake bytes: {full} full, {second} second"
        if not second * 2 < full:
            return (f"the second handshake was not resumed: the server sent {second} bytes of "
                    f"Initial+Handshake packets against {full} for the full one (certificate chain resent)")


class ZeroRTT(Resumption):
    def check(self, r):
        why = super().check(r)
        if why:
            return why
        cs = sorted(conns(r.stats), key=lambda c: c["first_seen_s"])
        if cs[-1]["c2s_0rtt_packets"] < 1:
            return "no 0-RTT packet from the client on the wire"
        ed = r.kv.get("early_data")
        if ed != "accepted":
            return f"the client reports early_data={ed or '(nothing)'}"
        r.detail += f"; {cs[-1]['c2s_0rtt_packets']} 0-RTT packets, {cs[-1]['c2s_0rtt_bytes']} bytes"


class KeyUpdate(OneConnection):
    def check(self, r):
        why = super().check(r)
        if why:
            return why
        if r.kv.get("key_update") != "1":
            return "the client did not report a completed key update"


class Impaired(Case):
    """Loss, corruption or black holes: they must really have happened."""
    counter: tuple[str, ...] = ("dropped",)

    def check(self, r):
        n = sum(r.stats[d][k] for d in ("c2s", "s2c") for k in self.counter)
        r.detail = f"{'+'.join(self.counter)}: {n} datagrams"
        if n == 0:
            return f"the proxy impaired nothing ({'+'.join(self.counter)} = 0)"


class Corrupted(Impaired):
    counter = ("corrupted",)


class Blackhole(Impaired):
    counter = ("dropped_blackhole",)


class Amplification(Case):
    def check(self, r):
        cs = conns(r.stats)
        if len(cs) != 1:
            return f"{len(cs)} connections seen, expected 1"
        c = cs[0]
        c2s, s2c = c["prevalidation_c2s_bytes"], c["prevalidation_s2c_bytes"]
        r.detail = (f"before validation: {s2c} bytes sent for {c2s} received "
                    f"({s2c / c2s if c2s else float('inf'):.2f}x); handshake flight "
                    f"{c['server_handshake_bytes']} bytes")
        if not c["validated"]:
            return "the address was never validated"
        if s2c > 3 * c2s:
            return f"amplification limit broken: {r.detail}"
        if c["server_handshake_bytes"] <= 3 * c2s:
            return f"the certificate chain was too small to reach the limit: {r.detail}"


class Rebind(Case):
    def check(self, r):
        if r.stats["rebinds"] < 1:
            return "the proxy never rebound (the transfer ended too early)"
        n = len(conns(r.stats))
        if n != 1:
            return f"{n} connections seen, expected the first one to survive the rebinding"
        srcs = max(len(f["sources"]) for f in r.stats["flows"])
        r.detail = f"{r.stats['rebinds']} rebinds, {srcs} source addresses"


class IPv6(Case):
    def check(self, r):
        flows = r.stats["flows"]
        if not flows or not all(f["client"].startswith("[") for f in flows):
            return f"not over IPv6: flows {[f['client'] for f in flows]}"


class LongRTT(OneConnection):
    def check(self, r):
        why = super().check(r)
        if why:
            return why
        if r.elapsed < 0.8:
            return f"done in {r.elapsed:.2f}s: the 400 ms round trip was not applied"


class Version2(OneConnection):
    def check(self, r):
        why = super().check(r)
        if why:
            return why
        v = r.stats["s2c"]["versions"]
        r.detail = "server long-header packets by version: " + ", ".join(f"{k}: {n}" for k, n in sorted(v.items()))
        if not v.get("6b3343cf"):
            return f"the server never spoke QUIC version 2 ({r.detail})"


def _f(sizes, tag):
    return [f"{s}-{tag}{i}" for i, s in enumerate(sizes)]


# 30% loss or corruption in the handshake: PTO backoff that starts in the
# Initial exchange carries into the Handshake one (RFC 9002 resets it on no
# Initial ACK at the client), and can outlast a 30 s idle timeout.
# Measured (seed 3, aioquic, handshakecorruption): a server flight damaged
# three times in a row is resent at 3.4, 11.4, 43.4 and 107.3 s.
LONG_IDLE = "tune.quic.frontend.max-idle-timeout 300s"
NOT_QUICHE = {"rust": "quiche 0.30 implements QUIC version 1 only (no RFC 9369)"}
CASES: list[Case] = [
    Handshake("handshake", "the connection completes", _f([1 * KB], "hs")),
    OneConnection("transfer", "2, 3 and 5 MB downloads, multiplexed on one connection",
                  _f([2 * MB, 3 * MB, 5 * MB], "tr")),
    OneConnection("chacha20", "only TLS_CHACHA20_POLY1305_SHA256 offered", _f([1 * MB], "cc"),
                  client_opts=["--chacha20"]),
    Retry("retry", "quic-force-retry: Retry on the wire, then the transfer", _f([1 * MB], "rt"),
          bind="quic-force-retry"),
    Resumption("resumption", "the second connection resumes (no certificate resent)",
               _f([1 * KB, 100 * KB, 200 * KB], "rs"), client_opts=["--resume"], large_chain=True),
    ZeroRTT("zerortt", "allow-0rtt: the second connection's requests go as 0-RTT and are accepted",
            _f([1 * KB, 2 * KB, 3 * KB], "zr"), client_opts=["--zerortt"], bind="allow-0rtt",
            large_chain=True),
    OneConnection("http3", "several requests over HTTP/3", _f([1 * KB, 10 * KB, 100 * KB, 1 * MB], "h3")),
    OneConnection("multiplexing", "1999 x 32 B on one connection", _f([32] * 1999, "mx"),
                  timeout=120),
    KeyUpdate("keyupdate", "the client updates keys during a 5 MB download", _f([5 * MB], "ku"),
              client_opts=["--key-update"]),
    Impaired("handshakeloss", "30% loss both ways, bursts of at most 3; 50 connections",
             _f([1 * KB] * 50, "hl"), proxy_opts=["--drop-rate", "0.3", "--drop-burst", "3"],
             runs=50, parallel=5, timeout=300, global_extra=LONG_IDLE),
    Impaired("transferloss", "2% loss both ways, 2 + 3 MB", _f([2 * MB, 3 * MB], "tl"),
             proxy_opts=["--drop-rate", "0.02"], timeout=90),
    Corrupted("handshakecorruption", "30% of datagrams corrupted in their first 50 bytes; 50 connections",
              _f([1 * KB] * 50, "hc"), proxy_opts=["--corrupt", "0.3"], runs=50, parallel=5, timeout=300,
              global_extra=LONG_IDLE),
    Corrupted("transfercorruption", "2% of datagrams corrupted, 2 + 3 MB", _f([2 * MB, 3 * MB], "tc"),
              proxy_opts=["--corrupt", "0.02"], timeout=90),
    Blackhole("blackhole", "10 MB at 10 Mbit/s through a link that is up 5 s, down 2 s",
              _f([10 * MB], "bh"), proxy_opts=["--blackhole", "5,2", "--rate-mbit", "10"], timeout=90),
    Amplification("amplificationlimit",
                  "at most 3x before validation, with a ~7 KB certificate chain and the client's "
                  "packets 2 to 6 lost", _f([1 * KB], "am"),
                  proxy_opts=["--drop-c2s", "1-5"], large_chain=True, timeout=60),
    Rebind("rebind-port", "NAT rebinding of the port at 1 s, then every 5 s (10 MB at 10 Mbit/s)",
           _f([10 * MB], "rp"), proxy_opts=["--rebind", "port", "--rate-mbit", "10"], timeout=90),
    Rebind("rebind-addr", "NAT rebinding of the address among 127.0.0.x at 1 s, then every 5 s",
           _f([10 * MB], "ra"), proxy_opts=["--rebind", "addr", "--rate-mbit", "10"], timeout=90),
    IPv6("ipv6", "handshake and transfer over ::1", _f([1 * KB, 1 * MB], "v6"), ipv6=True),
    LongRTT("longrtt", "200 ms one-way delay", _f([1 * KB, 1 * MB], "lr"),
            proxy_opts=["--delay", "200"], timeout=90),
    Version2("v2", "the client starts in QUIC version 2 (RFC 9369) and the server answers in it",
             _f([1 * KB, 100 * KB], "v2"), client_opts=["--v2"], unsupported=dict(NOT_QUICHE)),
    Case("ecn", "ECN marking and validation (RFC 9000 section 13.4)", [],
         unsupported={"rust": "quiche neither sets nor reads ECN codepoints",
                      "stock": "HAProxy 3.0's QUIC stack neither sets nor reads ECN codepoints"}),
]
QUICK = ["handshake", "transfer", "retry", "http3", "multiplexing", "rebind-port", "transferloss"]


# ---- certificates -------------------------------------------------------------

def large_chain(dest: Path) -> tuple[Path, Path]:
    """A leaf and four intermediates, RSA 4096, so that the server's first
    flight (about 8 KB) exceeds three times a client Initial. Returns the
    HAProxy crt (leaf, chain, key) and the root to trust. Made once."""
    pem, root = dest / "large-chain.pem", dest / "large-root.crt"
    if pem.exists() and root.exists():
        return pem, root
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / "tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()

    def run(*a):
        subprocess.run(["openssl", *a], cwd=tmp, check=True, capture_output=True, timeout=120)

    ca_ext = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
    (tmp / "ca.ext").write_text(ca_ext)
    (tmp / "leaf.ext").write_text("basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n"
                                  "extendedKeyUsage=serverAuth\n")
    run("req", "-x509", "-newkey", "rsa:4096", "-nodes", "-keyout", "root.key", "-out", "root.crt",
        "-days", "3650", "-subj", "/CN=haquic interop root", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    issuer = "root"
    chain = []
    for i in range(1, 5):
        name = f"int{i}"
        run("req", "-newkey", "rsa:4096", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN=haquic interop intermediate {i}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{issuer}.crt", "-CAkey", f"{issuer}.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "3650", "-extfile", "ca.ext")
        chain.insert(0, tmp / f"{name}.crt")
        issuer = name
    run("req", "-newkey", "rsa:4096", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost")
    run("x509", "-req", "-in", "leaf.csr", "-CA", f"{issuer}.crt", "-CAkey", f"{issuer}.key",
        "-CAcreateserial", "-out", "leaf.crt", "-days", "3650", "-extfile", "leaf.ext")
    parts = [tmp / "leaf.crt", *chain, tmp / "leaf.key"]
    (dest / "large-chain.pem.tmp").write_bytes(b"".join(p.read_bytes() for p in parts))
    shutil.copy(tmp / "root.crt", root)
    os.replace(dest / "large-chain.pem.tmp", pem)
    shutil.rmtree(tmp)
    return pem, root


# ---- HAProxy --------------------------------------------------------------------

CONFIG = """\
# written by tests/interop/matrix/run.py
global
{limited_quic}    nbthread 2
    stats socket {sock} level admin
    log stdout format raw local0
    hard-stop-after 10s
{qlog}{global_extra}
    tune.quic.frontend.max-streams-bidi 100

defaults
    mode http
    log global
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s

frontend fe
    bind {addr} ssl crt {crt} alpn h3{bind}
    log-format "{log_format}"
    default_backend be

backend be
    server s1 127.0.0.1:{backend_port}
"""


class MatrixHAProxy(hap.HAProxy):
    def __init__(self, binary, workdir, backend_port, case: Case, crt: Path):
        self.case, self.crt = case, crt
        super().__init__(binary, workdir, backend_port)

    def render(self, **over) -> str:
        addr = f"quic6@[::1]:{self.port}" if self.case.ipv6 else f"quic4@127.0.0.1:{self.port}"
        return CONFIG.format(
            limited_quic="    limited-quic\n" if self.binary.needs_limited_quic else "",
            sock=self.sock, addr=addr, crt=self.crt,
            qlog=(f"    tune.quic.rquic-qlog-dir {self.workdir / 'qlog'}\n"
                  if os.environ.get("INTEROP_QLOG") and self.binary.flavour == "rust" else ""),
            bind=(" " + self.case.bind) if self.case.bind else "",
            global_extra="".join(f"    {l}\n" for l in self.case.global_extra.splitlines()),
            log_format=hap.LOG_FORMAT, backend_port=self.backend_port)


# ---- one cell ---------------------------------------------------------------------

@dataclass
class CellRun:
    stats: dict
    kv: dict
    elapsed: float
    detail: str = ""


@dataclass
class Cell:
    case: str
    client: str
    verdict: str            # pass, fail, unsupported
    reason: str = ""
    detail: str = ""
    seconds: float = 0.0


def last_line(text: str) -> str:
    lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
    return lines[-1] if lines else ""


def parse_kv(text: str) -> dict:
    kv = {}
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)=(.*)$", line.strip())
        if m:
            kv[m.group(1)] = m.group(2)
    return kv


class Matrix:
    def __init__(self, binary: hap.Binary, seed: int, workroot: Path):
        self.binary = binary
        self.seed = seed
        self.work = workroot
        self.certs = OUT / "certs"
        self.crt, self.ca = hap.COMBINED_PEM, hap.CA_FILE
        self.backend = None
        self.backend_port = 0
        self.run_seconds: list[float] = []     # client run durations, this cell

    def start_backend(self):
        pf = self.work / "backend.port"
        self.work.mkdir(parents=True, exist_ok=True)
        self.backend_log = open(self.work / "backend.log", "wb")
        self.backend = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "haproxy" / "backend.py"), "--port", "0",
             "--port-file", str(pf), "--max-seconds", "7200"],
            stdout=self.backend_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        hap.wait_for(pf.exists, 15, what="the backend's port file")
        self.backend_port = int(pf.read_text())

    def stop_backend(self):
        if self.backend:
            hap.stop_process(self.backend)
            self.backend_log.close()

    def start_proxy(self, d: Path, upstream: str, listen: str, case: Case) -> tuple[subprocess.Popen, str]:
        args = [sys.executable, str(HERE / "impair.py"), "--listen", listen, "--upstream", upstream,
                "--seed", str(self.seed), "--stats", str(d / "proxy-stats.json"),
                "--max-seconds", str(int(case.timeout * max(1, case.runs // max(1, case.parallel)) + 60)),
                "--log", str(d / "proxy.log"), *case.proxy_opts]
        p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=open(d / "proxy.err", "wb"),
                             stdin=subprocess.DEVNULL, text=True)
        line = p.stdout.readline().strip()
        if not line.startswith("listening "):
            hap.stop_process(p)
            raise RuntimeError(f"impair.py did not start: {line!r} {(d / 'proxy.err').read_text()[-500:]}")
        return p, line.split(" ", 1)[1]

    def run_client(self, client: Client, d: Path, base: str, files: list[str], opts: list[str],
                   timeout: float, tag: str, ca: Path) -> tuple[int, str, str]:
        out = d / f"out-{tag}"
        out.mkdir(parents=True, exist_ok=True)
        urls = [f"{base}/f/{f}" for f in files]
        argv = [*client.argv, "--out", str(out), "--ca", str(ca), "--sni", "localhost",
                "--timeout", str(int(timeout)), *opts, *urls]
        t0 = time.monotonic()
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 15,
                               stdin=subprocess.DEVNULL)
            rc, so, se = p.returncode, p.stdout, p.stderr
        except subprocess.TimeoutExpired as e:
            rc = 124
            so = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            se = (e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")) \
                + f"\nthe client hung: killed {timeout + 15:.0f}s after its start"
        (d / f"client-{tag}.out").write_text(so)
        (d / f"client-{tag}.err").write_text(se)
        self.run_seconds.append(time.monotonic() - t0)
        return rc, so, se

    def verify_files(self, d: Path, tag: str, files: list[str]) -> str | None:
        out = d / f"out-{tag}"
        for name in files:
            f = out / name
            if not f.exists():
                return f"{name} was not saved"
            want = backend.file_body(name)
            got = f.read_bytes()
            if got != want:
                return f"{name}: {len(got)} bytes saved, {len(want)} expected, contents differ"
        return None

    def cell(self, case: Case, client: Client) -> Cell:
        t0 = time.monotonic()
        why = case.unsupported.get(self.binary.flavour)
        if why:
            return Cell(case.name, client.name, "unsupported", why)
        if not case.files:
            return Cell(case.name, client.name, "fail", "the case has nothing to fetch (a runner bug)")
        missing = client.available()
        if missing:
            return Cell(case.name, client.name, "fail", f"client not available: {missing}")
        d = self.work / f"{case.name}-{client.name}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        self.run_seconds = []
        crt, ca = (self.crt, self.ca)
        if case.large_chain:
            crt, ca = large_chain(self.certs)
        if os.environ.get("INTEROP_QLOG"):
            (d / "haproxy" / "qlog").mkdir(parents=True)
        h = MatrixHAProxy(self.binary, d / "haproxy", self.backend_port, case, crt)
        proxy = None
        try:
            h.start()
            host = "[::1]" if case.ipv6 else "127.0.0.1"
            proxy, addr = self.start_proxy(d, f"{host}:{h.port}", f"{host}:0", case)
            base = f"https://{addr}"
            runs = []
            if case.runs == 1:
                groups = [case.files]
            else:
                per = len(case.files) // case.runs
                groups = [case.files[i * per:(i + 1) * per] for i in range(case.runs)]
            # Runs that have not started yet are cancelled once one fails:
            # the cell has failed, and a server that never answers would
            # otherwise cost every run its whole timeout.
            failed = threading.Event()

            def one(i, g):
                if failed.is_set():
                    return None
                r = self.run_client(client, d, base, g, case.client_opts, case.timeout, str(i), ca)
                if r[0] != 0:
                    failed.set()
                return r

            with ThreadPoolExecutor(max_workers=case.parallel) as ex:
                futs = [ex.submit(one, i, g) for i, g in enumerate(groups)]
                done = [f.result() for f in futs]
            runs = [r for r in done if r is not None]
            groups = [g for g, r in zip(groups, done) if r is not None]
            elapsed = time.monotonic() - t0
            proxy.send_signal(signal.SIGTERM)
            proxy.wait(10)
            stats = json.loads((d / "proxy-stats.json").read_text())
            alive = h.proc.poll() is None
            rc_stop = h.stop(15) if alive else h.proc.returncode
            log = h.log_lines()
            kv = {}
            for i, (rc, so, se) in enumerate(runs):
                kv.update(parse_kv(so))
                if rc == 127:
                    return Cell(case.name, client.name, "unsupported",
                                last_line(se).removeprefix("unsupported: "), seconds=elapsed)
            if not alive:
                return Cell(case.name, client.name, "fail",
                            f"HAProxy died (exit {h.proc.returncode}): {last_line(h.stderr())}",
                            seconds=elapsed)
            bad = [(i, rc, se) for i, (rc, so, se) in enumerate(runs) if rc != 0]
            if bad:
                i, rc, se = bad[0]
                skipped = case.runs - len(runs)
                more = (f" ({len(bad)} of {len(runs)} runs"
                        + (f"; {skipped} not started after the failure" if skipped else "") + ")"
                        if case.runs > 1 else "")
                return Cell(case.name, client.name, "fail",
                            f"client exit {rc}{more}: {last_line(se)[:200]}", seconds=elapsed)
            for i, g in enumerate(groups):
                why = self.verify_files(d, str(i), g)
                if why:
                    return Cell(case.name, client.name, "fail", why, seconds=elapsed)
            ok = [l for l in log if l["st"] == "200" and l["hv"] == "HTTP/3.0" and l["u"].startswith("/f/")]
            if len(ok) < len(case.files):
                return Cell(case.name, client.name, "fail",
                            f"HAProxy logged {len(ok)} HTTP/3.0 200 responses for {len(case.files)} files",
                            seconds=elapsed)
            if rc_stop not in (0, None):
                return Cell(case.name, client.name, "fail", f"HAProxy exited {rc_stop} on soft stop",
                            seconds=elapsed)
            r = CellRun(stats, kv, elapsed)
            why = case.check(r)
            if len(self.run_seconds) > 1:
                slow = sorted(self.run_seconds)
                r.detail += (f"; {len(slow)} connections, median {slow[len(slow) // 2]:.1f} s, "
                             f"slowest {slow[-1]:.1f} s")
            if why:
                return Cell(case.name, client.name, "fail", why, r.detail, seconds=elapsed)
            return Cell(case.name, client.name, "pass", "", r.detail, seconds=elapsed)
        except Exception as e:  # noqa: BLE001 - a broken cell must not stop the matrix
            return Cell(case.name, client.name, "fail", f"runner error: {type(e).__name__}: {e}"[:300],
                        seconds=time.monotonic() - t0)
        finally:
            if proxy is not None and proxy.poll() is None:
                hap.stop_process(proxy)
            h.kill()


# ---- output ---------------------------------------------------------------------

MARK = {"pass": "pass", "fail": "FAIL", "unsupported": "unsupported"}


def print_matrix(cells: list[Cell], cases: list[str], clients: list[str], out=sys.stdout):
    by = {(c.case, c.client): c for c in cells}
    w = max(len(c) for c in cases) + 2
    print("case".ljust(w) + "".join(c.ljust(13) for c in clients), file=out)
    for case in cases:
        row = case.ljust(w)
        for cl in clients:
            c = by.get((case, cl))
            row += (MARK[c.verdict] if c else "-").ljust(13)
        print(row, file=out)
    notes = [c for c in cells if c.verdict != "pass"]
    if notes:
        print("", file=out)
        for c in notes:
            print(f"  {c.case} / {c.client}: {c.verdict}: {c.reason}", file=out)


def describe_server(binary: hap.Binary) -> str:
    if binary.flavour == "rust":
        return f"HAProxy {binary.version} with haquic {binary.haquic_version or '?'} (USE_RUST_QUIC=1)"
    return f"stock HAProxy {binary.version} (USE_QUIC=1 USE_QUIC_OPENSSL_COMPAT=1, limited-quic)"


def client_versions(work: Path, cells: list[Cell]) -> dict[str, str]:
    out = {}
    for c in cells:
        if c.client in out:
            continue
        for f in sorted((work / f"{c.case}-{c.client}").glob("client-*.out")):
            v = parse_kv(f.read_text()).get("version")
            if v:
                out[c.client] = v
                break
    return out


def write_doc(doc: Path, results: dict[str, dict]):
    """Rewrites the matrix section of doc from the JSON results of both
    servers (a server not run yet shows as `not run`)."""
    flavours = [f for f in ("rust", "stock") if f in results]
    label = {"rust": "haquic", "stock": "stock"}
    cases = [c.name for c in CASES]
    clients = list(CLIENTS)
    lines = [BEGIN, "", "## The interop matrix: HAProxy 3.0.11, haquic against stock", ""]
    lines.append("Commands: `make interop` (haquic) and `make interop SERVER=stock`. "
                 "Each cell is a fresh HAProxy, a fresh impairment proxy "
                 "(`tests/interop/matrix/impair.py`) and the client; see "
                 "`tests/interop/matrix/README.md` for what a pass means.")
    lines.append("")
    for f in flavours:
        r = results[f]
        lines.append(f"- **{label[f]}**: {r['server']}; run {r['date']} on commit {r['commit']}, seed {r['seed']}, "
                     f"{r['summary']}, {r['minutes']:.1f} min.")
    vers = {}
    for f in flavours:
        vers.update(results[f].get("client_versions", {}))
    if vers:
        lines.append("- Clients: " + "; ".join(f"{k} ({v})" for k, v in vers.items()) + ".")
    lines.append("")
    head = "| case | " + " | ".join(f"{cl}: {label[f]}" for cl in clients for f in flavours) + " |"
    lines += [head, "|---" * (1 + len(clients) * len(flavours)) + "|"]
    cellmap = {(f, c["case"], c["client"]): c for f in flavours for c in results[f]["cells"]}
    for case in cases:
        row = [f"`{case}`"]
        for cl in clients:
            for f in flavours:
                c = cellmap.get((f, case, cl))
                row.append({"pass": "pass", "fail": "**fail**", "unsupported": "unsupported"}[c["verdict"]]
                           if c else "not run")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "What each case checks:", ""]
    for c in CASES:
        lines.append(f"- `{c.name}`: {c.what}.")
    for f in flavours:
        notes = [c for c in results[f]["cells"] if c["verdict"] != "pass"]
        if notes:
            lines += ["", f"Cells that are not a pass ({label[f]}):", ""]
            for c in notes:
                lines.append(f"- `{c['case']}` / {c['client']}: {c['verdict']}: {c['reason']}")
        measured = [c for c in results[f]["cells"] if c["verdict"] == "pass" and c.get("detail")]
        if measured:
            lines += ["", f"Measured on the wire ({label[f]}):", ""]
            for c in measured:
                lines.append(f"- `{c['case']}` / {c['client']}: {c['detail']}")
    lines += ["", "![interop matrix](docs/interop/matrix.png)", "", END]
    text = doc.read_text() if doc.exists() else "# Interop\n"
    block = "\n".join(lines)
    if BEGIN in text and END in text:
        pre, rest = text.split(BEGIN, 1)
        post = rest.split(END, 1)[1]
        text = pre + block + post
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(text)


def write_png(png: Path, results: dict[str, dict]):
    """One coloured grid per server: green pass, red fail, grey unsupported."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    flavours = [f for f in ("rust", "stock") if f in results]
    cases = [c.name for c in CASES]
    clients = list(CLIENTS)
    fig, axes = plt.subplots(1, len(flavours), figsize=(4.2 * len(flavours), 8), squeeze=False)
    val = {"pass": 0, "fail": 1, "unsupported": 2, None: 3}
    cmap = ListedColormap(["#3a9d5d", "#d64541", "#b8b8b8", "#ffffff"])
    for ax, f in zip(axes[0], flavours):
        cm = {(c["case"], c["client"]): c["verdict"] for c in results[f]["cells"]}
        grid = [[val[cm.get((case, cl))] for cl in clients] for case in cases]
        ax.imshow(grid, cmap=cmap, vmin=0, vmax=3, aspect="auto")
        ax.set_xticks(range(len(clients)), clients, rotation=30)
        ax.set_yticks(range(len(cases)), cases)
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                ax.text(j, i, ["pass", "fail", "unsup.", "not run"][v], ha="center", va="center",
                        fontsize=7, color="white" if v in (0, 1) else "black")
        ax.set_title({"rust": "haquic", "stock": "stock 3.0.11"}[f])
    fig.suptitle("Interop matrix: HAProxy 3.0.11 as the server")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)


def git_commit() -> str:
    try:
        h = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                           text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (h or "unknown") + ("+changes" if dirty else "")
    except OSError:
        return "unknown"


# ---- main -----------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", choices=("haquic", "stock"), default="haquic",
                    help="haquic: build/haproxy/haproxy (USE_RUST_QUIC=1); stock: build/haproxy-stock/haproxy")
    ap.add_argument("--haproxy", help="the HAProxy binary (default from --server)")
    ap.add_argument("--cases", help="comma-separated case names (default: all)")
    ap.add_argument("--clients", help="comma-separated client names (default: all)")
    ap.add_argument("--quick", action="store_true", help=f"cases {','.join(QUICK)}, clients aioquic,pycurl")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--doc", type=Path, help="write the matrix into this Markdown file")
    ap.add_argument("--png", type=Path, help="write the matrix chart here")
    ap.add_argument("--allow-fail", action="store_true", help="exit 0 even if cells fail")
    args = ap.parse_args(argv)

    flavour = "rust" if args.server == "haquic" else "stock"
    default_bin = BUILD / ("haproxy" if flavour == "rust" else "haproxy-stock") / "haproxy"
    binary = hap.detect(Path(args.haproxy) if args.haproxy else default_bin)
    if binary.flavour != flavour:
        print(f"run.py: {binary.path} is not the {args.server} flavour (its -vv says {binary.flavour})",
              file=sys.stderr)
        return 2
    case_names = [c.name for c in CASES]
    cases = QUICK if args.quick else (args.cases.split(",") if args.cases else case_names)
    clients = ["aioquic", "pycurl"] if args.quick else (args.clients.split(",") if args.clients else list(CLIENTS))
    for c in cases:
        if c not in case_names:
            ap.error(f"unknown case {c!r} (cases: {', '.join(case_names)})")
    for c in clients:
        if c not in CLIENTS:
            ap.error(f"unknown client {c!r} (clients: {', '.join(CLIENTS)})")

    work = OUT / args.server
    shutil.rmtree(work, ignore_errors=True)
    m = Matrix(binary, args.seed, work)
    print(f"interop matrix: {describe_server(binary)}; {len(cases)} cases x {len(clients)} clients, "
          f"seed {args.seed}; logs in {work}", file=sys.stderr)
    t0 = time.monotonic()
    cells: list[Cell] = []
    m.start_backend()
    try:
        by_name = {c.name: c for c in CASES}
        total = len(cases) * len(clients)
        for case in cases:
            for cl in clients:
                c = m.cell(by_name[case], CLIENTS[cl])
                cells.append(c)
                extra = f": {c.reason}" if c.reason else (f" ({c.detail})" if c.detail else "")
                print(f"[{len(cells)}/{total}] {case} / {cl}: {c.verdict} in {c.seconds:.1f}s{extra}",
                      file=sys.stderr, flush=True)
    finally:
        m.stop_backend()
        hap.kill_all()
    minutes = (time.monotonic() - t0) / 60
    print_matrix(cells, cases, clients)
    passed = sum(c.verdict == "pass" for c in cells)
    failed = sum(c.verdict == "fail" for c in cells)
    unsup = sum(c.verdict == "unsupported" for c in cells)
    summary = f"{passed} passed, {failed} failed, {unsup} unsupported"
    res = {"server": describe_server(binary), "flavour": binary.flavour, "seed": args.seed,
           "commit": git_commit(),
           "date": time.strftime("%Y-%m-%d"), "minutes": minutes, "summary": summary,
           "cases": cases, "clients": clients, "client_versions": client_versions(work, cells),
           "cells": [c.__dict__ for c in cells]}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"matrix-{args.server}.json").write_text(json.dumps(res, indent=1) + "\n")
    if args.doc:
        DOC_RESULTS.mkdir(parents=True, exist_ok=True)
        (DOC_RESULTS / f"matrix-{args.server}.json").write_text(json.dumps(res, indent=1) + "\n")
    if args.doc or args.png:
        results = {}
        for f, name in (("rust", "haquic"), ("stock", "stock")):
            p = DOC_RESULTS / f"matrix-{name}.json"
            if p.exists():
                results[f] = json.loads(p.read_text())
        if args.png:
            write_png(args.png, results)
        if args.doc:
            write_doc(args.doc, results)
            print(f"wrote the matrix into {args.doc}", file=sys.stderr)
    print(f"{passed} passed, {failed} failed ({unsup} unsupported) in {minutes:.1f} min")
    return 1 if failed and not args.allow_fail else 0


if __name__ == "__main__":
    sys.exit(main())
