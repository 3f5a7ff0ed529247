#!/bin/bash
# Runs cargo-fuzz targets one after the other for a fixed time each and
# reports, per target, libFuzzer's final statistics; ends with
# "N passed, M failed". Used by mk/fuzz.mk (make fuzz-smoke, make fuzz-long).
#
#   fuzz/run.sh SECONDS TARGET...
#
# Environment: FUZZ_TARGET_DIR (cargo's target dir, default
# build/fuzz-target), FUZZ_WORK (corpora, logs and artifacts, default
# build), FUZZ_ARGS (more libFuzzer options), FUZZ_RECORD (a file to append
# one line per run to: date, commit, target, seconds, execs, exec/s, cov,
# ft, corpus, result).
#
# A target fails when libFuzzer reports a crash (a panic anywhere: the
# targets abort on every panic, even one the library would catch), a leak,
# a timeout or an out-of-memory, or exits non-zero. Its reproducer's path is
# printed; `make fuzz-repro FUZZ_TARGET=t FUZZ_INPUT=path` replays it.
# Inputs kept under fuzz/regressions/TARGET/ are replayed first; libFuzzer
# options a target needs are in fuzz/options/TARGET.
set -u
cd "$(dirname "$0")/.."
seconds=$1
shift
target_dir=${FUZZ_TARGET_DIR:-build/fuzz-target}
work=${FUZZ_WORK:-build}
pass=0
fail=0
for t in "$@"; do
	corpus=$work/fuzz-corpus/$t
	artifacts=$work/fuzz-artifacts/$t/
	log=$work/fuzz-logs/$t.log
	mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
	# The committed seeds are copied, never fuzzed in place; the corpus a
	# run grows stays in build/ for the next run.
	if [ -d "fuzz/corpus/$t" ]; then
		cp -n fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null || true
	fi
	ok=1
	regressions=$(ls fuzz/regressions/"$t"/* 2>/dev/null || true)
	if [ -n "$regressions" ]; then
		# shellcheck disable=SC2086
		if ! cargo +nightly fuzz run --target-dir "$target_dir" "$t" $regressions -- -runs=1 >"$log.regressions" 2>&1; then
			echo "=== $t: a regression input fails again (log: $log.regressions)"
			tail -n 40 "$log.regressions"
			ok=0
		fi
	fi
	# Options of the target's own (fuzz/options/TARGET).
	opts=$(grep -v '^#' fuzz/options/"$t" 2>/dev/null | tr '\n' ' ')
	start=$(date +%s)
	# shellcheck disable=SC2086
	RUST_BACKTRACE=1 cargo +nightly fuzz run --target-dir "$target_dir" "$t" "$corpus" -- \
		-max_total_time="$seconds" -print_final_stats=1 -timeout=60 -rss_limit_mb=4096 \
		-artifact_prefix="$artifacts" $opts ${FUZZ_ARGS:-} >"$log" 2>&1
	rc=$?
	secs=$(( $(date +%s) - start ))
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
	rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n1)
	last=$(grep -E '^#[0-9]+' "$log" | tail -n1)
	cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
	ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
	corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
	artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n1)
	if [ "$rc" -ne 0 ] || [ -n "$artifact" ]; then
		ok=0
	fi
	if [ "$ok" -eq 1 ]; then
		result=passed
		pass=$((pass + 1))
	else
		result=FAILED
		fail=$((fail + 1))
		echo "=== $t: libFuzzer exited with $rc; the end of $log:"
		grep -v '^#[0-9]' "$log" | tail -n 60
		[ -n "$artifact" ] && echo "=== $t: reproducer: $artifact"
	fi
	printf '%-16s %-6s %5ss  execs %-10s exec/s %-7s cov %-6s ft %-7s corpus %-6s rss %sMB\n' \
		"$t" "$result" "$secs" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "${rss:-?}"
	if [ -n "${FUZZ_RECORD:-}" ]; then
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" \
			"$(git rev-parse --short HEAD 2>/dev/null)" "$t" "$secs" "${execs:-?}" "${rate:-?}" \
			"${cov:-?}" "${ft:-?}" "${corp:-?}" "$result" >>"$FUZZ_RECORD"
	fi
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
