//! The engine layer: configuration, and (as it grows) workers, lifecycle and
//! statistics.
//!
//! This module owns what an operator configures and what the host reads back.
//! It never touches sockets (that is `io`) and contains no unsafe code (that
//! is `ffi`). Everything here is plain Rust that the C ABI wraps.

pub mod config;
pub mod tls;

pub use config::{CcAlgorithm, Config, ConfigState, Limits};
