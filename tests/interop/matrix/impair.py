#!/usr/bin/env python3
"""impair.py: a seeded, deterministic UDP impairment proxy for QUIC on loopback.

    client --> [listen socket]  impair.py  [one upstream socket per flow] --> server

Usage::

    python impair.py --listen HOST:PORT --upstream HOST:PORT [options]

Addresses are numeric loopback addresses (``127.0.0.0/8``, ``::1`` written
``[::1]:PORT``; ``localhost`` means 127.0.0.1).  Anything else is refused with
exit status 2, as are bad probabilities, bad index specs and other bad input.
``--listen 127.0.0.1:0`` binds an ephemeral port.  As soon as the listen socket
is bound the proxy prints exactly one line ``listening HOST:PORT`` to stdout
(flushed) and runs until SIGTERM, SIGINT or ``--max-seconds``; it then writes
the statistics and exits 0.

General options:

  --seed N              random seed (default 1)
  --max-seconds S       hard bound on the lifetime (default 300)
  --stats FILE          JSON statistics, written atomically (tmp + rename)
                        every second while running and on exit
  --log FILE            one line per datagram:
                        ``TIME DIR CLIENT INDEX LENGTH TYPES ACTION [MODIFIERS]``
                        ACTION is forward, drop-loss, drop-index,
                        drop-blackhole, drop-queue or drop-stale; MODIFIERS
                        are corrupt@OFFSET^XOR, dup and reorder

Impairments (all off by default):

  --impair-dir both|c2s|s2c   directions the random impairments apply to
                        (drop-rate, reorder, duplicate, corrupt); c2s is
                        client to server.  Default both.
  --drop-rate P         random loss, 0 <= P <= 1
  --drop-burst N        at most N consecutive random drops per direction:
                        after N the next datagram is forced through
  --drop-c2s SPEC       drop by 0-based datagram index in that direction,
  --drop-s2c SPEC       counted over all flows; SPEC like ``1-5,9``
  --delay MS            fixed one-way delay, both directions
  --rate-mbit R         bandwidth limit per direction (serialisation of the
                        UDP payload, FIFO) with a tail-drop queue of
  --queue-packets N     datagrams (default 100)
  --reorder P           hold a datagram back and release it after the next
                        datagram of that direction (or after 5 ms)
  --duplicate P         send the datagram twice
  --corrupt P           XOR one byte at a random offset within the first
                        min(50, len) bytes with a random non-zero value
                        (Version Negotiation packets are spared: see below)
  --blackhole ON,OFF    from the first datagram seen: ON seconds of traffic,
                        then OFF seconds where both directions are dropped,
                        repeating
  --rebind port|addr    NAT rebinding of every flow's upstream socket: a new
                        ephemeral port (port) or a new source address cycling
                        through 127.0.0.2..127.0.0.9 (addr; IPv4 only)
  --rebind-first S      first rebinding S seconds after the flow appears
                        (default 1.0)
  --rebind-every S      then every S seconds (default 5.0)

Determinism: each direction has its own ``random.Random(f"{seed}:{dir}")``
and every datagram arriving in a direction consumes exactly six draws
(loss, reorder, duplicate, corrupt, corrupt offset, corrupt value) whatever
happens to it, so the decisions for datagram i of a direction depend only
on the seed and i.  Timing-based impairments (black hole, rate limit,
rebinding) depend on the clock, of course.

Order of the checks for one datagram: stale socket, black hole, drop by
index, random loss (with the burst bound), rate-limit queue; then
corruption, duplication, delay, reordering.  The drop counters are
disjoint: ``forwarded + dropped + dropped_blackhole + dropped_queue
(+ dropped_stale) == datagrams`` (``dropped`` is loss + drop by index; a send
that fails is moved from forwarded to dropped_queue).  A duplicated datagram
counts once in ``forwarded`` and once in ``duplicated``.

Flows and connections: a flow is one client address; it has its own upstream
socket, connected to the server.  QUIC long headers (RFC 9000 17.2, RFC 9369
version 2, version negotiation) are walked through coalesced packets using
only unprotected fields.  A connection is identified by the client's SCID;
server long-header packets are attributed by their DCID, short-header
datagrams to the flow's most recent connection.  A connection becomes
validated when the proxy delivers to the server a client Handshake packet or
an Initial with a non-empty token (packets hit by corruption do not count);
the bytes of the validating datagram are not counted as pre-validation bytes.

Statistics (``--stats``): per direction, datagrams, bytes and packet types
(coalesced packets separately), and long-header packets by version (hex),
are counted on arrival, before any
impairment; ``first_seen_s`` and ``duration_s`` are seconds since the proxy
started; ``server_handshake_bytes``, the 0-RTT and Retry counters and
``prevalidation_s2c_bytes`` are counted on arrival (stale datagrams
included); ``prevalidation_c2s_bytes`` counts what is actually delivered to
the server (each copy of a duplicate); ``amplification`` is
prevalidation_s2c_bytes / prevalidation_c2s_bytes, or null.  The rate
limit serialises the UDP payload only and a duplicate does not take link
time.  Rebinding times are per flow, from the flow's first datagram.

In-process use::

    p = Proxy("127.0.0.1:0", "127.0.0.1:4433", Config(seed=3, drop_rate=0.1))
    host, port = p.start()        # runs in a thread
    ...
    p.stats(); p.stop()
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import heapq
import ipaddress
import itertools
import json
import os
import random
import selectors
import signal
import socket
import sys
import threading
import time
from typing import Any, NamedTuple

QUIC_V2 = 0x6B3343CF
V1_TYPES = ("initial", "0rtt", "handshake", "retry")
V2_TYPES = ("retry", "initial", "0rtt", "handshake")
TYPE_KEYS = ("initial", "0rtt", "handshake", "retry", "vneg", "short")

SOCKBUF = 4 * 1024 * 1024
REORDER_HOLD_S = 0.005
STALE_CLOSE_S = 2.0
RECV_BATCH = 512


# --------------------------------------------------------------------------
# QUIC header parsing (unprotected fields only)

class Packet(NamedTuple):
    kind: str            # one of TYPE_KEYS
    offset: int          # offset of the packet in the datagram
    length: int          # bytes of this packet (coalesced packets separately)
    version: int | None  # None for short headers
    dcid: bytes
    scid: bytes
    token_len: int


def _varint(b: bytes, i: int) -> tuple[int, int]:
    first = b[i]
    n = 1 << (first >> 6)
    if i + n > len(b):
        raise IndexError("truncated varint")
    v = first & 0x3F
    for k in range(i + 1, i + n):
        v = (v << 8) | b[k]
    return v, i + n


def parse_datagram(data: bytes) -> list[Packet]:
    """Split a UDP payload into QUIC packets.

    Long headers are walked with their Length field; Retry, version
    negotiation and a short header end the datagram.  After a long-header
    packet, trailing bytes count as a short-header packet only when the
    fixed bit (0x40) is set (zero padding is not a packet).  A truncated
    header ends the parse; a packet whose Length overruns the datagram is
    reported truncated to the datagram's end.
    """
    pkts: list[Packet] = []
    n = len(data)
    i = 0
    while i < n:
        b0 = data[i]
        if not b0 & 0x80:
            if i == 0 or b0 & 0x40:
                pkts.append(Packet("short", i, n - i, None, b"", b"", 0))
            break
        try:
            version = int.from_bytes(data[i + 1:i + 5], "big")
            if i + 6 > n:
                break
            dl = data[i + 5]
            j = i + 6 + dl
            dcid = data[i + 6:j]
            sl = data[j]
            scid = data[j + 1:j + 1 + sl]
            j += 1 + sl
            if j > n:
                break
            if version == 0:
                pkts.append(Packet("vneg", i, n - i, 0, dcid, scid, 0))
                break
            t = (b0 >> 4) & 3
            kind = V2_TYPES[t] if version == QUIC_V2 else V1_TYPES[t]
            if kind == "retry":
                pkts.append(Packet("retry", i, n - i, version, dcid, scid, 0))
                break
            token_len = 0
            if kind == "initial":
                token_len, j = _varint(data, j)
                j += token_len
            length, j = _varint(data, j)
        except IndexError:
            break
        end = j + length
        if end >= n:
            pkts.append(Packet(kind, i, n - i, version, dcid, scid, token_len))
            break
        pkts.append(Packet(kind, i, end - i, version, dcid, scid, token_len))
        i = end
    return pkts


# --------------------------------------------------------------------------
# configuration and argument parsing

def parse_spec(spec: str) -> list[tuple[int, int]]:
    """``"1-5,9"`` -> ``[(1, 5), (9, 9)]``; raises ValueError."""
    ranges = []
    if not spec.strip():
        raise ValueError(f"empty index spec {spec!r}")
    for part in spec.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise ValueError(f"bad index spec {spec!r} (want e.g. 1-5,9)") from None
        if a < 0 or b < a:
            raise ValueError(f"bad index range {part!r} in {spec!r}")
        ranges.append((a, b))
    return ranges


def parse_addr(text: str | tuple, what: str = "address") -> tuple[str, int]:
    """``HOST:PORT`` / ``[V6]:PORT`` (or a (host, port) tuple) -> (host, port).

    Only numeric loopback addresses are accepted (``localhost`` = 127.0.0.1).
    """
    if isinstance(text, tuple):
        host, port = text[0], text[1]
    else:
        if text.startswith("["):
            host, sep, rest = text[1:].partition("]")
            if not sep or not rest.startswith(":"):
                raise ValueError(f"bad {what} {text!r} (want HOST:PORT or [V6]:PORT)")
            port_s = rest[1:]
        else:
            host, sep, port_s = text.rpartition(":")
            if not sep or ":" in host:
                raise ValueError(f"bad {what} {text!r} (want HOST:PORT or [V6]:PORT)")
        try:
            port = int(port_s)
        except ValueError:
            raise ValueError(f"bad port in {what} {text!r}") from None
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{what} {text!r}: host must be a numeric loopback address") from None
    if not ip.is_loopback:
        raise ValueError(f"{what} {text!r} is not a loopback address; "
                         f"impair.py only runs on loopback (127.0.0.0/8, ::1)")
    if not 0 <= port <= 65535:
        raise ValueError(f"bad port in {what} {text!r}")
    return str(ip), port


def fmt_addr(addr) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclasses.dataclass
class Config:
    seed: int = 1
    max_seconds: float = 300.0
    stats_path: str | None = None
    log_path: str | None = None
    impair_dir: str = "both"
    drop_rate: float = 0.0
    drop_burst: int | None = None
    drop_c2s: Any = ()          # SPEC string or list of (lo, hi)
    drop_s2c: Any = ()
    delay_ms: float = 0.0
    rate_mbit: float | None = None
    queue_packets: int = 100
    reorder: float = 0.0
    duplicate: float = 0.0
    corrupt: float = 0.0
    blackhole: Any = None       # "ON,OFF" or (on, off)
    rebind: str | None = None   # None, "port" or "addr"
    rebind_first: float = 1.0
    rebind_every: float = 5.0

    def validate(self) -> None:
        """Normalise and check; raises ValueError with a clear message."""
        for name in ("drop_rate", "reorder", "duplicate", "corrupt"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must be a probability in [0, 1], got {v!r}")
        if self.impair_dir not in ("both", "c2s", "s2c"):
            raise ValueError(f"--impair-dir must be both, c2s or s2c, got {self.impair_dir!r}")
        if self.drop_burst is not None and self.drop_burst < 1:
            raise ValueError(f"--drop-burst must be >= 1, got {self.drop_burst!r}")
        for name in ("drop_c2s", "drop_s2c"):
            v = getattr(self, name)
            if isinstance(v, str):
                setattr(self, name, parse_spec(v))
            elif v is None:
                setattr(self, name, [])
            else:
                setattr(self, name, [(int(a), int(b)) for a, b in v])
        if self.delay_ms < 0:
            raise ValueError(f"--delay must be >= 0, got {self.delay_ms!r}")
        if self.rate_mbit is not None and not self.rate_mbit > 0:
            raise ValueError(f"--rate-mbit must be > 0, got {self.rate_mbit!r}")
        if self.queue_packets < 1:
            raise ValueError(f"--queue-packets must be >= 1, got {self.queue_packets!r}")
        if isinstance(self.blackhole, str):
            parts = self.blackhole.split(",")
            try:
                if len(parts) != 2:
                    raise ValueError
                self.blackhole = (float(parts[0]), float(parts[1]))
            except ValueError:
                raise ValueError(f"bad --blackhole {self.blackhole!r} (want ON,OFF in seconds)") from None
        if self.blackhole is not None:
            on, off = self.blackhole
            if on < 0 or off < 0 or on + off <= 0:
                raise ValueError(f"bad --blackhole {self.blackhole!r}: ON, OFF >= 0 and ON+OFF > 0")
            self.blackhole = (float(on), float(off))
        if self.rebind not in (None, "port", "addr"):
            raise ValueError(f"--rebind must be port or addr, got {self.rebind!r}")
        if self.rebind_first < 0 or not self.rebind_every > 0:
            raise ValueError("--rebind-first must be >= 0 and --rebind-every > 0")
        if not self.max_seconds > 0:
            raise ValueError(f"--max-seconds must be > 0, got {self.max_seconds!r}")


# --------------------------------------------------------------------------
# state

class Direction:
    def __init__(self, name: str, seed: int, random_on: bool, drop_ranges):
        self.name = name
        self.rng = random.Random(f"{seed}:{name}")
        self.random_on = random_on
        self.drop_ranges = list(drop_ranges)
        self.index = 0
        self.consec = 0                 # consecutive random drops
        self.link: collections.deque[float] = collections.deque()
        self.busy_until = 0.0
        self.held = None                # [flow, unit] held back for reordering
        self.datagrams = self.bytes = self.forwarded = self.dropped = 0
        self.dropped_blackhole = self.dropped_queue = self.dropped_stale = 0
        self.corrupted = self.duplicated = self.reordered = 0
        self.types = dict.fromkeys(TYPE_KEYS, 0)
        self.versions: dict[str, int] = {}     # long-header packets by version (hex)

    def count(self, p: "Packet") -> None:
        self.types[p.kind] += 1
        if p.version is not None:
            v = f"{p.version:08x}"
            self.versions[v] = self.versions.get(v, 0) + 1

    def to_dict(self) -> dict:
        d = {"datagrams": self.datagrams, "bytes": self.bytes,
             "forwarded": self.forwarded, "dropped": self.dropped,
             "dropped_blackhole": self.dropped_blackhole,
             "dropped_queue": self.dropped_queue,
             "corrupted": self.corrupted, "duplicated": self.duplicated,
             "reordered": self.reordered, "types": dict(self.types),
             "versions": dict(self.versions)}
        if self.name == "s2c":
            d["dropped_stale"] = self.dropped_stale
        return d


class UpSock:
    __slots__ = ("sock", "flow", "stale")

    def __init__(self, sock, flow):
        self.sock = sock
        self.flow = flow
        self.stale = False


class Flow:
    def __init__(self, addr, created: float):
        self.addr = addr
        self.client = fmt_addr(addr)
        self.created = created
        self.up: UpSock | None = None
        self.sources: list[str] = []
        self.c2s = 0
        self.s2c = 0
        self.last_conn: Conn | None = None
        self.rebinds = 0


class Conn:
    def __init__(self, scid: bytes, flow: Flow, first_seen: float):
        self.scid = scid
        self.flow = flow.client
        self.first_seen = first_seen
        self.server_hs_bytes = 0
        self.zrtt_packets = 0
        self.zrtt_bytes = 0
        self.retry_packets = 0
        self.validated = False
        self.pre_c2s = 0
        self.pre_s2c = 0

    def to_dict(self, t0: float) -> dict:
        return {"client_scid": self.scid.hex(), "flow": self.flow,
                "first_seen_s": round(self.first_seen - t0, 6),
                "server_handshake_bytes": self.server_hs_bytes,
                "c2s_0rtt_packets": self.zrtt_packets,
                "c2s_0rtt_bytes": self.zrtt_bytes,
                "retry_packets": self.retry_packets,
                "validated": self.validated,
                "prevalidation_c2s_bytes": self.pre_c2s,
                "prevalidation_s2c_bytes": self.pre_s2c,
                "amplification": (round(self.pre_s2c / self.pre_c2s, 4)
                                  if self.pre_c2s else None)}


def _write_atomic(path: str, obj) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def _tune(sock: socket.socket) -> None:
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKBUF)
        except OSError:
            pass
    sock.setblocking(False)


# --------------------------------------------------------------------------
# the proxy

class Proxy:
    def __init__(self, listen, upstream, config: Config | None = None):
        self.cfg = cfg = config if config is not None else Config()
        cfg.validate()
        self.listen = parse_addr(listen, "--listen")
        self.upstream = parse_addr(upstream, "--upstream")
        if self.upstream[1] == 0:
            raise ValueError("--upstream needs a port other than 0")
        self.up_family = socket.AF_INET6 if ":" in self.upstream[0] else socket.AF_INET
        if cfg.rebind == "addr" and self.up_family == socket.AF_INET6:
            raise ValueError("--rebind addr needs an IPv4 upstream: with only ::1 "
                             "on IPv6 loopback there is no other source address")
        self.up_bind = "::1" if self.up_family == socket.AF_INET6 else "127.0.0.1"
        rnd = lambda d: cfg.impair_dir in ("both", d)  # noqa: E731
        self.c2s = Direction("c2s", cfg.seed, rnd("c2s"), cfg.drop_c2s)
        self.s2c = Direction("s2c", cfg.seed, rnd("s2c"), cfg.drop_s2c)
        self.flows: dict[Any, Flow] = {}
        self.conns: dict[Any, Conn] = {}
        self.conn_list: list[Conn] = []
        self.rebinds = 0
        self.t0: float | None = None             # first datagram (black hole)
        self.start_time = time.monotonic()
        self.end_time: float | None = None
        self.delay = cfg.delay_ms / 1000.0
        self.rate_bps = cfg.rate_mbit * 1e6 if cfg.rate_mbit else None
        self._heap: list = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._stop = False
        self._sel: selectors.BaseSelector | None = None
        self.lsock: socket.socket | None = None
        self._wake_r = self._wake_w = None
        self._thread: threading.Thread | None = None
        self._log = None
        self._running = False
        self._finished = threading.Event()

    # -- public API ---------------------------------------------------------

    def bind(self) -> tuple[str, int]:
        """Create and bind the listen socket (idempotent); returns its address."""
        if self.lsock is None:
            fam = socket.AF_INET6 if ":" in self.listen[0] else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_DGRAM)
            try:
                _tune(s)
                s.bind(self.listen)
            except OSError:
                s.close()
                raise
            self.lsock = s
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            self._sel = selectors.DefaultSelector()
            self._sel.register(s, selectors.EVENT_READ, (0, None))
            self._sel.register(self._wake_r, selectors.EVENT_READ, (2, None))
            if self.cfg.log_path:
                self._log = open(self.cfg.log_path, "w", buffering=1 << 16)
        return self.listen_address

    @property
    def listen_address(self) -> tuple[str, int]:
        a = self.lsock.getsockname()
        return a[0], a[1]

    @property
    def listen_str(self) -> str:
        return fmt_addr(self.listen_address)

    def start(self) -> tuple[str, int]:
        """Bind and run the loop in a daemon thread; returns the listen address."""
        addr = self.bind()
        self._thread = threading.Thread(target=self.run, name="impair", daemon=True)
        self._thread.start()
        return addr

    def request_stop(self) -> None:
        """Ask the loop to stop (safe from a signal handler or another thread)."""
        self._stop = True
        try:
            self._wake_w.send(b"x")
        except (OSError, AttributeError):
            pass

    def stop(self, timeout: float = 5.0) -> dict:
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)
        return self.stats()

    def wait(self, timeout: float | None = None) -> bool:
        return self._finished.wait(timeout)

    def stats(self) -> dict:
        with self._lock:
            return self._stats_locked()

    def write_stats(self) -> None:
        """Write the statistics file now (atomically), if one was configured."""
        if self.cfg.stats_path:
            _write_atomic(self.cfg.stats_path, self.stats())

    # -- loop -----------------------------------------------------------------

    def run(self) -> None:
        self.bind()
        cfg = self.cfg
        self.start_time = time.monotonic()
        deadline = self.start_time + cfg.max_seconds
        if cfg.stats_path:
            self._at(self.start_time + 1.0, self._periodic_stats)
        sel = self._sel
        heap = self._heap
        lock = self._lock
        self._running = True
        try:
            while not self._stop:
                now = time.monotonic()
                if now >= deadline:
                    break
                timeout = deadline - now
                if heap:
                    timeout = min(timeout, max(0.0, heap[0][0] - now))
                events = sel.select(timeout)
                with lock:
                    now = time.monotonic()
                    for key, _ in events:
                        kind, obj = key.data
                        if kind == 1:
                            self._read_upstream(obj, now)
                        elif kind == 0:
                            self._read_listen(now)
                        else:
                            try:
                                self._wake_r.recv(4096)
                            except OSError:
                                pass
                    if heap:
                        now = time.monotonic()
                        while heap and heap[0][0] <= now:
                            _, _, fn, args = heapq.heappop(heap)
                            fn(now, *args)
        finally:
            with lock:
                self._running = False
                self.end_time = time.monotonic()
                self._close_all()
            try:
                self.write_stats()
            finally:
                self._finished.set()

    def _close_all(self) -> None:
        for key in list(self._sel.get_map().values()):
            try:
                self._sel.unregister(key.fileobj)
            except (KeyError, ValueError):
                pass
            try:
                key.fileobj.close()
            except OSError:
                pass
        if self._wake_w is not None:
            self._wake_w.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _at(self, when: float, fn, *args) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), fn, args))

    def _periodic_stats(self, now: float) -> None:
        try:
            _write_atomic(self.cfg.stats_path, self._stats_locked())
        except OSError as e:
            print(f"impair.py: cannot write stats: {e}", file=sys.stderr)
        if self._log is not None:
            self._log.flush()
        self._at(now + 1.0, self._periodic_stats)

    # -- sockets ---------------------------------------------------------------

    def _new_upsock(self, flow: Flow, host: str) -> UpSock:
        s = socket.socket(self.up_family, socket.SOCK_DGRAM)
        try:
            _tune(s)
            s.bind((host, 0))
            s.connect(self.upstream)
        except OSError:
            s.close()
            raise
        up = UpSock(s, flow)
        self._sel.register(s, selectors.EVENT_READ, (1, up))
        flow.sources.append(fmt_addr(s.getsockname()))
        return up

    def _new_flow(self, addr, now: float) -> Flow:
        flow = Flow(addr, now)
        flow.up = self._new_upsock(flow, self.up_bind)
        self.flows[addr] = flow
        if self.cfg.rebind:
            self._at(now + self.cfg.rebind_first, self._rebind, flow)
        return flow

    def _rebind(self, now: float, flow: Flow) -> None:
        if self.cfg.rebind == "addr":
            host = f"127.0.0.{2 + flow.rebinds % 8}"
        else:
            host = self.up_bind
        try:
            new = self._new_upsock(flow, host)
        except OSError as e:
            print(f"impair.py: rebind failed: {e}", file=sys.stderr)
        else:
            old = flow.up
            old.stale = True
            flow.up = new
            flow.rebinds += 1
            self.rebinds += 1
            self._at(now + STALE_CLOSE_S, self._close_stale, old)
        self._at(now + self.cfg.rebind_every, self._rebind, flow)

    def _close_stale(self, now: float, up: UpSock) -> None:
        try:
            self._sel.unregister(up.sock)
        except (KeyError, ValueError):
            pass
        up.sock.close()

    def _read_listen(self, now: float) -> None:
        recv = self.lsock.recvfrom
        flows = self.flows
        for _ in range(RECV_BATCH):
            try:
                data, addr = recv(65535)
            except BlockingIOError:
                return
            except OSError:
                continue
            flow = flows.get(addr)
            if flow is None:
                try:
                    flow = self._new_flow(addr, now)
                except OSError as e:
                    print(f"impair.py: cannot open upstream socket: {e}", file=sys.stderr)
                    continue
            self._from_client(flow, data, now)

    def _read_upstream(self, up: UpSock, now: float) -> None:
        recv = up.sock.recv
        for _ in range(RECV_BATCH):
            try:
                data = recv(65535)
            except BlockingIOError:
                return
            except OSError:      # e.g. ECONNREFUSED from an earlier ICMP error
                continue
            self._from_server(up, data, now)

    # -- accounting --------------------------------------------------------------

    def _conn_key(self, flow: Flow, cid: bytes):
        return cid if cid else (flow.addr, b"")

    def _from_client(self, flow: Flow, data: bytes, now: float) -> None:
        d = self.c2s
        d.datagrams += 1
        d.bytes += len(data)
        flow.c2s += 1
        pkts = parse_datagram(data)
        conn = None
        for p in pkts:
            d.count(p)
            if conn is None and p.kind != "short":
                key = self._conn_key(flow, p.scid)
                conn = self.conns.get(key)
                if conn is None:
                    conn = self.conns[key] = Conn(p.scid, flow, now)
                    self.conn_list.append(conn)
                flow.last_conn = conn
            if p.kind == "0rtt" and conn is not None:
                conn.zrtt_packets += 1
                conn.zrtt_bytes += p.length
        if conn is None:
            conn = flow.last_conn
        self._process(d, flow, data, pkts, conn, now, False)

    def _from_server(self, up: UpSock, data: bytes, now: float) -> None:
        flow = up.flow
        d = self.s2c
        n = len(data)
        d.datagrams += 1
        d.bytes += n
        flow.s2c += 1
        pkts = parse_datagram(data)
        conn = None
        for p in pkts:
            d.count(p)
        if pkts and pkts[0].kind != "short":
            conn = self.conns.get(self._conn_key(flow, pkts[0].dcid))
        if conn is None:
            conn = flow.last_conn
        if conn is not None:
            for p in pkts:
                k = p.kind
                if k == "initial" or k == "handshake":
                    conn.server_hs_bytes += p.length
                elif k == "retry":
                    conn.retry_packets += 1
            if not conn.validated:
                conn.pre_s2c += n
        self._process(d, flow, data, pkts, conn, now, up.stale)

    # -- impairments -------------------------------------------------------------

    def _process(self, d: Direction, flow: Flow, data: bytes, pkts, conn, now: float,
                 stale: bool) -> None:
        cfg = self.cfg
        idx = d.index
        d.index = idx + 1
        rnd = d.rng.random
        r_drop = rnd()
        r_reo = rnd()
        r_dup = rnd()
        r_cor = rnd()
        r_off = rnd()
        r_val = rnd()
        if self.t0 is None:
            self.t0 = now
        n = len(data)
        action = None
        if stale:
            d.dropped_stale += 1
            action = "drop-stale"
        elif cfg.blackhole is not None:
            on, off = cfg.blackhole
            if (now - self.t0) % (on + off) >= on:
                d.dropped_blackhole += 1
                action = "drop-blackhole"
        if action is None and d.drop_ranges:
            for a, b in d.drop_ranges:
                if a <= idx <= b:
                    d.dropped += 1
                    action = "drop-index"
                    break
        if action is None and d.random_on and r_drop < cfg.drop_rate:
            if cfg.drop_burst is None or d.consec < cfg.drop_burst:
                d.consec += 1
                d.dropped += 1
                action = "drop-loss"
            else:
                d.consec = 0
        elif action is None:
            d.consec = 0
        emit_at = now
        if action is None and self.rate_bps is not None:
            link = d.link
            while link and link[0] <= now:
                link.popleft()
            if len(link) >= cfg.queue_packets:
                d.dropped_queue += 1
                action = "drop-queue"
            else:
                dep = max(now, d.busy_until) + n * 8 / self.rate_bps
                d.busy_until = dep
                link.append(dep)
                emit_at = dep
        if action is not None:
            if self._log is not None:
                self._log_line(now, d, flow, idx, n, pkts, action, "")
            return
        mods = ""
        cor_off = -1
        if d.random_on:
            # Version Negotiation packets are spared: they carry no
            # integrity protection, and a client whose VN lost its version
            # list must abandon the attempt (RFC 9000 section 6.2), which
            # would measure the corruption, not the server.
            spare = bool(pkts) and pkts[0].kind == "vneg"
            if r_cor < cfg.corrupt and n > 0 and not spare:
                cor_off = int(r_off * min(50, n))
                val = 1 + int(r_val * 255)
                buf = bytearray(data)
                buf[cor_off] ^= val
                data = bytes(buf)
                d.corrupted += 1
                if self._log is not None:
                    mods += f" corrupt@{cor_off}^{val:02x}"
            dup = r_dup < cfg.duplicate
            reo = r_reo < cfg.reorder
        else:
            dup = reo = False
        copies = 1
        if dup:
            copies = 2
            d.duplicated += 1
            mods += " dup"
        if reo:
            mods += " reorder"
        validates = False
        if d is self.c2s and conn is not None and not conn.validated:
            for p in pkts:
                if p.kind == "handshake" or (p.kind == "initial" and p.token_len > 0):
                    if not p.offset <= cor_off < p.offset + p.length:
                        validates = True
                        break
        d.forwarded += 1
        if self._log is not None:
            self._log_line(now, d, flow, idx, n, pkts, "forward", mods)
        unit = (data, copies, conn, validates)
        emit_at += self.delay
        if emit_at <= now:
            self._emit(now, d, flow, unit, reo)
        else:
            self._at(emit_at, self._emit, d, flow, unit, reo)

    def _log_line(self, now, d, flow, idx, n, pkts, action, mods) -> None:
        types = ",".join(p.kind for p in pkts) or "-"
        self._log.write(f"{now - self.start_time:.6f} {d.name} {flow.client} {idx} {n} {types} {action}{mods}\n")

    def _emit(self, now: float, d: Direction, flow: Flow, unit, reo: bool) -> None:
        held = d.held
        if reo and held is None:
            d.held = h = [flow, unit]
            d.reordered += 1
            self._at(now + REORDER_HOLD_S, self._release, d, h)
            return
        self._send(d, flow, unit)
        if held is not None:
            d.held = None
            self._send(d, held[0], held[1])

    def _release(self, now: float, d: Direction, h) -> None:
        if d.held is h:
            d.held = None
            self._send(d, h[0], h[1])

    def _send(self, d: Direction, flow: Flow, unit) -> None:
        data, copies, conn, validates = unit
        for c in range(copies):
            try:
                if d is self.c2s:
                    flow.up.sock.send(data)
                else:
                    self.lsock.sendto(data, flow.addr)
            except OSError:
                if c == 0:
                    d.forwarded -= 1
                    d.dropped_queue += 1
                continue
            if conn is not None and d is self.c2s and not conn.validated:
                if validates:
                    conn.validated = True
                else:
                    conn.pre_c2s += len(data)

    # -- statistics ------------------------------------------------------------

    def _stats_locked(self) -> dict:
        end = self.end_time if self.end_time is not None else time.monotonic()
        return {
            "seed": self.cfg.seed,
            "duration_s": round(end - self.start_time, 6),
            "rebinds": self.rebinds,
            "c2s": self.c2s.to_dict(),
            "s2c": self.s2c.to_dict(),
            "flows": [{"client": f.client, "sources": list(f.sources),
                       "datagrams_c2s": f.c2s, "datagrams_s2c": f.s2c}
                      for f in self.flows.values()],
            "connections": [c.to_dict(self.start_time) for c in self.conn_list],
        }


# --------------------------------------------------------------------------
# CLI

class _ArgParser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        print(f"impair.py: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _ArgParser(prog="impair.py", description="Seeded UDP impairment proxy for QUIC on loopback.")
    p.add_argument("--listen", required=True, metavar="HOST:PORT")
    p.add_argument("--upstream", required=True, metavar="HOST:PORT")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-seconds", type=float, default=300.0)
    p.add_argument("--stats", metavar="FILE")
    p.add_argument("--log", metavar="FILE")
    p.add_argument("--impair-dir", choices=("both", "c2s", "s2c"), default="both")
    p.add_argument("--drop-rate", type=float, default=0.0, metavar="P")
    p.add_argument("--drop-burst", type=int, metavar="N")
    p.add_argument("--drop-c2s", metavar="SPEC")
    p.add_argument("--drop-s2c", metavar="SPEC")
    p.add_argument("--delay", type=float, default=0.0, metavar="MS")
    p.add_argument("--rate-mbit", type=float, metavar="R")
    p.add_argument("--queue-packets", type=int, default=100, metavar="N")
    p.add_argument("--reorder", type=float, default=0.0, metavar="P")
    p.add_argument("--duplicate", type=float, default=0.0, metavar="P")
    p.add_argument("--corrupt", type=float, default=0.0, metavar="P")
    p.add_argument("--blackhole", metavar="ON,OFF")
    p.add_argument("--rebind", choices=("port", "addr"))
    p.add_argument("--rebind-first", type=float, default=1.0, metavar="S")
    p.add_argument("--rebind-every", type=float, default=5.0, metavar="S")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = Config(seed=args.seed, max_seconds=args.max_seconds, stats_path=args.stats,
                 log_path=args.log, impair_dir=args.impair_dir, drop_rate=args.drop_rate,
                 drop_burst=args.drop_burst, drop_c2s=args.drop_c2s or (),
                 drop_s2c=args.drop_s2c or (), delay_ms=args.delay,
                 rate_mbit=args.rate_mbit, queue_packets=args.queue_packets,
                 reorder=args.reorder, duplicate=args.duplicate, corrupt=args.corrupt,
                 blackhole=args.blackhole, rebind=args.rebind,
                 rebind_first=args.rebind_first, rebind_every=args.rebind_every)
    try:
        proxy = Proxy(args.listen, args.upstream, cfg)
    except ValueError as e:
        print(f"impair.py: error: {e}", file=sys.stderr)
        return 2
    try:
        proxy.bind()
    except OSError as e:
        print(f"impair.py: error: cannot bind {args.listen}: {e}", file=sys.stderr)
        return 1

    def on_signal(signum, frame):
        proxy.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"listening {proxy.listen_str}", flush=True)
    proxy.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
