# haquic: QUIC and HTTP/3 for HAProxy, behind a C ABI.
#
#   make run      set up everything, build, and run the main job: the patched
#                 HAProxy, HTTP/3 on 127.0.0.1:8443 (examples/haproxy.cfg)
#   make test     set up everything and run every test
#   make haproxy  build/haproxy/haproxy (HAProxy 3.0.11 + haproxy-patches/)
#
# Packagers: make all && make install DESTDIR=... PREFIX=/usr
# (LIBDIR, INCLUDEDIR and PKGCONFIGDIR are honoured too).

SHELL        := /bin/bash
CARGO        ?= cargo
CC           ?= cc
PREFIX       ?= /usr/local
LIBDIR       ?= $(PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
DESTDIR      ?=
INSTALL      ?= install

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
MAJOR   := $(word 1,$(subst ., ,$(VERSION)))
SONAME  := libhaquic.so.$(MAJOR)
REALLIB := libhaquic.so.$(VERSION)

BUILD        := build
# The shared library is linked from cargo's staticlib with haquic.map, so that
# it exports only haquic_* under the version node HAQUIC_0 (rustc's own cdylib
# export list would override our version script).
# cargo's target directory (CARGO_TARGET_DIR is honoured, as cargo does).
TARGET_DIR   := $(or $(CARGO_TARGET_DIR),target)
RELEASE_A    := $(TARGET_DIR)/release/libhaquic.a
# The test library: debug profile, with the test-only hooks and the bindgen
# ABI check compiled in. Never installed.
TEST_FEATURES := test-hooks,abi-check
TEST_A       := $(TARGET_DIR)/debug/libhaquic.a
NATIVE_LIBS  := -lstdc++ -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
FIXTURES     := $(BUILD)/c-tests/fixtures
STAGE_RELEASE := $(BUILD)/lib/release
STAGE_TEST    := $(BUILD)/lib/test

C_WARN      := -Wall -Wextra -Werror -std=c11 -D_GNU_SOURCE
C_SANITIZE  := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
C_TEST_SRCS := c-tests/runner.c c-tests/common.c c-tests/pair.c c-tests/test_config.c c-tests/test_misc.c \
	c-tests/test_coexist.c c-tests/test_engine.c c-tests/test_hostapi.c c-tests/test_regress.c c-tests/mt.c c-tests/test_threads.c
C_TEST_HDRS := c-tests/common.h c-tests/pair.h c-tests/mt.h include/haquic.h
RUST_SRCS   := $(shell find src -name '*.rs') build.rs Cargo.toml cbindgen.toml haquic.map

.PHONY: all deps lib header check-header check-install test test-rust test-c test-c-valgrind stress info \
	check-symbols install uninstall clean run help

all: lib $(BUILD)/haquic.pc

help:
	@sed -n '1,14p' Makefile

# One idempotent step installs the Debian packages the build needs.
deps:
	@sh scripts/install-deps.sh

lib: $(STAGE_RELEASE)/$(SONAME)

# Release builds are reproducible (make check-repro): the build's own paths
# never reach the library. rustc remaps Rust paths; the C compiler remaps the
# paths of the C and C++ that cargo builds (BoringSSL, under target/). Every
# release build goes through RELEASE_ENV, so that they share one cache.
# SOURCE_DATE_EPOCH is the date of the latest debian/changelog entry, as in
# the package build: it changes with a release, not with every commit.
SOURCE_DATE_EPOCH ?= $(shell date -d "$$(sed -n 's/^ -- .*>  //p' debian/changelog | head -n1)" +%s 2>/dev/null)
REPRO_PREFIX   := /usr/src/haquic-$(VERSION)
CARGO_HOME_DIR := $(or $(CARGO_HOME),$(HOME)/.cargo)
REPRO_MAPS     := $(CURDIR)=$(REPRO_PREFIX) $(CARGO_HOME_DIR)=/cargo
RELEASE_ENV    := SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) RUSTFLAGS="$(strip $(RUSTFLAGS) $(foreach m,$(REPRO_MAPS),--remap-path-prefix=$(m)))" \
                  CFLAGS="$(strip $(CFLAGS) $(foreach m,$(REPRO_MAPS),-ffile-prefix-map=$(m)))" \
                  CXXFLAGS="$(strip $(CXXFLAGS) $(foreach m,$(REPRO_MAPS),-ffile-prefix-map=$(m)))"

