"""What an operator sees on the stats socket: `show stat` and `show quic`
counters that match the requests and connections sent.

Patched binary (flavour "rust"), the contract with the C side:
  show stat, frontend row: h3_requests, h3_requests_rejected,
      h3_message_errors, quic_conns_accepted, quic_handshakes
  show quic: `key: value` lines, among them `requests: N` and
      `conns_accepted: N`, summed over the workers
Stock 3.0.11: h3req (HTTP/3 requests) and h3sess (HTTP/3 sessions, one per
connection) in show stat; `show quic` lists the open connections, one line
each.
Both: HAProxy's own req_tot, hrsp_2xx and conn_tot."""

import asyncio
import re

import aqclient
import curlclient
import hap

AQ_CONNS, AQ_STREAMS, CURL_REQS = 3, 7, 4
REQUESTS = AQ_CONNS * AQ_STREAMS + CURL_REQS      # 25
CONNS = AQ_CONNS + CURL_REQS                       # 7


def snapshot(h):
    row = h.frontend_stats()
    names = hap.COUNTERS[h.binary.flavour]
    out = {k: hap.counter(row, col) for k, col in names.items()}
    for col in ("req_tot", "hrsp_2xx", "conn_tot"):
        out[col] = hap.counter(row, col)
    if h.binary.flavour == "rust":
        for k, v in hap.parse_show_quic_kv(h.cli("show quic")).items():
            out["show_quic." + k] = v
    return out


def test_counters_match_requests(make_haproxy, binary):
    h = make_haproxy(nbthread=4)
    before = snapshot(h)
    listed = {}

    async def conn(i):
        async with aqclient.connect(h.port) as c:
            rs = await asyncio.gather(*(c.request("GET", f"/bytes/{100 + j}") for j in range(AQ_STREAMS)))
            # while the connection is open: what `show quic` lists
            listed[i] = (c._transport.get_extra_info("sockname")[1], h.cli("show quic"))
            return rs

    async def go():
        return await asyncio.gather(*(conn(i) for i in range(AQ_CONNS)))

    for rs in aqclient.run(go(), 30):
        assert all(r.ok and r.status == 200 for r in rs)
    for _ in range(CURL_REQS):
        r = curlclient.fetch(h.url("/bytes/10"))
        assert r.error is None and r.status == 200

    # counters are updated when a stream or connection ends: wait for them
    # (bounded) to reach what was sent, then check every one
    expected = {"req_tot": REQUESTS, "hrsp_2xx": REQUESTS, "conn_tot": CONNS,
                "requests": REQUESTS, "conns": CONNS}
    if binary.flavour == "rust":
        expected.update({"handshakes": CONNS, "rejected": 0, "message_errors": 0,
                         "show_quic.requests": REQUESTS, "show_quic.conns_accepted": CONNS})

    def deltas():
        after = snapshot(h)
        return {k: after[k] - before.get(k, 0) for k in after}
    try:
        hap.wait_for(lambda: all(deltas().get(k) == v for k, v in expected.items()), 5)
    except TimeoutError:
        pass
    delta = deltas()

    assert delta["req_tot"] == REQUESTS, delta
    assert delta["hrsp_2xx"] == REQUESTS, delta
    assert delta["conn_tot"] == CONNS, delta
    assert delta["requests"] == REQUESTS, delta
    assert delta["conns"] == CONNS, delta
    if binary.flavour == "rust":
        assert delta["handshakes"] == CONNS, delta
        assert delta["rejected"] == 0 and delta["message_errors"] == 0, delta
        assert delta.get("show_quic.requests") == REQUESTS, delta
        assert delta.get("show_quic.conns_accepted") == CONNS, delta
    else:
        # each open connection was listed, with the client's address
        for i, (port, text) in listed.items():
            rows = [l for l in text.splitlines() if re.match(r"^0x[0-9a-f]+\[\d+\]/fe ", l)]
            assert any(f"127.0.0.1:{port} " in l + " " for l in rows), (port, text)


def test_show_stat_columns(make_haproxy, binary):
    """The frontend row has every column the tests rely on, as numbers."""
    h = make_haproxy()
    row = h.frontend_stats()
    for col in list(hap.COUNTERS[binary.flavour].values()) + ["req_tot", "conn_tot", "hrsp_2xx"]:
        assert re.fullmatch(r"\d+", row.get(col, "x") or "0"), (col, row.get(col))
    if binary.flavour == "rust":
        kv = hap.parse_show_quic_kv(h.cli("show quic"))
        assert "requests" in kv and "conns_accepted" in kv, kv
