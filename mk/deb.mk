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
