//! Loom model of the dispatcher's hand-off (DESIGN.md, invariant 2).
//!
//! Real code: `src/dispatch/inbox.rs`. `Inbox` is what `Dispatcher::push`,
//! `Dispatcher::wake`, `Dispatcher::clear_wake` and `Dispatcher::pop` call
//! for each worker: push then wake, the wake-up flag, clear, pop. Its queue
//! is the loom port of crossbeam's `ArrayQueue` (`loom/src/sync.rs`).
//! Routing (`Dispatcher::route`, the CID keys) is left out: it is a pure
//! function of the datagram's bytes that only picks the inbox.
//!
//! The scenario: a datagram has woken the owner, whose pass is starting on
//! its thread (it clears the wake-up flag, pops, and closes a connection it
//! owns), while two other threads push a datagram each. The host runs one
//! pass per wake-up callback. Once every thread is done and the host has run
//! the passes it owes, every datagram must have been delivered: none may
//! wait in the queue with no wake-up to come. The pushers touch nothing but
//! the inbox; the connection is a plain cell, so loom reports any access to
//! it from another thread than the owner's.
//!
//! The `should_panic` tests run deliberately broken variants and expect loom
//! to catch each: the owner clearing the flag with a plain store, as the
//! library did before this model (a real lost wake-up, allowed by the memory
//! model though hidden by x86 and ARMv8); waking before publishing; and a
//! pusher that reads the connection (HAProxy 3.0.0 to 3.0.2's dispatcher
//! race).

use haquic_loom::inbox::Inbox;
use haquic_loom::sync::{ArrayQueue, AtomicBool, Ordering};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::AtomicUsize;
use loom::thread;

/// What the scenario needs of a hand-off: `Inbox`'s interface.
trait Handoff: Send + Sync + 'static {
    fn new(capacity: usize) -> Self;
    fn push(&self, item: u32, wake: impl FnOnce()) -> Result<(), u32>;
    fn clear_wake(&self);
    fn pop(&self) -> Option<u32>;
}

impl Handoff for Inbox<u32> {
    fn new(capacity: usize) -> Self {
        Inbox::new(capacity)
    }
    fn push(&self, item: u32, wake: impl FnOnce()) -> Result<(), u32> {
        Inbox::push(self, item, wake)
    }
    fn clear_wake(&self) {
        Inbox::clear_wake(self)
    }
    fn pop(&self) -> Option<u32> {
        Inbox::pop(self)
    }
}

/// The owner's connection: only its thread may touch it.
#[derive(Clone, Copy, PartialEq, Debug)]
enum ConnState {
    Open,
    Closed,
}

struct World<H> {
    inbox: H,
    /// Wake-up callbacks made: the host owes one pass for each.
    wakes: AtomicUsize,
    conn: UnsafeCell<ConnState>,
}

// SAFETY: `conn` is the owner's alone; loom checks every access to it.
unsafe impl<H: Sync> Sync for World<H> {}

impl<H: Handoff> World<H> {
    fn new(capacity: usize) -> Arc<World<H>> {
        Arc::new(World { inbox: H::new(capacity), wakes: AtomicUsize::new(0), conn: UnsafeCell::new(ConnState::Open) })
    }

