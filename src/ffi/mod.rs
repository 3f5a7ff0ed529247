//! The C ABI: opaque handle types, refcounts, the panic boundary, NULL checks
//! and result codes.
//!
//! This module is the only place in the crate that casts pointers. It holds no
//! protocol logic: each exported function borrows its arguments through the
//! helpers below, calls into the safe Rust layers, and turns the outcome into
//! a [`haquic_result`].
//!
//! Conventions (see STYLE.md):
//! - Refcounted objects are `Arc`-owned and cross the ABI as `*const`.
//! - Every exported body runs inside [`ffi_panic_boundary!`]: a panic becomes
//!   `HAQUIC_ERR_PANIC` (or NULL, 0, false), never an unwind into C.
//! - Every pointer goes through [`try_ref!`], [`try_out!`] or the `borrow_*`
//!   helpers, so NULL gives `HAQUIC_ERR_NULL` (or NULL, 0).
//! - Outputs are written only on success.

#![allow(non_camel_case_types)]

use crate::error::{Error, haquic_result};
pub use crate::handle::{Shared, Tracked, live_objects};
use std::ffi::CStr;
use std::os::raw::c_char;
use std::sync::Arc;

pub mod config;
pub mod conn;
pub mod engine;
pub mod result;
#[cfg(feature = "test-hooks")]
pub mod testing;
pub mod version;

/// What an exported function returns when it catches a panic, or when a
/// required pointer is NULL.
pub trait FfiDefault {
    /// The value returned after a caught panic.
    fn on_panic() -> Self;
    /// The value returned when a required pointer is NULL.
    fn on_null() -> Self;
}

impl FfiDefault for haquic_result {
    fn on_panic() -> Self {
        haquic_result::HAQUIC_ERR_PANIC
    }
    fn on_null() -> Self {
        haquic_result::HAQUIC_ERR_NULL
    }
}

impl<T> FfiDefault for *const T {
    fn on_panic() -> Self {
        std::ptr::null()
    }
    fn on_null() -> Self {
        std::ptr::null()
    }
}

impl<T> FfiDefault for *mut T {
    fn on_panic() -> Self {
        std::ptr::null_mut()
    }
    fn on_null() -> Self {
        std::ptr::null_mut()
    }
}

impl FfiDefault for () {
    fn on_panic() -> Self {}
    fn on_null() -> Self {}
}

macro_rules! zero_default {
    ($($t:ty),*) => {$(
        impl FfiDefault for $t {
            fn on_panic() -> Self { 0 }
            fn on_null() -> Self { 0 }
        }
    )*};
}
zero_default!(u32, u64, usize, i32, i64);

impl FfiDefault for bool {
    fn on_panic() -> Self {
        false
    }
    fn on_null() -> Self {
        false
    }
}

/// Runs an exported function's body, turning a panic into the return type's
/// [`FfiDefault::on_panic`] value. `return` inside the body returns from the
/// exported function, as usual.
macro_rules! ffi_panic_boundary {
    ( $($body:tt)* ) => {
        match ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| { $($body)* })) {
            Ok(ret) => ret,
            Err(_) => $crate::ffi::FfiDefault::on_panic(),
        }
    };
}
pub(crate) use ffi_panic_boundary;

/// Borrows the Rust object behind a handle; NULL returns early.
macro_rules! try_ref {
    ($ptr:expr) => {
        match $crate::ffi::borrow_handle($ptr) {
            Some(r) => r,
            None => return $crate::ffi::FfiDefault::on_null(),
        }
    };
}
pub(crate) use try_ref;

/// Borrows an output location mutably; NULL returns early.
macro_rules! try_out {
    ($ptr:expr) => {
        match $crate::ffi::borrow_out($ptr) {
            Some(s) => s,
            None => return $crate::ffi::FfiDefault::on_null(),
        }
    };
}
pub(crate) use try_out;

/// An opaque C type that stands for an `Arc<Tracked<Self::Rust>>`.
pub trait ArcHandle {
    /// The Rust object the handle refers to.
    type Rust: Send + Sync;
}

