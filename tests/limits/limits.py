"""Tools for the hostile-peer limit tests: what the server process spends
(CPU, memory), its haquic counters, a result line per limit, raw QUIC
frames, an aioquic client that injects them, and forged Initials.

    p = Proc(h.pid); before = p.sample()
    ... attack ...
    d = p.sample() - before          # d.cpu_s, d.rss_kb (and .hwm_kb of a sample)
    report("rapid-reset", "20000 open+reset in 10 s, ...", "<= 100 streams")

Everything is bounded: every wait has a timeout, every loop a count.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import socket
import ssl
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import aqclient
import hap
from aioquic.buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import QuicPacketType, pull_quic_header
from aioquic.quic.packet_builder import QuicPacketBuilderStop
from aioquic.tls import Epoch

HERE = Path(__file__).resolve().parent
KIB = 1024
MIB = 1024 * KIB

# QUIC transport error codes (RFC 9000 section 20.1)
NO_ERROR = 0x0
INTERNAL_ERROR = 0x1
FLOW_CONTROL_ERROR = 0x3
STREAM_LIMIT_ERROR = 0x4
STREAM_STATE_ERROR = 0x5
FRAME_ENCODING_ERROR = 0x7
PROTOCOL_VIOLATION = 0xA
CONNECTION_ID_LIMIT_ERROR = 0x9
# HTTP/3 (RFC 9114 section 8.1)
H3_EXCESSIVE_LOAD = 0x107
H3_REQUEST_CANCELLED = 0x10C
H3_MESSAGE_ERROR = 0x10E

ERROR_NAMES = {
    NO_ERROR: "NO_ERROR", INTERNAL_ERROR: "INTERNAL_ERROR", FLOW_CONTROL_ERROR: "FLOW_CONTROL_ERROR",
    STREAM_LIMIT_ERROR: "STREAM_LIMIT_ERROR", STREAM_STATE_ERROR: "STREAM_STATE_ERROR",
    FRAME_ENCODING_ERROR: "FRAME_ENCODING_ERROR", 0x8: "TRANSPORT_PARAMETER_ERROR",
    CONNECTION_ID_LIMIT_ERROR: "CONNECTION_ID_LIMIT_ERROR", PROTOCOL_VIOLATION: "PROTOCOL_VIOLATION",
    0x100: "H3_NO_ERROR", 0x101: "H3_GENERAL_PROTOCOL_ERROR", 0x102: "H3_INTERNAL_ERROR",
    0x105: "H3_FRAME_UNEXPECTED", 0x106: "H3_FRAME_ERROR", H3_EXCESSIVE_LOAD: "H3_EXCESSIVE_LOAD",
    0x10B: "H3_REQUEST_REJECTED", H3_REQUEST_CANCELLED: "H3_REQUEST_CANCELLED",
    H3_MESSAGE_ERROR: "H3_MESSAGE_ERROR", 0x200: "QPACK_DECOMPRESSION_FAILED",
}


def error_name(code: int | None) -> str:
    if code is None:
        return "none"
    return f"{ERROR_NAMES.get(code, 'code')} (0x{code:x})"


# ---- result lines ------------------------------------------------------------------

RESULTS: list[str] = []


def report(name: str, figure: str, bound: str) -> str:
    """Prints (and keeps, for the end of the run) `LIMIT <name>: <figure> (<bound>)`."""
    line = f"LIMIT {name}: {figure} ({bound})"
    RESULTS.append(line)
    print(line, flush=True)
    return line


# ---- the server process ------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    t: float            # monotonic time
    cpu_s: float        # utime + stime, seconds
    rss_kb: int         # VmRSS
    hwm_kb: int         # VmHWM (peak RSS)

    def __sub__(self, o: "Sample") -> "Sample":
        return Sample(self.t - o.t, self.cpu_s - o.cpu_s, self.rss_kb - o.rss_kb, self.hwm_kb - o.hwm_kb)


class Proc:
    """CPU time and memory of one process, from /proc."""

    def __init__(self, pid: int):
        self.pid = pid

    def sample(self) -> Sample:
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        # the fields after the command name, which may hold spaces
        fields = stat[stat.rindex(")") + 2:].split()
        utime, stime = int(fields[11]), int(fields[12])
        status = Path(f"/proc/{self.pid}/status").read_text()
        rss = int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))
        hwm = int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1))
        return Sample(time.monotonic(), (utime + stime) / CLK_TCK, rss, hwm)


def mb(kb: float) -> str:
    return f"{kb / 1024:+.1f} MB"


def show_quic(h: hap.HAProxy) -> dict[str, int]:
    """The engine's counters (`show quic`, summed over workers)."""
    return hap.parse_show_quic_kv(h.cli("show quic"))


