//! Version numbers: the header's macros and their run-time twins.

use super::{ffi_panic_boundary, live_objects};
use std::os::raw::c_char;

/// Major version. Changes when the ABI breaks (with the SONAME).
pub const HAQUIC_VERSION_MAJOR: u32 = 0;
/// Minor version. Changes when the ABI grows.
pub const HAQUIC_VERSION_MINOR: u32 = 1;
/// Patch version.
pub const HAQUIC_VERSION_PATCH: u32 = 0;
/// `(MAJOR << 16) | (MINOR << 8) | PATCH`, as `haquic_version()` returns it.
pub const HAQUIC_VERSION_NUMBER: u32 =
    (HAQUIC_VERSION_MAJOR << 16) | (HAQUIC_VERSION_MINOR << 8) | HAQUIC_VERSION_PATCH;
/// The largest ALPN list, in wire format, a configuration can hold.
pub const HAQUIC_ALPN_WIRE_MAX: u32 = 16 * 256;

/// The version the library was built as, `HAQUIC_VERSION_NUMBER` at its build
/// time. Compare with the header's `HAQUIC_VERSION_NUMBER` to detect a
/// mismatched library at run time.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_version() -> u32 {
    ffi_panic_boundary! {
        HAQUIC_VERSION_NUMBER
    }
}

/// The version as text, such as "0.1.0".
///
/// Static: valid for the life of the process.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_version_string() -> *const c_char {
    ffi_panic_boundary! {
        concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
    }
}

/// One line describing the build, for `haproxy -vv`: the haquic version and
/// the quiche and TLS library it carries, such as
/// "haquic 0.1.0 (quiche 0.30.0, BoringSSL)".
///
/// Static: valid for the life of the process.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_build_info() -> *const c_char {
    ffi_panic_boundary! {
        concat!(
            "haquic ", env!("CARGO_PKG_VERSION"),
            " (quiche ", env!("HAQUIC_QUICHE_VERSION"), ", BoringSSL)\0"
        ).as_ptr() as *const c_char
    }
}

/// The number of live haquic objects (configurations and, later, engines,
/// listeners, connections, streams) in this process. It returns to 0 once
/// every reference has been released, which makes it a leak check.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_live_objects() -> usize {
    ffi_panic_boundary! {
        live_objects()
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_match_cargo_version() {
        assert_eq!(HAQUIC_VERSION_MAJOR.to_string(), env!("CARGO_PKG_VERSION_MAJOR"));
        assert_eq!(HAQUIC_VERSION_MINOR.to_string(), env!("CARGO_PKG_VERSION_MINOR"));
        assert_eq!(HAQUIC_VERSION_PATCH.to_string(), env!("CARGO_PKG_VERSION_PATCH"));
        assert_eq!(haquic_version(), 0x000100);
    }
}
