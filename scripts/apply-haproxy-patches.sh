#!/bin/sh
# Copies the pristine HAProxy tree SRC to DEST and applies the quilt series
# of haproxy-patches/ to it in order, with patch -p1 and no fuzz: a patch
# that does not apply exactly stops everything and names itself.
#
# Usage: apply-haproxy-patches.sh SRC DEST
set -eu
src=${1:?usage: apply-haproxy-patches.sh SRC DEST}
dest=${2:?usage: apply-haproxy-patches.sh SRC DEST}
series=haproxy-patches/series

[ -f "$src/Makefile" ] && [ -f "$src/src/haproxy.c" ] || {
	echo "apply-haproxy-patches: $src is not a HAProxy source tree" >&2
	exit 1
}
[ -f "$series" ] || { echo "apply-haproxy-patches: $series is missing" >&2; exit 1; }

rm -rf "$dest"
mkdir -p "$dest"
# the source only: no git metadata, no objects from an earlier build
(cd "$src" && tar --exclude=.git --exclude='*.o' --exclude=./haproxy -cf - .) | (cd "$dest" && tar -xf -)

n=0
while read -r p; do
	case "$p" in ''|'#'*) continue ;; esac
	if ! out=$(patch -d "$dest" -p1 --fuzz=0 --forward --batch --no-backup-if-mismatch \
	                 < "haproxy-patches/$p" 2>&1); then
		echo "$out" >&2
		echo "apply-haproxy-patches: $p does not apply to $src with --fuzz=0" >&2
		exit 1
	fi
	n=$((n + 1))
done < "$series"
echo "apply-haproxy-patches: $n patches applied to $dest"
