"""Drives HAProxy for the end-to-end tests: the binary and its flavour, a
configuration written from a template into a scratch directory, processes
(start, reload with -sf, soft stop, kill), the stats socket, and the log.

Two flavours of binary are supported, told apart by `haproxy -vv`:

  stock   USE_QUIC=1 (native QUIC, OpenSSL compatibility layer): the
          configuration needs `limited-quic` in `global`
  rust    USE_RUST_QUIC=1 (QUIC and HTTP/3 from haquic): `+RUST_QUIC` in the
          feature list; `limited-quic` is not added

Everything is bounded: every wait has a timeout, and every process started
here is killed by `kill_all()` (the fixtures call it whatever happens).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
HAPROXY_BIN = Path(os.environ.get("HAPROXY_BIN", REPO / "build" / "haproxy" / "haproxy")).absolute()
FIXTURES = Path(os.environ.get("HAQUIC_FIXTURES", REPO / "build" / "c-tests" / "fixtures")).absolute()
CA_FILE = FIXTURES / "ca.crt"
COMBINED_PEM = FIXTURES / "combined.pem"

# One line per request in the HAProxy log, as key=value fields. %HU is the
# URI (path and query string): the tests tag their requests with a query.
LOG_FORMAT = "hap ci=%ci hv=%HV st=%ST b=%B m=%HM u=%HU ts=%tsc fe=%ft"
DROPPED_RE = re.compile(r"^(\d+) events? dropped", re.M)
LOG_RE = re.compile(r"^hap ci=(?P<ci>\S+) hv=(?P<hv>\S+) st=(?P<st>\S+) b=(?P<b>\S+) "
                    r"m=(?P<m>\S+) u=(?P<u>\S+) ts=(?P<ts>\S+) fe=(?P<fe>\S+)$")


# ---- the binary ---------------------------------------------------------------

@dataclass
class Binary:
    path: Path
    vv: str
    flavour: str            # "rust" or "stock"
    version: str            # HAProxy's version string
    haquic_version: str | None = None

    @property
    def needs_limited_quic(self) -> bool:
        return self.flavour == "stock"


def feature_list(vv: str) -> set[str]:
    """The +FEATURE names of `haproxy -vv`."""
    m = re.search(r"^Feature list : (.*)$", vv, re.M)
    return {w[1:] for w in (m.group(1).split() if m else []) if w.startswith("+")}


def detect(path: Path = HAPROXY_BIN) -> Binary:
    """Runs `haproxy -vv` and tells the flavour. Fails (not skips) when the
    binary is missing or has no QUIC at all."""
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"HAProxy binary {path} does not exist: build it (make haproxy) or point "
            f"HAPROXY_BIN at one (e.g. build/haproxy-stock/haproxy)")
    vv = subprocess.run([str(path), "-vv"], capture_output=True, text=True, timeout=20).stdout
    feats = feature_list(vv)
    m = re.search(r"^HAProxy version (\S+)", vv, re.M)
    version = m.group(1) if m else "?"
    hm = re.search(r"haquic[^\n]*?(\d+\.\d+\.\d+\S*)", vv, re.I)
    if "RUST_QUIC" in feats or "USE_RUST_QUIC=1" in vv:
        flavour = "rust"
    elif "QUIC" in feats or "USE_QUIC=1" in vv:
        flavour = "stock"
    else:
        raise RuntimeError(f"{path} has no QUIC support (neither +QUIC nor +RUST_QUIC):\n{vv}")
    return Binary(Path(path), vv, flavour, version, hm.group(1) if hm else None)


# The counters each flavour shows in `show stat` (frontend row). The rust
# flavour's names are the contract with the USE_RUST_QUIC patches; the stock
# names are HAProxy 3.0's own (h3req and h3sess are core counters; the h3_*
# error counters of the native "h3" stats module count the error codes of
# CONNECTION_CLOSE frames *received*, not the stream errors it sends).
COUNTERS = {
    "rust": {
        "requests": "h3_requests",
        "rejected": "h3_requests_rejected",
        "message_errors": "h3_message_errors",
        "conns": "quic_conns_accepted",
        "handshakes": "quic_handshakes",
    },
    "stock": {
        "requests": "h3req",
        "rejected": "h3_request_rejected",
        "message_errors": "h3_message_error",
        "conns": "h3sess",
    },
}


def counter(row: dict[str, str], name: str) -> int:
    """A numeric column of a `show stat` row; a missing column is an error
    (KeyError naming it), an empty one is 0."""
    if name not in row:
        raise KeyError(f"`show stat` has no column {name!r} (columns: "
                       f"{', '.join(k for k in row if k.startswith(('h3', 'quic')))})")
    v = row[name]
    return int(v) if v else 0


# ---- ports --------------------------------------------------------------------

def free_port(kind: str = "udp", also_tcp: bool = True) -> int:
    """A port free on 127.0.0.1 for UDP (and TCP too when also_tcp), found by
    binding port 0. Racy by nature, but the range is large."""
    for _ in range(50):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        other = None
        try:
            if also_tcp or kind != "udp":
                other = socket.socket(socket.AF_INET,
                                      socket.SOCK_STREAM if kind == "udp" else socket.SOCK_DGRAM)
                other.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
            if other is not None:
                other.close()
    raise RuntimeError("no free port found")


# ---- configuration ------------------------------------------------------------

CONFIG_TEMPLATE = """\
# written by tests/haproxy/hap.py
global
{limited_quic}    nbthread {nbthread}
    stats socket {sock} level admin expose-fd listeners
    log stdout format raw local0
    hard-stop-after {hard_stop_after}
    tune.quic.frontend.max-streams-bidi {max_streams}
{extra_global}
defaults
    mode http
    log global
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s
    timeout client-fin 5s

