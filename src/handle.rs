//! Objects the C side can hold: each is an `Arc<Tracked<T>>`, counted while
//! alive, so that `haquic_live_objects()` can prove nothing leaked.
//!
//! The engine creates these (a connection or stream handle appears in an
//! event before C ever asks for it); `ffi` only casts them to and from opaque
//! pointers. The `Arc` and the counter come from `sync`, so that the loom
//! model of refcounts against close (`loom/tests/handle.rs`) runs this file.

use crate::sync::{Arc, AtomicUsize, Ordering, static_atomic};

static_atomic! {
    /// Number of live handle objects (all kinds).
    static LIVE_OBJECTS: AtomicUsize = AtomicUsize::new(0);
}

/// The current number of live handle objects.
pub fn live_objects() -> usize {
    LIVE_OBJECTS.load(Ordering::SeqCst)
}

/// A handle's object, counted while alive.
#[derive(Debug)]
pub struct Tracked<T> {
    inner: T,
}

impl<T> Tracked<T> {
    /// Wraps `inner`, counting it.
    pub fn new(inner: T) -> Tracked<T> {
        LIVE_OBJECTS.fetch_add(1, Ordering::SeqCst);
        Tracked { inner }
    }
}

impl<T> Drop for Tracked<T> {
    fn drop(&mut self) {
        LIVE_OBJECTS.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<T> std::ops::Deref for Tracked<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

/// A refcounted, counted object that C may hold.
pub type Shared<T> = Arc<Tracked<T>>;

/// Creates a [`Shared`] object.
pub fn shared<T>(value: T) -> Shared<T> {
    Arc::new(Tracked::new(value))
}
