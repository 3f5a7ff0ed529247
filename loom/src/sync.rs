//! The twin of the library's `src/sync.rs`: the same names, from loom, for
//! the library files this crate compiles (`handle.rs`, `dispatch/inbox.rs`).
//!
//! `Arc`, the atomics and `fence` are loom's own. crossbeam's `ArrayQueue`
//! cannot run under loom (its atomics are core's, invisible to loom), so
//! [`ArrayQueue`] here is a port of it, crossbeam-queue 0.3.14's
//! `src/array_queue.rs` (Dmitry Vyukov's bounded MPMC queue), made of loom's
//! atomics and cells: the same stamps, the same memory orderings and fences,
//! in the same places. Backoff becomes `loom::hint::spin_loop`, which yields
//! to loom's scheduler. Only what the library calls is ported (`new`, `push`,
//! `pop`, `len`, `is_empty` and the drop of what is left).
//!
//! loom treats `SeqCst` loads, stores and read-modify-writes as `AcqRel`
//! (its README, "Unsupported features"); `fence(SeqCst)` it models fully.
//! The port keeps crossbeam's `SeqCst`s, so under loom the queue is, if
//! anything, weaker than the real one: a protocol that passes here does not
//! lean on them.
//!
//! loom 0.7 also lets a plain store fall between the read and the write of a
//! concurrent read-modify-write of the same atomic (tokio-rs/loom#254, not
//! fixed in 0.7.3), a history the memory model forbids: a false alarm, not
//! a missed bug. The flags of the library's protocols change by
//! read-modify-writes only, so the models do not run into it.

use loom::cell::UnsafeCell;
use std::mem::MaybeUninit;

pub use loom::sync::Arc;
pub use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use loom::sync::atomic::{AtomicU64, fence};

