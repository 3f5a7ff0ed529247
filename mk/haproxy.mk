# HAProxy 3.0.11: the pristine source, the patched USE_RUST_QUIC build, and
# the stock native-QUIC build that is the baseline for every comparison.
#
#   make haproxy         build/haproxy/haproxy: the pristine tree plus the
#                        haproxy-patches/ series, built with USE_RUST_QUIC=1
#                        against the staged libhaquic (rpath to it)
#   make haproxy-patches-check
#                        the series applies to the pristine tree with --fuzz=0
#   make haproxy-src     fetch, verify (sha256) and unpack into build/haproxy-src
#   make haproxy-stock   build/haproxy-stock/haproxy, USE_QUIC=1 with the
#                        OpenSSL compatibility layer (needs limited-quic)

HAPROXY_SRC ?= $(BUILD)/haproxy-src
HAPROXY_STOCK := $(BUILD)/haproxy-stock

.PHONY: haproxy haproxy-src haproxy-stock haproxy-patches-check

haproxy-src:
	@if [ "$(HAPROXY_SRC)" = "$(BUILD)/haproxy-src" ]; then sh scripts/fetch-haproxy.sh $(HAPROXY_SRC); \
	 else test -f "$(HAPROXY_SRC)/Makefile" || { echo "HAPROXY_SRC=$(HAPROXY_SRC) has no Makefile"; exit 1; }; fi

$(HAPROXY_STOCK)/haproxy: | haproxy-src
	rm -rf $(HAPROXY_STOCK)
	cp -r $(HAPROXY_SRC) $(HAPROXY_STOCK)
	$(MAKE) -C $(HAPROXY_STOCK) -j$$(nproc) TARGET=linux-glibc USE_OPENSSL=1 \
	  USE_QUIC=1 USE_QUIC_OPENSSL_COMPAT=1 >$(HAPROXY_STOCK).log 2>&1 || \
	  { tail -30 $(HAPROXY_STOCK).log; exit 1; }
	@$(HAPROXY_STOCK)/haproxy -vv | grep -E '^HAProxy version|QUIC' | head -3

haproxy-stock: $(HAPROXY_STOCK)/haproxy

HAPROXY_BUILD   := $(BUILD)/haproxy
HAPROXY_PATCHES := haproxy-patches/series $(wildcard haproxy-patches/*.patch)
HAPROXY_MAKE    := TARGET=linux-glibc USE_OPENSSL=1 USE_RUST_QUIC=1 \
                   HAQUIC_INC=$(CURDIR)/include HAQUIC_LIB=$(CURDIR)/$(STAGE_RELEASE) \
                   LDFLAGS=-Wl,-rpath,$(CURDIR)/$(STAGE_RELEASE)

$(HAPROXY_BUILD)/.patched: $(HAPROXY_PATCHES) | haproxy-src
	sh scripts/apply-haproxy-patches.sh $(HAPROXY_SRC) $(HAPROXY_BUILD)
	@touch $@

# The bridge's objects are rebuilt whenever the library or its header
# changes: HAProxy's own dependency tracking does not see haquic.h.
$(HAPROXY_BUILD)/haproxy: $(HAPROXY_BUILD)/.patched $(STAGE_RELEASE)/$(SONAME) include/haquic.h
	@rm -f $(HAPROXY_BUILD)/src/rquic.o $(HAPROXY_BUILD)/src/mux_rquic.o \
	       $(HAPROXY_BUILD)/src/cfgparse-rquic.o $(HAPROXY_BUILD)/src/rquic_stats.o
	@echo "haproxy: building $(HAPROXY_BUILD)/haproxy with USE_RUST_QUIC=1 (log: $(HAPROXY_BUILD).log)"
	@$(MAKE) -C $(HAPROXY_BUILD) -j$$(nproc) $(HAPROXY_MAKE) >$(HAPROXY_BUILD).log 2>&1 || \
	  { tail -40 $(HAPROXY_BUILD).log; echo "haproxy: build failed, see $(HAPROXY_BUILD).log"; exit 1; }
	@$@ -vv | grep -E '^HAProxy version|RUST_QUIC|haquic' | sed 's/^/haproxy: /' | cut -c1-100

haproxy: $(HAPROXY_BUILD)/haproxy

haproxy-patches-check: | haproxy-src
	@sh scripts/check-haproxy-patches.sh $(HAPROXY_SRC)
