# Packaging: the ABI guard, the Debian packages of the library (libhaquic0,
# libhaquic-dev) and the reproducibility check. Included from the Makefile;
# uses BUILD, STAGE_RELEASE, SONAME, REALLIB and VERSION.
#
#   make check-abi      abidiff the release library against the committed
#                       baseline abi/libhaquic.abi: additions pass, anything
#                       removed or changed fails unless the SONAME was bumped
#                       (scripts/check-abi.sh; scripts/test-check-abi.sh
#                       tests the guard itself)
#   make abi-baseline   regenerate abi/libhaquic.abi from the release library
#                       (a release that adds functions, or a SONAME bump)

ABI_BASELINE := abi/libhaquic.abi

.PHONY: check-abi abi-baseline

check-abi: $(STAGE_RELEASE)/$(SONAME)
	@sh scripts/check-abi.sh $(ABI_BASELINE) $(STAGE_RELEASE)/$(REALLIB)

abi-baseline: $(STAGE_RELEASE)/$(SONAME)
	@mkdir -p $(dir $(ABI_BASELINE))
	sh scripts/check-abi.sh --dump $(STAGE_RELEASE)/$(REALLIB) > $(ABI_BASELINE).tmp
	mv $(ABI_BASELINE).tmp $(ABI_BASELINE)
	@echo "abi-baseline: $(ABI_BASELINE) now describes $(REALLIB) ($$(grep -c '<function-decl ' $(ABI_BASELINE)) functions)"

#   make debian-symbols regenerate debian/libhaquic0.symbols after an
#                       intended change (new symbols get VERSION)
#   make vendor         cargo vendor: every crate the build needs, into
#                       vendor/crates (not in git), for offline builds
#   make deb            build/deb/libhaquic0_*.deb and libhaquic-dev_*.deb
#                       with dpkg-buildpackage -b, offline (no network
#                       namespace when run as root), then lintian and the
#                       file lists (scripts/build-deb.sh)
#   make check-repro    builds the library again from a copy of the tree at
#                       another path and compares it byte for byte with
#                       the tree's own build (scripts/check-repro.sh)

VENDOR_DIR := vendor/crates

.PHONY: debian-symbols vendor deb check-repro

debian-symbols: $(STAGE_RELEASE)/$(SONAME)
	sh scripts/check-debian-symbols.sh $(STAGE_RELEASE)/$(REALLIB) --update $(VERSION)

vendor: $(VENDOR_DIR)/.vendored

$(VENDOR_DIR)/.vendored: Cargo.lock Cargo.toml
	@echo "vendor: cargo vendor into $(VENDOR_DIR)"
	rm -rf $(VENDOR_DIR)
	$(CARGO) vendor --locked --versioned-dirs $(VENDOR_DIR) >/dev/null
	@touch $@
	@echo "vendor: $$(ls $(VENDOR_DIR) | wc -l) crates, $$(du -sh $(VENDOR_DIR) | cut -f1)"

deb: deps vendor
	@sh scripts/build-deb.sh $(BUILD)/deb $(VERSION)

# The library package as a file, for rules that need it built once (make
# check-deb-install) rather than rebuilt and checked again like `make deb`.
DEB_VERSION := $(shell dpkg-parsechangelog -l debian/changelog -SVersion 2>/dev/null)
DEB_ARCH    := $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
LIB_DEB     := $(BUILD)/deb/libhaquic0_$(DEB_VERSION)_$(DEB_ARCH).deb

$(LIB_DEB): $(RUST_SRCS) include/haquic.h haquic.pc.in $(shell find debian -type f) scripts/build-deb.sh
	@$(MAKE) -s deb

check-repro: $(STAGE_RELEASE)/$(SONAME)
	@sh scripts/check-repro.sh $(STAGE_RELEASE)/$(REALLIB)
