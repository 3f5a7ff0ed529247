# The soak test (tests/soak): the patched HAProxy holds SOAK_CONNS HTTP/3
# connections, each making SOAK_RATE requests a second, for SOAK_SECONDS;
# then the clients leave. Not part of `make test` (10 minutes by default).
# Included from the Makefile after mk/interop.mk (INTEROP_VENV,
# INTEROP_STAMP, QUINN_CLIENT) and mk/haproxy.mk; uses BUILD, FIXTURES and
# CURDIR.
#
#   make soak                                   10,000 x 1 req/s for 600 s
#   make soak SOAK_CONNS=500 SOAK_SECONDS=60    a quick trial
#
# SOAK_NICE="nice -n 19" makes HAProxy and the client yield to other work on
# the machine (the figures then measure the sharing, not haquic). Results: build/soak/
# (samples.csv, soak.png, the HAProxy run directory); the last line is
# "N passed, M failed" over the 4 criteria of tests/soak/soak.py.

SOAK_CONNS   ?= 10000
SOAK_SECONDS ?= 600
SOAK_RATE    ?= 1
SOAK_NICE    ?=
# Optional: SOAK_RAMP (seconds to open the connections over; default a
# tenth of the run, at most 60), SOAK_THREADS (the client's runtime threads,
# default 1), SOAK_PATH=origin (each request also crosses an HTTP/1.1
# backend connection to HAProxy's own origin frontend; about 2.5 times the
# CPU per request of the default, SOAK_PATH=return, see tests/soak/README.md).
SOAK_ARGS     = --conns $(SOAK_CONNS) --seconds $(SOAK_SECONDS) --rate $(SOAK_RATE) \
	$(if $(SOAK_RAMP),--ramp $(SOAK_RAMP)) $(if $(SOAK_THREADS),--client-threads $(SOAK_THREADS)) \
	$(if $(SOAK_PATH),--path $(SOAK_PATH))

.PHONY: soak

soak: $(INTEROP_STAMP) $(FIXTURES)/.complete $(BUILD)/haproxy/haproxy $(QUINN_CLIENT)
	PYTHONDONTWRITEBYTECODE=1 HAPROXY_BIN=$(CURDIR)/$(BUILD)/haproxy/haproxy \
	HAQUIC_FIXTURES=$(CURDIR)/$(FIXTURES) \
	  $(SOAK_NICE) $(INTEROP_VENV)/bin/python tests/soak/soak.py $(SOAK_ARGS) \
	  --out $(CURDIR)/$(BUILD)/soak --client $(CURDIR)/$(QUINN_CLIENT)
