#!/bin/sh
# Builds the library's Debian packages (libhaquic0, libhaquic-dev) the way a
# packager would, and checks them.
#
# 1. The source (git's files and the vendored crates of `make vendor`) is
#    copied to OUT/haquic-VERSION, so that dpkg-buildpackage writes its
#    packages into OUT (the parent directory) and the build never touches the developer's target/.
# 2. dpkg-buildpackage -b -us -uc runs there. As root it runs in a network
#    namespace of its own, with no network at all: the build is offline.
# 3. lintian must report no error, and each package must hold exactly the
#    files a packager expects (dpkg -c).
#
# Usage: build-deb.sh OUT VERSION. Ends with "N passed, M failed".
set -eu
out=${1:?usage: build-deb.sh OUT VERSION}
version=${2:?usage: build-deb.sh OUT VERSION}
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok    $*"; }
ko() { fail=$((fail + 1)); echo "FAIL  $*"; }
finish() { echo "$pass passed, $fail failed"; [ "$fail" -eq 0 ]; exit $?; }

[ -f vendor/crates/.vendored ] || { echo "build-deb: run 'make vendor' first"; ko "vendored crates"; finish; }
debver=$(dpkg-parsechangelog -SVersion)
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
src=$out/haquic-$version

echo "build-deb: copying the source to $src"
# build/deb holds the HAProxy package too (make haproxy-deb): only this
# package's files are replaced.
rm -rf "$src" "$out"/libhaquic0_* "$out"/libhaquic0-dbgsym_* "$out"/libhaquic-dev_* "$out"/haquic_*
mkdir -p "$src"
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$src"
cp -al vendor/crates "$src/vendor/crates"

# Offline: a new network namespace has only a loopback interface, and it is
# down. Without root (unshare needs it) the build still runs with cargo's
# offline mode, which debian/rules sets either way.
isolate=""
if [ "$(id -u)" -eq 0 ] && unshare -n true 2>/dev/null; then
	isolate="unshare -n"
	echo "build-deb: dpkg-buildpackage -b -us -uc, in a network namespace without network"
else
	echo "build-deb: dpkg-buildpackage -b -us -uc (not root: the network stays, cargo is offline)"
fi
start=$(date +%s)
if (cd "$src" && $isolate dpkg-buildpackage -b -us -uc) > "$out/haquic-build.log" 2>&1; then
	ok "dpkg-buildpackage -b -us -uc in $(( $(date +%s) - start )) s (log: $out/haquic-build.log)"
else
	tail -40 "$out/haquic-build.log"
	ko "dpkg-buildpackage failed (log: $out/haquic-build.log)"
	finish
fi

lib=$out/libhaquic0_${debver}_$arch.deb
dev=$out/libhaquic-dev_${debver}_$arch.deb
for f in "$lib" "$dev"; do
	[ -f "$f" ] && ok "built $(basename "$f") ($(du -h "$f" | cut -f1))" || ko "no $f"
done

# lintian: errors fail, warnings and the rest are shown.
changes=$out/haquic_${debver}_$arch.changes
# lintian exits 1 for errors in the packages, 2 when it could not check.
lrc=0
lintian --info --display-info "$changes" > "$out/haquic-lintian.log" 2>&1 || lrc=$?
sed 's/^/  lintian: /' "$out/haquic-lintian.log" | grep -v '^  lintian: N:' | head -30
errors=$(grep -c '^E: ' "$out/haquic-lintian.log" || true)
warnings=$(grep -c '^W: ' "$out/haquic-lintian.log" || true)
if [ "$lrc" -ge 2 ] || [ ! -s "$changes" ]; then
	ko "lintian could not check $changes (exit $lrc)"
elif [ "$errors" -eq 0 ]; then
	ok "lintian: 0 errors, $warnings warnings"
else
	ko "lintian: $errors errors"
fi

# The expected contents, exactly (paths as dpkg -c prints them).
contents() { dpkg -c "$1" | awk '{ print $6 }' | grep -v '/$' | sort; }
expect_lib="./usr/lib/$multiarch/libhaquic.so.$version
./usr/lib/$multiarch/libhaquic.so.${version%%.*}
./usr/share/doc/libhaquic0/changelog.Debian.gz
./usr/share/doc/libhaquic0/copyright"
expect_dev="./usr/include/haquic.h
./usr/lib/$multiarch/libhaquic.a
./usr/lib/$multiarch/libhaquic.so
./usr/lib/$multiarch/pkgconfig/haquic.pc
./usr/share/doc/libhaquic-dev/changelog.Debian.gz
./usr/share/doc/libhaquic-dev/copyright"
for pkg in lib dev; do
	eval "f=\$$pkg; want=\$expect_$pkg"
	[ -f "$f" ] || continue
	echo "build-deb: dpkg -c $(basename "$f")"
	dpkg -c "$f" | sed 's/^/  /'
	contents "$f" > "$out/got.txt"
	printf '%s\n' "$want" | sort > "$out/want.txt"
	if cmp -s "$out/want.txt" "$out/got.txt"; then
		ok "$(basename "$f") holds exactly the expected $(wc -l < "$out/want.txt") files"
	else
		ko "$(basename "$f"): files differ from the expected list (< expected, > packaged):"
		diff "$out/want.txt" "$out/got.txt" | grep '^[<>]' | sed 's/^/      /'
	fi
	rm -f "$out/want.txt" "$out/got.txt"
done

# The library package's metadata: the SONAME's shlibs, and the symbols file.
if [ -f "$lib" ]; then
	tmp=$(mktemp -d)
	dpkg-deb -e "$lib" "$tmp"
	if grep -qx "libhaquic ${version%%.*} libhaquic0 (>= $version)" "$tmp/shlibs" 2>/dev/null; then
		ok "shlibs: $(cat "$tmp/shlibs")"
	else
		ko "shlibs is '$(cat "$tmp/shlibs" 2>/dev/null)'"
	fi
	n=$(grep -c '^ ' "$tmp/symbols" 2>/dev/null || true)
	[ "$n" -gt 0 ] && ok "symbols file shipped with $n symbols" || ko "no symbols file in $(basename "$lib")"
	rm -rf "$tmp"
	echo "build-deb: $(dpkg-deb -f "$lib" Package Version Depends | tr '\n' ' ')"
fi
finish
