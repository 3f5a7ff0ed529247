//! haquic: a QUIC and HTTP/3 engine for HAProxy, built on quiche, behind a C
//! ABI of opaque, refcounted handles.
//!
//! Layers, one module per concern (see DESIGN.md):
//! - [`ffi`]: the C ABI. Opaque types, refcounts, the panic boundary, NULL
//!   checks and result codes. The only module that casts pointers.
//! - [`engine`]: configuration and, as it grows, workers, lifecycle and
//!   statistics.
//! - [`error`]: the result codes every layer shares.

#![warn(missing_docs)]

pub mod engine;
pub mod error;
pub mod ffi;

pub use error::{Error, Result, haquic_result};
