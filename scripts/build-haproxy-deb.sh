#!/bin/sh
# Builds the Debian binary package haproxy (HAProxy 3.0.11 with
# USE_RUST_QUIC=1) in a scratch copy of the pristine source:
#
#   WORK/haproxy-3.0.11/          the pristine tree from SRC
#   WORK/haproxy-3.0.11/debian/   packaging/haproxy/debian/, plus
#                                 haproxy-patches/ as debian/patches
#   WORK/haproxy_*.deb            what dpkg-buildpackage -b produces
#
# dpkg-source applies debian/patches (format 3.0 (quilt), no fuzz) before the
# build, so a build is also a proof that haproxy-patches/ works as a Debian
# patch series. HAProxy is linked against the header and the staged library
# of our source tree (build profile pkg.haproxy.intree), without an rpath.
# Then lintian checks the result: an error fails the build, warnings are
# printed and kept.
#
# Usage: build-haproxy-deb.sh SRC HAQUIC_INC HAQUIC_LIB WORK
set -eu
src=${1:?usage: build-haproxy-deb.sh SRC HAQUIC_INC HAQUIC_LIB WORK}
inc=${2:?usage: build-haproxy-deb.sh SRC HAQUIC_INC HAQUIC_LIB WORK}
lib=${3:?usage: build-haproxy-deb.sh SRC HAQUIC_INC HAQUIC_LIB WORK}
work=${4:?usage: build-haproxy-deb.sh SRC HAQUIC_INC HAQUIC_LIB WORK}
pkgdir=packaging/haproxy/debian
series=haproxy-patches/series
downloads=build/downloads

say() { echo "haproxy-deb: $*"; }
die() { echo "haproxy-deb: $*" >&2; exit 1; }

# The tools dpkg-buildpackage needs and the build dependencies of
# debian/control (under the pkg.haproxy.intree profile). Installed only when
# missing, so that a second run changes nothing.
PACKAGES="build-essential dpkg-dev debhelper quilt lintian fakeroot binutils \
libssl-dev libpcre2-dev"
missing=""
for p in $PACKAGES; do
	case "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" in
	*" installed") ;;
	*) missing="$missing $p" ;;
	esac
done
if [ -n "$missing" ]; then
	say "installing$missing"
	SUDO=""
	if [ "$(id -u)" -ne 0 ]; then
		command -v sudo >/dev/null 2>&1 || die "not root and no sudo; please install:$missing"
		SUDO=sudo
	fi
	export DEBIAN_FRONTEND=noninteractive
	$SUDO apt-get update -qq
	# shellcheck disable=SC2086
	$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# Absolute paths: dpkg-buildpackage runs from inside the scratch tree.
[ -f "$inc/haquic.h" ] || die "$inc/haquic.h is missing"
[ -e "$lib/libhaquic.so" ] || die "$lib/libhaquic.so is missing (make lib)"
inc=$(cd "$inc" && pwd)
lib=$(cd "$lib" && pwd)

version=$(dpkg-parsechangelog -l "$pkgdir/changelog" -S Version)
upstream=${version%-*}
arch=$(dpkg --print-architecture)
[ -f "$src/Makefile" ] && [ -f "$src/src/haproxy.c" ] || die "$src is not a HAProxy source tree (make haproxy-src)"
got=$(cat "$src/VERSION")
[ "$got" = "$upstream" ] || die "$src is HAProxy $got, $pkgdir/changelog wants $upstream"

tree=$work/haproxy-$upstream
rm -rf "$work"
mkdir -p "$tree"
# The source only: not fetch-haproxy.sh's stamp, no objects of an earlier
# build, so that the tree is the orig tarball plus debian/.
(cd "$src" && tar --exclude=.git --exclude='.verified-*' --exclude='*.o' --exclude=./haproxy -cf - .) |
	(cd "$tree" && tar -xf -)
cp -r "$pkgdir" "$tree/debian"
mkdir -p "$tree/debian/patches"
n=0
while read -r p; do
	case "$p" in ''|'#'*) continue ;; esac
	cp "haproxy-patches/$p" "$tree/debian/patches/"
	n=$((n + 1))
done < "$series"
cp "$series" "$tree/debian/patches/series"
# dpkg-source looks for the orig tarball next to the tree; a binary-only
# build does not read it, but a source build (dpkg-buildpackage -S) would.
if [ -f "$downloads/haproxy_$upstream.orig.tar.gz" ]; then
	ln -s "$(cd "$downloads" && pwd)/haproxy_$upstream.orig.tar.gz" "$work/"
fi
say "building haproxy $version ($arch) in $tree with $n patches from $series (log: $work/build.log)"

# nocheck: HAProxy's regression tests need vtest, dh runs none anyway. The
# caller's own DEB_BUILD_OPTIONS (noautodbgsym, say) are kept.
jobs=$(nproc 2>/dev/null || echo 1)
if ! (cd "$tree" && env DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:+$DEB_BUILD_OPTIONS }parallel=$jobs nocheck" \
	HAQUIC_INC="$inc" HAQUIC_LIB="$lib" \
	dpkg-buildpackage -b -us -uc -Ppkg.haproxy.intree) >"$work/build.log" 2>&1; then
	tail -40 "$work/build.log" >&2
	die "dpkg-buildpackage failed, see $work/build.log"
fi
grep -E '^dpkg-source: info: applying ' "$work/build.log" | sed 's/^dpkg-source: info: /haproxy-deb: /'

deb=$work/haproxy_${version}_$arch.deb
[ -f "$deb" ] || die "dpkg-buildpackage did not produce $deb"

# The installed library is in the system path: an rpath into our build tree
# would be wrong on every other machine.
x=$(mktemp -d)
trap 'rm -rf "$x"' EXIT
dpkg-deb -x "$deb" "$x"
if readelf -d "$x/usr/sbin/haproxy" | grep -qE 'RPATH|RUNPATH'; then
	readelf -d "$x/usr/sbin/haproxy" | grep -E 'RPATH|RUNPATH' >&2
	die "usr/sbin/haproxy carries an rpath"
fi
readelf -d "$x/usr/sbin/haproxy" | grep -q 'NEEDED.*\[libhaquic\.so\.0\]' ||
	die "usr/sbin/haproxy is not linked against libhaquic.so.0"
say "$(dpkg-deb -f "$deb" Package Version Architecture Depends | tr '\n' ' ')"

# lintian exits non-zero on errors (its default --fail-on error). Its
# warning about running as root is left out of the log.
say "lintian $work/haproxy_${version}_$arch.changes"
rc=0
lintian --tag-display-limit 0 "$work/haproxy_${version}_$arch.changes" >"$work/lintian.raw" 2>&1 || rc=$?
grep -v 'running with root privileges is not recommended' "$work/lintian.raw" >"$work/lintian.log" || true
rm -f "$work/lintian.raw"
if [ "$rc" -ne 0 ]; then
	sed 's/^/haproxy-deb: lintian: /' "$work/lintian.log" >&2
	die "lintian reports errors (exit status $rc)"
fi
sed 's/^/haproxy-deb: lintian: /' "$work/lintian.log"
say "$(grep -c '^W: ' "$work/lintian.log" || true) lintian warning(s), no errors; $deb"
