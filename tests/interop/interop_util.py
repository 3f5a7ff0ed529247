"""Helpers for the interop tests: the test pattern and the example server.

The server is build/haquic-server (examples/haquic-server.c), started on
127.0.0.1 with port 0; the port is read from --port-file. Every run is bounded
by --max-seconds, and the server is always stopped by the test that started it.
"""

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVER = Path(os.environ.get("HAQUIC_SERVER", REPO / "build" / "haquic-server"))
FIXTURES = Path(os.environ.get("HAQUIC_FIXTURES", REPO / "build" / "c-tests" / "fixtures"))
CA_FILE = FIXTURES / "ca.crt"
# The leaf certificate's names: CN=haquic.test, SAN localhost and 127.0.0.1.
SERVER_NAME = "localhost"

KIB = 1024
MIB = 1024 * 1024


def _pattern_period() -> bytes:
    # Byte i is (i*31 + (i >> 8)) & 0xff, as pattern_fill() in c-tests/pair.c.
    # For i = 256k + j that is (31j + k) & 0xff, so the pattern repeats every
    # 65536 bytes: build one period and repeat it.
    return bytes((31 * j + k) & 0xFF for k in range(256) for j in range(256))


_PERIOD = _pattern_period()


def pattern(n: int) -> bytes:
    """The first n bytes of the server's /size/N pattern."""
    reps = n // len(_PERIOD) + 1
    return (_PERIOD * reps)[:n]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upload_body(n: int) -> bytes:
    """A deterministic body that is not the download pattern."""
    import random

    return random.Random(20240901).randbytes(n)


class Server:
    """One run of the example server; use as a context manager."""

    def __init__(self, workdir: Path, *, workers: int = 2, root: Path | None = None,
                 max_seconds: int = 150, extra: tuple[str, ...] = ()):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port_file = self.workdir / "port"
        self.log_path = self.workdir / "server.log"
        self.out_path = self.workdir / "server.out"
        self.args = [
            str(SERVER),
            "--cert", str(FIXTURES / "leaf.crt"),
            "--key", str(FIXTURES / "leaf.key"),
            "--listen", "127.0.0.1:0",
            "--workers", str(workers),
            "--max-seconds", str(max_seconds),
            "--port-file", str(self.port_file),
            "--root", str(root or self.workdir),
            *extra,
        ]
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.returncode: int | None = None

    def start(self, timeout: float = 10.0) -> "Server":
        assert SERVER.exists(), f"{SERVER} is missing: run `make haquic-server`"
        assert (FIXTURES / "leaf.crt").exists(), f"{FIXTURES} has no leaf.crt"
        if self.port_file.exists():
            self.port_file.unlink()
        self._out = open(self.out_path, "wb")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.args, stdout=self._out, stderr=self._log,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.port_file.exists():
                text = self.port_file.read_text().strip()
                if text:
                    self.port = int(text)
                    break
            if self.proc.poll() is not None:
                raise RuntimeError(f"haquic-server exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.02)
        else:
            self.kill()
            raise RuntimeError(f"haquic-server wrote no port file in {timeout}s:\n{self.log()}")
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Sends `sig` and waits; kills it after `timeout`. Returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.returncode = self.proc.returncode
        return self.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def close_files(self) -> None:
        for f in (getattr(self, "_out", None), getattr(self, "_log", None)):
            if f is not None and not f.closed:
                f.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stdout(self) -> str:
        try:
            return self.out_path.read_text(errors="replace")
        except OSError:
            return ""

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            self.kill()
            self.close_files()
