#!/bin/sh
# Checks the quilt series in haproxy-patches/ against the pristine HAProxy
# tree SRC: every patch is listed and applies in order with --fuzz=0 (with
# patch, and with quilt as debian/patches would), has a
# HAProxy-style subject and DEP-3 headers, and indents added C with tabs.
# Ends with "N passed, M failed".
#
# Usage: check-haproxy-patches.sh SRC
set -u
src=${1:?usage: check-haproxy-patches.sh SRC}
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok    $*"; }
ko() { fail=$((fail + 1)); echo "FAIL  $*"; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. the series applies to the pristine tree, in order, without fuzz
if out=$(sh scripts/apply-haproxy-patches.sh "$src" "$tmp/tree" 2>&1); then
	ok "series applies to $src with --fuzz=0 ($(echo "$out" | tail -1 | sed 's/.*: //'))"
else
	ko "series does not apply: $(echo "$out" | tail -1)"
fi

# 1b. quilt, as a packager uses the series (debian/patches): push -a applies
#     every patch without fuzz, and pop -a gives back the pristine tree
if command -v quilt >/dev/null 2>&1; then
	cp -a "$src" "$tmp/quilt"
	rm -f "$tmp/quilt"/.verified-*
	series_dir=$(cd haproxy-patches && pwd)
	if out=$(cd "$tmp/quilt" && QUILT_PATCHES="$series_dir" QUILT_PC=.pc quilt push -a --fuzz=0 2>&1); then
		ok "QUILT_PATCHES=haproxy-patches quilt push -a: $(echo "$out" | tail -1)"
		if (cd "$tmp/quilt" && QUILT_PATCHES="$series_dir" quilt pop -a -q >/dev/null 2>&1) &&
			rm -rf "$tmp/quilt/.pc" && diff -r -q -x '.verified-*' "$src" "$tmp/quilt" >/dev/null; then
			ok "quilt pop -a restores the pristine tree"
		else
			ko "quilt pop -a does not restore the pristine tree"
		fi
	else
		ko "quilt push -a fails: $(echo "$out" | tail -3 | tr '\n' ' ')"
	fi
else
	ko "quilt is not installed (make deps installs it)"
fi

# 2. series and files agree
for f in haproxy-patches/*.patch; do
	grep -qx "$(basename "$f")" haproxy-patches/series || ko "$f is not listed in series"
done
listed=0
while read -r p; do
	case "$p" in ''|'#'*) continue ;; esac
	listed=$((listed + 1))
	[ -f "haproxy-patches/$p" ] || ko "series lists $p, which does not exist"
done < haproxy-patches/series
[ "$listed" -gt 0 ] && ok "series lists $listed patches, all present"

# 3. each patch: subject, DEP-3 headers, one logical change, tabs
while read -r p; do
	case "$p" in ''|'#'*) continue ;; esac
	f=haproxy-patches/$p
	[ -f "$f" ] || continue
	# the header block ends at the first empty line
	hdr=$(sed '/^$/q' "$f")
	subject=$(echo "$hdr" | sed -n 's/^Subject: //p')
	missing=""
	for h in From Subject Origin Forwarded Last-Update; do
		echo "$hdr" | grep -q "^$h: " || missing="$missing $h"
	done
	if [ -n "$missing" ]; then
		ko "$p: DEP-3 headers missing:$missing"
	elif ! echo "$subject" | grep -Eq '^(BUILD|MINOR|MEDIUM|MAJOR|CLEANUP|DOC|REORG|BUG/(MINOR|MEDIUM|MAJOR)): [a-z0-9/-]+: '; then
		ko "$p: subject is not HAProxy style: $subject"
	elif [ "$(sed -n '/^$/,/^---$/p' "$f" | grep -cv '^$\|^---$')" -lt 2 ]; then
		ko "$p: the body does not say why"
	else
		# a C statement (after a line ending in ; { or }) must start with
		# tabs; aligning a continuation line with spaces is HAProxy style
		spaces=$(awk '
			/^\+\+\+ / { c = ($2 ~ /\.[ch]$/); prev = ""; next }
			c && /^\+/ {
				if ($0 ~ /^\+        / && prev ~ /[;{}][ \t]*$/) n++
				prev = $0
			}
			END { print n + 0 }' "$f")
		if [ "$spaces" -ne 0 ]; then
			ko "$p: $spaces added C statements indent with spaces instead of tabs"
		else
			ok "$p: $subject"
		fi
	fi
done < haproxy-patches/series

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
