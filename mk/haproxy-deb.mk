# The HAProxy 3.0.11 Debian package built with USE_RUST_QUIC=1, and its
# install test on a clean Debian 12. Included from the Makefile after
# mk/haproxy.mk (haproxy-src, HAPROXY_SRC, HAPROXY_PATCHES), mk/interop.mk
# (INTEROP_STAMP, INTEROP_VENV) and mk/deb.mk (LIB_DEB); uses BUILD,
# STAGE_RELEASE and SONAME.
#
#   make haproxy-deb        build/deb/haproxy_3.0.11-0haquic1_amd64.deb:
#                           the pristine tree, packaging/haproxy/debian/ and
#                           haproxy-patches/ as debian/patches, built with
#                           dpkg-buildpackage -b against the staged libhaquic
#                           (no rpath; Depends: libhaquic0 through
#                           debian/shlibs.local), then checked by lintian
#                           (scripts/build-haproxy-deb.sh)
#   make check-deb-install  a debootstrapped Debian 12 (minbase) installs
#                           libhaquic0 and haproxy from build/deb/ and serves
#                           an HTTP/3 request (scripts/check-deb-install.sh)

HAPROXY_DEB_DIR     := $(BUILD)/haproxy-deb
HAPROXY_DEB_VERSION := $(shell sed -n '1s/^haproxy .\([^ ]*\). .*/\1/p' packaging/haproxy/debian/changelog)
HAPROXY_DEB_ARCH    := $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
HAPROXY_DEB         := $(HAPROXY_DEB_DIR)/haproxy_$(HAPROXY_DEB_VERSION)_$(HAPROXY_DEB_ARCH).deb
HAPROXY_DEB_INPUTS  := $(shell find packaging/haproxy/debian -type f) $(HAPROXY_PATCHES) \
                       scripts/build-haproxy-deb.sh include/haquic.h $(STAGE_RELEASE)/$(SONAME)

.PHONY: haproxy-deb check-deb-install

# The package is rebuilt when the packaging, the series or the library change.
$(HAPROXY_DEB): $(HAPROXY_DEB_INPUTS) | haproxy-src
	@sh scripts/build-haproxy-deb.sh $(HAPROXY_SRC) include $(STAGE_RELEASE) $(HAPROXY_DEB_DIR)

# deps first (the library build needs it), then the package; the copy into
# build/deb/ is redone every time, next to the library packages of mk/deb.mk.
haproxy-deb: deps
	@$(MAKE) -s $(HAPROXY_DEB)
	@mkdir -p $(BUILD)/deb
	@cp -p $(HAPROXY_DEB_DIR)/haproxy*_$(HAPROXY_DEB_VERSION)_$(HAPROXY_DEB_ARCH).deb \
	       $(HAPROXY_DEB_DIR)/haproxy_$(HAPROXY_DEB_VERSION)_$(HAPROXY_DEB_ARCH).buildinfo \
	       $(HAPROXY_DEB_DIR)/haproxy_$(HAPROXY_DEB_VERSION)_$(HAPROXY_DEB_ARCH).changes $(BUILD)/deb/
	@echo "haproxy-deb: $(BUILD)/deb/haproxy_$(HAPROXY_DEB_VERSION)_$(HAPROXY_DEB_ARCH).deb"

# libhaquic0 comes from `make deb` (mk/deb.mk), the HTTP/3 client from the
# interop venv. The chroot's root is build/deb-root, rebuilt from a cached
# debootstrap tarball for every run.
check-deb-install: haproxy-deb $(LIB_DEB)
	@$(MAKE) -s $(INTEROP_STAMP)
	@bash scripts/check-deb-install.sh $(BUILD)/deb $(HAPROXY_DEB_VERSION) $(BUILD)/deb-root $(INTEROP_VENV)/bin/python
