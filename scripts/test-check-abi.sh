#!/bin/sh
# Tests the ABI guard itself (scripts/check-abi.sh) on a small Rust library
# built as libhaquic is (cdylib, extern "C", #[repr(C)] structs, debug
# information), in six variants compiled from one source with --cfg:
#
#   the baseline itself          passes
#   a function added             passes (additions are compatible)
#   a function removed           fails
#   a parameter type changed     fails
#   a struct field inserted      fails (the layout of a reached type changed)
#   a function removed, SONAME bumped to .so.1
#                                passes (a new major version may break)
#
# Ends with "N passed, M failed".
set -u
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0

cat > "$tmp/demo.rs" <<'EOF'
#![allow(non_camel_case_types)]
#[repr(C)]
pub struct haquic_demo_opts {
    pub struct_size: u32,
    #[cfg(field_inserted)]
    pub priority: u64,
    pub flags: u32,
}
#[unsafe(no_mangle)]
pub extern "C" fn haquic_demo_open(opts: *const haquic_demo_opts) -> i32 {
    if opts.is_null() { -1 } else { unsafe { (*opts).flags as i32 } }
}
#[cfg(not(param_changed))]
#[unsafe(no_mangle)]
pub extern "C" fn haquic_demo_send(h: i32, buf: *const u8, len: usize) -> i64 {
    if buf.is_null() { -1 } else { h as i64 + len as i64 }
}
#[cfg(param_changed)]
#[unsafe(no_mangle)]
pub extern "C" fn haquic_demo_send(h: i32, buf: *const u8, len: u32) -> i64 {
    if buf.is_null() { -1 } else { h as i64 + len as i64 }
}
#[cfg(not(removed))]
#[unsafe(no_mangle)]
pub extern "C" fn haquic_demo_close(h: i32) -> i32 { h }
#[cfg(added)]
#[unsafe(no_mangle)]
pub extern "C" fn haquic_demo_peek(h: i32) -> i32 { h + 1 }
EOF

# build NAME MAJOR [CFG]: libdemo-NAME.so with SONAME libhaquicdemo.so.MAJOR
build() {
	cfg=""
	[ -n "${3:-}" ] && cfg="--cfg $3"
	# shellcheck disable=SC2086
	rustc --edition 2024 --crate-type cdylib -g -C opt-level=1 $cfg \
		-C link-arg=-Wl,-soname,libhaquicdemo.so.$2 \
		-o "$tmp/libdemo-$1.so" "$tmp/demo.rs" 2> "$tmp/rustc.log" ||
		{ cat "$tmp/rustc.log"; echo "test-check-abi: rustc failed for $1"; return 1; }
}

# expect NAME pass|fail DESCRIPTION
expect() {
	if sh "$here/check-abi.sh" "$tmp/baseline.abi" "$tmp/libdemo-$1.so" > "$tmp/out" 2>&1; then
		got=pass
	else
		got=fail
	fi
	if [ "$got" = "$2" ]; then
		pass=$((pass + 1))
		echo "ok    $3: check-abi says $got"
	else
		fail=$((fail + 1))
		echo "FAIL  $3: check-abi says $got, expected $2"
		sed 's/^/      /' "$tmp/out"
	fi
	# the failure message a developer sees, for the log
	[ "$got" = fail ] && grep -E '^\s+\[[DC]\]|INCOMPATIBLE' "$tmp/out" | head -3 | sed 's/^ */      /'
	return 0
}

build base 0 || { echo "0 passed, 1 failed"; exit 1; }
sh "$here/check-abi.sh" --dump "$tmp/libdemo-base.so" > "$tmp/baseline.abi" ||
	{ echo "0 passed, 1 failed"; exit 1; }
build added 0 added && build removed 0 removed && build param 0 param_changed &&
	build field 0 field_inserted && build bumped 1 removed ||
	{ echo "$pass passed, $((fail + 1)) failed"; exit 1; }

expect base pass "unchanged library"
expect added pass "function added"
expect removed fail "function removed"
expect param fail "parameter type changed (usize -> u32)"
expect field fail "struct field inserted"
expect bumped pass "function removed with the SONAME bumped"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