/// As the library's `static_atomic!`, but one per model execution: loom's
/// atomics are neither constants nor shareable between executions.
macro_rules! static_atomic {
    ($(#[$attr:meta])* static $name:ident: $ty:ty = $init:expr;) => {
        loom::lazy_static! {
            $(#[$attr])* static ref $name: $ty = $init;
        }
    };
}
pub(crate) use static_atomic;

struct Slot<T> {
    /// The lap and index at which this slot is next written (`tail`) or read
    /// (`head + 1`).
    stamp: AtomicU64,
    value: UnsafeCell<MaybeUninit<T>>,
}

/// crossbeam's `ArrayQueue`, ported to loom (see the module doc).
pub struct ArrayQueue<T> {
    head: AtomicU64,
    tail: AtomicU64,
    buffer: Box<[Slot<T>]>,
    cap: usize,
    one_lap: u64,
}

// SAFETY: as crossbeam's: a slot's value is handed from one thread to another
// only through its stamp (Release on write, Acquire on read).
unsafe impl<T: Send> Sync for ArrayQueue<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for ArrayQueue<T> {}

impl<T> ArrayQueue<T> {
    /// A queue of `cap` slots (`cap > 0`).
    pub fn new(cap: usize) -> ArrayQueue<T> {
        assert!(cap > 0, "capacity must be non-zero");
        let buffer: Box<[Slot<T>]> = (0..cap)
            .map(|i| Slot { stamp: AtomicU64::new(i as u64), value: UnsafeCell::new(MaybeUninit::uninit()) })
            .collect();
        let one_lap = (cap as u64 + 1).next_power_of_two();
        ArrayQueue { head: AtomicU64::new(0), tail: AtomicU64::new(0), buffer, cap, one_lap }
    }

    /// crossbeam's `push` (its `push_or_else` with `push`'s full check).
    pub fn push(&self, value: T) -> Result<(), T> {
        let mut tail = self.tail.load(Ordering::Relaxed);
        loop {
            let index = (tail & (self.one_lap - 1)) as usize;
            let lap = tail & !(self.one_lap - 1);
            let new_tail = if index + 1 < self.cap { tail + 1 } else { lap.wrapping_add(self.one_lap) };
            let slot = &self.buffer[index];
            let stamp = slot.stamp.load(Ordering::Acquire);
            if tail == stamp {
                match self.tail.compare_exchange_weak(tail, new_tail, Ordering::SeqCst, Ordering::Relaxed) {
                    Ok(_) => {
                        // SAFETY: the CAS reserved this slot for us; its
                        // stamp said it was free.
                        slot.value.with_mut(|p| unsafe { p.write(MaybeUninit::new(value)) });
                        slot.stamp.store(tail + 1, Ordering::Release);
                        return Ok(());
                    }
                    Err(t) => {
                        tail = t;
                        loom::hint::spin_loop();
                    }
                }
            } else if stamp.wrapping_add(self.one_lap) == tail + 1 {
                fence(Ordering::SeqCst);
                let head = self.head.load(Ordering::Relaxed);
                if head.wrapping_add(self.one_lap) == tail {
                    return Err(value);
                }
                loom::hint::spin_loop();
                tail = self.tail.load(Ordering::Relaxed);
            } else {
                loom::hint::spin_loop();
                tail = self.tail.load(Ordering::Relaxed);
            }
        }
    }

    /// crossbeam's `pop`.
    pub fn pop(&self) -> Option<T> {
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            let index = (head & (self.one_lap - 1)) as usize;
            let lap = head & !(self.one_lap - 1);
            let slot = &self.buffer[index];
            let stamp = slot.stamp.load(Ordering::Acquire);
            if head + 1 == stamp {
                let new = if index + 1 < self.cap { head + 1 } else { lap.wrapping_add(self.one_lap) };
                match self.head.compare_exchange_weak(head, new, Ordering::SeqCst, Ordering::Relaxed) {
                    Ok(_) => {
                        // SAFETY: the CAS gave us this slot, which its stamp
                        // said was written.
                        let msg = slot.value.with_mut(|p| unsafe { p.read().assume_init() });
                        slot.stamp.store(head.wrapping_add(self.one_lap), Ordering::Release);
                        return Some(msg);
                    }
                    Err(h) => {
                        head = h;
                        loom::hint::spin_loop();
                    }
                }
            } else if stamp == head {
                fence(Ordering::SeqCst);
                let tail = self.tail.load(Ordering::Relaxed);
                if tail == head {
                    return None;
                }
                loom::hint::spin_loop();
                head = self.head.load(Ordering::Relaxed);
            } else {
                loom::hint::spin_loop();
                head = self.head.load(Ordering::Relaxed);
            }
        }
    }

    /// crossbeam's `len`.
    pub fn len(&self) -> usize {
        loop {
            let tail = self.tail.load(Ordering::SeqCst);
            let head = self.head.load(Ordering::SeqCst);
            if self.tail.load(Ordering::SeqCst) == tail {
                return self.count(head, tail);
            }
        }
    }

    /// crossbeam's `is_empty`.
    pub fn is_empty(&self) -> bool {
        let head = self.head.load(Ordering::SeqCst);
        let tail = self.tail.load(Ordering::SeqCst);
        tail == head
    }

    fn count(&self, head: u64, tail: u64) -> usize {
        let hix = (head & (self.one_lap - 1)) as usize;
        let tix = (tail & (self.one_lap - 1)) as usize;
        if hix < tix {
            tix - hix
        } else if hix > tix {
            self.cap - hix + tix
        } else if tail == head {
            0
        } else {
            self.cap
        }
    }
}

impl<T> Drop for ArrayQueue<T> {
    fn drop(&mut self) {
        let head = self.head.with_mut(|h| *h);
        let tail = self.tail.with_mut(|t| *t);
        let hix = (head & (self.one_lap - 1)) as usize;
        for i in 0..self.count(head, tail) {
            let index = if hix + i < self.cap { hix + i } else { hix + i - self.cap };
            // SAFETY: the slots between head and tail hold values.
            self.buffer[index].value.with_mut(|p| unsafe { (*p).assume_init_drop() });
        }
    }
}
