"""What the interop matrix's Python clients share: the client contract's
arguments (tests/interop/matrix/README.md), where each body is saved, the
key=value lines on standard output, and the exit statuses.

    args = parse_args("aioquic", __doc__)      # args.targets: list[Target]
    report("version", "aioquic 1.7.2")
    unsupported("no API to start a key update")     # exit 127
    fail("GET /a: status 404")                      # exit 1
    finish(results)                                 # exit 0 or 1

Exit status: 0 when every URL answered 200 and was saved; 1 on a failure,
with a one-line reason as the last line of stderr; 127 when an option is not
supported, with `unsupported: <reason>` as the last line of stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import unquote, urlsplit

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_UNSUPPORTED = 127

DEFAULT_SNI = "localhost"
DEFAULT_TIMEOUT = 60.0


@dataclass
class Target:
    """One URL of the run and where its body goes."""
    url: str
    host: str          # as in the URL, without brackets for IPv6
    port: int
    path: str          # path and query, as sent (":path")
    authority: str     # host:port as in the URL (":authority")
    name: str          # the file name under --out
    out: str           # the full path of that file


@dataclass
class Result:
    """What became of one Target."""
    target: Target
    status: int = 0
    length: int = 0
    error: str | None = None     # None: answered and saved

    @property
    def ok(self) -> bool:
        return self.error is None and self.status == 200


def file_name(path: str) -> str:
    """The last component of a URL's path, as the file name under --out
    ("index.html" for a path ending in "/", as gtlsclient does)."""
    p = urlsplit(path).path if "://" in path else path.split("?", 1)[0]
    name = unquote(p.rsplit("/", 1)[-1])
    if name in ("", ".", ".."):
        name = "index.html"
    return name


def parse_target(url: str, out_dir: str) -> Target:
    u = urlsplit(url)
    if u.scheme != "https" or not u.hostname:
        raise ValueError(f"not an https://HOST:PORT/PATH URL: {url}")
    port = u.port or 443
    path = u.path or "/"
    if u.query:
        path += "?" + u.query
    name = file_name(u.path or "/")
    return Target(url=url, host=u.hostname, port=port, path=path, authority=u.netloc,
                  name=name, out=os.path.join(out_dir, name))


def parse_args(client: str, description: str | None = None, argv=None) -> argparse.Namespace:
    """The contract's arguments. Adds: targets (list of Target), host and
    port (the one server), deadline (time.monotonic() at which the run
    must be over), client (the name, for messages)."""
    p = argparse.ArgumentParser(prog=f"{client}_client.py", description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("urls", metavar="URL", nargs="+",
                   help="https://HOST:PORT/PATH, all on one server, requested concurrently")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="each response body is saved as DIR/<last path component>")
    p.add_argument("--ca", metavar="FILE", help="the CA the server's certificate chains to")
    p.add_argument("--sni", default=DEFAULT_SNI, metavar="NAME",
                   help=f"the server name to send (default {DEFAULT_SNI})")
    p.add_argument("--chacha20", action="store_true",
                   help="offer only TLS_CHACHA20_POLY1305_SHA256")
    p.add_argument("--resume", action="store_true",
                   help="two connections: the first fetches the first URL, the second "
                        "resumes its session and fetches the others")
    p.add_argument("--zerortt", action="store_true",
                   help="as --resume, with the second connection's requests in 0-RTT")
    p.add_argument("--key-update", action="store_true",
                   help="start a key update once the handshake is confirmed")
    p.add_argument("--v2", action="store_true",
                   help="start the connection in QUIC version 2 (RFC 9369)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECS",
                   help=f"the whole run's deadline (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--keylog", metavar="FILE", help="TLS secrets in NSS key log format")
    args = p.parse_args(argv)
    args.client = client
    # the work must be over a little before --timeout, so that closing the
    # connection and reporting still fit in it
    args.deadline = time.monotonic() + args.timeout - min(1.0, args.timeout / 4)
    try:
        args.targets = [parse_target(u, args.out) for u in args.urls]
    except ValueError as e:
        fail(str(e))
    servers = {(t.host, t.port) for t in args.targets}
    if len(servers) != 1:
        fail(f"the URLs name {len(servers)} servers; all must be on one")
    args.host, args.port = servers.pop()
    names: dict[str, str] = {}
    for t in args.targets:
        if t.name in names and names[t.name] != t.path:
            warn(f"{t.path} and {names[t.name]} are both saved as {t.name}")
        names[t.name] = t.path
    os.makedirs(args.out, exist_ok=True)
    return args


def split_for_resume(targets: list[Target]) -> tuple[list[Target], list[Target]]:
    """--resume / --zerortt: the first connection fetches the first URL, the
    second the others (or the first again when it is the only one)."""
    return targets[:1], (targets[1:] or targets[:1])


class Failure(Exception):
    """A run that cannot go on: main() turns it into fail(str(e))."""


def remaining(args) -> float:
    """Seconds left before the run's deadline (never below 0)."""
    return max(0.0, args.deadline - time.monotonic())


# ---- output ---------------------------------------------------------------

def report(key: str, value) -> None:
    """A key=value line on standard output, for the runner."""
    if isinstance(value, bool):
        value = int(value)
    print(f"{key}={value}", flush=True)


def warn(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fail(reason: str) -> NoReturn:
    """Exit 1 with `reason` (one line) as the last line of stderr."""
    sys.stdout.flush()
    print(" ".join(str(reason).split()) or "failed", file=sys.stderr, flush=True)
    sys.exit(EXIT_FAIL)


def unsupported(reason: str) -> NoReturn:
    sys.stdout.flush()
    print(f"unsupported: {reason}", file=sys.stderr, flush=True)
    sys.exit(EXIT_UNSUPPORTED)


def finish(results: list[Result], what: str = "") -> NoReturn:
    """Exit 0 when every result answered 200 and was saved, else 1 with the
    failures listed on stderr (at most 10) and a summary as the last line."""
    bad = [r for r in results if not r.ok]
    if not bad:
        sys.stdout.flush()
        sys.exit(EXIT_OK)
    for r in bad[:10]:
        warn(f"{r.target.path}: {describe(r)}")
    if len(bad) > 10:
        warn(f"... and {len(bad) - 10} more")
    first = bad[0]
    prefix = f"{what}: " if what else ""
    fail(f"{prefix}{len(bad)} of {len(results)} requests failed; first: "
         f"GET {first.target.path}: {describe(first)}")


def describe(r: Result) -> str:
    if r.error:
        return r.error
    if r.status != 200:
        return f"status {r.status}"
    return "ok"


# ---- saving ---------------------------------------------------------------

class Sink:
    """A response body written to its file as it arrives. The file is opened
    at the first byte (so that thousands of queued requests do not hold
    thousands of descriptors) and created empty by close() if none came."""

    def __init__(self, path: str):
        self.path = path
        self.length = 0
        self._f = None

    def write(self, data: bytes) -> int:
        if self._f is None:
            self._f = open(self.path, "wb")
        self._f.write(data)
        self.length += len(data)
        return len(data)

    def close(self) -> None:
        if self._f is None:
            self._f = open(self.path, "wb")
        self._f.close()

    def abort(self) -> None:
        """A failed transfer: close, leaving what came for diagnosis."""
        if self._f is not None:
            self._f.close()
