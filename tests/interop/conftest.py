"""Fixtures for the interop tests: one example server for the session."""

import os

import pytest

from interop_util import KIB, Server, pattern


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The example server on 127.0.0.1 (port 0, two workers), serving a small
    root directory. Stopped with SIGTERM at the end: it must exit 0."""
    work = tmp_path_factory.mktemp("server")
    root = work / "root"
    root.mkdir()
    (root / "hello.txt").write_text("hello from haquic\n")
    (root / "blob.bin").write_bytes(pattern(300 * KIB))
    (root / "sub").mkdir()
    (root / "sub" / "index.html").write_text("<h1>index</h1>\n")
    srv = Server(work, workers=2, root=root)
    srv.start()
    srv.root = root
    try:
        yield srv
    finally:
        rc = srv.stop()
        srv.kill()
        srv.close_files()
    assert rc == 0, f"haquic-server exited with {rc} after SIGTERM:\n{srv.log()}"
    assert f"listening on 127.0.0.1:{srv.port}" in srv.stdout()


def pytest_report_header(config):
    return f"haquic-server: {os.environ.get('HAQUIC_SERVER', 'build/haquic-server')}"
