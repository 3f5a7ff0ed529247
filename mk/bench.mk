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
