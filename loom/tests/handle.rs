//! Loom model of handle refcounts against close (DESIGN.md, invariant 3).
//!
//! Real code: `src/handle.rs` (`Shared<T>` = `Arc<Tracked<T>>`, `shared`,
//! the live-object counter), over loom's `Arc` and atomics. The handle
//! functions of `src/ffi/mod.rs` (`into_handle`, `borrowed_handle`,
//! `borrow_handle`, `handle_ref`, `handle_unref`) are mirrored in `ffi`
//! below, with the same bodies: that file holds the whole ABI and cannot be
//! compiled here. `Conn` and `Stream` stand for `ConnShared` and
//! `StreamShared` (`src/conn.rs`): a `closed` flag written by the owner, and a
//! stream that holds a reference on its connection.
//!
//! The scenario follows the real protocol. The engine owns a connection
//! (one reference, in its worker) and reports it in an event, which holds
//! another until the next poll; the event gives C a borrowed pointer, on
//! which C takes its own reference (`haquic_conn_ref`). C also holds a
//! stream, a new reference. Then, concurrently: the owner thread closes the
//! connection, polls on (the event's reference goes) and lets it leave the
//! worker (the engine's reference goes); a host thread queries the
//! connection, takes and drops a passing reference, and drops its own; the
//! main thread queries the connection through the stream and drops the
//! stream. At the end nothing may be left (`live_objects() == 0`, and loom's
//! own check that no `Arc` leaked), each object must have been dropped
//! exactly once, and no access may race with the drop: every object carries
//! a plain cell that every access reads and its destructor writes, so loom
//! reports an access that is not ordered before the free.
//!
//! The `should_panic` tests run deliberately broken variants and expect loom
//! to catch each: a refcount whose decrement is `Relaxed` (in place of the
//! `Arc`, whose decrement is `Release` and whose last one is followed by an
//! `Acquire` fence), and an engine that never lets go of a closed
//! connection's reference.

use haquic_loom::handle::{Shared, Tracked, live_objects, shared};
use haquic_loom::sync::{Arc, AtomicBool, AtomicUsize, Ordering};
use loom::cell::UnsafeCell;
use loom::thread;
use std::ops::Deref;

/// What the scenario needs of a refcounted object: `handle::shared`,
/// `Arc::clone` and drop, and the raw conversions `ffi` makes.
trait Refcounted<T>: Sized + Send + Sync + Deref<Target = Tracked<T>> + 'static {
    fn new(value: T) -> Self;
    fn clone_ref(&self) -> Self;
    fn into_raw(this: Self) -> *const Tracked<T>;
    fn as_ptr(this: &Self) -> *const Tracked<T>;
    /// # Safety
    /// `ptr` came from `into_raw` and holds a reference.
    unsafe fn increment(ptr: *const Tracked<T>);
    /// # Safety
    /// As for `increment`; the caller gives up one reference.
    unsafe fn decrement(ptr: *const Tracked<T>);
}

/// The real thing: `Shared<T>` from `src/handle.rs`.
impl<T: Send + Sync + 'static> Refcounted<T> for Shared<T> {
    fn new(value: T) -> Self {
        shared(value)
    }
    fn clone_ref(&self) -> Self {
        Arc::clone(self)
    }
    fn into_raw(this: Self) -> *const Tracked<T> {
        Arc::into_raw(this)
    }
    fn as_ptr(this: &Self) -> *const Tracked<T> {
        Arc::as_ptr(this)
    }
    unsafe fn increment(ptr: *const Tracked<T>) {
        unsafe { Arc::increment_strong_count(ptr) }
    }
    unsafe fn decrement(ptr: *const Tracked<T>) {
        unsafe { Arc::decrement_strong_count(ptr) }
    }
}

/// `src/ffi/mod.rs`'s handle functions, bodies unchanged but for the
/// generic refcount (`H::Rust` there is `T` here).
mod ffi {
    use super::Refcounted;
    use haquic_loom::handle::Tracked;
    use std::marker::PhantomData;

    /// An opaque handle as C holds it.
    pub struct Handle<T, R> {
        pub ptr: *const Tracked<T>,
        _r: PhantomData<R>,
    }
    impl<T, R> Clone for Handle<T, R> {
        fn clone(&self) -> Self {
            *self
        }
    }
    impl<T, R> Copy for Handle<T, R> {}
    // SAFETY: C passes handles between threads; the objects are Send + Sync.
    unsafe impl<T: Send + Sync, R> Send for Handle<T, R> {}

