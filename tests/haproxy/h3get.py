#!/usr/bin/env python3
"""Fetches one URL over HTTP/3 only (libcurl via pycurl) and prints the
status line, the protocol and the body.

    build/venv/bin/python tests/haproxy/h3get.py https://127.0.0.1:8443/
    ... --insecure        do not verify the certificate (self-signed demo)
    ... --cacert FILE     verify against FILE
Exit status: 0 for a 2xx answer over HTTP/3, 1 otherwise.
"""

import argparse
import sys

import pycurl


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="GET a URL over HTTP/3")
    ap.add_argument("url")
    ap.add_argument("--insecure", "-k", action="store_true", help="skip certificate verification")
    ap.add_argument("--cacert", help="CA or self-signed certificate to verify against")
    ap.add_argument("--timeout", type=float, default=10.0)
    args = ap.parse_args(argv)

    if not pycurl.version_info()[4] & pycurl.VERSION_HTTP3:
        print(f"h3get: this libcurl has no HTTP/3 ({pycurl.version})", file=sys.stderr)
        return 1
    body = bytearray()
    c = pycurl.Curl()
    c.setopt(pycurl.URL, args.url)
    c.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_3ONLY)
    c.setopt(pycurl.TIMEOUT_MS, int(args.timeout * 1000))
    c.setopt(pycurl.WRITEFUNCTION, body.extend)
    if args.cacert:
        c.setopt(pycurl.CAINFO, args.cacert)
    if args.insecure:
        c.setopt(pycurl.SSL_VERIFYPEER, 0)
        c.setopt(pycurl.SSL_VERIFYHOST, 0)
    try:
        c.perform()
    except pycurl.error as e:
        print(f"h3get: {args.url}: curl error {e.args[0]}: {e.args[1]}", file=sys.stderr)
        return 1
    status = c.getinfo(pycurl.RESPONSE_CODE)
    h3 = c.getinfo(pycurl.INFO_HTTP_VERSION) == pycurl.CURL_HTTP_VERSION_3
    c.close()
    print(f"{status} over {'HTTP/3' if h3 else 'not HTTP/3'}, {len(body)} bytes")
    sys.stdout.flush()
    sys.stdout.buffer.write(bytes(body))
    if body and not body.endswith(b"\n"):
        print()
    return 0 if h3 and 200 <= status < 300 else 1


if __name__ == "__main__":
    sys.exit(main())
