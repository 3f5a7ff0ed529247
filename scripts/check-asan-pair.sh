#!/bin/sh
# Checks the ASan pair that `make haproxy-asan` builds: HAProxy and
# libhaquic are both instrumented, the process loads exactly one ASan runtime
# (GCC's libasan, through the executable), the library carries no runtime of
# its own and needs nothing from one that libasan does not export, and the
# binary starts under ASan and accepts the pool debugging options.
#
# Usage: check-asan-pair.sh HAPROXY LIBHAQUIC_SO LIBHAQUIC_A
set -eu
hap=${1:?usage: check-asan-pair.sh HAPROXY LIBHAQUIC_SO LIBHAQUIC_A}
lib=${2:?usage: check-asan-pair.sh HAPROXY LIBHAQUIC_SO LIBHAQUIC_A}
arc=${3:?usage: check-asan-pair.sh HAPROXY LIBHAQUIC_SO LIBHAQUIC_A}
fail() { echo "check-asan-pair: $*" >&2; exit 1; }

# HAProxy: instrumented (its module constructors call __asan_init).
nm -D "$hap" | grep -q ' U __asan_init' || fail "$hap does not call __asan_init: not built with -fsanitize=address"
nm -D "$hap" | grep -q ' U haquic_' || fail "$hap does not link libhaquic"

# The runtime: one, libasan, loaded by the executable; libhaquic from the ASan stage.
deps=$(ldd "$hap")
n=$(echo "$deps" | grep -c -E 'libasan|libclang_rt\.asan|rustc.*asan' || true)
[ "$n" -eq 1 ] || fail "$n ASan runtimes in ldd $hap (want exactly 1):
$(echo "$deps" | grep -E 'asan' || true)"
rt=$(echo "$deps" | awk '/libasan/ { print $3 }')
[ -n "$rt" ] && [ -f "$rt" ] || fail "libasan not resolved: $(echo "$deps" | grep asan)"
libdir=$(cd "$(dirname "$lib")" && pwd)
echo "$deps" | grep -q "libhaquic.so.0 => $libdir/" || fail "libhaquic does not resolve to $libdir:
$(echo "$deps" | grep haquic)"

# libhaquic: instrumented code, no runtime inside, every __asan_* it needs
# exported by libasan.
nm -D --defined-only "$lib" | grep -q ' __asan_' && fail "$lib defines __asan_* symbols: an ASan runtime is linked into it"
need=$(nm -D --undefined-only "$lib" | awk '$2 ~ /^__asan_/ { print $2 }' | sed 's/@.*//' | sort -u)
[ -n "$need" ] || fail "$lib references no __asan_* symbol: not instrumented"
have=$(nm -D --defined-only "$rt" | awk '{ print $3 }' | sed 's/@.*//' | sort -u)
missing=$(echo "$need" | while read -r s; do echo "$have" | grep -qx "$s" || echo "$s"; done)
[ -z "$missing" ] || fail "$rt does not export what $lib needs: $missing"
readelf -d "$lib" | grep -q 'NEEDED.*libasan' || fail "$lib does not name libasan (DT_NEEDED)"

# Which parts of the static archive are instrumented: the Rust code
# (haquic, quiche) and BoringSSL's C and C++.
rust=$(nm -A "$arc" 2>/dev/null | grep -E '^[^:]*:(haquic|quiche)[-.][^:]*\.rcgu\.o:.* U __asan_report_' | cut -d: -f2 | sort -u | wc -l)
boring=$(nm -A "$arc" 2>/dev/null | grep -E '\.(c|cc)\.o:.* U __asan_report_' | cut -d: -f2 | sort -u | wc -l)
[ "$rust" -gt 0 ] || fail "no instrumented haquic/quiche object in $arc"

# It runs: the runtime starts (no 'does not come first', no version
# mismatch), and the pool debugging options are accepted.
out=$(ASAN_OPTIONS=detect_leaks=0 "$hap" -dMno-cache,no-global,no-merge -vv 2>&1) ||
	fail "$hap -dMno-cache,no-global,no-merge -vv failed:
$out"
echo "$out" | grep -q 'RUST_QUIC' || fail "$hap -vv does not show RUST_QUIC"
echo "$out" | grep -q 'DEBUG_NO_POOLS' || fail "$hap -vv does not show DEBUG_NO_POOLS"

echo "check-asan-pair: one ASan runtime ($rt), loaded by $(basename "$hap");"
echo "check-asan-pair: $(basename "$lib") needs $(echo "$need" | wc -l) __asan_* symbols, all exported by it, and defines none;"
echo "check-asan-pair: instrumented objects in $(basename "$arc"): $rust Rust (haquic, quiche), $boring C/C++ (BoringSSL)"
echo "check-asan-pair: $(echo "$out" | grep -m1 '^HAProxy version')"
