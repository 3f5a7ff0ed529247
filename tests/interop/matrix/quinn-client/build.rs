//! Exposes the locked versions of quinn, h3 and rustls to the program
//! (QC_QUINN_VERSION, QC_H3_VERSION, QC_RUSTLS_VERSION) for its `version=` line.

fn main() {
    println!("cargo:rerun-if-changed=Cargo.lock");
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    for (krate, var) in [
        ("quinn", "QC_QUINN_VERSION"),
        ("h3", "QC_H3_VERSION"),
        ("rustls", "QC_RUSTLS_VERSION"),
    ] {
        let mut version = "unknown".to_string();
        let mut lines = lock.lines();
        while let Some(line) = lines.next() {
            if line.trim() == format!("name = \"{krate}\"") {
                if let Some(v) = lines
                    .next()
                    .and_then(|l| l.trim().strip_prefix("version = "))
                {
                    version = v.trim_matches('"').to_string();
                }
                break;
            }
        }
        println!("cargo:rustc-env={var}={version}");
    }
}