$(RELEASE_A): $(RUST_SRCS) include/haquic.h
	$(RELEASE_ENV) $(CARGO) build --release --lib

# Regenerates include/haquic.h from the sources (cbindgen runs in build.rs).
header:
	$(RELEASE_ENV) $(CARGO) build --release --lib
	cp "$$(for f in $(TARGET_DIR)/release/build/haquic-*/out/header-path.txt; do cat $$f; echo; done | xargs ls -t | head -n1)" include/haquic.h
	@echo "include/haquic.h regenerated"

# haquic.pc for the given PREFIX, LIBDIR and INCLUDEDIR. Libs.private lists
# what a static link (pkg-config --static) needs besides libhaquic.a.
PC_SUBST = sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(VERSION)|' \
	    -e 's|@NATIVE_LIBS@|$(filter-out -lc,$(NATIVE_LIBS))|' haquic.pc.in

$(BUILD)/haquic.pc: haquic.pc.in Cargo.toml
	@mkdir -p $(BUILD)
	$(PC_SUBST) > $@

# ---- tests -------------------------------------------------------------------

test: deps
	@bash scripts/run-tests.sh \
	  "cargo test::$(MAKE) -s test-rust" \
	  "C suite (ASan+UBSan)::$(MAKE) -s test-c" \
	  "spin harness (seed 1, 4 threads, 10 s)::$(MAKE) -s spin SEED=1 DURATION=10 THREADS=4" \
	  "loom models::$(MAKE) -s test-loom" \
	  "fuzzing (cargo-fuzz, 3 targets x 60 s)::$(MAKE) -s fuzz-smoke" \
	  "exported symbols::$(MAKE) -s check-symbols" \
	  "ABI guard (abidiff)::$(MAKE) -s check-abi && sh scripts/test-check-abi.sh && sh scripts/check-debian-symbols.sh $(STAGE_RELEASE)/$(REALLIB)" \
	  "install layout::$(MAKE) -s check-install" \
	  "C suite (valgrind)::$(MAKE) -s test-c-valgrind" \
	  "interop (aioquic, pycurl)::$(MAKE) -s test-interop" \
	  "HAProxy patch series::$(MAKE) -s haproxy-patches-check" \
	  "HAProxy end to end::$(MAKE) -s haproxy $(INTEROP_STAMP) && $(MAKE) -s test-haproxy" \
	  "crash storms S1-S3 under ASan (5 s each)::$(MAKE) -s storms-quick" \
	  "interop matrix (quick)::$(MAKE) -s interop-quick" \
	  "benchmark harness (smoke)::$(MAKE) -s haproxy haproxy-stock $(INTEROP_STAMP) && $(MAKE) -s bench-smoke" \
	  "Debian packages (library)::$(MAKE) -s deb" \
	  "Debian package (HAProxy)::$(MAKE) -s haproxy-deb check-deb-install" \
	  "reproducible build::$(MAKE) -s check-repro" \
	  "make run (one fetch)::$(MAKE) -s smoke-haproxy && echo '1 passed, 0 failed'"

# Unit tests, tests/abi.rs (header freshness and the bindgen round-trip).
test-rust:
	$(CARGO) test --features $(TEST_FEATURES) 2>&1

$(TEST_A): $(RUST_SRCS) include/haquic.h
	$(CARGO) build --lib --features $(TEST_FEATURES)

$(FIXTURES)/.complete: c-tests/make-fixtures.sh
	rm -rf $(FIXTURES)
	sh c-tests/make-fixtures.sh $(FIXTURES)

# Each library is staged as it installs (real file, SONAME link, development
# link), so that programs link and load it by its SONAME. (STAGE_RELEASE and
# STAGE_TEST are defined at the top: rules above use them.)