    /// `into_handle`: gives C one reference to an existing object.
    pub fn into_handle<T, R: Refcounted<T>>(value: R) -> Handle<T, R> {
        Handle { ptr: R::into_raw(value), _r: PhantomData }
    }

    /// `borrowed_handle`: a borrowed pointer (no reference added).
    pub fn borrowed_handle<T, R: Refcounted<T>>(value: &R) -> Handle<T, R> {
        Handle { ptr: R::as_ptr(value), _r: PhantomData }
    }

    /// `borrow_handle`: the object behind a handle, for one call.
    pub fn borrow_handle<'a, T, R>(h: Handle<T, R>) -> Option<&'a Tracked<T>> {
        // SAFETY: the caller holds a reference for the duration of the call.
        unsafe { h.ptr.as_ref() }
    }

    /// `handle_ref` (`haquic_*_ref`).
    pub fn handle_ref<T, R: Refcounted<T>>(h: Handle<T, R>) {
        if !h.ptr.is_null() {
            // SAFETY: the caller holds a reference.
            unsafe { R::increment(h.ptr) }
        }
    }

    /// `handle_unref` (`haquic_*_unref`).
    pub fn handle_unref<T, R: Refcounted<T>>(h: Handle<T, R>) {
        if !h.ptr.is_null() {
            // SAFETY: the caller gives up the reference it held.
            unsafe { R::decrement(h.ptr) }
        }
    }
}

/// Stands for the object's memory: every access reads it, the destructor
/// writes it. A plain cell, so that loom reports an access not ordered
/// before the drop.
struct Memory(UnsafeCell<u32>);

// SAFETY: shared reads, one write by the destructor: loom checks them.
unsafe impl Sync for Memory {}

impl Memory {
    fn new() -> Memory {
        Memory(UnsafeCell::new(1))
    }
    fn touch(&self) {
        // SAFETY: reads only; loom checks them against the destructor's write.
        assert_eq!(self.0.with(|m| unsafe { *m }), 1, "an access after the drop");
    }
    fn free(&self) {
        // SAFETY: the destructor's write; loom checks it against every read.
        self.0.with_mut(|m| unsafe { *m = 0 });
    }
}

/// Stands for `ConnShared`.
struct Conn {
    closed: AtomicBool,
    memory: Memory,
    drops: Arc<AtomicUsize>,
}