frontend fe
    bind quic4@127.0.0.1:{port} ssl crt {crt} alpn h3{bind_extra}
    bind 127.0.0.1:{tcp_port}
    log-format "{log_format}"
    http-request return status 200 content-type text/plain string "hello" if {{ path /return }}
    http-request deny if {{ path /deny }}
    http-request redirect location /moved if {{ path /redirect }}
    acl magic_hdr req.hdr(x-test) -m str magic
    acl local_src src 127.0.0.0/8
    acl far_src src 10.0.0.0/8
    http-request return status 200 content-type text/plain string "header acl matched" if {{ path /acl/header }} magic_hdr
    http-request return status 403 content-type text/plain string "header acl missed" if {{ path /acl/header }} !magic_hdr
    http-request return status 200 content-type text/plain string "src acl matched" if {{ path /acl/src }} local_src
    http-request return status 200 content-type text/plain string "far src" if {{ path /acl/far }} far_src
    http-request set-header x-src-local yes if local_src
    use_backend be_gzip if {{ path_beg /text/ }}
{extra_frontend}    default_backend be

backend be
    server s1 127.0.0.1:{backend_port}

backend be_gzip
    compression algo gzip
    compression type text/plain
    server s1 127.0.0.1:{backend_port}
{extra}"""


@dataclass
class Options:
    nbthread: int = 2
    bind_extra: str = ""
    extra_global: str = ""
    extra_frontend: str = ""
    extra: str = ""
    hard_stop_after: str = "30s"
    max_streams: int = 100


# ---- the process(es) ----------------------------------------------------------

try:
    import ctypes
    _prctl = ctypes.CDLL(None).prctl     # resolved here, not in the child
except (OSError, AttributeError):
    _prctl = None


def stop_process(p: subprocess.Popen, timeout: float = 5.0) -> None:
    """Terminates a helper process (a backend, a load tool), killing it if
    it does not exit within `timeout` seconds, and reaps it."""
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout)


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL if the test process dies (even by
    SIGKILL), so that no HAProxy outlives an interrupted run. (Processes
    are started from the main thread, whose exit is what the kernel
    watches.)"""
    if _prctl is not None:
        _prctl(1, int(signal.SIGKILL))   # PR_SET_PDEATHSIG


_ALL: list["HAProxy"] = []


def kill_all() -> None:
    """Kills every HAProxy process this module started and has not reaped."""
    for h in list(_ALL):
        h.kill()