def quic_delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items()}


def conn_lines(h: hap.HAProxy) -> list[dict[str, str]]:
    """`show quic all`: one dict per open connection (peer, streams, ...)."""
    out = []
    for line in h.cli("show quic all").splitlines():
        if line.startswith("* "):
            out.append(dict(kv.split("=", 1) for kv in line[2:].split() if "=" in kv))
    return out


def wait_quic(h: hap.HAProxy, pred, timeout: float, interval: float = 0.1) -> dict[str, int]:
    """Polls `show quic` until pred(counters) holds or timeout; returns the
    last counters either way (the caller asserts)."""
    deadline = time.monotonic() + timeout
    while True:
        c = show_quic(h)
        if pred(c) or time.monotonic() >= deadline:
            return c
        time.sleep(interval)


# ---- QUIC frames -------------------------------------------------------------------

def varint(v: int) -> bytes:
    if v < 1 << 6:
        return bytes([v])
    if v < 1 << 14:
        return struct.pack(">H", 0x4000 | v)
    if v < 1 << 30:
        return struct.pack(">I", 0x80000000 | v)
    return struct.pack(">Q", 0xC000000000000000 | v)


# frame types (RFC 9000 section 19)
F_RESET_STREAM = 0x04
F_STOP_SENDING = 0x05
F_NEW_CONNECTION_ID = 0x18
F_RETIRE_CONNECTION_ID = 0x19
F_PATH_CHALLENGE = 0x1A
F_PING = 0x01


# in a list of frames to inject: end the packet here
PACKET_BREAK = None


def ping() -> tuple[int, bytes]:
    return F_PING, b""


def path_challenge(data: bytes) -> tuple[int, bytes]:
    assert len(data) == 8
    return F_PATH_CHALLENGE, data


def retire_connection_id(seq: int) -> tuple[int, bytes]:
    return F_RETIRE_CONNECTION_ID, varint(seq)


def new_connection_id(seq: int, retire_prior_to: int, cid: bytes, token: bytes) -> tuple[int, bytes]:
    return F_NEW_CONNECTION_ID, varint(seq) + varint(retire_prior_to) + bytes([len(cid)]) + cid + token


def reset_stream(sid: int, code: int, final_size: int) -> tuple[int, bytes]:
    return F_RESET_STREAM, varint(sid) + varint(code) + varint(final_size)


def stop_sending(sid: int, code: int) -> tuple[int, bytes]:
    return F_STOP_SENDING, varint(sid) + varint(code)


# ---- a hostile aioquic client ----------------------------------------------------------

