#!/usr/bin/env python3
"""The interop matrix's libcurl client (see tests/interop/matrix/README.md,
"the client contract"): pycurl's wheel, whose libcurl has HTTP/3 through
ngtcp2 and nghttp3 with OpenSSL. One CurlMulti, HTTP/3 only
(CURL_HTTP_VERSION_3ONLY), CURLPIPE_MULTIPLEX, CURLMOPT_MAX_HOST_CONNECTIONS=1
and CURLOPT_PIPEWAIT: every URL shares one connection, libcurl keeping within
the server's stream limit (the others wait for a free stream).

- --sni: libcurl sends the URL's host name as SNI (and none for an IP
  address), so the URLs are rewritten to https://NAME:PORT/... and
  CURLOPT_RESOLVE maps NAME:PORT to the URL's address.
- --chacha20: CURLOPT_TLS13_CIPHERS (OpenSSL's suite names).
- --resume: the first connection fetches the first URL and is closed
  (CURLOPT_FORBID_REUSE); the second, opened for the other URLs, offers the
  session that libcurl's SSL session cache kept (the handles share it through
  a CurlShare with CURL_LOCK_DATA_SSL_SESSION). resumed=1|0 is read from
  libcurl's verbose output: "SSL reusing session" says the session was
  offered, and a handshake without a server signature ("SSL connection
  using TLSv1.3 / ... / UNDEF", no certificate chain) says it was resumed.
- --zerortt: as --resume, with CURLSSLOPT_EARLYDATA on both connections'
  transfers (libcurl keys its session cache on the TLS options too, so a
  session kept without it would not be offered). early_data comes from
  CURLINFO_EARLYDATA_SENT_T, which libcurl sets positive when the server
  accepted the early data, negative when it rejected it, 0 when none was
  sent; "accepted" also needs resumed=1, because this libcurl (OpenSSL's QUIC
  TLS API) reports acceptance after a full handshake too.
- --key-update: unsupported (libcurl has no API for it).
- --keylog: SSLKEYLOGFILE, read by libcurl's OpenSSL backend when it starts.
"""

from __future__ import annotations

import collections
import ipaddress
import os
import socket
import sys

sys.dont_write_bytecode = True      # no __pycache__ in the tree for common.py
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (Result, Sink, Target, finish, parse_args, remaining,  # noqa: E402
                    report, split_for_resume, unsupported, warn)

CHACHA20 = "TLS_CHACHA20_POLY1305_SHA256"


def curl_version(pycurl) -> str:
    """libcurl's version and the parts that matter for QUIC, from
    pycurl.version ("PycURL/7.49.0 libcurl/8.23.0 OpenSSL/3.6.5 ...")."""
    parts = pycurl.version.split()
    keep = [p for p in parts if p.split("/")[0] in ("libcurl", "OpenSSL", "quictls", "BoringSSL",
                                                     "GnuTLS", "wolfSSL", "ngtcp2", "nghttp3",
                                                     "quiche", "AWS-LC")]
    return " ".join(keep) or pycurl.version


class Phase:
    """One connection's transfers, and what libcurl's verbose output said
    about its handshake."""

    def __init__(self, name: str):
        self.name = name
        self.log: collections.deque[str] = collections.deque(maxlen=60)
        self.session_offered = False
        self.handshake_line: str | None = None     # "SSL connection using ..."
        self.cert_chain_seen = False

    def debug(self, kind: int, msg: bytes) -> None:
        if kind != 0:                  # CURLINFO_TEXT only
            return
        text = msg.decode("utf-8", "replace").rstrip()
        self.log.append(text)
        if "SSL reusing session" in text:
            self.session_offered = True
        elif text.startswith("SSL connection using") and self.handshake_line is None:
            self.handshake_line = text
        elif "Certificate level" in text:
            self.cert_chain_seen = True

    @property
    def resumed(self) -> bool:
        # TLS 1.3 resumption (PSK): no Certificate, no CertificateVerify, so
        # no signature algorithm ("UNDEF") and no chain to print
        if not self.session_offered or self.handshake_line is None:
            return False
        return self.handshake_line.rstrip().endswith("UNDEF") and not self.cert_chain_seen


