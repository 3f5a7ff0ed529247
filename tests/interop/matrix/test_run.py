"""The matrix runner's own logic: the wire checks of the cases, and the
INTEROP.md section it writes. (The cells themselves run in make interop and,
for the quick subset, in make test.)"""

import run


def stats(**over):
    d = {"c2s": {"types": {"retry": 0}, "dropped": 0, "corrupted": 0, "dropped_blackhole": 0,
                 "versions": {}},
         "s2c": {"types": {"retry": 0}, "dropped": 0, "corrupted": 0, "dropped_blackhole": 0,
                 "versions": {}},
         "rebinds": 0, "flows": [{"client": "127.0.0.1:5", "sources": ["127.0.0.1:6"]}],
         "connections": [conn()]}
    d.update(over)
    return d


def conn(**over):
    c = {"client_scid": "aa", "first_seen_s": 0.0, "server_handshake_bytes": 8000,
         "c2s_0rtt_packets": 0, "c2s_0rtt_bytes": 0, "retry_packets": 0, "validated": True,
         "prevalidation_c2s_bytes": 1200, "prevalidation_s2c_bytes": 3600}
    c.update(over)
    return c


def case(name):
    return next(c for c in run.CASES if c.name == name)


def check(name, st, kv=None, elapsed=1.0):
    r = run.CellRun(st, kv or {}, elapsed)
    return case(name).check(r), r.detail


def test_amplification_limit_is_three_times():
    assert check("amplificationlimit", stats())[0] is None
    why, _ = check("amplificationlimit", stats(connections=[conn(prevalidation_s2c_bytes=3601)]))
    assert why and "limit broken" in why
    # a chain too small to reach the limit proves nothing
    why, _ = check("amplificationlimit", stats(connections=[conn(server_handshake_bytes=3000)]))
    assert why and "too small" in why
    why, _ = check("amplificationlimit", stats(connections=[conn(validated=False)]))
    assert why and "never validated" in why


def test_resumption_needs_a_shorter_second_handshake():
    two = [conn(), conn(client_scid="bb", first_seen_s=1.0, server_handshake_bytes=400)]
    assert check("resumption", stats(connections=two))[0] is None
    full_again = [conn(), conn(client_scid="bb", first_seen_s=1.0, server_handshake_bytes=7900)]
    why, _ = check("resumption", stats(connections=full_again))
    assert why and "not resumed" in why
    why, _ = check("resumption", stats())
    assert why and "1 connection" in why


def test_zerortt_needs_packets_and_acceptance():
    two = [conn(), conn(client_scid="bb", first_seen_s=1.0, server_handshake_bytes=400,
                        c2s_0rtt_packets=2, c2s_0rtt_bytes=700)]
    assert check("zerortt", stats(connections=two), {"early_data": "accepted"})[0] is None
    why, _ = check("zerortt", stats(connections=two), {"early_data": "rejected"})
    assert why and "early_data=rejected" in why
    none = [conn(), conn(client_scid="bb", first_seen_s=1.0, server_handshake_bytes=400)]
    why, _ = check("zerortt", stats(connections=none), {"early_data": "accepted"})
    assert why and "no 0-RTT packet" in why


def test_retry_rebind_impairment_version_checks():
    assert "no Retry" in check("retry", stats())[0]
    st = stats(connections=[conn(retry_packets=1)])
    st["s2c"]["types"]["retry"] = 1
    assert check("retry", st)[0] is None
    assert "never rebound" in check("rebind-port", stats())[0]
    assert check("rebind-port", stats(rebinds=2))[0] is None
    assert "impaired nothing" in check("transferloss", stats())[0]
    st = stats()
    st["s2c"]["corrupted"] = 3
    assert check("transfercorruption", st)[0] is None
    assert "never spoke QUIC version 2" in check("v2", stats())[0]
    st = stats()
    st["s2c"]["versions"] = {"6b3343cf": 3}
    assert check("v2", st)[0] is None
    assert check("handshake", stats())[0] is None
    assert "2 connections" in check("handshake", stats(connections=[conn(), conn(client_scid="b")]))[0]
    assert "400 ms" in check("longrtt", stats(), elapsed=0.2)[0]


def test_every_case_has_files_or_is_unsupported_everywhere():
    for c in run.CASES:
        assert c.files or set(c.unsupported) == {"rust", "stock"}, c.name
    assert set(run.QUICK) <= {c.name for c in run.CASES}


def test_doc_section_side_by_side(tmp_path):
    def result(flavour, verdicts):
        return {"server": f"{flavour} server", "flavour": flavour, "seed": 1, "commit": "abc",
                "date": "2026-11-26", "minutes": 1.0, "summary": "x",
                "client_versions": {"aioquic": "aioquic 1.7.2"},
                "cells": [{"case": "handshake", "client": cl, "verdict": v, "reason": "why " + cl,
                           "detail": ""} for cl, v in verdicts.items()]}
    doc = tmp_path / "INTEROP.md"
    doc.write_text("# Interop\n\nkept text\n")
    results = {"rust": result("rust", {"aioquic": "pass", "pycurl": "fail"}),
               "stock": result("stock", {"aioquic": "unsupported"})}
    run.write_doc(doc, results)
    text = doc.read_text()
    assert text.startswith("# Interop\n\nkept text\n")
    row = next(l for l in text.splitlines() if l.startswith("| `handshake`"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # columns: case, then per client haquic and stock
    assert cells[1:5] == ["pass", "unsupported", "**fail**", "not run"]
    assert "`handshake` / pycurl: fail: why pycurl" in text
    # a second write replaces the section instead of appending one
    run.write_doc(doc, results)
    assert doc.read_text().count(run.BEGIN) == 1