/// Turns a new object into a handle holding one reference.
pub fn new_handle<H: ArcHandle>(value: H::Rust) -> *const H {
    into_handle::<H>(crate::handle::shared(value))
}

/// Gives C one reference to an existing object (a new reference).
pub fn into_handle<H: ArcHandle>(value: Shared<H::Rust>) -> *const H {
    Arc::into_raw(value) as *const H
}

/// A borrowed pointer to an object the engine keeps alive (no reference is
/// added; the caller documents how long it stays valid).
pub fn borrowed_handle<H: ArcHandle>(value: &Shared<H::Rust>) -> *const H {
    Arc::as_ptr(value) as *const H
}

/// Takes a new `Arc` reference to the object behind a borrowed handle.
pub fn clone_handle<H: ArcHandle>(ptr: *const H) -> Option<Shared<H::Rust>> {
    if ptr.is_null() {
        return None;
    }
    handle_ref(ptr);
    // SAFETY: `handle_ref` just added the reference that this Arc now owns.
    Some(unsafe { Arc::from_raw(ptr as *const Tracked<H::Rust>) })
}

/// Borrows the object behind a handle for the duration of a call.
pub fn borrow_handle<'a, H: ArcHandle>(ptr: *const H) -> Option<&'a Tracked<H::Rust>> {
    // SAFETY: a non-NULL handle came from `new_handle` and the caller holds a
    // reference on it for the duration of the call (the ABI contract), so the
    // Arc allocation is alive.
    unsafe { (ptr as *const Tracked<H::Rust>).as_ref() }
}

/// Adds a reference to a handle. NULL is ignored.
pub fn handle_ref<H: ArcHandle>(ptr: *const H) {
    if !ptr.is_null() {
        // SAFETY: non-NULL handles come from `Arc::into_raw` in `new_handle`
        // and the caller holds a reference, so the count is at least one.
        unsafe { Arc::increment_strong_count(ptr as *const Tracked<H::Rust>) }
    }
}

/// Drops a reference to a handle, freeing the object with the last one. NULL
/// is ignored.
pub fn handle_unref<H: ArcHandle>(ptr: *const H) {
    if !ptr.is_null() {
        // SAFETY: as in `handle_ref`; the caller gives up the reference it
        // held, which `Arc::into_raw`/`increment_strong_count` created.
        unsafe { Arc::decrement_strong_count(ptr as *const Tracked<H::Rust>) }
    }
}

/// Borrows a C string.
pub fn borrow_cstr<'a>(ptr: *const c_char) -> Option<&'a CStr> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: the caller passes a NUL-terminated string valid for the call.
    Some(unsafe { CStr::from_ptr(ptr) })
}

