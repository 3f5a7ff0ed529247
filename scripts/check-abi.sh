#!/bin/sh
# The ABI guard: compares a built libhaquic against the committed baseline
# (abi/libhaquic.abi, libabigail XML reduced to the public ABI by
# scripts/abi-prune.py).
#
#   check-abi.sh BASELINE LIBRARY    compare; ends with "N passed, M failed"
#   check-abi.sh --dump LIBRARY      print LIBRARY's reduced ABI (for
#                                    `make abi-baseline`)
#
# Rules (README, "Versions and the ABI"):
#   - added functions pass; they are listed, and the baseline should be
#     refreshed (`make abi-baseline`) when the release that adds them ships;
#   - a removed function, or a changed signature or reached type, fails,
#     unless the SONAME differs from the baseline's (the major version was
#     bumped; then the baseline must be regenerated in the same change).
set -eu

die() { echo "check-abi: $*" >&2; echo "0 passed, 1 failed"; exit 1; }

command -v abidw >/dev/null 2>&1 || die "abidw not found (Debian package abigail-tools; make deps installs it)"
here=$(dirname "$0")

dump() {
	# $1 library, $2 output. The symbol list keeps abidw to the exported
	# interface; abi-prune.py drops what the exported functions do not reach.
	tmpd=$(mktemp -d)
	{ echo "[abi_whitelist]"; nm -D --defined-only "$1" | awk '$2 == "T" { sub(/@.*/, "", $3); print "  " $3 }'; } > "$tmpd/symbols"
	abidw --no-show-locs --no-corpus-path --type-id-style hash -w "$tmpd/symbols" "$1" > "$tmpd/full.abi" ||
		{ rm -rf "$tmpd"; die "abidw failed on $1"; }
	python3 "$here/abi-prune.py" "$tmpd/full.abi" > "$2" || { rm -rf "$tmpd"; die "cannot reduce the ABI of $1"; }
	rm -rf "$tmpd"
}

if [ "${1:-}" = "--dump" ]; then
	[ -f "${2:-}" ] || die "usage: check-abi.sh --dump LIBRARY"
	dump "$2" /dev/stdout
	exit 0
fi

base=${1:?usage: check-abi.sh BASELINE LIBRARY}
lib=${2:?usage: check-abi.sh BASELINE LIBRARY}
[ -f "$base" ] || die "no baseline $base (make abi-baseline creates it)"
[ -f "$lib" ] || die "no library $lib"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dump "$lib" "$tmp/current.abi"

base_soname=$(sed -n "s/^<abi-corpus .*soname=[\"']\([^\"']*\)[\"'].*/\1/p" "$base" | head -n1)
soname=$(sed -n "s/^<abi-corpus .*soname=[\"']\([^\"']*\)[\"'].*/\1/p" "$tmp/current.abi" | head -n1)
nfunc=$(grep -c '<function-decl ' "$tmp/current.abi" || true)
echo "check-abi: $lib (SONAME $soname, $nfunc exported functions) against $base (SONAME $base_soname)"

# The full report, additions included, for the log.
full_rc=0
abidiff "$base" "$tmp/current.abi" > "$tmp/report" 2>&1 || full_rc=$?
# The verdict: everything but additions.
rc=0
abidiff --no-added-syms "$base" "$tmp/current.abi" > "$tmp/verdict" 2>&1 || rc=$?

if [ "$rc" -eq 0 ]; then
	if [ "$full_rc" -ne 0 ]; then
		sed 's/^/  /' "$tmp/report"
		echo "check-abi: compatible: only additions; refresh the baseline with 'make abi-baseline' in the release that ships them"
	else
		echo "check-abi: identical to the baseline"
	fi
	echo "1 passed, 0 failed"
	exit 0
fi
if [ "$rc" -ge 64 ] || [ $((rc & 3)) -ne 0 ]; then
	cat "$tmp/verdict" >&2
	die "abidiff could not compare (exit $rc)"
fi
sed 's/^/  /' "$tmp/report"
if [ "$soname" != "$base_soname" ]; then
	echo "check-abi: incompatible changes, but the SONAME was bumped ($base_soname -> $soname):"
	echo "check-abi: regenerate the baseline with 'make abi-baseline' in the same change"
	echo "1 passed, 0 failed"
	exit 0
fi
echo "check-abi: INCOMPATIBLE change to the ABI of $base_soname (abidiff exit $rc)." >&2
echo "check-abi: restore the interface, or bump the major version in Cargo.toml (new SONAME) and run 'make abi-baseline'." >&2
echo "0 passed, 1 failed"
exit 1
