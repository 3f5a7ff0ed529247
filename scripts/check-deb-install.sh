#!/bin/bash
# Installs libhaquic0 and haproxy from DEBDIR into a clean Debian 12
# (debootstrap --variant=minbase) and shows that the packaged HAProxy serves
# HTTP/3: the packages install with apt (which fetches libssl3 and the rest
# from the mirror), "haproxy -vv" shows +RUST_QUIC, the binary loads
# libhaquic.so.0 from the system library directory, the configurations pass
# "haproxy -c", an HTTP/3 GET from the host gets the expected body, and the
# installed haproxy depends on libhaquic0.
#
# The root is ROOT (build/deb-root), unpacked for every run from a tarball of
# a freshly debootstrapped system cached in build/downloads/, so that the
# packages always go into a root that never had them. The chroot shares the
# host's network namespace: HAProxy listens on 127.0.0.1 and the host's
# client (PYTHON tests/haproxy/h3get.py) reaches it there.
#
# Usage: check-deb-install.sh DEBDIR VERSION ROOT PYTHON
#   VERSION is the haproxy package's version (3.0.11-0haquic1). DEB_MIRROR
#   overrides the mirror (http://deb.debian.org/debian), CHECK_DEB_PORT the
#   UDP port (default: a free one).
set -eu
usage="usage: check-deb-install.sh DEBDIR VERSION ROOT PYTHON"
debdir=${1:?$usage}
version=${2:?$usage}
root=${3:?$usage}
python=${4:?$usage}
suite=bookworm
mirror=${DEB_MIRROR:-http://deb.debian.org/debian}
arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
cache=build/downloads/debootstrap-$suite-minbase-$arch.tar.gz
started=$(date +%s)

say() { echo "check-deb-install: $*"; }
die() { echo "check-deb-install: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot, mount)"
[ -x "$python" ] || die "$python is missing (make build/venv/.installed)"

# debootstrap makes the root; openssl makes the test certificate on the host.
missing=""
for p in debootstrap openssl; do
	case "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" in
	*" installed") ;;
	*) missing="$missing $p" ;;
	esac
done
if [ -n "$missing" ]; then
	say "installing$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

haproxy_deb=$debdir/haproxy_${version}_$arch.deb
[ -f "$haproxy_deb" ] || die "$haproxy_deb is missing (make haproxy-deb)"
# The newest libhaquic0 in DEBDIR (make deb).
lib_deb=$(ls -t "$debdir"/libhaquic0_*_"$arch".deb 2>/dev/null | head -n1 || true)
[ -n "$lib_deb" ] || die "no $debdir/libhaquic0_*_$arch.deb (make deb)"

mkdir -p "$(dirname "$root")"
root=$(cd "$(dirname "$root")" && pwd)/$(basename "$root")

# Mount points at or below ROOT, deepest first. The root is deleted and
# unpacked again on every run: nothing may be mounted in it then, or rm -rf
# would reach into the mounted file system.
mounts_under() {
	awk -v r="$1" '$5 == r || index($5, r "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r
}
unmount_all() {
	local m
	for m in $(mounts_under "$1"); do
		umount "$m" 2>/dev/null || umount -l "$m" || true
	done
}

