# The HAProxy 3.0.11 Debian package built with USE_RUST_QUIC=1.
