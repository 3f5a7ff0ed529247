# HAProxy 3.0.11: the pristine source and the stock native-QUIC build that is
# the baseline for every comparison. (The USE_RUST_QUIC patch set comes with
# the HAProxy issue.)
#
#   make haproxy-src     fetch, verify (sha256) and unpack into build/haproxy-src
#   make haproxy-stock   build/haproxy-stock/haproxy, USE_QUIC=1 with the
#                        OpenSSL compatibility layer (needs limited-quic)

HAPROXY_SRC ?= $(BUILD)/haproxy-src
HAPROXY_STOCK := $(BUILD)/haproxy-stock

.PHONY: haproxy-src haproxy-stock

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