haproxy_pid=""
cleanup() {
	if [ -n "$haproxy_pid" ] && kill -0 "$haproxy_pid" 2>/dev/null; then
		kill "$haproxy_pid" 2>/dev/null || true
		wait "$haproxy_pid" 2>/dev/null || true
	fi
	unmount_all "$root"
	if [ -n "$(mounts_under "$root")" ]; then
		echo "check-deb-install: WARNING: still mounted under $root: $(mounts_under "$root" | tr '\n' ' ')" >&2
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- a pristine Debian 12 ------------------------------------------------------

if [ ! -f "$cache" ]; then
	tmp=$root.debootstrap
	unmount_all "$tmp"
	[ -z "$(mounts_under "$tmp")" ] || die "cannot unmount what is mounted under $tmp"
	rm -rf "$tmp"
	say "debootstrap --variant=minbase $suite from $mirror (once; cached in $cache)"
	debootstrap --variant=minbase --arch="$arch" "$suite" "$tmp" "$mirror" >"$root.debootstrap.log" 2>&1 || {
		tail -20 "$root.debootstrap.log" >&2
		unmount_all "$tmp"
		die "debootstrap failed, see $root.debootstrap.log"
	}
	unmount_all "$tmp"
	[ -z "$(mounts_under "$tmp")" ] || die "debootstrap left mounts under $tmp"
	rm -f "$tmp"/var/cache/apt/archives/*.deb
	mkdir -p "$(dirname "$cache")"
	tar -C "$tmp" --numeric-owner -czf "$cache.tmp" .
	mv "$cache.tmp" "$cache"
	rm -rf "$tmp"
fi

unmount_all "$root"
[ -z "$(mounts_under "$root")" ] || die "cannot unmount what is mounted under $root"
rm -rf "$root"
mkdir -p "$root"
tar -C "$root" --numeric-owner -xzf "$cache"
say "fresh $suite root in $root (from $cache)"

mount -t proc proc "$root/proc"
# debootstrap made real device nodes; where the container does not let us
# open them, bind the host's few that apt and HAProxy use over a tmpfs.
if ! chroot "$root" /bin/sh -c ': >/dev/null && head -c1 /dev/urandom >/dev/null' 2>/dev/null; then
	mount -t tmpfs -o mode=755 devtmp "$root/dev"
	for d in null zero full random urandom tty; do
		touch "$root/dev/$d"
		mount --bind "/dev/$d" "$root/dev/$d"
	done
	ln -s /proc/self/fd "$root/dev/fd"
fi
# The resolver of today's host, not of the day the tarball was made.
cp /etc/resolv.conf "$root/etc/resolv.conf"

in_root() {
	chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
		LC_ALL=C DEBIAN_FRONTEND=noninteractive HOME=/root "$@"
}

# ---- the checks -----------------------------------------------------------------

passed=0
failed=0
pass() { passed=$((passed + 1)); say "PASS: $*"; }
fail() { failed=$((failed + 1)); echo "check-deb-install: FAIL: $*" >&2; }

mkdir -p "$root/tmp/debs"
cp "$lib_deb" "$haproxy_deb" "$root/tmp/debs/"
say "installing $(basename "$lib_deb") and $(basename "$haproxy_deb") with apt"
log=$root.apt.log
if in_root apt-get update -qq >"$log" 2>&1 &&
	in_root apt-get install -y -q --no-install-recommends \
		"/tmp/debs/$(basename "$lib_deb")" "/tmp/debs/$(basename "$haproxy_deb")" >>"$log" 2>&1 &&
	[ "$(in_root dpkg-query -W -f='${Status} ${Version}' haproxy)" = "install ok installed $version" ] &&
	in_root dpkg-query -W -f='${Status}' libhaquic0 | grep -q ' installed$'; then
	pass "libhaquic0 $(in_root dpkg-query -W -f='${Version}' libhaquic0) and haproxy $version install" \
		"(apt also installed: $(sed -n 's/^Setting up \([^ :]*\).*/\1/p' "$log" | grep -vxE 'libhaquic0|haproxy' | tr '\n' ' '))"
else
	tail -20 "$log" >&2
	fail "the packages do not install (see $log)"
fi

vv=$(in_root haproxy -vv 2>&1 || true)
if echo "$vv" | grep -q '+RUST_QUIC'; then
	pass "haproxy -vv: $(echo "$vv" | head -n1), +RUST_QUIC"
else
	echo "$vv" | head -20 >&2
	fail "haproxy -vv does not show +RUST_QUIC"
fi

# On a merged-/usr system ld.so may name /lib/<triplet>/, a symlink to
# /usr/lib/<triplet>/: what counts is the file it opens.
so=$(in_root ldd /usr/sbin/haproxy 2>&1 | awk '$1 == "libhaquic.so.0" { print $3 }')
real=$( [ -n "$so" ] && in_root readlink -f "$so" || true)
case "$real" in
/usr/lib/$multiarch/libhaquic.so.*)
	pass "ldd: libhaquic.so.0 => $so ($real, from libhaquic0: $(in_root dpkg -S "$real" 2>/dev/null | cut -d: -f1))" ;;
