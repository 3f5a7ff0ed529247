#!/bin/sh
# Fetches the pristine HAProxy 3.0.11 source from Debian trixie's deb-src
# (the 3.0 LTS branch Debian ships), checks its pinned sha256, and unpacks it
# into DEST (default build/haproxy-src). Idempotent: an unpacked, verified
# tree is left as it is. Users with their own tree set HAPROXY_SRC instead.
#
# Usage: fetch-haproxy.sh [DEST]
set -eu
VERSION=3.0.11
SHA256=a133e2d550c5fd9a849b5c7ab17bb945bcdad209ca140d41f45ebf31943ae783
dest=${1:-build/haproxy-src}
tarball=haproxy_$VERSION.orig.tar.gz
cache=build/downloads

if [ -f "$dest/.verified-$VERSION" ]; then
	echo "haproxy: $VERSION already unpacked in $dest"
	exit 0
fi
mkdir -p "$cache"
if [ ! -f "$cache/$tarball" ]; then
	src_list=/etc/apt/sources.list.d/haquic-trixie-src.sources
	if [ ! -f "$src_list" ]; then
		echo "haproxy: adding trixie deb-src to apt ($src_list)"
		SUDO=""
		[ "$(id -u)" -eq 0 ] || SUDO=sudo
		printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' |
			$SUDO tee "$src_list" >/dev/null
		$SUDO apt-get update -qq
	fi
	echo "haproxy: downloading the $VERSION source from trixie"
	(cd "$cache" && apt-get source --download-only --tar-only "haproxy=$VERSION-*" >/dev/null 2>&1) ||
		(cd "$cache" && apt-get source --download-only --tar-only haproxy >/dev/null 2>&1) || {
		echo "haproxy: cannot download the HAProxy $VERSION source from Debian trixie (apt-get source failed)." >&2
		echo "haproxy: set HAPROXY_SRC=/path/to/haproxy-$VERSION to use your own tree." >&2
		exit 1
	}
	if [ ! -f "$cache/$tarball" ]; then
		echo "haproxy: trixie no longer ships $VERSION (got: $(ls "$cache" | tr '\n' ' '))." >&2
		echo "haproxy: set HAPROXY_SRC=/path/to/haproxy-$VERSION to use your own tree." >&2
		exit 1
	fi
fi
got=$(sha256sum "$cache/$tarball" | cut -d' ' -f1)
if [ "$got" != "$SHA256" ]; then
	echo "haproxy: $tarball has sha256 $got, expected $SHA256: refusing it" >&2
	exit 1
fi
rm -rf "$dest"
mkdir -p "$dest"
tar -xzf "$cache/$tarball" -C "$dest" --strip-components=1
touch "$dest/.verified-$VERSION"
echo "haproxy: $VERSION verified (sha256 $SHA256) and unpacked in $dest"
