#!/bin/sh
# Generates the certificate and key fixtures the C tests load, with the
# openssl command-line tool. Usage: make-fixtures.sh DIR
set -eu
dir=$1
mkdir -p "$dir"
cd "$dir"
[ -f .complete ] && exit 0

q() { "$@" >/dev/null 2>&1; }

# A CA, and a leaf it signs (EC P-256): leaf.crt/leaf.key, chain.pem.
q openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	-keyout ca.key -out ca.crt -days 3650 -subj "/CN=haquic test CA"
q openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	-keyout leaf.key -out leaf.csr -subj "/CN=haquic.test"
printf 'subjectAltName=DNS:haquic.test,DNS:localhost,IP:127.0.0.1\n' > leaf.ext
q openssl x509 -req -in leaf.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
	-out leaf.crt -days 3650 -extfile leaf.ext
cat leaf.crt ca.crt > chain.pem
cat leaf.crt leaf.key > combined.pem

# An unrelated key, for the mismatch tests.
q openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out other.key

# An RSA pair, self-signed.
q openssl req -x509 -newkey rsa:2048 -nodes -keyout rsa.key -out rsa.crt \
	-days 3650 -subj "/CN=rsa.haquic.test"

# Bad inputs.
printf 'this is not a PEM file\n' > garbage.pem
: > empty.pem
# A certificate whose base64 body is cut in half.
head -n 5 leaf.crt > truncated.crt
echo '-----END CERTIFICATE-----' >> truncated.crt
# A key whose base64 body is damaged.
sed '2s/^..../AAAA/' leaf.key > corrupt.key

touch .complete
