#!/bin/sh
# Checks that a shared library exports only haquic_* functions (plus the
# version node), so that the BoringSSL inside stays hidden from the host's
# OpenSSL. Usage: check-symbols.sh LIBRARY
set -eu
lib=$1
all=$(nm -D --defined-only "$lib" | awk '{print $NF}' | sed 's/@.*//')
bad=$(printf '%s\n' "$all" | grep -v -e '^haquic_' -e '^HAQUIC_[0-9]*$' || true)
count=$(printf '%s\n' "$all" | grep -c '^haquic_' || true)
if [ -n "$bad" ]; then
	echo "check-symbols: $lib exports symbols outside haquic_*:" >&2
	printf '  %s\n' $bad | head -20 >&2
	echo "0 passed, 1 failed"
	exit 1
fi
if [ "$count" -eq 0 ]; then
	echo "check-symbols: $lib exports no haquic_* symbol at all" >&2
	echo "0 passed, 1 failed"
	exit 1
fi
soname=$(readelf -d "$lib" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
echo "check-symbols: $count haquic_* symbols, nothing else; SONAME ${soname:-<none>}"
echo "1 passed, 0 failed"
