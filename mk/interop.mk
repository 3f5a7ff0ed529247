# Interop: the example server and independent clients (aioquic, pycurl).
# Filled in by the interop work; included from the Makefile.
