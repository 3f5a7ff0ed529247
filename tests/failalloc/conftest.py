"""Fixtures for the allocation-failure tests: the `binary` and `backend`
fixtures of tests/haproxy (its conftest, loaded under another name), and a
table of the figures every rate printed, shown before pytest's summary."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "haproxy"))

import e2e_conftest  # noqa: E402

_e2e = e2e_conftest.load()
binary = _e2e.binary
backend = _e2e.backend
pytest_sessionfinish = _e2e.pytest_sessionfinish
pytest_report_header = _e2e.pytest_report_header

# One dict per rate, filled by test_failalloc.py.
FIGURES: list[dict] = []

COLUMNS = [("rate", "rate %"), ("tried", "tried"), ("ok", "ok"), ("failed", "failed"),
           ("http_err", "4xx/5xx"), ("reset", "reset/close"), ("timeout", "timeout"),
           ("aborted", "aborted"), ("pool_failed", "PoolFailed"), ("asan", "ASan"),
           ("alive", "alive"), ("probe", "probe tries"), ("exit", "exit")]


def pytest_terminal_summary(terminalreporter):
    tr = terminalreporter
    if not FIGURES:
        return
    tr.section("allocation failures: figures per tune.fail-alloc rate")
    widths = [max(len(h), *(len(str(f.get(k, ""))) for f in FIGURES)) for k, h in COLUMNS]
    tr.write_line("  ".join(h.rjust(w) for (_, h), w in zip(COLUMNS, widths)))
    for f in FIGURES:
        tr.write_line("  ".join(str(f.get(k, "")).rjust(w) for (k, _), w in zip(COLUMNS, widths)))
    for f in FIGURES:
        if f.get("top_pools"):
            tr.write_line(f"  {f['rate']:>3} %: failed pools: {f['top_pools']}")
        if f.get("errors"):
            tr.write_line(f"  {f['rate']:>3} %: client errors: {f['errors']}")


def pytest_configure(config):
    config.failalloc_figures = FIGURES
