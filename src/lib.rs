//! haquic: a QUIC and HTTP/3 engine for HAProxy, built on quiche, behind a C
//! ABI of opaque, refcounted handles.
//!
//! Layers, one module per concern (see DESIGN.md):
//! - [`ffi`]: the C ABI. Opaque types, refcounts, the panic boundary, NULL
//!   checks and result codes. The only module that casts pointers.
//! - [`engine`]: configuration and, as it grows, workers, lifecycle and
//!   statistics.
//! - [`dispatch`]: routing datagrams to the worker that owns their
//!   connection ID, through bounded queues.
//! - [`conn`] and [`h3`]: one connection's state machine over quiche, and the
//!   HTTP/3 message rules.
//! - [`cid`]: connection IDs that carry their worker, reset and Retry tokens.
//! - [`io`]: UDP sockets the engine owns.
//! - [`handle`]: objects C can hold, counted while alive.
//! - `sync`: the atomics, `Arc` and queue the cross-thread protocols use,
//!   in one place so that the loom models (`loom/`) can swap in loom's.
//! - [`error`]: the result codes every layer shares.

#![warn(missing_docs)]

pub mod amp;
#[cfg(test)]
mod rebind_tests;
pub mod cid;
pub mod conn;
pub mod dispatch;
pub mod engine;
pub mod error;
pub mod fasthash;
pub mod ffi;
pub mod h3;
pub mod handle;
pub mod io;
mod sync;

pub use error::{Error, Result, haquic_result};