impl Conn {
    /// `ConnShared::is_closed`.
    fn is_closed(&self) -> bool {
        self.memory.touch();
        self.closed.load(Ordering::Acquire)
    }
    /// What the owner does as the connection closes.
    fn close(&self) {
        self.memory.touch();
        self.closed.store(true, Ordering::Release);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.memory.free();
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

/// Stands for `StreamShared`: it holds a reference on its connection.
struct Stream<C> {
    conn: C,
    memory: Memory,
    drops: Arc<AtomicUsize>,
}

impl<C> Drop for Stream<C> {
    fn drop(&mut self) {
        self.memory.free();
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

/// How the engine treats a connection that has closed.
#[derive(Clone, Copy)]
enum Engine {
    /// Polls on (the event's reference goes) and lets the connection leave
    /// the worker (`release_conn`: its own reference goes).
    Correct,
    /// Never lets go of its own reference.
    KeepsClosedConnection,
}

fn refcounts_against_close<C, S>(engine: Engine)
where
    C: Refcounted<Conn>,
    S: Refcounted<Stream<C>>,
{
    loom::model(move || {
        let conn_drops = Arc::new(AtomicUsize::new(0));
        let stream_drops = Arc::new(AtomicUsize::new(0));
        // The worker's reference.
        let conn = C::new(Conn { closed: AtomicBool::new(false), memory: Memory::new(), drops: conn_drops.clone() });
        // An event's (kept until the next poll), lent to C, which takes a
        // reference of its own.
        let event = conn.clone_ref();
        let h = ffi::borrowed_handle(&event);
        ffi::handle_ref(h);
        // A stream, a new reference for C.
        let stream = Stream { conn: conn.clone_ref(), memory: Memory::new(), drops: stream_drops.clone() };
        let s = ffi::into_handle(S::new(stream));
        assert_eq!(live_objects(), 2);

        let owner = thread::spawn(move || {
            conn.close();
            match engine {
                Engine::Correct => {
                    drop(event);
                    drop(conn);
                }
                Engine::KeepsClosedConnection => {
                    drop(event);
                    std::mem::forget(conn);
                }
            }
        });
        let host = thread::spawn(move || {
            let c = ffi::borrow_handle(h).unwrap();
            let _ = c.is_closed();
            ffi::handle_ref(h);
            let _ = c.is_closed();
            ffi::handle_unref(h);
            ffi::handle_unref(h);
        });
        {
            let st = ffi::borrow_handle(s).unwrap();
            st.memory.touch();
            let _ = st.conn.is_closed();
        }
        ffi::handle_unref(s);
        owner.join().unwrap();
        host.join().unwrap();

        assert_eq!(live_objects(), 0, "live objects after every reference went");
        assert_eq!(conn_drops.load(Ordering::Relaxed), 1, "connection drops");
        assert_eq!(stream_drops.load(Ordering::Relaxed), 1, "stream drops");
    });
}

#[test]
fn refcounts_against_close_free_once_and_last() {
    refcounts_against_close::<Shared<Conn>, Shared<Stream<Shared<Conn>>>>(Engine::Correct);
}

#[test]
#[should_panic(expected = "live objects after every reference went")]
fn a_closed_connection_kept_is_a_leak() {
    refcounts_against_close::<Shared<Conn>, Shared<Stream<Shared<Conn>>>>(Engine::KeepsClosedConnection);
}

/// A hand-made refcount with the classic mistake: its decrement is
/// `Relaxed`, and the last one frees without an `Acquire` fence, so the free
/// is not ordered after the other holders' accesses.
struct RelaxedRc<T: 'static> {
    inner: *const RcInner<T>,
}

#[repr(C)]
struct RcInner<T> {
    value: Tracked<T>,
    count: AtomicUsize,
}

// SAFETY: as `Arc`'s, but for the ordering under test.
unsafe impl<T: Send + Sync> Send for RelaxedRc<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for RelaxedRc<T> {}

impl<T> Deref for RelaxedRc<T> {
    type Target = Tracked<T>;
    fn deref(&self) -> &Tracked<T> {
        // SAFETY: we hold a reference.
        unsafe { &(*self.inner).value }
    }
}

impl<T> RelaxedRc<T> {
    /// # Safety
    /// The caller gives up one reference on `inner`.
    unsafe fn release(inner: *const RcInner<T>) {
        // The bug: `Relaxed`, where `Arc` has `Release` then `Acquire`.
        if unsafe { (*inner).count.fetch_sub(1, Ordering::Relaxed) } == 1 {
            drop(unsafe { Box::from_raw(inner as *mut RcInner<T>) });
        }
    }
}

impl<T> Drop for RelaxedRc<T> {
    fn drop(&mut self) {
        // SAFETY: we give up our reference.
        unsafe { Self::release(self.inner) }
    }
}

impl<T: Send + Sync + 'static> Refcounted<T> for RelaxedRc<T> {
    fn new(value: T) -> Self {
        let inner = RcInner { value: Tracked::new(value), count: AtomicUsize::new(1) };
        RelaxedRc { inner: Box::into_raw(Box::new(inner)) }
    }
    fn clone_ref(&self) -> Self {
        // SAFETY: `inner` is alive while we hold our reference.
        unsafe { (*self.inner).count.fetch_add(1, Ordering::Relaxed) };
        RelaxedRc { inner: self.inner }
    }
    fn into_raw(this: Self) -> *const Tracked<T> {
        let p = this.inner as *const Tracked<T>;
        std::mem::forget(this);
        p
    }
    fn as_ptr(this: &Self) -> *const Tracked<T> {
        this.inner as *const Tracked<T>
    }
    unsafe fn increment(ptr: *const Tracked<T>) {
        // `value` is the first field: the pointers coincide.
        let inner = ptr as *const RcInner<T>;
        unsafe { (*inner).count.fetch_add(1, Ordering::Relaxed) };
    }
    unsafe fn decrement(ptr: *const Tracked<T>) {
        unsafe { Self::release(ptr as *const RcInner<T>) }
    }
}

#[test]
#[should_panic(expected = "Causality violation")]
fn a_relaxed_refcount_frees_too_early() {
    refcounts_against_close::<RelaxedRc<Conn>, RelaxedRc<Stream<RelaxedRc<Conn>>>>(Engine::Correct);
}
