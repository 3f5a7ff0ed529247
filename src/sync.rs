//! The synchronisation primitives of the cross-thread protocols: handle
//! lifetimes (`handle`) and the dispatcher's hand-off (`dispatch::inbox`).
//!
//! Those modules import their `Arc`, atomics, fences and queue from here, not
//! from std or crossbeam, so that the loom models (`loom/`, `make test-loom`)
//! can compile the very same files against loom's checked versions:
//! `loom/src/sync.rs` is this module's twin and exports the same names. This
//! one is what the library is built with, and adds nothing to std and
//! crossbeam.

pub use crossbeam::queue::ArrayQueue;
pub use std::sync::Arc;
pub use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Declares a process-wide atomic (a plain `static`). Under loom the twin
/// macro makes one per model execution instead, as loom's atomics can be
/// neither constants nor shared between executions.
macro_rules! static_atomic {
    ($(#[$attr:meta])* static $name:ident: $ty:ty = $init:expr;) => {
        $(#[$attr])* static $name: $ty = $init;
    };
}
pub(crate) use static_atomic;