*)
	in_root ldd /usr/sbin/haproxy >&2 || true
	fail "libhaquic.so.0 does not resolve into /usr/lib/$multiarch (got '${so:-nothing}')" ;;
esac

# The certificate and key in one PEM, where the shipped example expects it.
mkdir -p "$root/etc/haproxy"
tmpd=$(mktemp -d)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	-keyout "$tmpd/key.pem" -out "$tmpd/cert.pem" -days 2 -subj "/CN=localhost" \
	-addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
cat "$tmpd/cert.pem" "$tmpd/key.pem" >"$root/etc/haproxy/site.pem"
rm -rf "$tmpd"

port=${CHECK_DEB_PORT:-$("$python" -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
body="hello from the haproxy package over HTTP/3"
cat >"$root/etc/haproxy/check.cfg" <<EOF
global
    log stdout format raw local0

defaults
    mode http
    log global
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend h3
    bind quic4@127.0.0.1:$port ssl crt /etc/haproxy/site.pem alpn h3
    log-format "%ci:%cp %HV %ST %B %HM %HU"
    http-request return status 200 content-type text/plain string "$body\n"
EOF
out=$(in_root haproxy -c -f /etc/haproxy/check.cfg 2>&1) &&
	out2=$(in_root haproxy -c -f /usr/share/doc/haproxy/examples/haproxy-h3.cfg 2>&1) && {
	pass "haproxy -c accepts the test configuration (quic4@127.0.0.1:$port) and the shipped examples/haproxy-h3.cfg"
} || {
	echo "$out" "${out2:-}" >&2
	fail "haproxy -c rejects a configuration"
}

# chroot execs HAProxy: $! is HAProxy itself. -db keeps it in the foreground.
hlog=$root.haproxy.log
chroot "$root" /usr/sbin/haproxy -db -f /etc/haproxy/check.cfg >"$hlog" 2>&1 &
haproxy_pid=$!
say "haproxy (pid $haproxy_pid) on quic4@127.0.0.1:$port; GET https://127.0.0.1:$port/ from the host"
got=""
ok=""
for _ in 1 2 3 4 5 6 7 8 9 10; do
	kill -0 "$haproxy_pid" 2>/dev/null || break
	if got=$("$python" tests/haproxy/h3get.py --insecure --timeout 3 "https://127.0.0.1:$port/" 2>&1); then
		ok=1
		break
	fi
	sleep 0.5
done
if [ -n "$ok" ] && [ "$(echo "$got" | sed -n 1p)" = "200 over HTTP/3, $((${#body} + 1)) bytes" ] &&
	[ "$(echo "$got" | sed -n 2p)" = "$body" ]; then
	pass "GET over HTTP/3: $(echo "$got" | sed -n 1p): \"$body\""
else
	echo "$got" >&2
	tail -20 "$hlog" >&2
	fail "the HTTP/3 GET did not get \"$body\" (HAProxy's output: $hlog)"
fi
kill "$haproxy_pid" 2>/dev/null || true
wait "$haproxy_pid" 2>/dev/null || true
haproxy_pid=""

deps=$(in_root dpkg-query -W -f='${Depends}' haproxy 2>/dev/null || true)
if echo "$deps" | grep -qE '(^|, )libhaquic0( |,|$)'; then
	pass "dpkg -s haproxy: Depends: $deps"
else
	fail "haproxy's Depends lacks libhaquic0: '$deps'"
fi

say "done in $(($(date +%s) - started)) s"
# The plain closing line scripts/run-tests.sh counts.
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
