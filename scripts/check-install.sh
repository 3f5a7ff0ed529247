#!/bin/sh
# Installs into a scratch DESTDIR with PREFIX=/usr and checks the layout a
# packager relies on: the real file, the SONAME and development links, the
# SONAME itself, the header, haquic.pc usable with a sysroot, only haquic_*
# exported, and a clean uninstall. Usage: check-install.sh MAKE SONAME REALLIB
set -u
make=$1 soname=$2 reallib=$3
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
pass=0 fail=0
check() {
	if eval "$2"; then pass=$((pass + 1)); else echo "check-install: FAIL: $1" >&2; fail=$((fail + 1)); fi
}
$make -s install DESTDIR="$stage" PREFIX=/usr >/dev/null || { echo "check-install: make install failed"; echo "0 passed, 1 failed"; exit 1; }
lib=$stage/usr/lib
check "real file $reallib" "[ -f '$lib/$reallib' ] && [ ! -L '$lib/$reallib' ]"
check "SONAME link" "[ \"\$(readlink '$lib/$soname')\" = '$reallib' ]"
check "development link" "[ \"\$(readlink '$lib/libhaquic.so')\" = '$soname' ]"
check "SONAME is $soname" "readelf -d '$lib/$reallib' | grep -q 'Library soname: \[$soname\]'"
check "header installed" "[ -f '$stage/usr/include/haquic.h' ]"
check "pkg-config with a sysroot" "[ \"\$(PKG_CONFIG_SYSROOT_DIR='$stage' PKG_CONFIG_PATH='$lib/pkgconfig' pkg-config --cflags --libs haquic | tr -s ' ')\" = \"-I$stage/usr/include -L$stage/usr/lib -lhaquic \" ]"
check "only haquic_* exported" "[ -z \"\$(nm -D --defined-only '$lib/$reallib' | awk '{print \$NF}' | sed 's/@.*//' | grep -v -e '^haquic_' -e '^HAQUIC_[0-9]*\$')\" ]"
check "version node HAQUIC_0" "nm -D --defined-only '$lib/$reallib' | grep -q 'HAQUIC_0'"
check "static library installed" "[ -f '$lib/libhaquic.a' ] && ar t '$lib/libhaquic.a' >/dev/null"
# A program linked statically with what `pkg-config --static` says runs
# without libhaquic.so (nothing of it is needed at run time).
cat > "$stage/static.c" <<'EOF_C'
#include <stdio.h>
#include <haquic.h>
int main(void) { printf("%s\n", haquic_version_string()); return haquic_version() == 0; }
EOF_C
check "static link with pkg-config --static" "cc -o '$stage/static' '$stage/static.c' \
	\$(PKG_CONFIG_SYSROOT_DIR='$stage' PKG_CONFIG_PATH='$lib/pkgconfig' pkg-config --static --cflags haquic) \
	'$lib/libhaquic.a' \$(PKG_CONFIG_PATH='$lib/pkgconfig' pkg-config --static --libs-only-l haquic | sed 's/-lhaquic//') \
	&& '$stage/static' >/dev/null && ! ldd '$stage/static' | grep -q libhaquic"
rm -f "$stage/static.c" "$stage/static"
$make -s uninstall DESTDIR="$stage" PREFIX=/usr >/dev/null
check "uninstall leaves no file" "[ -z \"\$(find '$stage' -type f -o -type l)\" ]"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
