# Limits against hostile peers: the pytest suite in tests/limits (one test
# per limit, each printing `LIMIT <name>: <figure> (<bound>)`), against the
# patched HAProxy. Included from the Makefile after mk/interop.mk
# (INTEROP_VENV, INTEROP_STAMP), mk/haproxy.mk and mk/e2e.mk (HAPROXY_BIN,
# PYTEST_ARGS); uses BUILD, FIXTURES and CURDIR.
#
#   make test-limits          the suite (about 1.5 minutes on 2 cores); the
#                             LIMIT lines are repeated at the end
#   make test-limits-memory   500 concurrent 2 MB HTTP/3 uploads through
#                             wait-for-body (LIMITS_MEMORY=1; minutes)
#
# PYTEST_ARGS passes extra arguments to pytest (e.g. -k rapid, -x).

LIMITS_PYTEST = PYTHONDONTWRITEBYTECODE=1 HAPROXY_BIN=$(abspath $(HAPROXY_BIN)) \
	HAQUIC_FIXTURES=$(CURDIR)/$(FIXTURES) \
	$(INTEROP_VENV)/bin/python -m pytest -q -p no:cacheprovider

.PHONY: test-limits test-limits-memory

# No rule here for $(HAPROXY_BIN): mk/haproxy.mk builds it.
test-limits: $(INTEROP_STAMP) $(FIXTURES)/.complete $(HAPROXY_BIN)
	$(LIMITS_PYTEST) $(PYTEST_ARGS) tests/limits

test-limits-memory: $(INTEROP_STAMP) $(FIXTURES)/.complete $(HAPROXY_BIN)
	LIMITS_MEMORY=1 $(LIMITS_PYTEST) -s $(PYTEST_ARGS) tests/limits/test_upload_memory.py
