# Loom models of the cross-thread protocols (loom/, see loom/Cargo.toml): the
# dispatcher's hand-off, handle refcounts against close, and the two-phase fd
# release. Included from the Makefile, which defines CARGO and BUILD.
#
#   make test-loom   build and run the models
#
# The models are a crate of their own, with their own target directory: the
# RUSTFLAGS they build with (--cfg loom) would otherwise rebuild the
# library's quiche and BoringSSL. LOOM_MAX_PREEMPTIONS bounds how many times
# loom may preempt a thread in one interleaving: 3 explores the models in
# about 10 s on the project's 2-core machine (plus about 35 s for a first
# build), 4 takes about a minute.

LOOM_TARGET_DIR      := $(BUILD)/loom-target
LOOM_MAX_PREEMPTIONS ?= 3

.PHONY: test-loom

test-loom:
	RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=$(LOOM_MAX_PREEMPTIONS) \
	  $(CARGO) test --release --locked --manifest-path loom/Cargo.toml --target-dir $(LOOM_TARGET_DIR) 2>&1
