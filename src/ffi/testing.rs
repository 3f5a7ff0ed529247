//! Test-only entry points, compiled with the `test-hooks` feature and never in
//! a release or installed library. They exist to prove properties from C, such
//! as the panic boundary.

use super::ffi_panic_boundary;
use crate::error::haquic_result;

/// Panics inside the panic boundary. Returns `HAQUIC_ERR_PANIC`.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_test_panic() -> haquic_result {
    ffi_panic_boundary! {
        if std::hint::black_box(true) {
            panic!("haquic test hook: deliberate panic");
        }
        haquic_result::HAQUIC_OK
    }
}

/// Makes the next configuration update on the calling thread panic while it
/// holds the configuration's lock, which poisons that configuration.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_test_inject_config_panic() {
    ffi_panic_boundary! {
        crate::engine::config::inject_panic_in_next_update()
    }
}
