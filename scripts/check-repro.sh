#!/bin/sh
# Reproducibility: builds the release library a second time, from a copy of
# the tree at another path (with its own cargo target directory), and
# compares it byte for byte with LIBRARY, the tree's own build.
#
# Both builds go through the Makefile's RELEASE_ENV (rustc's
# --remap-path-prefix, the C compiler's -ffile-prefix-map) and the same
# SOURCE_DATE_EPOCH (the date of the latest debian/changelog entry).
#
# Usage: check-repro.sh LIBRARY. Ends with "N passed, M failed".
# KEEP=1 keeps the second tree for inspection.
set -eu
lib=${1:?usage: check-repro.sh LIBRARY}
name=$(basename "$lib")
work=$(mktemp -d /tmp/haquic-repro.XXXXXX)
copy=$work/elsewhere/haquic-src
[ "${KEEP:-}" = 1 ] || trap 'rm -rf "$work"' EXIT

mkdir -p "$copy"
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$copy"
echo "check-repro: building $name again in $copy (log: $work/build.log)"
start=$(date +%s)
if ! (cd "$copy" && env -u CARGO_TARGET_DIR make -s lib) > "$work/build.log" 2>&1; then
	tail -30 "$work/build.log"
	echo "check-repro: the second build failed"
	echo "0 passed, 1 failed"
	exit 1
fi
echo "check-repro: second build took $(( $(date +%s) - start )) s"
other=$copy/build/lib/release/$name

sha256sum "$lib" "$other" | sed 's/^/  /'
if cmp -s "$lib" "$other"; then
	echo "check-repro: byte-identical ($(stat -c %s "$lib") bytes), built in $(pwd) and in $copy"
	echo "1 passed, 0 failed"
	exit 0
fi
echo "check-repro: the two builds differ. Sections that differ:"
for s in $(readelf -SW "$lib" | sed -n 's/^ *\[ *[0-9]*\] \(\.[^ ]*\).*/\1/p'); do
	a=$(objcopy -O binary --only-section="$s" "$lib" /dev/stdout 2>/dev/null | sha256sum)
	b=$(objcopy -O binary --only-section="$s" "$other" /dev/stdout 2>/dev/null | sha256sum)
	[ "$a" = "$b" ] || echo "  $s"
done
for p in "$(pwd)" "$copy"; do
	n=$(grep -c -a -F "$p" "$lib" "$other" 2>/dev/null | tr '\n' ' ')
	echo "  occurrences of $p: $n"
done
echo "0 passed, 1 failed"
exit 1
