# The patched HAProxy and libhaquic, both under AddressSanitizer, and the
# crash-scenario storms run through them (tests/haproxy/storm_scenarios.py).
# Included from the Makefile after mk/haproxy.mk and mk/e2e.mk; uses CARGO,
# CC, BUILD, CURDIR, SONAME, REALLIB, RUST_SRCS, NATIVE_LIBS, link-so,
# HAPROXY_SRC, HAPROXY_PATCHES, INTEROP_VENV, INTEROP_STAMP and FIXTURES.
#
#   make haproxy-asan    build/haproxy-asan/haproxy: HAProxy 3.0.11 plus
#                        haproxy-patches/, USE_RUST_QUIC=1, compiled with
#                        -fsanitize=address and DEBUG_NO_POOLS, linked against
#                        build/lib/asan/libhaquic.so.0 (libhaquic built by
#                        nightly rustc with -Zsanitizer=address); checks that
#                        the pair loads exactly one ASan runtime
#   make storms          S1, S2 and S3 for STORM_SECONDS (60) each, on that pair
#   make storms-quick    the same, 5 s each (the `make test` stage)
#   make check-asan-pair only the checks of the pair (haproxy-asan runs them)
#
# PYTEST_ARGS narrows a run (PYTEST_ARGS="-k s2"); HAQUIC_STORM_QLOG=<dir>
# makes the server write one qlog per connection (a failed request names the
# connection's trace id, which is the qlog's file name).
#
# One ASan runtime, GCC's. HAProxy is compiled by gcc, whose -fsanitize=address
# links the executable against libasan.so.8 (GCC 12). rustc's
# -Zsanitizer=address instruments the Rust code (LLVM 22 here) but links its
# own runtime (compiler-rt) only into executables, not into a staticlib: the
# ASan build of libhaquic.a holds instrumented code with undefined __asan_*
# references and no runtime. It is linked into libhaquic.so exactly like the
# release library (link-so: haquic.map, --gc-sections, NATIVE_LIBS), plus
# -fsanitize=address, so that the shared library also names libasan.so.8
# (DT_NEEDED) and every __asan_* reference binds to the one runtime HAProxy
# loads first. This works because the instrumentation ABI matches: both emit
# and export __asan_version_mismatch_check_v8, and check-asan-pair below
# checks that every __asan_* symbol libhaquic.so needs is exported by
# libasan.so.8. Why not the other ways round: linking rustc's compiler-rt
# runtime into the library would put a second ASan runtime in the process
# (two interceptors of malloc, two shadow-memory owners: ASan refuses to start
# or reports garbage); clang 14 (Debian 12's) with its compiler-rt 14 runtime
# would work as well as gcc's but buys nothing, and is older than gcc 12's
# libasan. BoringSSL, compiled by the cc/cmake crates inside quiche's build,
# is instrumented too: with a nightly rustc, Cargo sets CARGO_CFG_SANITIZE and
# cc >= 1.11 adds -fsanitize=address for gcc (check-asan-pair shows it).
#
# The Rust side: --target is required so that build scripts and proc macros
# (built for the host) are not instrumented; -Cforce-frame-pointers=yes keeps
# ASan's fast unwinder's stacks through Rust frames complete. The standard
# library is the prebuilt, uninstrumented one (no -Zbuild-std: no rust-src
# here), so allocations inside std are seen (malloc is intercepted) but
# accesses inside std are not checked.
#
# HAProxy side: DEBUG=-DDEBUG_NO_POOLS=1 and, at run time,
# -dMno-cache,no-global,no-merge make every pool_free() a free() that ASan
# sees; OPT_CFLAGS=-O1 keeps stacks readable. HAProxy 3.0's ARCH_FLAGS go to
# both the compiler and the linker (DEBUG_CFLAGS is no longer used in 3.0).

