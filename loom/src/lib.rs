//! haquic's synchronisation code, compiled against loom for the models in
//! `tests/` (`make test-loom`).
//!
//! The modules below are the library's own files, included by path and not
//! copied: each imports its `Arc`, atomics and queue through `crate::sync`,
//! which here is [`sync`], loom's. What the models check is therefore what
//! the library runs.

pub mod sync;

/// `src/handle.rs`: `Shared<T>` = `Arc<Tracked<T>>` and the live-object
/// counter.
#[path = "../../src/handle.rs"]
pub mod handle;

/// `src/dispatch/inbox.rs`: a worker's queue and its wake-up protocol.
#[path = "../../src/dispatch/inbox.rs"]
pub mod inbox;

/// `src/io/lease.rs`: where a socket the host polls stands in its two-phase
/// release.
#[path = "../../src/io/lease.rs"]
pub mod lease;
