#!/bin/sh
# Installs the Debian packages haquic's build and tests need. Idempotent: when
# everything is present it prints one line and changes nothing.
set -eu

PACKAGES="cmake clang libclang-dev pkg-config libssl-dev openssl gcc make \
python3-venv valgrind golang-go libev4 \
abigail-tools debhelper lintian quilt debootstrap"

missing=""
for p in $PACKAGES; do
	status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	case "$status" in
	*" installed") ;;
	*) missing="$missing $p" ;;
	esac
done

if ! command -v cargo >/dev/null 2>&1; then
	echo "deps: cargo is not on PATH; install Rust (rustup) first" >&2
	exit 1
fi

if [ -z "$missing" ]; then
	echo "deps: nothing to do ($(echo $PACKAGES | wc -w) Debian packages present, $(cargo --version | cut -d' ' -f1-2))"
	exit 0
fi

echo "deps: installing$missing"
if [ "$(id -u)" -eq 0 ]; then
	SUDO=""
elif command -v sudo >/dev/null 2>&1; then
	SUDO="sudo"
else
	echo "deps: not root and no sudo; please install:$missing" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
echo "deps: installed$missing"