class Hostile(aqclient.Client):
    """aqclient's client, plus:

    inject(frames)   raw frames (type, body) sent in 1-RTT packets ahead of
                     anything aioquic sends, as many per packet as fit
    no_ack           stop acknowledging the server's 1-RTT packets, so that
                     its congestion window closes and what it owes queues up
    frames_in        the server's frames of interest (by type), counted as
                     aioquic parses them
    """

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        q = self._quic
        self.pending_frames: collections.deque[tuple[int, bytes]] = collections.deque()
        self.injected = 0
        self.injected_packets = 0
        self.no_ack = False
        self.frames_in: collections.Counter[str] = collections.Counter()
        self.max_streams_seen: list[tuple[float, int]] = []
        orig_write_app = q._write_application
        orig_write_ack = q._write_ack_frame

        def write_application(builder, network_path, now):
            self._write_injected(builder)
            orig_write_app(builder, network_path, now)

        def write_ack(builder, space, now):
            if self.no_ack and space is q._spaces[Epoch.ONE_RTT]:
                space.ack_at = None
                return
            orig_write_ack(builder, space, now)

        q._write_application = write_application
        q._write_ack_frame = write_ack
        # count what the server sends, by wrapping aioquic's frame handlers
        for name, label in (("_handle_path_response_frame", "PATH_RESPONSE"),
                            ("_handle_retire_connection_id_frame", "RETIRE_CONNECTION_ID"),
                            ("_handle_new_connection_id_frame", "NEW_CONNECTION_ID"),
                            ("_handle_max_streams_bidi_frame", "MAX_STREAMS_BIDI"),
                            ("_handle_reset_stream_frame", "RESET_STREAM"),
                            ("_handle_stop_sending_frame", "STOP_SENDING")):
            self._count_frames(name, label)
        # aioquic dispatches through a table of bound methods built at init
        # (QuicConnection.__frame_handlers): point it at the wrappers
        handlers = q._QuicConnection__frame_handlers
        for ftype, (fn, epochs) in list(handlers.items()):
            patched = q.__dict__.get(getattr(fn, "__name__", ""))
            if patched is not None:
                handlers[ftype] = (patched, epochs)

    def _count_frames(self, name: str, label: str) -> None:
        q = self._quic
        orig = getattr(q, name)

        def counted(context, frame_type, buf):
            self.frames_in[label] += 1
            r = orig(context, frame_type, buf)
            if label == "MAX_STREAMS_BIDI":
                self.max_streams_seen.append((time.monotonic(), q._remote_max_streams_bidi))
            return r

        counted.__name__ = name
        setattr(q, name, counted)

    def _write_injected(self, builder) -> None:
        q = self._quic
        if not self.pending_frames or not q._handshake_complete:
            return
        crypto = q._cryptos[Epoch.ONE_RTT]
        if not crypto.send.is_valid():
            return
        while self.pending_frames:
            builder.start_packet(QuicPacketType.ONE_RTT, crypto)
            n = 0
            while self.pending_frames:
                if self.pending_frames[0] is PACKET_BREAK:
                    if n:
                        self.pending_frames.popleft()
                        break
                    self.pending_frames.popleft()
                    continue
                ftype, body = self.pending_frames[0]
                try:
                    buf = builder.start_frame(ftype, capacity=len(body) + 1)
                except QuicPacketBuilderStop:
                    break
                buf.push_bytes(body)
                self.pending_frames.popleft()
                n += 1
            if not n:
                return          # no room (congestion window): next time
            self.injected += n
            self.injected_packets += 1

    # -- connection IDs ----------------------------------------------------

    def own_cids(self) -> None:
        """From now on the test issues this client's connection IDs
        (new_cid()); aioquic stops issuing replacements of its own."""
        self._quic._replenish_connection_ids = lambda: None

    def new_cid(self, retire_prior_to: int | None = None) -> tuple[int, bytes]:
        """A NEW_CONNECTION_ID frame for a fresh client connection ID, which
        aioquic accepts packets on; retire_prior_to defaults to its own
        sequence number (every earlier ID retired)."""
        from aioquic.quic.connection import QuicConnectionId
        q = self._quic
        seq = q._host_cid_seq
        cid = QuicConnectionId(cid=os.urandom(q._configuration.connection_id_length),
                               sequence_number=seq, stateless_reset_token=os.urandom(16),
                               was_sent=True)
        q._host_cids.append(cid)
        q._host_cid_seq += 1
        rpt = seq if retire_prior_to is None else retire_prior_to
        # aioquic matches every packet against the list: keep it short
        # (the server switches to recent IDs; a batch is at most ~1000)
        if len(q._host_cids) > 2048:
            del q._host_cids[:-1024]
        return new_connection_id(seq, rpt, cid.cid, cid.stateless_reset_token)

    def inject(self, frames) -> None:
        self.pending_frames.extend(frames)
        self.transmit()

    async def drain(self, timeout: float = 10.0) -> bool:
        """Waits (bounded) until every injected frame has left."""
        deadline = time.monotonic() + timeout
        while self.pending_frames and not self.closed.is_set() and time.monotonic() < deadline:
            self.transmit()
            await asyncio.sleep(0.005)
        return not self.pending_frames


@contextlib.asynccontextmanager
async def connect(port: int, *, verify: bool = True, idle_timeout: float = 30.0,
                  max_datagram_size: int | None = None, connect_timeout: float = 10.0,
                  host: str = "127.0.0.1"):
    """A Hostile client connected to port (handshake done). Its close is
    bounded: CONNECTION_CLOSE, then at most 5 s."""
    cfg = aqclient.configuration(verify=verify, idle_timeout=idle_timeout)
    if max_datagram_size:
        cfg.max_datagram_size = max_datagram_size
    async with aqclient.connect(port, host, config=cfg, create_protocol=Hostile,
                                connect_timeout=connect_timeout) as client:
        yield client


