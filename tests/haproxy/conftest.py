"""Fixtures for the HAProxy end-to-end tests.

  binary   the HAProxy under test (HAPROXY_BIN) and its flavour ("rust" for
           USE_RUST_QUIC=1, "stock" for native QUIC); a missing binary is an
           error, not a skip
  backend  tests/haproxy/backend.py on 127.0.0.1, one for the session
  hx       a running HAProxy per nbthread value (2 and 4), shared by the
           tests of a module
  make_haproxy  a factory for HAProxy instances of a single test
Every HAProxy process started is killed when its fixture ends, whatever
happened.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import hap  # noqa: E402


@pytest.fixture(scope="session")
def binary():
    return hap.detect(hap.HAPROXY_BIN)


@pytest.fixture(scope="session")
def backend(tmp_path_factory):
    """The demo backend as a separate process (it must not compete with the
    clients for this process's GIL). Yields its port."""
    work = tmp_path_factory.mktemp("backend")
    port_file = work / "port"
    out = open(work / "backend.log", "wb")
    p = subprocess.Popen([sys.executable, str(HERE / "backend.py"), "--port", "0",
                          "--port-file", str(port_file), "--max-seconds", "1800"],
                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         preexec_fn=hap._die_with_parent)
    try:
        hap.wait_for(lambda: port_file.exists() or p.poll() is not None, 10, what="backend port file")
        assert p.poll() is None, f"backend exited: {(work / 'backend.log').read_text()}"
        yield int(port_file.read_text())
    finally:
        hap.stop_process(p)
        out.close()


def _started(binary, backend, workdir, **opts):
    h = hap.HAProxy(binary, workdir, backend, hap.Options(**opts))
    try:
        h.start()
    except BaseException:
        h.kill()
        raise
    return h


@pytest.fixture(scope="module", params=[2, 4], ids=lambda n: f"nbthread{n}")
def hx(request, binary, backend, tmp_path_factory):
    """A running HAProxy with nbthread 2, then 4 (tests using it run once
    per value). Stopped with SIGUSR1 at the end; it must exit 0."""
    h = _started(binary, backend, tmp_path_factory.mktemp(f"hx{request.param}"),
                 nbthread=request.param)
    try:
        yield h
        rc = h.stop(timeout=20)
        assert rc == 0, f"haproxy exited with {rc} after SIGUSR1:\n{h.stderr()}"
    finally:
        h.kill()


@pytest.fixture(scope="module")
def hx1(binary, backend, tmp_path_factory):
    """One running HAProxy (nbthread 2) for the tests of a module."""
    h = _started(binary, backend, tmp_path_factory.mktemp("hx1"), nbthread=2)
    try:
        yield h
        rc = h.stop(timeout=20)
        assert rc == 0, f"haproxy exited with {rc} after SIGUSR1:\n{h.stderr()}"
    finally:
        h.kill()


@pytest.fixture
def make_haproxy(binary, backend, tmp_path):
    """make_haproxy(**Options) -> a started HAProxy, killed after the test."""
    made = []

    def make(start=True, **opts):
        workdir = tmp_path / f"haproxy{len(made)}"
        if start:
            h = _started(binary, backend, workdir, **opts)
        else:
            h = hap.HAProxy(binary, workdir, backend, hap.Options(**opts))
        made.append(h)
        return h

    try:
        yield make
    finally:
        for h in made:
            h.kill()


def pytest_sessionfinish(session, exitstatus):
    hap.kill_all()


def pytest_report_header(config):
    try:
        b = hap.detect(hap.HAPROXY_BIN)
        extra = f", haquic {b.haquic_version}" if b.haquic_version else ""
        return f"haproxy: {b.path} ({b.version}, flavour {b.flavour}{extra})"
    except Exception as e:       # the binary fixture reports it as an error
        return f"haproxy: {hap.HAPROXY_BIN} ({e})"