class Transfer:
    def __init__(self, target: Target, url: str):
        self.target = target
        self.url = url
        self.sink = Sink(target.out)
        self.result = Result(target)
        self.early = 0


def run_phase(pycurl, args, share, targets: list[Target], phase: Phase, *,
              last_connection: bool, earlydata: bool = False) -> list[Transfer]:
    m = pycurl.CurlMulti()
    m.setopt(pycurl.M_PIPELINING, pycurl.PIPE_MULTIPLEX)
    m.setopt(pycurl.M_MAX_HOST_CONNECTIONS, 1)
    transfers: list[Transfer] = []
    handles = {}
    try:
        for t in targets:
            url, resolve = rewrite(t, args.sni)
            tr = Transfer(t, url)
            c = pycurl.Curl()
            c.setopt(pycurl.URL, url)
            c.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_3ONLY)
            c.setopt(pycurl.PIPEWAIT, 1)
            c.setopt(pycurl.SHARE, share)
            if resolve:
                c.setopt(pycurl.RESOLVE, [resolve])
            if args.ca:
                c.setopt(pycurl.CAINFO, args.ca)
            if args.chacha20:
                c.setopt(pycurl.TLS13_CIPHERS, CHACHA20)
            if earlydata:
                c.setopt(pycurl.SSL_OPTIONS, pycurl.SSLOPT_EARLYDATA)
            if not last_connection:
                # closed after its transfer: the next phase needs a new one
                c.setopt(pycurl.FORBID_REUSE, 1)
            c.setopt(pycurl.USERAGENT, f"haquic-interop-pycurl/{pycurl.version_info()[1]}")
            c.setopt(pycurl.WRITEFUNCTION, tr.sink.write)
            c.setopt(pycurl.VERBOSE, 1)
            c.setopt(pycurl.DEBUGFUNCTION, phase.debug)
            ms = max(1, int(remaining(args) * 1000))
            c.setopt(pycurl.TIMEOUT_MS, ms)
            c.setopt(pycurl.CONNECTTIMEOUT_MS, ms)
            c.setopt(pycurl.NOSIGNAL, 1)
            m.add_handle(c)
            handles[id(c)] = (c, tr)
            transfers.append(tr)

        errors: dict[int, str] = {}
        active = len(handles)
        while remaining(args) > 0:
            ret, active = m.perform()
            while ret == pycurl.E_CALL_MULTI_PERFORM:
                ret, active = m.perform()
            while True:
                queued, _ok, failed = m.info_read()
                for c, code, msg in failed:
                    errors[id(c)] = f"curl error {code}: {msg}"
                if not queued:
                    break
            if not active:
                break
            m.select(min(0.05, max(0.001, remaining(args))))

        for key, (c, tr) in handles.items():
            err = errors.get(key)
            tr.result.status = c.getinfo(pycurl.RESPONSE_CODE)
            tr.early = c.getinfo(pycurl.EARLYDATA_SENT_T)
            if err is None and active:
                if not c.getinfo(pycurl.APPCONNECT_TIME):
                    err = (f"no handshake with {tr.target.host}:{tr.target.port}"
                           f" within {args.timeout:g}s")
                else:
                    err = f"unfinished after {args.timeout:g}s"
            if err is None and c.getinfo(pycurl.INFO_HTTP_VERSION) != pycurl.CURL_HTTP_VERSION_3:
                err = "not HTTP/3"
            if err is None and tr.result.status != 200:
                err = f"status {tr.result.status}"
            if err is None:
                tr.sink.close()
            else:
                tr.sink.abort()
            tr.result.error = err
            tr.result.length = tr.sink.length
        return transfers
    finally:
        for c, _ in handles.values():
            m.remove_handle(c)
            c.close()
        m.close()