class HAProxy:
    """One HAProxy configuration and the processes that run it: `procs[-1]`
    is the current one; reloads add to the list, and older ones drain."""

    def __init__(self, binary: Binary, workdir: Path, backend_port: int, opts: Options | None = None):
        self.binary = binary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.opts = opts or Options()
        self.backend_port = backend_port
        self.port = free_port("udp")
        self.tcp_port = free_port("tcp")
        self.sock = self.workdir / "stats.sock"
        self.cfg = self.workdir / "haproxy.cfg"
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.errs: list[Path] = []
        self._files = []
        self._dropped: dict[int, int] = {}
        self.write_config()
        _ALL.append(self)

    # -- configuration --

    def render(self, **over) -> str:
        o = self.opts
        lq = "    limited-quic\n" if self.binary.needs_limited_quic else ""
        return CONFIG_TEMPLATE.format(
            limited_quic=lq, nbthread=o.nbthread, sock=self.sock,
            hard_stop_after=o.hard_stop_after, max_streams=o.max_streams,
            extra_global="".join(f"    {l}\n" for l in o.extra_global.splitlines() if l.strip()),
            port=self.port, tcp_port=self.tcp_port, crt=COMBINED_PEM,
            bind_extra=(" " + o.bind_extra) if o.bind_extra else "",
            log_format=LOG_FORMAT, backend_port=self.backend_port,
            extra_frontend="".join(f"    {l}\n" for l in o.extra_frontend.splitlines() if l.strip()),
            extra=o.extra, **over)

    def write_config(self) -> None:
        self.cfg.write_text(self.render())

    # -- processes --

    @property
    def proc(self) -> subprocess.Popen:
        return self.procs[-1]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _spawn(self, extra_args: list[str]) -> subprocess.Popen:
        n = len(self.procs)
        log = self.workdir / f"haproxy-{n}.log"
        err = self.workdir / f"haproxy-{n}.err"
        fo, fe = open(log, "wb"), open(err, "wb")
        self._files += [fo, fe]
        p = subprocess.Popen([str(self.binary.path), "-db", "-f", str(self.cfg), *extra_args],
                             stdout=fo, stderr=fe, stdin=subprocess.DEVNULL, cwd=self.workdir,
                             preexec_fn=_die_with_parent)
        self.procs.append(p)
        self.logs.append(log)
        self.errs.append(err)
        return p

    def _wait_ready(self, p: subprocess.Popen, timeout: float) -> None:
        """Ready when the stats socket answers from this very process (its
        listeners are bound by then)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise RuntimeError(f"haproxy exited with {p.returncode} while starting:\n{self.stderr()}")
            try:
                info = self.cli("show info", timeout=2)
                m = re.search(r"^Pid: (\d+)$", info, re.M)
                if m and int(m.group(1)) == p.pid:
                    return
                last = info[:200]
            except OSError as e:
                last = str(e)
            time.sleep(0.05)
        raise TimeoutError(f"haproxy pid {p.pid} not ready in {timeout}s ({last}):\n{self.stderr()}")

    def start(self, timeout: float = 15.0) -> "HAProxy":
        assert not self.procs or self.proc.poll() is not None, "already running"
        p = self._spawn([])
        self._wait_ready(p, timeout)
        return self

    def reload(self, timeout: float = 15.0, wait_old: float | None = 20.0,
               transfer: bool = False) -> int:
        """Starts a new process on the same configuration with `-sf <old pid>`:
        it binds its own listeners (SO_REUSEPORT), then tells the old one to
        finish its work and leave. Returns the old process's exit code when
        wait_old is set (None when it is not waited for)."""
        old = self.proc
        assert old.poll() is None, "reload of a stopped HAProxy"
        self._read_dropped()        # the last chance to ask the old process
        args = ["-x", str(self.sock)] if transfer else []
        p = self._spawn(args + ["-sf", str(old.pid)])
        self._wait_ready(p, timeout)
        if wait_old is None:
            return None
        return self.wait_exit(old, wait_old)

    def soft_stop(self, p: subprocess.Popen | None = None) -> None:
        """SIGUSR1: stop listening, finish what is in flight, then exit."""
        (p or self.proc).send_signal(signal.SIGUSR1)

    def wait_exit(self, p: subprocess.Popen | None = None, timeout: float = 20.0) -> int:
        """Waits for a process to exit; raises TimeoutError (after killing it)
        if it does not."""
        p = p or self.proc
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            # What kept it: its UDP sockets (one per connection it still
            # holds), and the end of its own stderr and log.
            sockets = subprocess.run(["ss", "-uanpH"], capture_output=True, text=True).stdout
            held = [l for l in sockets.splitlines() if f"pid={p.pid}," in l]
            n = self.procs.index(p) if p in self.procs else -1
            tail = ""
            for f in (self.errs[n], self.logs[n]) if n >= 0 else ():
                try:
                    tail += f"--- {f.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-15:]) + "\n"
                except OSError:
                    pass
            p.kill()
            p.wait(5)
            raise TimeoutError(f"haproxy pid {p.pid} did not exit within {timeout}s; "
                               f"its {len(held)} UDP sockets:\n" + "\n".join(held[:20]) + "\n" + tail)

    def stop(self, timeout: float = 20.0) -> int:
        """Soft stop of the current process and wait; kills it if it hangs."""
        if not self.procs or self.proc.poll() is not None:
            return self.proc.returncode if self.procs else 0
        self.soft_stop()
        return self.wait_exit(self.proc, timeout)

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        for f in self._files:
            if not f.closed:
                f.close()
        if self in _ALL:
            _ALL.remove(self)

    def alive(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]

    # -- the stats socket --

    def cli(self, cmd: str, timeout: float = 5.0) -> str:
        """One command on the stats socket (non-interactive: the answer ends
        when HAProxy closes the connection)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.sock))
            s.sendall(cmd.encode() + b"\n")
            chunks = []
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                d = s.recv(65536)
                if not d:
                    break
                chunks.append(d)
            else:
                raise TimeoutError(f"`{cmd}` did not finish in {timeout}s")
        return b"".join(chunks).decode(errors="replace")

    def stats(self) -> dict[tuple[str, str], dict[str, str]]:
        """`show stat` as {(pxname, svname): {column: value}}."""
        return parse_show_stat(self.cli("show stat"))

    def frontend_stats(self, name: str = "fe") -> dict[str, str]:
        return self.stats()[(name, "FRONTEND")]

    def counters(self, *names: str) -> dict[str, int]:
        """Frontend counters by their flavour-neutral names (COUNTERS) or by
        column name."""
        row = self.frontend_stats()
        names_map = COUNTERS[self.binary.flavour]
        return {n: counter(row, names_map.get(n, n)) for n in names}

    def count_log(self, pred, expected: int, timeout: float = 10.0) -> list[dict]:
        """Waits (bounded) until `expected` log lines satisfy pred, and
        returns them (more than expected is returned too, for the caller to
        assert on)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [l for l in self.log_lines() if pred(l)]
            if len(lines) >= expected or time.monotonic() >= deadline:
                return lines
            time.sleep(0.05)

    def h3_log(self, tag: str, expected: int, timeout: float = 10.0) -> list[dict]:
        """The HTTP/3.0 log lines of the requests tagged `tag` (t=<tag> in
        the query string)."""
        return self.count_log(lambda l: l["hv"] == "HTTP/3.0" and f"t={tag}" in l["u"],
                              expected, timeout)

    # -- output --

    def log_lines(self) -> list[dict]:
        """Every request line logged by every process of this instance."""
        out = []
        for path in self.logs:
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            for line in text.splitlines():
                m = LOG_RE.match(line.strip())
                if m:
                    out.append(m.groupdict())
        return out

    def _read_dropped(self) -> None:
        """Records the current process's DroppedLogs (`show info`)."""
        if not self.procs or self.proc.poll() is not None:
            return
        try:
            info = self.cli("show info", timeout=3)
        except OSError:
            return
        pid = re.search(r"^Pid: (\d+)$", info, re.M)
        dropped = re.search(r"^DroppedLogs: (\d+)$", info, re.M)
        if pid and dropped:
            self._dropped[int(pid.group(1))] = int(dropped.group(1))

    def dropped_logs(self) -> int:
        """Log lines HAProxy dropped, by its own counts. `log stdout` writes
        to a shared fd and prefers dropping a line to blocking: when threads
        collide on it (more threads than cores, a writer preempted) a line
        is given up after 200 attempts and counted in DroppedLogs (`show
        info`; src/fd.c fd_write_frag_line(), src/log.c). Ring sinks write
        "N event(s) dropped" lines instead; both are counted. DroppedLogs
        is read from the live process now and from each old process just
        before its reload (what it drops while draining is not seen)."""
        self._read_dropped()
        total = sum(self._dropped.values())
        for path in self.logs:
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            total += sum(int(m.group(1)) for m in DROPPED_RE.finditer(text))
        return total

    def stderr(self) -> str:
        parts = []
        for path in self.errs:
            try:
                parts.append(f"--- {path.name}\n" + path.read_text(errors="replace")[-4000:])
            except OSError:
                pass
        return "\n".join(parts)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"https://{host}:{self.port}{path}"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        try:
            if self.procs and self.proc.poll() is None:
                self.stop(timeout=10)
        except TimeoutError:
            pass
        finally:
            self.kill()


def parse_show_stat(text: str) -> dict[tuple[str, str], dict[str, str]]:
    lines = [l for l in text.splitlines() if l.strip()]
    if not lines or not lines[0].startswith("#"):
        raise ValueError(f"not a `show stat` answer: {text[:200]!r}")
    header = lines[0].lstrip("# ").split(",")
    out = {}
    for line in lines[1:]:
        row = dict(zip(header, line.split(",")))
        out[(row["pxname"], row["svname"])] = row
    return out


def parse_show_quic_kv(text: str) -> dict[str, int]:
    """`key: value` lines (the patched binary's `show quic` summary), values
    summed when a key repeats (one block per worker)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*:\s*(\d+)\s*$", line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0) + int(m.group(2))
    return out


def check_config(binary: Binary, text: str, workdir: Path) -> subprocess.CompletedProcess:
    """`haproxy -c -f <cfg>` on a configuration text."""
    cfg = Path(workdir) / "check.cfg"
    cfg.write_text(text)
    return subprocess.run([str(binary.path), "-c", "-f", str(cfg)], capture_output=True,
                          text=True, timeout=30, cwd=workdir)


def wait_for(pred, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not met within {timeout}s")
        time.sleep(interval)
