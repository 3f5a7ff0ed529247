//! `haquic_strerror`: text for result codes.

use super::ffi_panic_boundary;
use crate::error::haquic_result;
use std::os::raw::{c_char, c_int};

/// Returns a short description of a result code.
///
/// Accepts any integer: a value that is not a `haquic_result` gives
/// "unknown haquic result code".
///
/// Static: valid for the life of the process. Never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_strerror(result: c_int) -> *const c_char {
    ffi_panic_boundary! {
        match haquic_result::from_raw(result as i64) {
            Some(code) => code.description_cstr().as_ptr(),
            None => c"unknown haquic result code".as_ptr(),
        }
    }
}
