# End-to-end tests of HAProxy with HTTP/3: the pytest suite in tests/haproxy
# (aioquic and libcurl clients, the demo backend tests/haproxy/backend.py),
# and the demo of examples/haproxy.cfg. Included from the Makefile after
# mk/interop.mk (INTEROP_VENV, INTEROP_STAMP) and mk/haproxy.mk; uses BUILD,
# FIXTURES and CURDIR.
#
#   make test-haproxy    the suite against $(HAPROXY_BIN), by default the
#                        patched build/haproxy/haproxy; point it at the stock
#                        one with HAPROXY_BIN=build/haproxy-stock/haproxy
#                        (the suite tells the flavour from haproxy -vv)
#   make run-haproxy     examples/haproxy.cfg in the foreground, in front of
#                        the demo backend (scripts/run-haproxy.sh)
#   make smoke-haproxy   the same, fetching one page over HTTP/3 and stopping
#
# PYTEST_ARGS passes extra arguments to pytest (e.g. -k reload, -x).

HAPROXY_BIN ?= $(BUILD)/haproxy/haproxy
PYTEST_ARGS ?=

.PHONY: test-haproxy run-haproxy smoke-haproxy

# No rule here for $(HAPROXY_BIN): mk/haproxy.mk builds it.
# -p no:cacheprovider and PYTHONDONTWRITEBYTECODE: nothing is written to the tree.
test-haproxy: $(INTEROP_STAMP) $(FIXTURES)/.complete $(HAPROXY_BIN)
	PYTHONDONTWRITEBYTECODE=1 HAPROXY_BIN=$(abspath $(HAPROXY_BIN)) \
	HAQUIC_FIXTURES=$(CURDIR)/$(FIXTURES) \
	  $(INTEROP_VENV)/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) tests/haproxy

run-haproxy: $(INTEROP_STAMP) $(HAPROXY_BIN)
	HAPROXY_BIN=$(abspath $(HAPROXY_BIN)) PYTHON=$(INTEROP_VENV)/bin/python \
	  bash scripts/run-haproxy.sh

smoke-haproxy: $(INTEROP_STAMP) $(HAPROXY_BIN)
	RUN_ONESHOT=1 HAPROXY_BIN=$(abspath $(HAPROXY_BIN)) PYTHON=$(INTEROP_VENV)/bin/python \
	  bash scripts/run-haproxy.sh