/// Borrows a byte buffer.
pub fn borrow_slice<'a>(ptr: *const u8, len: usize) -> Option<&'a [u8]> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: the caller passes `len` readable bytes at `ptr`.
    Some(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Borrows an output location.
pub fn borrow_out<'a, T>(ptr: *mut T) -> Option<&'a mut T> {
    // SAFETY: the caller passes a writable, aligned `T` valid for the call.
    unsafe { ptr.as_mut() }
}

/// Borrows a writable byte buffer.
pub fn borrow_out_slice<'a>(ptr: *mut u8, len: usize) -> Option<&'a mut [u8]> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: the caller passes `len` writable bytes at `ptr`.
    Some(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

/// Reads an array of `count` C strings.
pub fn borrow_cstr_array<'a>(ptr: *const *const c_char, count: usize) -> Option<Vec<&'a CStr>> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: the caller passes `count` readable pointers at `ptr`.
    let ptrs = unsafe { std::slice::from_raw_parts(ptr, count) };
    ptrs.iter().map(|p| borrow_cstr(*p)).collect()
}

/// Copies the first `size` bytes of `value` over `out`, for versioned structs
/// whose caller may know an older, shorter layout.
///
/// The caller has checked `size <= size_of::<T>()` and that `out` points to
/// at least `size` writable bytes (the struct's own `struct_size`).
pub fn write_versioned<T: Copy>(out: *mut T, value: &T, size: usize) {
    debug_assert!(size <= std::mem::size_of::<T>());
    // SAFETY: see above: both ranges hold `size` bytes and do not overlap
    // (`value` is a Rust local or reference, `out` is the caller's memory).
    unsafe { std::ptr::copy_nonoverlapping(value as *const T as *const u8, out as *mut u8, size) }
}

/// Reads the first `size` bytes of a caller's versioned struct over `base`
/// (which holds the defaults for the fields an older caller does not know).
pub fn read_versioned<T: Copy>(input: *const T, base: &mut T, size: usize) {
    debug_assert!(size <= std::mem::size_of::<T>());
    // SAFETY: as in `write_versioned`, in the other direction.
    unsafe { std::ptr::copy_nonoverlapping(input as *const u8, base as *mut T as *mut u8, size) }
}

/// A versioned output struct: it starts with `uint32_t struct_size`, and a
/// caller compiled against any layout from `MIN_SIZE` up to the current one
/// is served (only the bytes its layout has are written).
pub trait Versioned: Copy {
    /// The smallest `struct_size` accepted: the first published layout.
    const MIN_SIZE: usize;
    /// Stamps the size the caller declared.
    fn set_struct_size(&mut self, size: u32);
}

fn versioned_size_ok<T: Versioned>(size: usize) -> bool {
    (T::MIN_SIZE..=std::mem::size_of::<T>()).contains(&size)
}

/// The `struct_size` a caller declared in `ptr`, once it is checked:
/// `HAQUIC_ERR_NULL` or `HAQUIC_ERR_STRUCT_SIZE` otherwise.
pub fn caller_size<T: Versioned>(ptr: *const T) -> Result<usize, haquic_result> {
    let size = versioned_size(ptr).ok_or(haquic_result::HAQUIC_ERR_NULL)?;
    if versioned_size_ok::<T>(size) { Ok(size) } else { Err(haquic_result::HAQUIC_ERR_STRUCT_SIZE) }
}

/// Writes `value` over the caller's struct, `size` bytes of it (from
/// [`caller_size`]), with `struct_size` set to that size.
pub fn write_caller<T: Versioned>(out: *mut T, mut value: T, size: usize) {
    value.set_struct_size(size as u32);
    write_versioned(out, &value, size);
}

/// The body of every `haquic_*_init(ptr, struct_size)`: checks the pointer
/// and the size, then writes `value` (the defaults).
pub fn init_versioned<T: Versioned>(out: *mut T, value: T, size: usize) -> haquic_result {
    if out.is_null() {
        return haquic_result::HAQUIC_ERR_NULL;
    }
    if !versioned_size_ok::<T>(size) {
        return haquic_result::HAQUIC_ERR_STRUCT_SIZE;
    }
    write_caller(out, value, size);
    haquic_result::HAQUIC_OK
}

/// Reads the leading `uint32_t struct_size` of a versioned struct.
pub fn versioned_size<T>(ptr: *const T) -> Option<usize> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: every versioned struct starts with a `uint32_t struct_size`, and
    // the pointer is to such a struct, aligned for it.
    Some(unsafe { *(ptr as *const u32) } as usize)
}

/// Converts an outcome to the code returned across the ABI.
pub fn to_code(r: Result<(), Error>) -> haquic_result {
    match r {
        Ok(()) => haquic_result::HAQUIC_OK,
        Err(e) => e.code,
    }
}

/// Copies `src` into a caller's buffer, writing its length to `out_len`.
/// Nothing is written when the buffer is too small.
pub fn copy_out(src: &[u8], buf: &mut [u8], out_len: &mut usize) -> haquic_result {
    if buf.len() < src.len() {
        return haquic_result::HAQUIC_ERR_BUFFER_TOO_SMALL;
    }
    buf[..src.len()].copy_from_slice(src);
    *out_len = src.len();
    haquic_result::HAQUIC_OK
}
