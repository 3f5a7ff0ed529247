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
