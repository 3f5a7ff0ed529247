# Debian packages of the library (libhaquic0, libhaquic-dev), the ABI guard
# and the reproducibility check.
