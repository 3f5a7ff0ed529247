# Fuzzing (cargo-fuzz, libFuzzer, AddressSanitizer; nightly Rust only).
# Targets and input formats: fuzz/README.md.
#
#   make fuzz-smoke   each target for FUZZ_SECONDS (60) on the committed seeds
#                     and the corpus earlier runs grew under build/; part of
#                     make test. Last line: "N passed, M failed".
#   make fuzz-long    the same for FUZZ_SECONDS (600 here) each, appending one line
#                     per target (execs, exec/s, coverage) to FUZZ_RECORD.
#   make fuzz-corpus  regenerates the seed corpora in fuzz/corpus/ from real
#                     in-memory handshakes (fuzz/examples/gen_corpus.rs).
#   make fuzz-repro FUZZ_TARGET=t FUZZ_INPUT=file   replays one input.
#
# Everything builds under build/ (build/fuzz-target for the instrumented
# targets), so that cargo's target/ and the release build are untouched.
# The fuzz crate has its own Cargo.lock, checked with --locked.

# fuzz-long takes FUZZ_SECONDS too when it is given (make fuzz-long
# FUZZ_SECONDS=1800), else 600.
FUZZ_LONG_SECONDS ?= $(if $(filter command line environment,$(origin FUZZ_SECONDS)),$(FUZZ_SECONDS),600)
FUZZ_SECONDS      ?= 60
FUZZ_TARGETS      ?= datagram_intake h3_headers api_sequence
FUZZ_TARGET_DIR   ?= build/fuzz-target
FUZZ_RECORD       ?= build/fuzz-runs.tsv
CARGO_FUZZ_VERSION := 0.13.2
FUZZ_NIGHTLY      ?= +nightly
FUZZ_ENV          := FUZZ_TARGET_DIR=$(FUZZ_TARGET_DIR) FUZZ_WORK=build

.PHONY: fuzz-tools fuzz-build fuzz-smoke fuzz-long fuzz-corpus fuzz-repro

# Idempotent: installs the pinned cargo-fuzz only when `cargo +nightly fuzz`
# does not run.
fuzz-tools:
	@cargo $(FUZZ_NIGHTLY) fuzz --version >/dev/null 2>&1 || \
	  cargo install cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked

fuzz-build: fuzz-tools
	@cargo $(FUZZ_NIGHTLY) metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null
	cargo $(FUZZ_NIGHTLY) fuzz build --target-dir $(FUZZ_TARGET_DIR)

fuzz-smoke: fuzz-build
	@$(FUZZ_ENV) bash fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-long: fuzz-build
	@$(FUZZ_ENV) FUZZ_RECORD=$(FUZZ_RECORD) bash fuzz/run.sh $(FUZZ_LONG_SECONDS) $(FUZZ_TARGETS)
	@echo "recorded in $(FUZZ_RECORD)"

# Not instrumented: a plain release build of the fuzz crate (quiche still in
# its fuzzing mode, as the seeds must be), under build/fuzz-gen.
fuzz-corpus:
	rm -rf fuzz/corpus/datagram_intake fuzz/corpus/h3_headers
	$(or $(CARGO),cargo) run --locked --release --manifest-path fuzz/Cargo.toml --target-dir build/fuzz-gen \
	  --example gen_corpus -- fuzz/corpus

fuzz-repro: fuzz-build
	@test -n "$(FUZZ_TARGET)" && test -n "$(FUZZ_INPUT)" || \
	  { echo "usage: make fuzz-repro FUZZ_TARGET=target FUZZ_INPUT=file"; exit 2; }
	RUST_BACKTRACE=1 cargo $(FUZZ_NIGHTLY) fuzz run --target-dir $(FUZZ_TARGET_DIR) $(FUZZ_TARGET) $(FUZZ_INPUT) -- -runs=1