ASAN_TRIPLE      := x86_64-unknown-linux-gnu
ASAN_TARGET_DIR  := $(BUILD)/asan-target
ASAN_A           := $(ASAN_TARGET_DIR)/$(ASAN_TRIPLE)/release/libhaquic.a
STAGE_ASAN       := $(BUILD)/lib/asan
ASAN_RUSTFLAGS   := -Zsanitizer=address -Cforce-frame-pointers=yes
CARGO_NIGHTLY    ?= cargo +nightly
HAPROXY_ASAN     := $(BUILD)/haproxy-asan
HAPROXY_ASAN_FLAGS := -g -fsanitize=address -fno-omit-frame-pointer
HAPROXY_ASAN_MAKE := TARGET=linux-glibc USE_OPENSSL=1 USE_RUST_QUIC=1 \
                     HAQUIC_INC=$(CURDIR)/include HAQUIC_LIB=$(CURDIR)/$(STAGE_ASAN) \
                     LDFLAGS=-Wl,-rpath,$(CURDIR)/$(STAGE_ASAN) \
                     DEBUG=-DDEBUG_NO_POOLS=1 OPT_CFLAGS=-O1 \
                     ARCH_FLAGS="$(HAPROXY_ASAN_FLAGS)"
STORM_SECONDS    ?= 60

.PHONY: haproxy-asan check-asan-pair storms storms-quick

# Only the staticlib: the cdylib of Cargo.toml's crate-type would be linked by
# rustc, which is not what link-so does and is not needed.
$(ASAN_A): $(RUST_SRCS) include/haquic.h
	RUSTFLAGS="$(ASAN_RUSTFLAGS)" $(CARGO_NIGHTLY) rustc --release --lib --crate-type staticlib \
	  --target $(ASAN_TRIPLE) --target-dir $(ASAN_TARGET_DIR)

# link-so as for the release library, with -fsanitize=address for the
# runtime's DT_NEEDED (target-specific LDFLAGS reach link-so).
$(STAGE_ASAN)/$(SONAME): LDFLAGS += -fsanitize=address
$(STAGE_ASAN)/$(SONAME): $(ASAN_A) haquic.map
	$(call link-so,$(ASAN_A),$(STAGE_ASAN)/$(REALLIB))

$(HAPROXY_ASAN)/.patched: $(HAPROXY_PATCHES) | haproxy-src
	sh scripts/apply-haproxy-patches.sh $(HAPROXY_SRC) $(HAPROXY_ASAN)
	@touch $@

# As mk/haproxy.mk: the bridge's objects are rebuilt whenever the library or
# its header changes.
$(HAPROXY_ASAN)/haproxy: $(HAPROXY_ASAN)/.patched $(STAGE_ASAN)/$(SONAME) include/haquic.h
	@rm -f $(HAPROXY_ASAN)/src/rquic.o $(HAPROXY_ASAN)/src/mux_rquic.o \
	       $(HAPROXY_ASAN)/src/cfgparse-rquic.o $(HAPROXY_ASAN)/src/rquic_stats.o
	@echo "haproxy-asan: building $(HAPROXY_ASAN)/haproxy (log: $(HAPROXY_ASAN).log)"
	@$(MAKE) -C $(HAPROXY_ASAN) -j$$(nproc) $(HAPROXY_ASAN_MAKE) >$(HAPROXY_ASAN).log 2>&1 || \
	  { tail -40 $(HAPROXY_ASAN).log; echo "haproxy-asan: build failed, see $(HAPROXY_ASAN).log"; exit 1; }

# One runtime, loaded once, and both sides instrumented.
CHECK_ASAN_PAIR = sh scripts/check-asan-pair.sh $(HAPROXY_ASAN)/haproxy $(STAGE_ASAN)/$(REALLIB) $(ASAN_A)

haproxy-asan: $(HAPROXY_ASAN)/haproxy
	@$(CHECK_ASAN_PAIR)

check-asan-pair: $(HAPROXY_ASAN)/haproxy
	@$(CHECK_ASAN_PAIR)

STORM_RUN = PYTHONDONTWRITEBYTECODE=1 HAPROXY_BIN=$(CURDIR)/$(HAPROXY_ASAN)/haproxy \
	HAQUIC_FIXTURES=$(CURDIR)/$(FIXTURES) HAQUIC_STORM_REQUIRE_ASAN=1 \
	  $(INTEROP_VENV)/bin/python -m pytest -q -s -p no:cacheprovider $(PYTEST_ARGS) \
	  tests/haproxy/storm_scenarios.py

storms: $(INTEROP_STAMP) $(FIXTURES)/.complete haproxy-asan
	HAQUIC_STORM_SECONDS=$(STORM_SECONDS) $(STORM_RUN)

storms-quick: $(INTEROP_STAMP) $(FIXTURES)/.complete haproxy-asan
	HAQUIC_STORM_SECONDS=5 $(STORM_RUN)
