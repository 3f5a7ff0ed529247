# Allocation failures on the HAProxy side of the bridge: HAProxy 3.0.11's own
# fault injection (-dMfail, tune.fail-alloc) on the patched USE_RUST_QUIC
# build, under AddressSanitizer, driven by HTTP/3 load (tests/failalloc/).
# Included from the Makefile after mk/haproxy-asan.mk; uses BUILD, CURDIR,
# SONAME, HAPROXY_SRC, HAPROXY_PATCHES, STAGE_ASAN, HAPROXY_ASAN_FLAGS,
# INTEROP_VENV, INTEROP_STAMP and FIXTURES.
#
#   make haproxy-failalloc   build/haproxy-failalloc/haproxy: HAProxy 3.0.11
#                            plus haproxy-patches/ plus
#                            tests/failalloc/count-injected-failures.patch,
#                            USE_RUST_QUIC=1, DEBUG_FAIL_ALLOC and
#                            DEBUG_NO_POOLS, -fsanitize=address, linked
#                            against the ASan libhaquic of mk/haproxy-asan.mk
#   make test-failalloc      tests/failalloc: load at tune.fail-alloc 0, 1, 5,
#                            20 and 50 %, per-rate figures, pytest's summary
#
# FAILALLOC_RATES="1 5 20 50" picks the rates (0 is always run first, as the
# reference); PYTEST_ARGS narrows a run.
#
# Semantics in 3.0.11 (src/pool.c): DEBUG_FAIL_ALLOC only turns the "fail"
# pool debugging flag on by default; -dMfail turns it on at run time too and
# presets the rate to 1 %. tune.fail-alloc <0..100> (global section, parsed
# after the command line, so it wins) is the percentage of pool_alloc() calls
# that return NULL, except while the process is starting (MODE_STARTING) and
# for the emergency buffers (POOL_F_NO_FAIL); the per-thread allocations
# made just after that do fail, and the process then exits ("failed to
# allocate resources for thread N"). There is no CLI command to change the
# rate at run time: the test starts at 0 and writes the rate into the
# running process. Only HAProxy's pools fail: libhaquic allocates with
# Rust's global allocator (malloc), which -dMfail does not touch.
#
# The extra patch makes each injected failure count in the pool's failure
# counter: stock 3.0.11 returns NULL before the counting code, so
# "show pools" and PoolFailed ("show info") would stay at 0.

HAPROXY_FAILALLOC      := $(BUILD)/haproxy-failalloc
FAILALLOC_COUNT_PATCH  := tests/failalloc/count-injected-failures.patch
FAILALLOC_RATES        ?= 1 5 20 50
HAPROXY_FAILALLOC_MAKE := TARGET=linux-glibc USE_OPENSSL=1 USE_RUST_QUIC=1 \
                          HAQUIC_INC=$(CURDIR)/include HAQUIC_LIB=$(CURDIR)/$(STAGE_ASAN) \
                          LDFLAGS=-Wl,-rpath,$(CURDIR)/$(STAGE_ASAN) \
                          DEBUG="-DDEBUG_FAIL_ALLOC=1 -DDEBUG_NO_POOLS=1" OPT_CFLAGS=-O1 \
                          ARCH_FLAGS="$(HAPROXY_ASAN_FLAGS)"

.PHONY: haproxy-failalloc test-failalloc

$(HAPROXY_FAILALLOC)/.patched: $(HAPROXY_PATCHES) $(FAILALLOC_COUNT_PATCH) | haproxy-src
	sh scripts/apply-haproxy-patches.sh $(HAPROXY_SRC) $(HAPROXY_FAILALLOC)
	patch -d $(HAPROXY_FAILALLOC) -p1 --fuzz=0 --forward --batch --no-backup-if-mismatch \
	  < $(FAILALLOC_COUNT_PATCH)
	@touch $@

# As mk/haproxy.mk: the bridge's objects are rebuilt whenever the library or
# its header changes.
$(HAPROXY_FAILALLOC)/haproxy: $(HAPROXY_FAILALLOC)/.patched $(STAGE_ASAN)/$(SONAME) include/haquic.h
	@rm -f $(HAPROXY_FAILALLOC)/src/rquic.o $(HAPROXY_FAILALLOC)/src/mux_rquic.o \
	       $(HAPROXY_FAILALLOC)/src/cfgparse-rquic.o $(HAPROXY_FAILALLOC)/src/rquic_stats.o
	@echo "haproxy-failalloc: building $@ (log: $(HAPROXY_FAILALLOC).log)"
	@$(MAKE) -C $(HAPROXY_FAILALLOC) -j$$(nproc) $(HAPROXY_FAILALLOC_MAKE) \
	  >$(HAPROXY_FAILALLOC).log 2>&1 || \
	  { tail -40 $(HAPROXY_FAILALLOC).log; echo "haproxy-failalloc: build failed"; exit 1; }
	@nm -D $@ | grep -q ' U __asan_init' || { echo "haproxy-failalloc: $@ has no ASan"; exit 1; }

haproxy-failalloc: $(HAPROXY_FAILALLOC)/haproxy

test-failalloc: $(INTEROP_STAMP) $(FIXTURES)/.complete $(HAPROXY_FAILALLOC)/haproxy
	PYTHONDONTWRITEBYTECODE=1 HAPROXY_BIN=$(CURDIR)/$(HAPROXY_FAILALLOC)/haproxy \
	HAQUIC_FIXTURES=$(CURDIR)/$(FIXTURES) FAILALLOC_RATES="$(FAILALLOC_RATES)" \
	  $(INTEROP_VENV)/bin/python -m pytest -q -s -p no:cacheprovider $(PYTEST_ARGS) \
	  tests/failalloc
