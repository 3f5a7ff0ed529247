#!/bin/sh
# Keeps debian/libhaquic0.symbols in step with the library's exported
# symbols (dpkg-gensymbols fails the package build on any difference, but
# this check runs in seconds, inside `make test`).
#
#   check-debian-symbols.sh LIBRARY          compare; "N passed, M failed"
#   check-debian-symbols.sh LIBRARY --update VERSION
#                                            add the missing symbols with
#                                            VERSION (the first upstream
#                                            version that has them) and drop
#                                            the ones that are gone
set -eu
lib=${1:?usage: check-debian-symbols.sh LIBRARY [--update VERSION]}
file=debian/libhaquic0.symbols
soname=$(readelf -d "$lib" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
# "name@version" for each exported symbol, as dpkg-gensymbols names them
# (the version node itself, an absolute symbol, is "HAQUIC_0@HAQUIC_0")
exported=$(nm -D --defined-only "$lib" |
	awk '{ n = $NF; sub(/@@/, "@", n); if ($2 == "A" && n !~ /@/) n = n "@" n; print n }' | sort -u)

if [ "${2:-}" = "--update" ]; then
	ver=${3:?--update needs the upstream VERSION}
	tmp=$(mktemp)
	{
		echo "$soname libhaquic0 #MINVER#"
		echo "* Build-Depends-Package: libhaquic-dev"
		for s in $exported; do
			old=$(awk -v s="$s" '$1 == s { print $2 }' "$file" 2>/dev/null || true)
			echo " $s ${old:-$ver}"
		done
	} > "$tmp"
	mv "$tmp" "$file"
	echo "check-debian-symbols: $file lists $(echo "$exported" | wc -l) symbols of $soname"
	exit 0
fi

[ -f "$file" ] || { echo "check-debian-symbols: no $file"; echo "0 passed, 1 failed"; exit 1; }
listed=$(awk '/^ / { print $1 }' "$file" | sort -u)
head=$(head -n1 "$file")
pass=0 fail=0
if [ "$head" = "$soname libhaquic0 #MINVER#" ]; then
	pass=$((pass + 1))
else
	fail=$((fail + 1))
	echo "check-debian-symbols: $file starts with '$head', expected '$soname libhaquic0 #MINVER#'"
fi
missing=$(printf '%s\n' "$exported" | grep -vxF "$listed" || true)
extra=$(printf '%s\n' "$listed" | grep -vxF "$exported" || true)
if [ -z "$missing$extra" ]; then
	pass=$((pass + 1))
	echo "check-debian-symbols: $file lists the $(echo "$exported" | wc -l) exported symbols of $soname"
else
	fail=$((fail + 1))
	[ -n "$missing" ] && echo "check-debian-symbols: exported but not in $file:" && printf '  %s\n' $missing
	[ -n "$extra" ] && echo "check-debian-symbols: in $file but no longer exported (an ABI break):" && printf '  %s\n' $extra
	echo "check-debian-symbols: after an intended change, run 'make debian-symbols'"
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
