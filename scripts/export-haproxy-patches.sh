#!/bin/sh
# Developer tool: exports the commits of a HAProxy git work tree (the
# pristine 3.0.11 source committed first, then one commit per logical
# change) as the quilt series in haproxy-patches/, with DEP-3 headers.
#
# Usage: export-haproxy-patches.sh WORKTREE [BASE]
#   WORKTREE  a git repository holding the HAProxy source (build/haproxy-dev)
#   BASE      the pristine commit (default: the repository's root commit)
set -eu
tree=${1:?usage: export-haproxy-patches.sh WORKTREE [BASE]}
base=${2:-$(git -C "$tree" rev-list --max-parents=0 HEAD)}
out=haproxy-patches

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git -C "$tree" format-patch -q -k --no-signature --zero-commit -o "$tmp" "$base..HEAD"

rm -f "$out"/*.patch "$out"/series
set -- $(git -C "$tree" rev-list --reverse "$base..HEAD")
for p in "$tmp"/*.patch; do
	name=$(basename "$p")
	# Last-Update is the day the change was last committed
	updated=$(git -C "$tree" log -1 --format=%cs "$1")
	shift
	# Turn the mail headers into DEP-3 ones: drop the mbox separator and
	# the date, keep From and Subject, add Origin, Forwarded, Last-Update.
	awk -v updated="$updated" '
		NR == 1 && /^From 0+ / { next }
		hdr && /^Date: / { next }
		hdr && /^$/ {
			print "Origin: vendor, haquic (haproxy-patches/ in its source tree)"
			print "Forwarded: not-needed"
			print "Last-Update: " updated
			hdr = 0
		}
		{ print }
		BEGIN { hdr = 1 }
	' "$p" > "$out/$name"
	echo "$name" >> "$out/series"
done
echo "exported $(wc -l < "$out/series") patches to $out/"
