#!/usr/bin/env python3
"""The interop matrix's ngtcp2 client (see tests/interop/matrix/README.md,
"the client contract"): a wrapper around Debian's gtlsclient (ngtcp2 with
GnuTLS, bookworm-backports), unpacked by scripts/fetch-ngtcp2.sh under
$NGTCP2_DIR (default build/ngtcp2).

gtlsclient HOST PORT URI... requests every URI concurrently on one
connection (opening more streams as the server's MAX_STREAMS allows) and
saves the bodies under --download=DIR by their last path component. It exits
0 whatever the responses were (and after an idle timeout too), so this
wrapper reads its log: each stream's ":status" and content-length, the
connection's end. Its output goes to a log file, named on stderr when the run
fails.

- gtlsclient does not verify the server's certificate (--ca is ignored; said
  once on stderr).
- --chacha20: --ciphers with a GnuTLS priority string of that one suite.
- --resume: the first run keeps the session and the transport parameters
  (--session-file, --tp-file, --wait-for-ticket); the second offers the
  session with --disable-early-data. --zerortt: the same, with early data.
  resumed=1|0 and early_data=accepted|rejected are read from the TLS
  handshake that gtlsclient dumps (CRYPTO data, so the QUIC dump is on for
  these runs): the ServerHello carries a pre_shared_key extension when the
  server resumed the session, the EncryptedExtensions an early_data
  extension when it accepted the early data. gtlsclient prints "Early data
  was rejected by server" in the other case, which is checked against it.
- --key-update: --key-update=1ms (the timer starts when the handshake is
  confirmed); key_update=1 once ngtcp2 logs "key update confirmed" (a packet
  from the server in the new key phase was acknowledged).
- --keylog: SSLKEYLOGFILE, which GnuTLS reads.
"""

from __future__ import annotations

import glob
import os
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

sys.dont_write_bytecode = True      # no __pycache__ in the tree for common.py
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (Result, Target, fail, finish, parse_args, remaining,  # noqa: E402
                    report, split_for_resume, warn)

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), *[".."] * 4))
CHACHA20_PRIORITY = "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+CHACHA20-POLY1305"
TICKET_WAIT_SHARE = 0.5       # at most this share of the time left for the first run

EXT_PRE_SHARED_KEY = 41
EXT_EARLY_DATA = 42
HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")

STATUS_RE = re.compile(r"^http: stream 0x([0-9a-f]+) \[:status: (\d+)\]")
LENGTH_RE = re.compile(r"^http: stream 0x([0-9a-f]+) \[content-length: (\d+)\]")
CLOSED_RE = re.compile(r"^HTTP stream (\d+) closed with error code (\d+)")
CRYPTO_RE = re.compile(r"^Ordered CRYPTO data in (\S+) crypto level")
HEXDUMP_RE = re.compile(r"^[0-9a-f]{8}  ([0-9a-f ]+?)\s*\|")
H3_NO_ERROR = 0x100


def ngtcp2_dir() -> str:
    return os.path.abspath(os.environ.get("NGTCP2_DIR") or os.path.join(REPO, "build", "ngtcp2"))


def gtlsclient_env(base: str) -> tuple[str, dict]:
    binary = os.path.join(base, "root", "usr", "bin", "gtlsclient")
    libdirs = glob.glob(os.path.join(base, "root", "usr", "lib", "*-linux-gnu"))
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join(libdirs + ([env["LD_LIBRARY_PATH"]]
                                                 if env.get("LD_LIBRARY_PATH") else []))
    return binary, env


def ngtcp2_version(base: str) -> str:
    """From the unpacked package's name: ngtcp2-client_1.11.0-1~bpo12+1_amd64.deb."""
    debs = sorted(glob.glob(os.path.join(base, "debs", "ngtcp2-client_*.deb")))
    if debs:
        v = os.path.basename(debs[-1]).split("_")[1]
        return "ngtcp2 " + v.split("-")[0]
    return "ngtcp2 (unknown version)"


# ---- reading gtlsclient's log ---------------------------------------------

@dataclass
class RunLog:
    """What one gtlsclient run said."""
    statuses: dict[int, int] = field(default_factory=dict)        # stream id -> status
    lengths: dict[int, int] = field(default_factory=dict)         # stream id -> content-length
    closed: dict[int, int] = field(default_factory=dict)          # stream id -> H3 error code
    crypto: dict[str, bytearray] = field(default_factory=dict)    # level -> CRYPTO data
    handshake_completed: bool = False
    cipher: str | None = None
    early_rejected_msg: bool = False
    zero_rtt_sent: bool = False
    key_update_started: bool = False
    key_update_confirmed: bool = False
    errors: list[str] = field(default_factory=list)               # ngtcp2/gtlsclient errors

    def resumed(self) -> bool | None:
        """True when the ServerHello selected a pre-shared key (None: no
        ServerHello seen in the dump)."""
        sh = server_hello(bytes(self.crypto.get("Initial", b"")))
        if sh is None:
            return None
        return EXT_PRE_SHARED_KEY in sh

    def early_data_accepted(self) -> bool | None:
        exts = encrypted_extensions(bytes(self.crypto.get("Handshake", b"")))
        if exts is None:
            return None
        return EXT_EARLY_DATA in exts


