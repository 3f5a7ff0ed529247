#!/bin/bash
# Runs HAProxy on examples/haproxy.cfg (HTTP/3 on 127.0.0.1:8443) in front of
# the demo backend (tests/haproxy/backend.py on 127.0.0.1:8080), in the
# foreground, and prints one command that fetches a page over HTTP/3.
# Ctrl-C stops HAProxy; the backend is stopped with it.
#
#   HAPROXY_BIN   the HAProxy to run (default build/haproxy/haproxy)
#   PYTHON        a Python with pycurl (default build/venv/bin/python)
#   RUN_ONESHOT=1 fetch the page once, print it, stop everything, and exit
#                 with the fetch's status (a smoke test for CI)
set -u
cd "$(dirname "$0")/.."

HAPROXY_BIN=${HAPROXY_BIN:-build/haproxy/haproxy}
PYTHON=${PYTHON:-build/venv/bin/python}
RUN=build/run
CFG=examples/haproxy.cfg
URL=https://127.0.0.1:8443/

die() { echo "run-haproxy: $*" >&2; exit 1; }

[ -x "$HAPROXY_BIN" ] || die "$HAPROXY_BIN not found: build it (make haproxy), or set HAPROXY_BIN (e.g. build/haproxy-stock/haproxy)"
[ -x "$PYTHON" ] || die "$PYTHON not found: make build/venv/.installed (the interop virtualenv) first"

mkdir -p "$RUN"

# A self-signed certificate for 127.0.0.1 and localhost, on first run.
if [ ! -s "$RUN/haproxy.pem" ]; then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$RUN/haproxy.key" -out "$RUN/haproxy.crt" -days 365 -subj "/CN=localhost" \
		-addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >/dev/null 2>&1 ||
		die "openssl could not generate a certificate"
	cat "$RUN/haproxy.crt" "$RUN/haproxy.key" > "$RUN/haproxy.pem"
	echo "run-haproxy: generated a self-signed certificate in $RUN/haproxy.pem"
fi

# The stock native-QUIC build on OpenSSL needs `limited-quic`; a build with
# USE_RUST_QUIC=1 does not, and does not get it.
vv=$("$HAPROXY_BIN" -vv 2>/dev/null) || die "$HAPROXY_BIN -vv failed"
if grep -q -- '+RUST_QUIC' <<<"$vv"; then
	flavour="haquic (USE_RUST_QUIC)"
elif grep -q -E -- '\+QUIC( |$)|USE_QUIC=1' <<<"$vv"; then
	flavour="native QUIC (limited-quic added)"
	sed 's/^global$/global\n    limited-quic/' "$CFG" > "$RUN/haproxy-limited-quic.cfg"
	CFG=$RUN/haproxy-limited-quic.cfg
else
	die "$HAPROXY_BIN has no QUIC support"
fi

backend_pid=""
haproxy_pid=""
cleanup() {
	if [ -n "$haproxy_pid" ] && kill -0 "$haproxy_pid" 2>/dev/null; then
		kill -USR1 "$haproxy_pid" 2>/dev/null
		for _ in $(seq 50); do kill -0 "$haproxy_pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$haproxy_pid" 2>/dev/null
	fi
	if [ -n "$backend_pid" ] && kill -0 "$backend_pid" 2>/dev/null; then
		kill "$backend_pid" 2>/dev/null
		wait "$backend_pid" 2>/dev/null
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$PYTHON" tests/haproxy/backend.py --host 127.0.0.1 --port 8080 &
backend_pid=$!
for _ in $(seq 50); do
	(exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && break
	kill -0 "$backend_pid" 2>/dev/null || die "the backend did not start (is 127.0.0.1:8080 in use?)"
	sleep 0.1
done

FETCH="$PYTHON tests/haproxy/h3get.py --cacert $RUN/haproxy.crt $URL"

if [ "${RUN_ONESHOT:-0}" = 1 ]; then
	"$HAPROXY_BIN" -db -f "$CFG" &
	haproxy_pid=$!
	# HAProxy is ready when its stats socket answers; then one fetch
	for _ in $(seq 100); do
		[ -S "$RUN/haproxy.sock" ] && "$PYTHON" - "$RUN/haproxy.sock" <<'EOF' 2>/dev/null && break
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(1)
s.connect(sys.argv[1])
s.sendall(b"show info\n")
sys.exit(0 if b"Pid:" in s.recv(4096) else 1)
EOF
		kill -0 "$haproxy_pid" 2>/dev/null || die "HAProxy exited while starting"
		sleep 0.1
	done
	echo "run-haproxy: HAProxy ($flavour) on $URL; fetching it once:"
	echo "\$ $FETCH"
	$FETCH
	rc=$?
	echo "run-haproxy: fetch exit status $rc"
	exit $rc
fi

echo "run-haproxy: HAProxy ($flavour) on $URL, backend on http://127.0.0.1:8080/"
echo "run-haproxy: fetch a page over HTTP/3 with:"
echo
echo "    $FETCH"
echo
echo "run-haproxy: Ctrl-C to stop"
"$HAPROXY_BIN" -db -f "$CFG"