    /// The host's wake-up callback: it schedules one more pass.
    fn wake(&self) -> impl FnOnce() + '_ {
        || {
            self.wakes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One pass of the owner, as `Ctx::process` runs it: clear the wake-up
    /// flag, then pop everything. This one also closes its connection.
    fn pass(&self, got: &mut Vec<u32>) {
        self.inbox.clear_wake();
        while let Some(d) = self.inbox.pop() {
            got.push(d);
        }
        // SAFETY: the owner's thread only (loom checks it).
        self.conn.with_mut(|c| unsafe { *c = ConnState::Closed });
    }

    /// The host's remaining passes, on the owner's thread, once the other
    /// threads are done: one per wake-up beyond the `answered` ones.
    fn owed_passes(&self, mut answered: usize, got: &mut Vec<u32>) -> usize {
        while answered < self.wakes.load(Ordering::Relaxed) {
            answered += 1;
            self.pass(got);
        }
        answered
    }
}

/// How the pushing threads behave.
#[derive(Clone, Copy)]
enum Pusher {
    /// As `Dispatcher::push`: into the owner's inbox, which wakes the owner.
    Correct,
    /// Reads the owner's connection first, as HAProxy 3.0.0-3.0.2 read
    /// `conn_id->qc` after unlocking.
    ReadsConnection,
}

fn handoff<H: Handoff>(pusher: Pusher) {
    loom::model(move || {
        let w = World::<H>::new(3);
        // Datagram 0 has woken the owner: the pass below answers it.
        w.inbox.push(0, w.wake()).unwrap();
        let owner = {
            let w = w.clone();
            thread::spawn(move || {
                let mut got = Vec::new();
                w.pass(&mut got);
                got
            })
        };
        let pushers: Vec<_> = (1..=2)
            .map(|d| {
                let w = w.clone();
                thread::spawn(move || {
                    if let Pusher::ReadsConnection = pusher {
                        // SAFETY: not safe: this is the race loom must catch.
                        if w.conn.with(|c| unsafe { *c }) == ConnState::Closed {
                            return;
                        }
                    }
                    w.inbox.push(d, w.wake()).unwrap();
                })
            })
            .collect();
        let mut got = owner.join().unwrap();
        for p in pushers {
            p.join().unwrap();
        }
        let passes = w.owed_passes(1, &mut got);
        got.sort();
        assert_eq!(got, [0, 1, 2], "datagrams delivered after {passes} passes");
    });
}

/// The bounded queue: a push that finds it full gives the datagram back at
/// once and wakes nobody (the sender never blocks), even while the owner is
/// draining it; what was accepted is delivered.
fn overflow<H: Handoff>() {
    loom::model(|| {
        let w = World::<H>::new(1);
        // Datagram 0 fills the queue and wakes the owner.
        w.inbox.push(0, w.wake()).unwrap();
        let pusher = {
            let w = w.clone();
            thread::spawn(move || w.inbox.push(1, w.wake()).is_ok())
        };
        // The owner's pass, on this thread.
        let mut got = Vec::new();
        w.pass(&mut got);
        let accepted = pusher.join().unwrap();
        let passes = w.owed_passes(1, &mut got);
        let want: &[u32] = if accepted { &[0, 1] } else { &[0] };
        assert_eq!(got, want, "accepted: {accepted}, passes: {passes}");
    });
}

#[test]
fn handoff_delivers_every_datagram() {
    handoff::<Inbox<u32>>(Pusher::Correct);
}

#[test]
fn full_queue_refuses_without_blocking() {
    overflow::<Inbox<u32>>();
}

/// `Inbox` as it was before this model: the owner cleared the flag with a
/// plain `Release` store. Its store and the pusher's swap are then unordered
/// with each other's queue accesses (store buffering): the pass can miss the
/// datagram while the pusher's swap still reads the wake-up being cleared,
/// and nobody wakes the owner again.
struct PlainStoreClear {
    queue: ArrayQueue<u32>,
    wake_pending: AtomicBool,
}

impl Handoff for PlainStoreClear {
    fn new(capacity: usize) -> Self {
        PlainStoreClear { queue: ArrayQueue::new(capacity), wake_pending: AtomicBool::new(false) }
    }
    fn push(&self, item: u32, wake: impl FnOnce()) -> Result<(), u32> {
        self.queue.push(item)?;
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            wake()
        }
        Ok(())
    }
    fn clear_wake(&self) {
        self.wake_pending.store(false, Ordering::Release);
    }
    fn pop(&self) -> Option<u32> {
        self.queue.pop()
    }
}

/// Wakes the owner (the real `Inbox::wake`) before the datagram is in the
/// queue.
struct WakeFirst {
    flag: Inbox<u32>,
    queue: ArrayQueue<u32>,
}

impl Handoff for WakeFirst {
    fn new(capacity: usize) -> Self {
        WakeFirst { flag: Inbox::new(1), queue: ArrayQueue::new(capacity) }
    }
    fn push(&self, item: u32, wake: impl FnOnce()) -> Result<(), u32> {
        self.flag.wake(wake);
        self.queue.push(item)
    }
    fn clear_wake(&self) {
        self.flag.clear_wake()
    }
    fn pop(&self) -> Option<u32> {
        self.queue.pop()
    }
}

#[test]
#[should_panic(expected = "datagrams delivered")]
fn clearing_with_a_plain_store_strands_a_datagram() {
    handoff::<PlainStoreClear>(Pusher::Correct);
}

#[test]
#[should_panic(expected = "datagrams delivered")]
fn waking_before_publishing_strands_a_datagram() {
    handoff::<WakeFirst>(Pusher::Correct);
}

#[test]
#[should_panic(expected = "Causality violation")]
fn pusher_reading_the_connection_is_a_race() {
    handoff::<Inbox<u32>>(Pusher::ReadsConnection);
}
