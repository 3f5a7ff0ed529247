//! Build script: generates the C header with cbindgen, links the shared
//! library with its SONAME and version script, and (with the `abi-check`
//! feature) runs bindgen over the committed header for tests/abi.rs.

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    for p in ["src", "cbindgen.toml", "haquic.map", "include/haquic.h", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }

    println!("cargo:rustc-env=HAQUIC_QUICHE_VERSION={}", locked_version(&root, "quiche"));

    // cargo's own cdylib gets the SONAME too. rustc's export list (only the
    // `#[no_mangle]` functions) overrides a version script here, which is why
    // the Makefile links the installed library from the staticlib with
    // haquic.map instead.
    let major = env::var("CARGO_PKG_VERSION_MAJOR").unwrap();
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libhaquic.so.{major}");
    }

    // The header, generated from the sources. The Makefile copies it to
    // include/haquic.h; tests/abi.rs fails when the committed copy is stale.
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    match cbindgen::Builder::new().with_crate(&root).with_config(config).generate() {
        Ok(bindings) => {
            bindings.write_to_file(out.join("haquic.h"));
        }
        Err(e) => panic!("cbindgen could not generate the header: {e}"),
    }
    let _ = fs::write(out.join("header-path.txt"), out.join("haquic.h").display().to_string());

    #[cfg(feature = "abi-check")]
    abi_bindings(&root, &out);
}

/// The version of `name` in Cargo.lock, or "unknown" (a build from a crate
/// tarball without the lock file).
fn locked_version(root: &std::path::Path, name: &str) -> String {
    let lock = fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    let needle = format!("name = \"{name}\"\nversion = \"");
    lock.find(&needle)
        .and_then(|i| lock[i + needle.len()..].split('"').next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(feature = "abi-check")]
fn abi_bindings(root: &std::path::Path, out: &std::path::Path) {
    let header = root.join("include/haquic.h");
    let bindings = bindgen::Builder::default()
        .header(header.display().to_string())
        .clang_arg("-DHAQUIC_TEST_HOOKS")
        .allowlist_item("haquic_.*|HAQUIC_.*")
        .layout_tests(false)
        .generate_comments(false)
        .prepend_enum_name(false)
        .default_enum_style(bindgen::EnumVariation::ModuleConsts)
        .generate()
        .expect("bindgen could not parse include/haquic.h");
    bindings.write_to_file(out.join("abi_bindings.rs")).expect("write abi_bindings.rs");
}