# link-so ARCHIVE OUTPUT: pulls every haquic_* function out of the archive and
# links them into a shared library with our SONAME and version script.
define link-so
	@mkdir -p $(dir $(2))
	$(CC) -shared -o $(2) -Wl,-soname,$(SONAME) -Wl,--version-script=haquic.map \
	  -Wl,--gc-sections -Wl,-z,relro,-z,now \
	  $$(nm --defined-only $(1) 2>/dev/null | awk '$$2 == "T" && $$3 ~ /^haquic_/ { print "-Wl,--undefined=" $$3 }' | sort -u) \
	  $(LDFLAGS) $(1) $(NATIVE_LIBS)
	ln -sf $(REALLIB) $(dir $(2))$(SONAME)
	ln -sf $(SONAME) $(dir $(2))libhaquic.so
endef

$(STAGE_RELEASE)/$(SONAME): $(RELEASE_A) haquic.map
	$(call link-so,$(RELEASE_A),$(STAGE_RELEASE)/$(REALLIB))

$(STAGE_TEST)/$(SONAME): $(TEST_A) haquic.map
	$(call link-so,$(TEST_A),$(STAGE_TEST)/$(REALLIB))

$(BUILD)/c-tests/runner-asan: $(C_TEST_SRCS) $(C_TEST_HDRS) $(STAGE_TEST)/$(SONAME)
	@mkdir -p $(dir $@)
	$(CC) $(C_WARN) -g -O1 $(C_SANITIZE) -DHAQUIC_TEST_HOOKS -Iinclude \
	  $(C_TEST_SRCS) -o $@ -L$(STAGE_TEST) -lhaquic -lssl -lcrypto -lpthread -ldl \
	  -Wl,-rpath,$(CURDIR)/$(STAGE_TEST)

$(BUILD)/c-tests/runner-plain: $(C_TEST_SRCS) $(C_TEST_HDRS) $(STAGE_RELEASE)/$(SONAME)
	@mkdir -p $(dir $@)
	$(CC) $(C_WARN) -g -O1 -Iinclude \
	  $(C_TEST_SRCS) -o $@ -L$(STAGE_RELEASE) -lhaquic -lssl -lcrypto -lpthread -ldl \
	  -Wl,-rpath,$(CURDIR)/$(STAGE_RELEASE)

# The C suite under ASan and UBSan, against the test library.
test-c: $(BUILD)/c-tests/runner-asan $(FIXTURES)/.complete
	@nm $< | grep -q '__asan_init' || { echo "ASan runtime not linked into $<"; exit 1; }
	@nm $< | grep -q '__ubsan_handle' || { echo "UBSan runtime not linked into $<"; exit 1; }
	@echo "sanitizers linked: __asan_init and __ubsan_handle_* present in $<"
	RUST_BACKTRACE=0 ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=23 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $< -f $(FIXTURES)

# Everything that stresses for a while, each part for STRESS_SECONDS (60) or
# DURATION when given (make stress SEED=7 DURATION=600), all under ASan:
# - the three in-process crash-class storms of the C suite (2 s each inside
#   `make test`), 4 worker threads;
# - the spin harness (mk/spin.mk), THREADS threads, seeded by SEED;
# - the crash scenarios S1-S3 through the ASan pair of HAProxy and libhaquic
#   (mk/haproxy-asan.mk; 5 s each inside `make test`).
STRESS_SECONDS ?= 60
stress: deps $(BUILD)/c-tests/runner-asan $(BUILD)/c-tests/spin-asan $(FIXTURES)/.complete
	@bash scripts/run-tests.sh \
	  "in-process storms::HAQUIC_STRESS_SECONDS=$(SPIN_STRESS_DURATION) RUST_BACKTRACE=0 \
	    ASAN_OPTIONS=detect_leaks=1:exitcode=23 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    $(BUILD)/c-tests/runner-asan -f $(FIXTURES) stress_" \
	  "spin harness::$(MAKE) -s spin DURATION=$(SPIN_STRESS_DURATION)" \
	  "crash scenarios S1-S3 through HAProxy (ASan)::$(MAKE) -s storms STORM_SECONDS=$(SPIN_STRESS_DURATION)"