async def wait_until(pred, timeout: float, interval: float = 0.01) -> bool:
    """Awaits (bounded) until pred() holds; returns whether it did."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)
    return True


# ---- forged Initials ---------------------------------------------------------------

class InitialForge:
    """A real client Initial (aioquic's ClientHello, padded to 1200 bytes),
    decrypted once; `forge(dcid, scid)` re-protects it for new connection
    IDs, so that each datagram looks like a new client's first flight."""

    def __init__(self, server_name: str = "localhost"):
        cfg = QuicConfiguration(is_client=True, alpn_protocols=["h3"], server_name=server_name,
                                verify_mode=ssl.CERT_NONE)
        q = QuicConnection(configuration=cfg)
        q.connect(("127.0.0.1", 443), now=time.monotonic())
        datagrams = q.datagrams_to_send(now=time.monotonic())
        first = datagrams[0][0]
        buf = Buffer(data=first)
        hdr = pull_quic_header(buf, host_cid_length=8)
        assert hdr.packet_type == QuicPacketType.INITIAL, hdr.packet_type
        end = hdr.packet_length
        pair = CryptoPair()
        pair.setup_initial(cid=hdr.destination_cid, is_client=False, version=hdr.version)
        plain_header, payload, pn = pair.decrypt_packet(first[:end], buf.tell(), 0)
        self.version = hdr.version
        self.payload = payload          # CRYPTO(ClientHello) + PADDING
        # the ClientHello carries the client's SCID in its transport
        # parameters (initial_source_connection_id), which the server checks
        # against the packet's: forge() rewrites both
        self.scid = hdr.source_cid
        assert payload.count(self.scid) == 1, "the SCID must appear once in the ClientHello"
        self.pn = pn
        self.size = len(first)
        self.datagrams = len(datagrams)
        self.trailing = len(first) - end    # padding after the packet, if any

    def forge(self, dcid: bytes, scid: bytes | None = None, token: bytes = b"") -> bytes:
        scid = scid or os.urandom(len(self.scid))
        assert len(scid) == len(self.scid)
        payload = self.payload.replace(self.scid, scid)
        pn_len = 2
        length = pn_len + len(payload) + 16
        header = (bytes([0xC0 | (pn_len - 1)]) + struct.pack(">I", self.version)
                  + bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid
                  + varint(len(token)) + token + struct.pack(">H", 0x4000 | length)
                  + struct.pack(">H", self.pn))
        pair = CryptoPair()
        pair.setup_initial(cid=dcid, is_client=True, version=self.version)
        pkt = pair.encrypt_packet(header, payload, self.pn)
        if len(pkt) < 1200:
            pkt += bytes(1200 - len(pkt))
        return pkt


# ---- sockets -------------------------------------------------------------------------

def udp_socket(rcvbuf: int = 4 * MIB) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    except OSError:
        pass
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


@dataclass
class Received:
    datagrams: int = 0
    bytes: int = 0
    by_type: collections.Counter = None          # first packet's type -> datagrams
    bytes_by_type: collections.Counter = None    # first packet's type -> bytes

    def __post_init__(self):
        self.by_type = self.by_type or collections.Counter()
        self.bytes_by_type = self.bytes_by_type or collections.Counter()

    def add(self, o: "Received") -> "Received":
        self.datagrams += o.datagrams
        self.bytes += o.bytes
        self.by_type.update(o.by_type)
        self.bytes_by_type.update(o.bytes_by_type)
        return self


def drain_socket(s: socket.socket, limit: int = 1_000_000) -> Received:
    """Reads what is queued on a non-blocking socket, counting datagrams and
    bytes by the type of their first packet."""
    r = Received()
    for _ in range(limit):
        try:
            d = s.recv(65536)
        except (BlockingIOError, InterruptedError):
            break
        t = long_header_type(d)
        r.datagrams += 1
        r.bytes += len(d)
        r.by_type[t] += 1
        r.bytes_by_type[t] += len(d)
    return r


def udp_drops(port: int) -> int:
    """Datagrams the kernel dropped on the UDP sockets bound to `port`
    (receive buffer full), from /proc/net/udp."""
    total = 0
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[1].split(":")[1], 16) == port:
            total += int(f[-1])
    return total


def long_header_type(d: bytes) -> str:
    if not d or not d[0] & 0x80:
        return "short"
    if len(d) >= 5 and d[1:5] == b"\0\0\0\0":
        return "vneg"
    return ("initial", "0rtt", "handshake", "retry")[(d[0] >> 4) & 3]


def cert_with_many_names(dest: Path, names: int = 300) -> Path:
    """A self-signed P-256 certificate with `names` DNS names (about 8 KB):
    the server's first flight then needs more than three times a client
    Initial. HAProxy's crt format (certificate and key in one file)."""
    import subprocess
    pem = dest / "big.pem"
    if pem.exists():
        return pem
    dest.mkdir(parents=True, exist_ok=True)
    san = ",".join(["DNS:localhost", "IP:127.0.0.1"]
                   + [f"DNS:name{i:04d}.limits.haquic.test" for i in range(names)])
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(dest / "big.key"), "-out", str(dest / "big.crt"),
                    "-days", "3650", "-subj", "/CN=localhost", "-addext", f"subjectAltName={san}"],
                   check=True, capture_output=True, timeout=60)
    pem.write_bytes((dest / "big.crt").read_bytes() + (dest / "big.key").read_bytes())
    return pem