def rewrite(t: Target, sni: str) -> tuple[str, str | None]:
    """The URL libcurl is given (host replaced by the SNI name) and the
    CURLOPT_RESOLVE entry that maps that name to the URL's address."""
    if t.host == sni:
        return t.url, None
    try:
        addrs = [ipaddress.ip_address(t.host)]
    except ValueError:
        # a name: every address it has, for libcurl to try them in turn
        addrs = []
        for info in socket.getaddrinfo(t.host, t.port, type=socket.SOCK_DGRAM):
            ip = ipaddress.ip_address(info[4][0].split("%")[0])
            if ip not in addrs:
                addrs.append(ip)
    listed = ",".join(f"[{ip}]" if ip.version == 6 else str(ip) for ip in addrs)
    name = f"[{sni}]" if ":" in sni else sni
    return f"https://{name}:{t.port}{t.path}", f"{sni}:{t.port}:{listed}"


def check_phase(args, phase: Phase, transfers: list[Transfer]) -> None:
    if not all(tr.result.ok for tr in transfers):
        # what libcurl said about the connection, for diagnosis
        for line in list(phase.log)[-25:]:
            warn(f"  curl: {line}")


def main() -> None:
    args = parse_args("pycurl", __doc__)
    if args.keylog:
        # read by libcurl's OpenSSL backend at global init (import pycurl)
        os.environ["SSLKEYLOGFILE"] = os.path.abspath(args.keylog)
    import pycurl

    report("version", curl_version(pycurl))
    vi = pycurl.version_info()
    if not vi[4] & pycurl.VERSION_HTTP3:
        unsupported(f"this libcurl ({vi[1]}) has no HTTP/3")
    if args.key_update:
        unsupported("libcurl has no API to start a key update")
    if args.v2:
        unsupported("libcurl has no option to choose the QUIC version")
    backend = vi[5] or ""
    if args.chacha20 and not backend.startswith(("OpenSSL", "quictls", "BoringSSL", "AWS-LC",
                                                 "wolfSSL")):
        unsupported(f"TLS 1.3 cipher suite selection with the {backend} backend")
    if args.zerortt and not hasattr(pycurl, "SSLOPT_EARLYDATA"):
        unsupported("this pycurl has no CURLSSLOPT_EARLYDATA")
    if not args.ca:
        warn("no --ca: libcurl verifies the server's certificate against its default store")

    share = pycurl.CurlShare()
    share.setopt(pycurl.SH_SHARE, pycurl.LOCK_DATA_SSL_SESSION)
    try:
        if not (args.resume or args.zerortt):
            phase = Phase("connection")
            trs = run_phase(pycurl, args, share, args.targets, phase, last_connection=True)
            check_phase(args, phase, trs)
            finish([tr.result for tr in trs])

        first, second = split_for_resume(args.targets)
        p1 = Phase("first connection")
        # CURLSSLOPT_EARLYDATA on the first connection too: libcurl looks
        # sessions up by the peer and the TLS options, so a session kept
        # without it is not offered to a transfer with it
        t1 = run_phase(pycurl, args, share, first, p1, last_connection=False,
                       earlydata=args.zerortt)
        check_phase(args, p1, t1)
        if not all(tr.result.ok for tr in t1):
            finish([tr.result for tr in t1], "first connection")
        p2 = Phase("second connection")
        t2 = run_phase(pycurl, args, share, second, p2, last_connection=True,
                       earlydata=args.zerortt)
        check_phase(args, p2, t2)
        if not p2.session_offered:
            warn("the second connection did not offer a session (no ticket from the first?)")
        report("resumed", p2.resumed)
        if args.zerortt:
            early = [tr.early for tr in t2]
            sent = sum(abs(e) for e in early)
            if any(e > 0 for e in early) and p2.resumed:
                report("early_data", "accepted")
            else:
                if any(e > 0 for e in early):
                    # libcurl 8.23 with OpenSSL's QUIC TLS API reports early
                    # data as accepted after a full handshake too (it only
                    # checks that the status is not "rejected"); early data
                    # cannot be accepted without resuming the session
                    warn(f"libcurl says {sent} bytes of early data were accepted, but the "
                         "session was not resumed: counted as rejected")
                elif not any(e < 0 for e in early):
                    warn("no early data was sent (the session does not allow it, or none was kept)")
                report("early_data", "rejected")
        finish([tr.result for tr in t1 + t2])
    finally:
        share.close()


if __name__ == "__main__":
    main()