# The same suite, without sanitizers, under valgrind memcheck, against the
# release library (the test hooks are not in it, so those tests are absent).
# valgrind runs code 20-50 times slower: the storms get 6 s to reach their
# minimum figures.
test-c-valgrind: $(BUILD)/c-tests/runner-plain $(FIXTURES)/.complete
	HAQUIC_STRESS_SECONDS=6 valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
	  --show-leak-kinds=definite --suppressions=c-tests/valgrind.supp \
	  $< -f $(FIXTURES)

# Installs into a scratch DESTDIR and checks what a packager relies on.
check-install: all
	sh scripts/check-install.sh "$(MAKE)" $(SONAME) $(REALLIB)

check-symbols: $(STAGE_RELEASE)/$(SONAME)
	sh scripts/check-symbols.sh $(STAGE_RELEASE)/$(REALLIB)

# Fails when include/haquic.h differs from what the sources generate (the
# same check runs inside `cargo test`, tests/abi.rs).
check-header: $(RELEASE_A)
	diff -u include/haquic.h "$$(for f in $(TARGET_DIR)/release/build/haquic-*/out/header-path.txt; do cat $$f; echo; done | xargs ls -t | head -n1)"

include mk/interop.mk
include mk/bench.mk
include mk/haproxy.mk
include mk/e2e.mk
include mk/haproxy-asan.mk
include mk/deb.mk
include mk/haproxy-deb.mk
include mk/loom.mk
include mk/limits.mk
include mk/spin.mk
include mk/soak.mk
include mk/fuzz.mk
include mk/failalloc.mk

# ---- install -----------------------------------------------------------------

install: all
	$(INSTALL) -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR)
	$(INSTALL) -m 0755 $(STAGE_RELEASE)/$(REALLIB) $(DESTDIR)$(LIBDIR)/$(REALLIB)
	$(INSTALL) -m 0644 $(RELEASE_A) $(DESTDIR)$(LIBDIR)/libhaquic.a
	ln -sf $(REALLIB) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libhaquic.so
	$(INSTALL) -m 0644 include/haquic.h $(DESTDIR)$(INCLUDEDIR)/haquic.h
	$(PC_SUBST) > $(DESTDIR)$(PKGCONFIGDIR)/haquic.pc
	chmod 0644 $(DESTDIR)$(PKGCONFIGDIR)/haquic.pc

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/$(REALLIB) $(DESTDIR)$(LIBDIR)/$(SONAME) \
	      $(DESTDIR)$(LIBDIR)/libhaquic.so $(DESTDIR)$(LIBDIR)/libhaquic.a $(DESTDIR)$(INCLUDEDIR)/haquic.h \
	      $(DESTDIR)$(PKGCONFIGDIR)/haquic.pc

clean:
	$(CARGO) clean
	rm -rf $(BUILD)

# ---- the main job ------------------------------------------------------------

$(BUILD)/haquic-info: examples/haquic-info.c include/haquic.h $(STAGE_RELEASE)/$(SONAME)
	@mkdir -p $(BUILD)
	$(CC) $(C_WARN) -O2 -Iinclude $< -o $@ -L$(STAGE_RELEASE) -lhaquic -Wl,-rpath,$(CURDIR)/$(STAGE_RELEASE)

$(BUILD)/run/cert.pem:
	@mkdir -p $(BUILD)/run
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	  -keyout $(BUILD)/run/key.pem -out $@ -days 365 -subj "/CN=localhost" \
	  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
	@echo "generated a self-signed certificate in $(BUILD)/run/"

# The main job: the patched HAProxy on examples/haproxy.cfg, HTTP/3 on
# 127.0.0.1:8443 in front of the demo backend (scripts/run-haproxy.sh).
run: deps
	@$(MAKE) -s haproxy $(INTEROP_STAMP)
	@$(MAKE) -s run-haproxy

# The library alone: load a certificate into a configuration and print the
# version and settings (examples/haquic-info.c).
info: deps $(BUILD)/haquic-info $(BUILD)/run/cert.pem
	$(BUILD)/haquic-info --cert $(BUILD)/run/cert.pem --key $(BUILD)/run/key.pem \
	  --alpn h3 --cc cubic --idle-timeout 30000
