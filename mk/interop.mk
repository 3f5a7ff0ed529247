# Interop: the example server and independent clients (aioquic, pycurl).
# Included from the Makefile, which defines CC, C_WARN, STAGE_RELEASE, SONAME,
# BUILD, FIXTURES and CURDIR.
#
#   make haquic-server   build/haquic-server, the example HTTP/3 server
#   make test-interop    the pytest suite in tests/interop against it

INTEROP_VENV  := $(BUILD)/venv
INTEROP_STAMP := $(INTEROP_VENV)/.installed

.PHONY: haquic-server test-interop

haquic-server: $(BUILD)/haquic-server

$(BUILD)/haquic-server: examples/haquic-server.c include/haquic.h $(STAGE_RELEASE)/$(SONAME)
	@mkdir -p $(BUILD)
	$(CC) $(C_WARN) -O2 -g -Iinclude $< -o $@ -L$(STAGE_RELEASE) -lhaquic -lpthread \
	  -Wl,-rpath,$(CURDIR)/$(STAGE_RELEASE)

# The virtualenv is rebuilt only when the requirements change; the stamp is
# written last, so an interrupted install is retried.
$(INTEROP_STAMP): tests/interop/requirements.txt
	@test -x $(INTEROP_VENV)/bin/python || python3 -m venv $(INTEROP_VENV)
	@$(INTEROP_VENV)/bin/python -m pip install -q --disable-pip-version-check -r $<
	@touch $@

# -p no:cacheprovider and PYTHONDONTWRITEBYTECODE: nothing is written to the tree.
test-interop: $(INTEROP_STAMP) $(BUILD)/haquic-server $(FIXTURES)/.complete
	PYTHONDONTWRITEBYTECODE=1 HAQUIC_SERVER=$(CURDIR)/$(BUILD)/haquic-server \
	HAQUIC_FIXTURES=$(CURDIR)/$(FIXTURES) \
	  $(INTEROP_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/interop

# ---- the interop matrix (tests/interop/matrix) --------------------------------
#
#   make interop               every case x client against the patched HAProxy;
#                              prints the matrix and writes it into INTEROP.md
#   make interop SERVER=stock  the same against stock HAProxy 3.0.11
#   make interop-quick         7 cases x 2 clients (a stage of make test)
#   make ngtcp2-client         Debian's gtlsclient, unpacked under build/ngtcp2
#   make quinn-client          the quinn/h3 client, build/quinn-client/release
#
# CASES=a,b and CLIENTS=x,y narrow a run; SEED=N changes the proxy's seed.

SERVER       ?= haquic
SEED         ?= 1
NGTCP2_DIR   := $(BUILD)/ngtcp2
GTLSCLIENT   := $(NGTCP2_DIR)/root/usr/bin/gtlsclient
QUINN_DIR    := tests/interop/matrix/quinn-client
QUINN_CLIENT := $(BUILD)/quinn-client/release/quinn-client
MATRIX_ARGS  := --seed $(SEED) $(if $(CASES),--cases $(CASES)) $(if $(CLIENTS),--clients $(CLIENTS))
MATRIX_HAPROXY = $(if $(filter stock,$(SERVER)),$(BUILD)/haproxy-stock/haproxy,$(BUILD)/haproxy/haproxy)

.PHONY: interop interop-quick ngtcp2-client quinn-client

ngtcp2-client: $(GTLSCLIENT)

$(GTLSCLIENT): scripts/fetch-ngtcp2.sh
	sh scripts/fetch-ngtcp2.sh $(NGTCP2_DIR)

quinn-client: $(QUINN_CLIENT)

$(QUINN_CLIENT): $(QUINN_DIR)/Cargo.toml $(QUINN_DIR)/Cargo.lock $(wildcard $(QUINN_DIR)/src/*.rs)
	$(CARGO) build --release --locked --manifest-path $(QUINN_DIR)/Cargo.toml --target-dir $(BUILD)/quinn-client
	@touch $@

# The stock server's failures are findings, recorded in INTEROP.md, so its run
# does not fail; any failed cell of the patched server does.
interop: deps $(INTEROP_STAMP) $(FIXTURES)/.complete $(GTLSCLIENT) $(QUINN_CLIENT) $(MATRIX_HAPROXY)
	PYTHONDONTWRITEBYTECODE=1 HAQUIC_FIXTURES=$(CURDIR)/$(FIXTURES) \
	  $(INTEROP_VENV)/bin/python tests/interop/matrix/run.py --server $(SERVER) $(MATRIX_ARGS) \
	  --doc INTEROP.md --png docs/interop/matrix.png $(if $(filter stock,$(SERVER)),--allow-fail)

interop-quick: $(INTEROP_STAMP) $(FIXTURES)/.complete $(BUILD)/haproxy/haproxy
	PYTHONDONTWRITEBYTECODE=1 HAQUIC_FIXTURES=$(CURDIR)/$(FIXTURES) \
	  $(INTEROP_VENV)/bin/python tests/interop/matrix/run.py --quick --seed $(SEED)
