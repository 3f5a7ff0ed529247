//! One worker's side of the hand-off: its bounded lock-free queue and its
//! wake-up flag.
//!
//! Any thread pushes; only the owner pops. A push that finds the queue full
//! gives the item back at once (the sender never blocks). After a push the
//! owner is woken through the host's callback, unless a wake-up is already
//! pending: the owner clears the flag as it starts a pass, so that every
//! wake-up after that guarantees one more pass. The protocol's promise is
//! that nothing is stranded: an item pushed is either taken by a pass already
//! running or followed by a wake-up.
//!
//! The loom model `loom/tests/dispatch.rs` runs this file (the queue being a
//! loom port of crossbeam's `ArrayQueue`, see `sync`).

use crate::sync::{ArrayQueue, AtomicBool, Ordering};

/// A worker's inbound queue and wake-up flag.
pub struct Inbox<T> {
    queue: ArrayQueue<T>,
    /// A wake-up was sent since the owner last started a pass: later ones
    /// would be redundant.
    wake_pending: AtomicBool,
}

impl<T> Inbox<T> {
    /// An empty inbox of `capacity` items (at least one).
    pub fn new(capacity: usize) -> Inbox<T> {
        Inbox { queue: ArrayQueue::new(capacity.max(1)), wake_pending: AtomicBool::new(false) }
    }

    /// Queues `item`, then wakes the owner (see [`Inbox::wake`]). A full
    /// queue gives `item` back and wakes nobody.
    pub fn push(&self, item: T, wake: impl FnOnce()) -> Result<(), T> {
        self.queue.push(item)?;
        self.wake(wake);
        Ok(())
    }

    /// Calls `wake` unless a wake-up is already pending.
    pub fn wake(&self, wake: impl FnOnce()) {
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            wake()
        }
    }

    /// Called by the owner as it starts a pass, before it pops.
    pub fn clear_wake(&self) {
        // A swap, not a store: every change of the flag is then a
        // read-modify-write, and they form one chain. Either a pusher's swap
        // comes after this one, reads `false` and wakes the owner; or it
        // comes before, and this swap reads what it (or a later one) wrote,
        // which makes the push visible to the pops that follow. A plain
        // store would leave the two unordered (store buffering): the pass
        // could miss the item while the pusher's swap still read the wake-up
        // being cleared, and the item would wait with no wake-up to come.
        self.wake_pending.swap(false, Ordering::AcqRel);
    }

    /// Takes the next item (owner only).
    pub fn pop(&self) -> Option<T> {
        self.queue.pop()
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no item is waiting.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}
