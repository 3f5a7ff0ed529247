# The engine benchmark: haquic's example server against quiche's own
# examples/http3-server (built from the quiche crate this build locked), each
# pinned to one core, driven by pycurl (libcurl + ngtcp2) on the other.
#
#   make bench-engine   prints the table; writes build/bench/engine.md + .svg

BENCH_DIR := $(BUILD)/bench

.PHONY: bench-engine

# quiche's package directory, as cargo resolved it for this build.
QUICHE_PKG = $(shell $(CARGO) metadata --format-version 1 2>/dev/null | python3 -c \
	'import json,sys; print([p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"]=="quiche"][0].rsplit("/",1)[0])')

$(BENCH_DIR)/http3-server:
	@mkdir -p $(BENCH_DIR)
	rm -rf $(BENCH_DIR)/quiche-src
	cp -r "$(QUICHE_PKG)" $(BENCH_DIR)/quiche-src
	$(CARGO) build --release --example http3-server \
	  --manifest-path $(BENCH_DIR)/quiche-src/Cargo.toml --target-dir $(BENCH_DIR)/target
	cp $(BENCH_DIR)/target/release/examples/http3-server $@

bench-engine: deps $(INTEROP_STAMP) $(BUILD)/haquic-server $(BENCH_DIR)/http3-server $(FIXTURES)/.complete
	$(INTEROP_VENV)/bin/python scripts/bench_engine.py \
	  --haquic $(CURDIR)/$(BUILD)/haquic-server --quiche $(CURDIR)/$(BENCH_DIR)/http3-server \
	  --cert $(CURDIR)/$(FIXTURES)/leaf.crt --key $(CURDIR)/$(FIXTURES)/leaf.key \
	  --out $(BENCH_DIR)/engine.md

# HAProxy 3.0.11, stock native QUIC against haquic, on one configuration
# (scripts/bench_haproxy.py): each pinned to core 0, the load tools and the
# HTTP/1.1 backend to core 1, taking turns for BENCH_ROUNDS rounds.
#
#   make bench         writes bench/results/<date>.md and .png (about 10 min)
#   make bench-smoke   one short round into build/bench/smoke/, then checks
#                      that every figure came out (part of make test; builds
#                      the two HAProxys only when they are missing)
#
# mk/haproxy.mk is included after this file: the binaries are named by path.

BENCH_ROUNDS ?= 5
BENCH_HAPROXYS := $(BUILD)/haproxy-stock/haproxy $(BUILD)/haproxy/haproxy
BENCH_MISSING  := $(filter-out $(wildcard $(BENCH_HAPROXYS)),$(BENCH_HAPROXYS))
BENCH_RUN = PYTHONDONTWRITEBYTECODE=1 $(INTEROP_VENV)/bin/python scripts/bench_haproxy.py \
	--stock $(CURDIR)/$(BUILD)/haproxy-stock/haproxy --haquic $(CURDIR)/$(BUILD)/haproxy/haproxy \
	--crt $(CURDIR)/$(FIXTURES)/combined.pem

.PHONY: bench bench-smoke

bench: deps haproxy haproxy-stock $(INTEROP_STAMP) $(FIXTURES)/.complete
	$(BENCH_RUN) --rounds $(BENCH_ROUNDS) --out-dir bench/results --command "make bench"

# tests/bench first (the table's statistics and verdicts, the backend's
# /sink), then the smoke run.
bench-smoke: $(INTEROP_STAMP) $(FIXTURES)/.complete $(BENCH_MISSING)
	PYTHONDONTWRITEBYTECODE=1 $(INTEROP_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/bench
	$(BENCH_RUN) --smoke --out-dir $(BENCH_DIR)/smoke --command "make bench-smoke"
