#!/bin/sh
# Fetches Debian's ngtcp2 example client (gtlsclient: ngtcp2 with GnuTLS, and
# nghttp3) from bookworm-backports and unpacks it, with the libraries it needs,
# under DEST (default build/ngtcp2) without installing anything system-wide:
#
#     DEST/debs/*.deb                  the downloaded packages
#     DEST/root/usr/bin/gtlsclient     run it with
#     LD_LIBRARY_PATH=DEST/root/usr/lib/x86_64-linux-gnu
#
# At run time it also needs the system package libev4 (scripts/install-deps.sh).
# Idempotent: when DEST/root/usr/bin/gtlsclient already runs it prints one line
# and changes nothing. Adds a bookworm-backports apt source
# (/etc/apt/sources.list.d/bookworm-backports.sources) only when none is
# configured, and runs apt-get update only when apt does not know the packages.
#
# Usage: fetch-ngtcp2.sh [DEST]
set -eu
dest=${1:-build/ngtcp2}
SUITE=bookworm-backports
PACKAGES="ngtcp2-client libngtcp2-16 libngtcp2-crypto-gnutls8 libnghttp3-9"
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
bin="$dest/root/usr/bin/gtlsclient"
libdir="$dest/root/usr/lib/$multiarch"

runs() {
	[ -x "$bin" ] && LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$bin" --help >/dev/null 2>&1
}

if runs; then
	echo "ngtcp2: gtlsclient already unpacked in $dest ($(ls "$dest/debs" 2>/dev/null | grep '^ngtcp2-client_' | sed 's/^ngtcp2-client_\([^_]*\)_.*/\1/'))"
	exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
	SUDO=""
elif command -v sudo >/dev/null 2>&1; then
	SUDO="sudo"
else
	SUDO="none"
fi
need_root() {
	if [ "$SUDO" = none ]; then
		echo "ngtcp2: not root and no sudo: cannot $1" >&2
		exit 1
	fi
}

# 1. an apt source for bookworm-backports (written only when none exists)
has_source() {
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		grep -Eq "^[[:space:]]*deb[[:space:]].*[[:space:]]$SUITE([[:space:]]|$)" "$f" && return 0
	done
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		grep -Eiq "^[[:space:]]*Suites:.*[[:space:]]$SUITE([[:space:]]|$)" "$f" && return 0
	done
	return 1
}
if ! has_source; then
	need_root "add the $SUITE apt source"
	src=/etc/apt/sources.list.d/$SUITE.sources
	echo "ngtcp2: adding the $SUITE apt source ($src)"
	printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$SUITE" |
		$SUDO tee "$src" >/dev/null
fi

# 2. apt-get update, only when apt does not know the packages in that suite
known() {
	for p in $PACKAGES; do
		apt-cache madison "$p" 2>/dev/null | grep -q "$SUITE" || return 1
	done
	return 0
}
if ! known; then
	need_root "run apt-get update"
	echo "ngtcp2: apt does not know $SUITE's packages yet: apt-get update"
	$SUDO apt-get update -qq
	if ! known; then
		echo "ngtcp2: $SUITE has no $PACKAGES after apt-get update" >&2
		exit 1
	fi
fi

# 3. download the packages into DEST/debs (kept: a later run reuses them)
mkdir -p "$dest/debs"
have_all=1
for p in $PACKAGES; do
	ls "$dest/debs/${p}_"*.deb >/dev/null 2>&1 || have_all=0
done
if [ "$have_all" -eq 1 ]; then
	echo "ngtcp2: packages already downloaded in $dest/debs"
else
	# As root, apt downloads as the user _apt, which must be able to write
	# the directory (else a "download is performed unsandboxed" warning):
	# download into a fresh directory owned by _apt, then move the files.
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	if [ "$(id -u)" -eq 0 ] && id _apt >/dev/null 2>&1; then
		chown _apt "$tmp"
	fi
	echo "ngtcp2: downloading $PACKAGES from $SUITE"
	# shellcheck disable=SC2086
	if ! (cd "$tmp" && apt-get download -q=2 -t "$SUITE" $PACKAGES); then
		echo "ngtcp2: apt-get download of $PACKAGES from $SUITE failed" >&2
		exit 1
	fi
	rm -f "$dest/debs/"*.deb
	mv "$tmp"/*.deb "$dest/debs/"
fi

# 4. unpack them into DEST/root
rm -rf "$dest/root"
mkdir -p "$dest/root"
for deb in "$dest/debs/"*.deb; do
	dpkg -x "$deb" "$dest/root"
	echo "ngtcp2: unpacked $(basename "$deb")"
done

# 5. check that it runs
if ! runs; then
	echo "ngtcp2: $bin does not run; the error:" >&2
	LD_LIBRARY_PATH="$libdir" "$bin" --help 2>&1 | tail -n 3 >&2 || true
	echo "ngtcp2: (it needs the system package libev4: scripts/install-deps.sh)" >&2
	exit 1
fi
echo "ngtcp2: gtlsclient ready: LD_LIBRARY_PATH=$libdir $bin"