def read_log(path: str) -> RunLog:
    log = RunLog()
    level = None              # the CRYPTO level whose hexdump is being read
    with open(path, "r", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if level is not None:
                m = HEXDUMP_RE.match(line)
                if m:
                    log.crypto[level] += bytes.fromhex(m.group(1).replace(" ", ""))
                    continue
                level = None
            if line.startswith("I") and " pkt tx " in line and "type=0RTT" in line:
                log.zero_rtt_sent = True
            elif line.startswith("I") and "cry key update confirmed" in line:
                log.key_update_confirmed = True
            elif line.startswith("I"):
                continue
            elif m := STATUS_RE.match(line):
                sid = int(m.group(1), 16)
                if not m.group(2).startswith("1"):      # not an interim response
                    log.statuses[sid] = int(m.group(2))
            elif m := LENGTH_RE.match(line):
                log.lengths[int(m.group(1), 16)] = int(m.group(2))
            elif m := CLOSED_RE.match(line):
                log.closed[int(m.group(1))] = int(m.group(2))
            elif m := CRYPTO_RE.match(line):
                level = m.group(1)
                log.crypto.setdefault(level, bytearray())
            elif line == "QUIC handshake has completed":
                log.handshake_completed = True
            elif line.startswith("Negotiated cipher suite is "):
                log.cipher = line.split(" is ", 1)[1]
            elif line.startswith("Early data was rejected by server"):
                log.early_rejected_msg = True
            elif line.startswith("Initiate key update"):
                log.key_update_started = True
            elif (line.startswith("ngtcp2_") or line.startswith("nghttp3_")
                  or "rror" in line) and ":" in line:
                log.errors.append(line)
    return log


def handshake_messages(data: bytes):
    """(type, body) of each whole TLS handshake message in `data`."""
    off = 0
    while off + 4 <= len(data):
        mtype = data[off]
        mlen = int.from_bytes(data[off + 1:off + 4], "big")
        if off + 4 + mlen > len(data):
            return
        yield mtype, data[off + 4:off + 4 + mlen]
        off += 4 + mlen


def parse_extensions(data: bytes) -> set[int]:
    exts = set()
    off = 0
    while off + 4 <= len(data):
        etype = int.from_bytes(data[off:off + 2], "big")
        elen = int.from_bytes(data[off + 2:off + 4], "big")
        exts.add(etype)
        off += 4 + elen
    return exts


def server_hello(data: bytes) -> set[int] | None:
    """The extension types of the (last, non-HelloRetryRequest) ServerHello."""
    found = None
    for mtype, body in handshake_messages(data):
        if mtype != 2 or len(body) < 38:
            continue
        random = body[2:34]
        if random == HRR_RANDOM:
            continue
        off = 34
        sid_len = body[off]
        off += 1 + sid_len + 2 + 1            # session id, cipher suite, compression
        ext_len = int.from_bytes(body[off:off + 2], "big")
        found = parse_extensions(body[off + 2:off + 2 + ext_len])
    return found


def encrypted_extensions(data: bytes) -> set[int] | None:
    for mtype, body in handshake_messages(data):
        if mtype == 8 and len(body) >= 2:
            ext_len = int.from_bytes(body[:2], "big")
            return parse_extensions(body[2:2 + ext_len])
    return None


# ---- running gtlsclient ---------------------------------------------------

class Runner:
    def __init__(self, args):
        self.args = args
        self.base = ngtcp2_dir()
        self.binary, self.env = gtlsclient_env(self.base)
        if args.keylog:
            self.env["SSLKEYLOGFILE"] = os.path.abspath(args.keylog)
        self.tmp = tempfile.mkdtemp(prefix="ngtcp2-client-")
        self.session = os.path.join(self.tmp, "session.pem")
        self.tp = os.path.join(self.tmp, "tp.pem")
        self.logs: list[str] = []

    def run(self, targets: list[Target], *, name: str, limit: float,
            first: bool = False, second: bool = False, early: bool = False,
            dump_crypto: bool = False) -> tuple[RunLog, bool]:
        """One gtlsclient run (one connection). Returns its log and whether
        it ended by itself (False: killed at `limit` seconds)."""
        a = self.args
        log_path = os.path.join(self.tmp, f"{name}.log")
        self.logs.append(log_path)
        ms = max(1, int(limit * 1000))
        cmd = [self.binary, f"--download={os.path.abspath(a.out)}",
               "--exit-on-all-streams-close", "--no-http-dump",
               f"--timeout={ms}ms", f"--handshake-timeout={ms}ms", f"--sni={a.sni}"]
        if not dump_crypto:
            cmd.append("--no-quic-dump")
        if a.chacha20:
            cmd.append(f"--ciphers={CHACHA20_PRIORITY}")
        if a.key_update:
            cmd.append("--key-update=1ms")
        if a.v2:
            cmd.append("--version=v2")
        if first:
            cmd += [f"--session-file={self.session}", f"--tp-file={self.tp}", "--wait-for-ticket"]
        if second:
            if os.path.exists(self.session):
                cmd.append(f"--session-file={self.session}")
            if early and os.path.exists(self.tp):
                cmd.append(f"--tp-file={self.tp}")
            if not early:
                cmd.append("--disable-early-data")
        cmd += [a.host, str(a.port)] + [t.url for t in targets]
        with open(log_path, "wb") as out:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
            try:
                p.wait(timeout=limit)
                ended = True
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                ended = False
        return read_log(log_path), ended

    def results(self, targets: list[Target], log: RunLog, ended: bool) -> list[Result]:
        out = []
        for i, t in enumerate(targets):
            sid = 4 * i
            r = Result(t, status=log.statuses.get(sid, 0))
            size = os.path.getsize(t.out) if os.path.exists(t.out) else -1
            r.length = max(size, 0)
            code = log.closed.get(sid)
            if r.status == 0:
                if not log.handshake_completed:
                    r.error = (f"no handshake with {t.host}:{t.port}"
                               + ("" if ended else f" within {self.args.timeout:g}s"))
                else:
                    r.error = "no response" + ("" if ended else f" within {self.args.timeout:g}s")
            elif r.status != 200:
                r.error = f"status {r.status}"
            elif code is None:
                r.error = "stream not closed" + ("" if ended else f" within {self.args.timeout:g}s")
            elif code != H3_NO_ERROR:
                r.error = f"stream closed with error 0x{code:x}"
            elif size < 0:
                r.error = f"gtlsclient saved no {t.name}"
            elif sid in log.lengths and log.lengths[sid] != size:
                r.error = f"saved {size} bytes of {log.lengths[sid]}"
            out.append(r)
        return out

    def check(self, log: RunLog) -> None:
        """Warnings about what was asked and did not happen."""
        a = self.args
        if a.chacha20 and log.cipher and "CHACHA20" not in log.cipher:
            warn(f"--chacha20, but gtlsclient negotiated {log.cipher}")
        if a.key_update and log.handshake_completed and not log.key_update_confirmed:
            warn("key update " + ("started but not confirmed" if log.key_update_started
                                  else "not started: the transfers ended first"))

    def diagnose(self, log: RunLog) -> None:
        for e in log.errors[-5:]:
            warn(f"gtlsclient: {e}")
        warn(f"gtlsclient's log: {' '.join(self.logs)}")

    def cleanup(self) -> None:
        for f in os.listdir(self.tmp):
            os.unlink(os.path.join(self.tmp, f))
        os.rmdir(self.tmp)


def main() -> None:
    args = parse_args("ngtcp2", __doc__)
    runner = Runner(args)
    report("version", ngtcp2_version(runner.base))
    if not os.path.exists(runner.binary):
        fail(f"no gtlsclient at {runner.binary}: run scripts/fetch-ngtcp2.sh")
    warn("gtlsclient does not verify the server's certificate"
         + (f" (--ca {args.ca} is not used)" if args.ca else ""))

    ok = False
    try:
        if not (args.resume or args.zerortt):
            log, ended = runner.run(args.targets, name="connection", limit=remaining(args))
            runner.check(log)
            if args.key_update:
                report("key_update", log.key_update_confirmed)
            results = runner.results(args.targets, log, ended)
            ok = all(r.ok for r in results)
            if not ok:
                runner.diagnose(log)
            finish(results)

        first, second = split_for_resume(args.targets)
        # the first run waits for a ticket: when none comes, it is cut short
        # so that the second run still has time
        log1, ended1 = runner.run(first, name="first", first=True, dump_crypto=True,
                                  limit=remaining(args) * TICKET_WAIT_SHARE)
        runner.check(log1)
        r1 = runner.results(first, log1, ended1)
        if not all(r.ok for r in r1):
            runner.diagnose(log1)
            finish(r1, "first connection")
        if not ended1 or not os.path.exists(runner.session):
            warn("the first connection received no session ticket: the second cannot resume")
        log2, ended2 = runner.run(second, name="second", second=True, early=args.zerortt,
                                  dump_crypto=True, limit=remaining(args))
        runner.check(log2)
        resumed = log2.resumed()
        report("resumed", bool(resumed))
        if args.zerortt:
            accepted = log2.early_data_accepted()
            if not log2.zero_rtt_sent:
                warn("no 0-RTT packet was sent (the session does not allow early data, "
                     "or none was kept)")
                accepted = False
            elif accepted is None:
                # no EncryptedExtensions in the dump: trust gtlsclient's message
                accepted = not log2.early_rejected_msg
            elif accepted == log2.early_rejected_msg:
                warn("the EncryptedExtensions and gtlsclient's output disagree about early data")
            report("early_data", "accepted" if accepted else "rejected")
        if args.key_update:
            report("key_update", log1.key_update_confirmed or log2.key_update_confirmed)
        r2 = runner.results(second, log2, ended2)
        ok = all(r.ok for r in r2)
        if not ok:
            runner.diagnose(log2)
        finish(r1 + r2)
    finally:
        if ok:
            runner.cleanup()


if __name__ == "__main__":
    main()
