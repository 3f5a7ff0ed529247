#!/bin/bash
# Runs each test stage given as "NAME::COMMAND", shows its output, reads the
# counts from its closing line (cargo's "N passed; M failed" or the plain
# "N passed, M failed"), and ends with a table and one total line.
set -u
total_pass=0
total_fail=0
rows=()
status=0
for stage in "$@"; do
	name=${stage%%::*}
	cmd=${stage#*::}
	echo "=== $name: $cmd"
	log=$(mktemp)
	start=$(date +%s)
	bash -c "$cmd" 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	secs=$(( $(date +%s) - start ))
	# Sum every summary line of the stage: cargo prints one per test binary
	# ("N passed; M failed"), the C runners "N passed, M failed", pytest
	# "[M failed, ]N passed in Ts".
	read -r p f < <(grep -E '^(test result: .*|[0-9]+ failed, )?[0-9]+ passed([;,] [0-9]+ failed| in )' "$log" |
		awk '{ p = 0; f = 0
		       for (i = 2; i <= NF; i++) {
		         if ($i ~ /^passed/) p = $(i-1) + 0
		         if ($i ~ /^failed/) f = $(i-1) + 0
		       }
		       P += p; F += f }
		     END { print P + 0, F + 0 }')
	rm -f "$log"
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1 # a stage that failed without counting counts as one failure
	fi
	if [ "$rc" -eq 0 ] && [ "$p" -eq 0 ]; then
		echo "=== $name ran no test" >&2
		f=$((f + 1))
	fi
	[ "$f" -ne 0 ] && status=1
	total_pass=$((total_pass + p))
	total_fail=$((total_fail + f))
	rows+=("$(printf '%-28s %6s passed %4s failed %5ss' "$name" "$p" "$f" "$secs")")
done
echo
echo "=== summary"
printf '%s\n' "${rows[@]}"
echo "$total_pass passed, $total_fail failed"
exit $status
