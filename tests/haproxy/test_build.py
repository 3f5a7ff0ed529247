"""The binary: what `haproxy -vv` says, and what `haproxy -c` accepts.

Each test asserts the behaviour of the flavour under test: "rust" (built
with USE_RUST_QUIC=1) or "stock" (native QUIC with the OpenSSL
compatibility layer)."""

import re
import subprocess

import pytest

import hap

REPO_VERSION = re.search(r'^version = "(.*)"', (hap.REPO / "Cargo.toml").read_text(), re.M).group(1)


def test_vv_flavour(binary):
    feats = hap.feature_list(binary.vv)
    assert binary.version.startswith("3.0.11"), binary.version
    if binary.flavour == "rust":
        assert "RUST_QUIC" in feats, "the feature list has no +RUST_QUIC"
        assert "QUIC" not in feats, "+QUIC (native stack) and +RUST_QUIC together"
        assert "USE_RUST_QUIC=1" in binary.vv
        # a line naming haquic and its version, e.g. "Built with haquic version : 0.1.0"
        lines = [l for l in binary.vv.splitlines() if "haquic" in l.lower()]
        assert any(REPO_VERSION in l for l in lines), \
            f"no -vv line with haquic {REPO_VERSION}: {lines}"
    else:
        assert "QUIC" in feats and "RUST_QUIC" not in feats
        assert "USE_QUIC=1" in binary.vv
        assert "QUIC_OPENSSL_COMPAT" in feats
        assert binary.haquic_version is None
    # either way, the QUIC multiplexer is there for HTTP/3
    assert re.search(r"^\s+quic : mode=HTTP\s+side=FE", binary.vv, re.M), "no quic mux in -vv"


def keyword_config(binary, *, limited_quic=None, global_extra="", bind_extra=""):
    if limited_quic is None:
        limited_quic = binary.needs_limited_quic
    return f"""
global
{"    limited-quic" if limited_quic else ""}
    cluster-secret 0123456789abcdef-e2e-secret
    tune.quic.frontend.max-idle-timeout 20s
    tune.quic.frontend.max-streams-bidi 50
    tune.quic.retry-threshold 50
    tune.quic.socket-owner connection
{global_extra}
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend fe
    bind quic4@127.0.0.1:4443 ssl crt {hap.COMBINED_PEM} alpn h3 quic-socket connection quic-force-retry quic-cc-algo cubic allow-0rtt {bind_extra}
    default_backend be

backend be
    server s1 127.0.0.1:8080
"""


def test_config_with_every_quic_keyword(binary, tmp_path):
    r = hap.check_config(binary, keyword_config(binary), tmp_path)
    assert r.returncode == 0, r.stderr
    assert "ALERT" not in r.stderr, r.stderr
    if binary.flavour == "stock":
        # the OpenSSL compatibility layer cannot do 0-RTT, and says so
        assert "0-RTT with QUIC is not supported by this SSL library" in r.stderr, r.stderr
    else:
        assert "0-RTT" not in r.stderr, r.stderr


def test_limited_quic_per_flavour(binary, tmp_path):
    """stock needs `limited-quic` to bind QUIC on OpenSSL; the rust flavour
    works without it."""
    r = hap.check_config(binary, keyword_config(binary, limited_quic=False), tmp_path)
    if binary.flavour == "stock":
        assert r.returncode != 0
        assert "limited-quic" in r.stderr, r.stderr
    else:
        assert r.returncode == 0, r.stderr


def test_unknown_global_keyword(binary, tmp_path):
    r = hap.check_config(binary, keyword_config(binary, global_extra="    tune.quic.frobnicate 1"),
                         tmp_path)
    assert r.returncode != 0
    assert "unknown keyword 'tune.quic.frobnicate'" in r.stderr, r.stderr


def test_unknown_bind_keyword(binary, tmp_path):
    r = hap.check_config(binary, keyword_config(binary, bind_extra="quic-frobnicate"), tmp_path)
    assert r.returncode != 0
    assert "unknown keyword 'quic-frobnicate'" in r.stderr, r.stderr


def test_bad_congestion_algorithm(binary, tmp_path):
    text = keyword_config(binary).replace("quic-cc-algo cubic", "quic-cc-algo frobnicate")
    r = hap.check_config(binary, text, tmp_path)
    assert r.returncode != 0
    assert "frobnicate" in r.stderr, r.stderr


def test_generated_config_is_valid(binary, backend, tmp_path):
    """The configuration the other tests run (hap.CONFIG_TEMPLATE)."""
    h = hap.HAProxy(binary, tmp_path, backend, hap.Options(nbthread=4))
    try:
        r = subprocess.run([str(binary.path), "-c", "-f", str(h.cfg)], capture_output=True,
                           text=True, timeout=30, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert ("limited-quic" in h.cfg.read_text()) == (binary.flavour == "stock")
    finally:
        h.kill()



def test_engine_start_failure_is_an_alert_not_a_crash(binary, backend, tmp_path):
    """An engine that cannot start (here: a qlog directory that does not
    exist, which `haproxy -c` cannot know) is reported at bind time and
    HAProxy exits 1. It used to free an uninitialized error pointer on that
    path and crash about one start in two, so it is started ten times."""
    if binary.flavour != "rust":
        pytest.skip("tune.quic.rquic-qlog-dir is the haquic flavour's keyword")
    missing = tmp_path / "no-such-dir"
    h = hap.HAProxy(binary, tmp_path, backend,
                    hap.Options(extra_global=f"tune.quic.rquic-qlog-dir {missing}"))
    try:
        for _ in range(10):
            r = subprocess.run([str(binary.path), "-db", "-f", str(h.cfg)], capture_output=True,
                               text=True, timeout=30, cwd=tmp_path)
            assert r.returncode == 1, (r.returncode, r.stderr)
            assert "cannot start the QUIC engine" in r.stderr, r.stderr
    finally:
        h.kill()
