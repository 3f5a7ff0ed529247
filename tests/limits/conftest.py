"""Fixtures for the limit tests: those of tests/haproxy (the HAProxy binary
and its flavour, the demo backend, make_haproxy), imported from there, and
the `LIMIT ...` lines of every test repeated at the end of the run."""

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
E2E = HERE.parent / "haproxy"
sys.path.insert(0, str(E2E))
sys.path.insert(0, str(HERE))

# tests/haproxy/conftest.py under a name of its own, so that it can be
# loaded next to this one (and next to itself when both suites run)
_spec = importlib.util.spec_from_file_location("haproxy_e2e_conftest", E2E / "conftest.py")
_e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_e2e)

binary = _e2e.binary
backend = _e2e.backend
make_haproxy = _e2e.make_haproxy

import pytest  # noqa: E402

import limits  # noqa: E402


@pytest.fixture(autouse=True)
def _rust_flavour(binary):
    """The limits are read from haquic's counters (`show quic`): the suite
    runs against the USE_RUST_QUIC build only."""
    if binary.flavour != "rust":
        pytest.skip(f"{binary.path} is the {binary.flavour} flavour: the limits are measured "
                    f"through haquic's counters")


def pytest_sessionfinish(session, exitstatus):
    _e2e.pytest_sessionfinish(session, exitstatus)


def pytest_report_header(config):
    return _e2e.pytest_report_header(config)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if limits.RESULTS:
        terminalreporter.section("limits")
        for line in limits.RESULTS:
            terminalreporter.write_line(line)
