"""The parts of scripts/bench_haproxy.py that need no HAProxy: the
statistics and the met/missed verdicts of the table, and the backend's
POST /sink that the upload figure relies on. (`make bench-smoke` runs these,
then the benchmark itself in its smoke mode.)"""

import http.client
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import bench_haproxy as bh  # noqa: E402
import backend  # noqa: E402  (bench_haproxy put tests/haproxy on the path)


def values(stock, haquic, key="k"):
    return {"stock": {key: stock}, "haquic": {key: haquic}}


def test_percentile_is_nearest_rank():
    v = list(range(1, 101))
    assert bh.percentile(v, 0.50) == 50
    assert bh.percentile(v, 0.99) == 99
    assert bh.percentile([7.0], 0.99) == 7.0


def test_at_most_target():
    m = bh.Metric("k", "cpu", "µs", False, ("<=", 0.67))
    s = bh.summary(values([10.0, 12.0, 11.0], [6.0, 7.0, 9.0]), m)
    assert s["stock"] == (11.0, 10.0, 12.0)
    assert s["haquic"] == (7.0, 6.0, 9.0)
    assert math.isclose(s["ratio"], 7 / 11)
    assert s["verdict"] == "met"
    assert bh.summary(values([10.0], [6.8]), m)["verdict"] == "missed"


def test_at_least_target():
    m = bh.Metric("k", "MB/s", "MB/s", True, (">=", 2.0))
    assert bh.summary(values([100.0], [199.0]), m)["verdict"] == "missed"
    assert bh.summary(values([100.0], [200.0]), m)["verdict"] == "met"


def test_missing_figure_is_never_met():
    m = bh.Metric("k", "x", "x", True, (">=", 1.0))
    s = bh.summary(values([], [5.0]), m)
    assert s["stock"] is None and math.isnan(s["ratio"])
    assert s["verdict"] == "no figure"
    assert "no figure" in bh.table(values([], [5.0]), [m])


def test_no_target_has_no_verdict():
    m = bh.Metric("k", "x", "x", True)
    assert bh.summary(values([1.0], [2.0]), m)["verdict"] == "—"


def test_table_has_a_row_per_metric():
    ms = bh.metrics(bh.FULL)
    vals = {impl: {m.key: [1.0, 2.0, 3.0] for m in ms} for impl in bh.IMPLS}
    rows = bh.table(vals, ms).splitlines()
    assert len(rows) == 2 + len(ms)
    assert all(r.endswith(("| met |", "| missed |", "| — |")) for r in rows[2:])


def post_sink(port, body, chunked):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        if chunked:
            c.request("POST", "/sink", body=iter([body[:1000], body[1000:]]),
                      headers={"Transfer-Encoding": "chunked"}, encode_chunked=True)
        else:
            c.request("POST", "/sink", body=body)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def test_backend_sink_counts_the_body():
    srv = backend.serve()
    try:
        port = srv.server_address[1]
        body = backend.pattern(300_001)
        assert post_sink(port, body, chunked=False) == (200, b"300001\n")
        assert post_sink(port, body, chunked=True) == (200, b"300001\n")
        assert post_sink(port, b"", chunked=False) == (200, b"0\n")
    finally:
        srv.shutdown()
        srv.server_close()
