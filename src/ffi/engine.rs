//! `haquic_engine_*`, `haquic_listener_*`, `haquic_worker_*`: the engine, its
//! listeners, and driving its workers.
//!
//! Threads: an engine has N workers, each driven by exactly one host thread.
//! The first thread that drives a worker (`haquic_worker_process`,
//! `haquic_worker_poll`, ...) or acts on one of its connections becomes its
//! owner; a call from any other thread returns `HAQUIC_ERR_WRONG_THREAD`.
//! `haquic_listener_recv`, the statistics and the `_ref`/`_unref` calls may
//! come from any thread.

use super::config::haquic_config;
use super::conn::{haquic_conn, haquic_header, haquic_stream};
use super::{
    ArcHandle, Versioned, borrow_handle, borrowed_handle, caller_size, clone_handle, ffi_panic_boundary, handle_ref,
    handle_unref, init_versioned, into_handle, read_versioned, to_code, try_out, try_ref, versioned_size,
    write_caller, write_versioned,
};
use crate::engine::event::{Event, EventKind};
use crate::engine::listener::Listener;
use crate::engine::stats::Snapshot;
use crate::engine::{EngineInner, EngineOptions, new_engine};
use crate::error::{Error, haquic_result};

use std::ffi::{CStr, c_void};
use std::os::raw::c_char;

/// An engine: N workers, their listeners and connections.
///
/// Refcounted (`haquic_engine_ref`/`haquic_engine_unref`). Connections and
/// listeners hold it weakly: once the last engine reference is gone, their
/// handles stay valid to query, and actions on them return
/// `HAQUIC_ERR_CLOSED`.
pub struct haquic_engine {
    _private: [u8; 0],
}

impl ArcHandle for haquic_engine {
    type Rust = EngineInner;
}

/// A local UDP address that accepts connections.
///
/// Refcounted (`haquic_listener_ref`/`haquic_listener_unref`).
pub struct haquic_listener {
    _private: [u8; 0],
}

impl ArcHandle for haquic_listener {
    type Rust = Listener;
}

/// The host's wake-up callback: "worker `worker` has work; call
/// `haquic_worker_process` for it on its thread soon".
///
/// It may be called from any thread, including from inside a haquic call. It
/// must not call back into haquic: in HAProxy it is a tasklet wake-up.
pub type haquic_wake_fn = Option<extern "C" fn(userdata: *mut c_void, worker: u32)>;

/// Engine options.
///
/// Versioned: initialise with `HAQUIC_ENGINE_OPTIONS_INIT(&opts)`, which
/// fills in the defaults.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct haquic_engine_options {
    /// `sizeof(haquic_engine_options)` as the caller compiled it.
    pub struct_size: u32,
    /// Number of workers, one per host thread (HAProxy's nbthread).
    /// Default 1, range [1, 256].
    pub workers: u32,
    /// Capacity of each worker's inbound dispatch queue, in datagrams.
    /// Default 4096, range [16, 1048576]. A full queue drops and counts.
    pub dispatch_queue_capacity: u32,
    /// Capacity of each worker's outbound queue for host-fed listeners.
    /// Default 8192, range [16, 1048576].
    pub out_queue_capacity: u32,
    /// Connections per worker before new Initials are dropped (counted).
    /// Default 100000.
    pub max_connections_per_worker: u32,
    /// Half-open connections on a worker above which Retry is required
    /// (0: never). Default 0.
    pub retry_threshold: u32,
    /// Stateless resets a worker sends per second at most. Default 100.
    pub stateless_resets_per_second: u32,
    /// Non-zero: answer every Initial without a token with Retry.
    pub force_retry: u8,
    /// Reserved, must be 0.
    pub reserved: [u8; 3],
    /// Directory for one qlog file per connection, or NULL. Copied.
    pub qlog_dir: *const c_char,
}

const ENGINE_OPTIONS_V1: usize = std::mem::size_of::<haquic_engine_options>();

fn default_options() -> haquic_engine_options {
    let d = EngineOptions::default();
    haquic_engine_options {
        struct_size: ENGINE_OPTIONS_V1 as u32,
        workers: d.workers as u32,
        dispatch_queue_capacity: d.dispatch_queue_capacity as u32,
        out_queue_capacity: d.out_queue_capacity as u32,
        max_connections_per_worker: d.max_connections_per_worker as u32,
        retry_threshold: d.retry_threshold as u32,
        stateless_resets_per_second: d.stateless_resets_per_second,
        force_retry: 0,
        reserved: [0; 3],
        qlog_dir: std::ptr::null(),
    }
}

fn options_size_ok(size: usize) -> Result<(), Error> {
    if size != ENGINE_OPTIONS_V1 {
        return Err(Error::new(
            haquic_result::HAQUIC_ERR_STRUCT_SIZE,
            format!("haquic_engine_options.struct_size is {size}; this library accepts {ENGINE_OPTIONS_V1}"),
        ));
    }
    Ok(())
}

/// Fills `opts` with the defaults. Use `HAQUIC_ENGINE_OPTIONS_INIT(&opts)`.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_engine_options_init(opts: *mut haquic_engine_options, struct_size: usize) -> haquic_result {
    ffi_panic_boundary! {
        if opts.is_null() {
            return haquic_result::HAQUIC_ERR_NULL;
        }
        if let Err(e) = options_size_ok(struct_size) {
            return e.code;
        }
        write_versioned(opts, &default_options(), struct_size);
        haquic_result::HAQUIC_OK
    }
}

struct Waker {
    f: extern "C" fn(*mut c_void, u32),
    userdata: *mut c_void,
}

impl Waker {
    fn call(&self, worker: usize) {
        (self.f)(self.userdata, worker as u32)
    }
}

// SAFETY: the host promises (in haquic_engine_new's contract) that the
// callback and its userdata may be used from any thread.
unsafe impl Send for Waker {}
// SAFETY: as above.
unsafe impl Sync for Waker {}

/// Creates an engine from `config`, which must hold a certificate (see
/// `haquic_config_check`) when the engine will accept connections.
///
/// `wake` is called as `wake(userdata, worker)` whenever a worker has work; it
/// may be called from any thread, and must not call into haquic. It may be
/// NULL when the host polls every worker on a timer.
///
/// On success writes a new reference to `*out`: release it with
/// `haquic_engine_unref`. The engine takes its own reference on `config`.
/// On error the reason is in `haquic_config_last_error(config)`.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_engine_new(
    config: *const haquic_config,
    opts: *const haquic_engine_options,
    wake: haquic_wake_fn,
    userdata: *mut c_void,
    out: *mut *const haquic_engine,
) -> haquic_result {
    ffi_panic_boundary! {
        let cfg = try_ref!(config);
        let out = try_out!(out);
        let Some(size) = versioned_size(opts) else { return haquic_result::HAQUIC_ERR_NULL };
        let r = (|| {
            options_size_ok(size)?;
            let mut o = default_options();
            read_versioned(opts, &mut o, size);
            if o.reserved != [0; 3] {
                return Err(Error::new(haquic_result::HAQUIC_ERR_INVALID_ARGUMENT, "haquic_engine_options.reserved must be 0"));
            }
            let qlog_dir = match super::borrow_cstr(o.qlog_dir) {
                Some(d) => Some(std::path::PathBuf::from(std::ffi::OsStr::new(
                    std::str::from_utf8(d.to_bytes()).map_err(|_| Error::new(haquic_result::HAQUIC_ERR_NOT_UTF8, "qlog_dir is not UTF-8"))?,
                ))),
                None => None,
            };
            let eo = EngineOptions {
                workers: o.workers as usize,
                dispatch_queue_capacity: o.dispatch_queue_capacity as usize,
                out_queue_capacity: o.out_queue_capacity as usize,
                max_connections_per_worker: o.max_connections_per_worker as usize,
                force_retry: o.force_retry != 0,
                retry_threshold: o.retry_threshold as usize,
                stateless_resets_per_second: o.stateless_resets_per_second,
                qlog_dir,
            };
            let waker: crate::dispatch::WakeFn = match wake {
                Some(f) => {
                    let w = Waker { f, userdata };
                    Box::new(move |worker| w.call(worker))
                }
                None => Box::new(|_| {}),
            };
            let config_arc = clone_handle(config).expect("non-NULL");
            new_engine(config_arc, eo, waker)
        })();
        cfg.record(&r);
        match r {
            Ok(engine) => {
                *out = into_handle::<haquic_engine>(engine);
                haquic_result::HAQUIC_OK
            }
            Err(e) => e.code,
        }
    }
}

/// Adds a reference. Returns `engine` as a new reference. NULL is ignored.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_engine_ref(engine: *const haquic_engine) -> *const haquic_engine {
    ffi_panic_boundary! {
        handle_ref(engine);
        engine
    }
}

/// Drops a reference; the last one frees the engine, its workers, sockets and
/// connections. NULL is a no-op.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_engine_unref(engine: *const haquic_engine) {
    ffi_panic_boundary! {
        handle_unref(engine)
    }
}

/// The number of workers.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_engine_worker_count(engine: *const haquic_engine) -> u32 {
    ffi_panic_boundary! {
        let e = try_ref!(engine);
        e.workers.len() as u32
    }
}

/// Graceful shutdown: listeners stop accepting, every connection gets
/// GOAWAY, in-flight streams complete, then connections close. Keep driving
/// the workers until `haquic_engine_stats` shows no open connection.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_engine_shutdown(engine: *const haquic_engine) -> haquic_result {
    ffi_panic_boundary! {
        let e = try_ref!(engine);
        e.shutdown();
        haquic_result::HAQUIC_OK
    }
}

/// Listener flag: the host passes datagrams in and takes them out; the
/// engine binds nothing.
pub const HAQUIC_LISTENER_HOST_FED: u32 = 1;
/// Listener flag: give each accepted connection its own UDP socket, bound to
/// the listener's address and connected to the peer (HAProxy's
/// `quic-socket connection`). When one cannot be opened the listener's
/// socket is used, and counted. The host must handle
/// `HAQUIC_EVENT_FD_REGISTER`/`HAQUIC_EVENT_FD_RELEASE` and report
/// readiness with `haquic_worker_fd_ready`.
pub const HAQUIC_LISTENER_CONN_SOCKETS: u32 = 2;

/// Creates a listener on `addr` (a `struct sockaddr_in` or `sockaddr_in6` of
/// `addr_len` bytes; port 0 picks one).
///
/// Without flags the engine binds one socket per worker (SO_REUSEPORT) and
/// reads them in `haquic_worker_process`; `haquic_listener_fd` gives each
/// worker's fd for the host to poll. With `HAQUIC_LISTENER_HOST_FED` nothing
/// is bound: the host passes datagrams in with `haquic_listener_recv` and
/// takes outgoing ones with `haquic_worker_pop_datagram`.
///
/// `config` may be NULL to use the engine's. On success writes a new
/// reference to `*out`: release it with `haquic_listener_unref`.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_listener_new(
    engine: *const haquic_engine,
    config: *const haquic_config,
    addr: *const c_void,
    addr_len: usize,
    flags: u32,
    out: *mut *const haquic_listener,
) -> haquic_result {
    ffi_panic_boundary! {
        let e = try_ref!(engine);
        let out = try_out!(out);
        let Some(bytes) = super::borrow_slice(addr as *const u8, addr_len) else { return haquic_result::HAQUIC_ERR_NULL };
        let Some(local) = crate::io::sockaddr_to(bytes) else { return haquic_result::HAQUIC_ERR_INVALID_ARGUMENT };
        if flags & !(HAQUIC_LISTENER_HOST_FED | HAQUIC_LISTENER_CONN_SOCKETS) != 0 {
            return haquic_result::HAQUIC_ERR_INVALID_ARGUMENT;
        }
        let cfg = clone_handle(config);
        match e.add_listener(
            local,
            cfg,
            flags & HAQUIC_LISTENER_HOST_FED != 0,
            flags & HAQUIC_LISTENER_CONN_SOCKETS != 0,
        ) {
            Ok(l) => {
                *out = into_handle::<haquic_listener>(l);
                haquic_result::HAQUIC_OK
            }
            Err(err) => {
                log::warn!("listener on {local}: {}", err.reason);
                err.code
            }
        }
    }
}

/// Adds a reference to a listener. NULL is ignored.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_listener_ref(listener: *const haquic_listener) -> *const haquic_listener {
    ffi_panic_boundary! {
        handle_ref(listener);
        listener
    }
}

/// Drops a reference to a listener. NULL is a no-op. The engine keeps its own
/// reference until it is freed.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_listener_unref(listener: *const haquic_listener) {
    ffi_panic_boundary! {
        handle_unref(listener)
    }
}

/// Stops accepting new connections on the listener; existing ones continue.
/// With engine-owned sockets, each worker releases its socket to the host
/// (`HAQUIC_EVENT_FD_RELEASE`) once none of the listener's connections
/// that use that socket is left on it (connections with a socket of their
/// own, `HAQUIC_LISTENER_CONN_SOCKETS`, do not hold it).
#[unsafe(no_mangle)]
pub extern "C" fn haquic_listener_close(listener: *const haquic_listener) -> haquic_result {
    ffi_panic_boundary! {
        let l = try_ref!(listener);
        l.close();
        haquic_result::HAQUIC_OK
    }
}

/// Graceful shutdown of one listener (a HAProxy bind line on soft-stop): it
/// stops accepting, its connections get GOAWAY and finish their in-flight
/// streams. Once none that uses the listener's socket is left on a worker
/// (connections with a socket of their own do not count), that worker's
/// socket is released to the host (`HAQUIC_EVENT_FD_RELEASE`), so that a
/// new process bound to the same port gets every new connection. Other
/// listeners are not affected.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_listener_shutdown(listener: *const haquic_listener) -> haquic_result {
    ffi_panic_boundary! {
        let l = try_ref!(listener);
        l.shutdown();
        haquic_result::HAQUIC_OK
    }
}

/// Copies the listener's local address (a `sockaddr_in`/`sockaddr_in6`) into
/// `addr`, which has room for `addr_cap` bytes, and its length into
/// `*addr_len`.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_listener_address(
    listener: *const haquic_listener,
    addr: *mut c_void,
    addr_cap: usize,
    addr_len: *mut usize,
) -> haquic_result {
    ffi_panic_boundary! {
        let l = try_ref!(listener);
        let Some(buf) = super::borrow_out_slice(addr as *mut u8, addr_cap) else { return haquic_result::HAQUIC_ERR_NULL };
        let out_len = try_out!(addr_len);
        super::copy_out(&crate::io::sockaddr_bytes(&l.local), buf, out_len)
    }
}

/// The fd of `worker`'s socket on an engine-owned listener, for the host to
/// poll for reading, and its generation in `*generation`. Returns
/// `HAQUIC_ERR_INVALID_STATE` for a host-fed listener.
///
/// Borrowed: the engine owns the fd. It is also announced with
/// `HAQUIC_EVENT_FD_REGISTER` and released with `HAQUIC_EVENT_FD_RELEASE`;
/// after that this returns `HAQUIC_ERR_CLOSED`.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_listener_fd(
    listener: *const haquic_listener,
    worker: u32,
    fd: *mut i32,
    generation: *mut u32,
) -> haquic_result {
    ffi_panic_boundary! {
        let l = try_ref!(listener);
        let fd = try_out!(fd);
        let generation = try_out!(generation);
        match l.slot(worker as usize) {
            Some(s) if s.is_released() => haquic_result::HAQUIC_ERR_CLOSED,
            Some(s) => {
                *fd = s.fd;
                *generation = s.generation;
                haquic_result::HAQUIC_OK
            }
            None => haquic_result::HAQUIC_ERR_INVALID_STATE,
        }
    }
}

/// Passes a datagram received on a host-fed listener. May be called from any
/// thread: the datagram is routed to the worker that owns its connection ID
/// and that worker is woken.
///
/// Returns `HAQUIC_ERR_QUEUE_FULL` when the owner's queue is full (the
/// datagram is dropped and counted; nothing blocks), `HAQUIC_ERR_PROTOCOL`
/// when no connection ID can be read from it (dropped, counted).
#[unsafe(no_mangle)]
pub extern "C" fn haquic_listener_recv(
    engine: *const haquic_engine,
    listener: *const haquic_listener,
    data: *const u8,
    len: usize,
    peer: *const c_void,
    peer_len: usize,
) -> haquic_result {
    ffi_panic_boundary! {
        let e = try_ref!(engine);
        let Some(l) = clone_handle(listener) else { return haquic_result::HAQUIC_ERR_NULL };
        let Some(data) = super::borrow_slice(data, len) else { return haquic_result::HAQUIC_ERR_NULL };
        let Some(peer) = super::borrow_slice(peer as *const u8, peer_len) else { return haquic_result::HAQUIC_ERR_NULL };
        let Some(peer) = crate::io::sockaddr_to(peer) else { return haquic_result::HAQUIC_ERR_INVALID_ARGUMENT };
        to_code(e.feed(&l, data, peer).map(|_| ()))
    }
}

fn worker_index(e: &EngineInner, worker: u32) -> Result<usize, haquic_result> {
    if (worker as usize) < e.workers.len() { Ok(worker as usize) } else { Err(haquic_result::HAQUIC_ERR_OUT_OF_RANGE) }
}

/// Drives worker `worker` on its owner thread: takes in queued datagrams,
/// reads its sockets, fires due timers, and sends. Call it when woken, when
/// its fds are readable, and when `haquic_worker_next_timeout` expires.
///
/// The engine reads the monotonic clock itself (quiche's timers use it), so
/// there is no time argument.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_worker_process(engine: *const haquic_engine, worker: u32) -> haquic_result {
    ffi_panic_boundary! {
        let e = try_ref!(engine);
        let w = match worker_index(e, worker) { Ok(w) => w, Err(c) => return c };
        to_code(e.process(w))
    }
}

/// Milliseconds until `haquic_worker_process` must run again for `worker`'s
/// timers; -1 when it has none, 0 when work is queued.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_worker_next_timeout(engine: *const haquic_engine, worker: u32) -> i64 {
    ffi_panic_boundary! {
        let Some(e) = borrow_handle(engine) else { return -1 };
        let Ok(w) = worker_index(e, worker) else { return -1 };
        match e.next_timeout(w) {
            Ok(Some(d)) => d.as_millis().min(i64::MAX as u128) as i64 + if d.subsec_micros() % 1000 > 0 { 1 } else { 0 },
            Ok(None) => -1,
            Err(_) => -1,
        }
    }
}

/// Event types.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum haquic_event_type {
    /// No event (the struct's initial value).
    HAQUIC_EVENT_NONE = 0,
    /// The handshake completed.
    HAQUIC_EVENT_CONN_ESTABLISHED = 1,
    /// A new request (server): `stream`, `headers`, and `fin` when no body
    /// follows.
    HAQUIC_EVENT_REQUEST = 2,
    /// A response head (client): `stream`, `headers`, `fin`.
    HAQUIC_EVENT_RESPONSE = 3,
    /// A trailer section on `stream`: `headers`. The incoming side is done.
    HAQUIC_EVENT_TRAILERS = 4,
    /// Body bytes are waiting on `stream`: read them with
    /// `haquic_stream_recv` until it returns `HAQUIC_ERR_WOULD_BLOCK` or FIN.
    HAQUIC_EVENT_STREAM_READABLE = 5,
    /// `stream` can take more data after a short write.
    HAQUIC_EVENT_STREAM_WRITABLE = 6,
    /// The peer finished its side of `stream` (read to the end to see FIN).
    HAQUIC_EVENT_STREAM_FINISHED = 7,
    /// `stream` was reset: by the peer (RESET_STREAM) or by the engine for a
    /// malformed message (H3_MESSAGE_ERROR). `code` holds the error code.
    HAQUIC_EVENT_STREAM_RESET = 8,
    /// The peer sent STOP_SENDING on `stream` with `code`; stop sending.
    HAQUIC_EVENT_STOP_SENDING = 9,
    /// The peer sent GOAWAY; `code` holds its id.
    HAQUIC_EVENT_GOAWAY = 10,
    /// The connection closed: `code`, `is_app_error`, `reason`.
    HAQUIC_EVENT_CONN_CLOSED = 11,
    /// Poll `fd` (generation `fd_generation`) for reading and report it with
    /// `haquic_worker_fd_ready`. `conn` is set for a per-connection socket,
    /// NULL for a listener socket.
    HAQUIC_EVENT_FD_REGISTER = 12,
    /// Stop polling `fd`, then call `haquic_worker_fd_released`: the engine
    /// closes it only then, and never touches it in between.
    HAQUIC_EVENT_FD_RELEASE = 13,
}

/// An event pulled from a worker.
///
/// Versioned: initialise with `HAQUIC_EVENT_INIT(&ev)`. Everything it points
/// to (`conn`, `stream`, `headers`, `reason`) is borrowed: valid until the
/// next call to `haquic_worker_poll` on this worker. Take a reference
/// (`haquic_stream_ref`) to keep a handle longer.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct haquic_event {
    /// `sizeof(haquic_event)` as the caller compiled it.
    pub struct_size: u32,
    /// What happened.
    pub kind: haquic_event_type,
    /// The connection. Borrowed.
    pub conn: *const haquic_conn,
    /// The stream, for stream events, else NULL. Borrowed.
    pub stream: *const haquic_stream,
    /// Error code (reset, stop sending, close) or GOAWAY id.
    pub code: u64,
    /// Header fields (request, response, trailers). Borrowed.
    pub headers: *const haquic_header,
    /// Number of header fields.
    pub headers_len: usize,
    /// Close reason bytes (not NUL-terminated). Borrowed.
    pub reason: *const u8,
    /// Length of `reason`.
    pub reason_len: usize,
    /// Request/response: no body follows.
    pub fin: bool,
    /// Close: an application (HTTP/3) error rather than a transport one.
    pub is_app_error: bool,
    /// FD_REGISTER / FD_RELEASE: the socket.
    pub fd: i32,
    /// FD_REGISTER / FD_RELEASE: its generation.
    pub fd_generation: u32,
}

impl Versioned for haquic_event {
    /// The layout before `fd`/`fd_generation` were added.
    const MIN_SIZE: usize = std::mem::offset_of!(haquic_event, fd);
    fn set_struct_size(&mut self, size: u32) {
        self.struct_size = size;
    }
}

/// What the C side keeps alive for the last event of a worker.
struct PollSlot {
    _event: Event,
    _headers: Vec<haquic_header>,
}

// SAFETY: the raw pointers in `_headers` point into `_event`'s own heap data,
// which moves with the slot; the slot is only used by the owner thread.
unsafe impl Send for PollSlot {}

/// Fills `ev` with the default (empty) event. Use `HAQUIC_EVENT_INIT(&ev)`.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_event_init(ev: *mut haquic_event, struct_size: usize) -> haquic_result {
    ffi_panic_boundary! {
        init_versioned(ev, empty_event(), struct_size)
    }
}

fn empty_event() -> haquic_event {
    haquic_event {
        struct_size: 0, // set to the caller's size when written
        kind: haquic_event_type::HAQUIC_EVENT_NONE,
        conn: std::ptr::null(),
        stream: std::ptr::null(),
        code: 0,
        headers: std::ptr::null(),
        headers_len: 0,
        reason: std::ptr::null(),
        reason_len: 0,
        fin: false,
        is_app_error: false,
        fd: -1,
        fd_generation: 0,
    }
}

fn header_array(fields: &[crate::h3::Field]) -> Vec<haquic_header> {
    use quiche::h3::NameValue;
    fields
        .iter()
        .map(|h| {
            let (n, v) = (h.name(), h.value());
            haquic_header { name: n.as_ptr(), name_len: n.len(), value: v.as_ptr(), value_len: v.len() }
        })
        .collect()
}

/// Pulls the next event of `worker` into `*ev` (initialised with
/// `HAQUIC_EVENT_INIT`). Returns `HAQUIC_ERR_WOULD_BLOCK` when there is none.
///
/// The pointers in the event are borrowed: valid until the next call to
/// `haquic_worker_poll` on this worker.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_worker_poll(engine: *const haquic_engine, worker: u32, ev: *mut haquic_event) -> haquic_result {
    ffi_panic_boundary! {
        let e = try_ref!(engine);
        if ev.is_null() {
            return haquic_result::HAQUIC_ERR_NULL;
        }
        let w = match worker_index(e, worker) { Ok(w) => w, Err(c) => return c };
        // Checked before an event is taken, so that none is lost.
        let size = match caller_size(ev as *const haquic_event) { Ok(s) => s, Err(c) => return c };
        let r = e.with_worker(w, |st, _| {
            // Release what the previous event borrowed.
            st.poll_slot = None;
            let Some(event) = st.next_event() else {
                return Err(Error::new(haquic_result::HAQUIC_ERR_WOULD_BLOCK, "no event"));
            };
            let mut out = empty_event();
            out.conn = event.conn.as_ref().map_or(std::ptr::null(), borrowed_handle::<haquic_conn>);
            out.stream = event.stream.as_ref().map_or(std::ptr::null(), borrowed_handle::<haquic_stream>);
            let mut headers = Vec::new();
            out.kind = match &event.kind {
                EventKind::Established => haquic_event_type::HAQUIC_EVENT_CONN_ESTABLISHED,
                EventKind::Request { fields, fin } => {
                    headers = header_array(fields);
                    out.fin = *fin;
                    haquic_event_type::HAQUIC_EVENT_REQUEST
                }
                EventKind::Response { fields, fin } => {
                    headers = header_array(fields);
                    out.fin = *fin;
                    haquic_event_type::HAQUIC_EVENT_RESPONSE
                }
                EventKind::Trailers(fields) => {
                    headers = header_array(fields);
                    haquic_event_type::HAQUIC_EVENT_TRAILERS
                }
                EventKind::Readable => haquic_event_type::HAQUIC_EVENT_STREAM_READABLE,
                EventKind::Writable => haquic_event_type::HAQUIC_EVENT_STREAM_WRITABLE,
                EventKind::Finished => haquic_event_type::HAQUIC_EVENT_STREAM_FINISHED,
                EventKind::Reset(c) => {
                    out.code = *c;
                    haquic_event_type::HAQUIC_EVENT_STREAM_RESET
                }
                EventKind::StopSending(c) => {
                    out.code = *c;
                    haquic_event_type::HAQUIC_EVENT_STOP_SENDING
                }
                EventKind::GoawayReceived(id) => {
                    out.code = *id;
                    haquic_event_type::HAQUIC_EVENT_GOAWAY
                }
                EventKind::FdRegister { fd, generation } => {
                    out.fd = *fd;
                    out.fd_generation = *generation;
                    haquic_event_type::HAQUIC_EVENT_FD_REGISTER
                }
                EventKind::FdRelease { fd, generation } => {
                    out.fd = *fd;
                    out.fd_generation = *generation;
                    haquic_event_type::HAQUIC_EVENT_FD_RELEASE
                }
                EventKind::Closed { app, code, reason } => {
                    out.code = *code;
                    out.is_app_error = *app;
                    out.reason = reason.as_ptr();
                    out.reason_len = reason.len();
                    haquic_event_type::HAQUIC_EVENT_CONN_CLOSED
                }
            };
            out.headers = headers.as_ptr();
            out.headers_len = headers.len();
            st.poll_slot = Some(Box::new(PollSlot { _event: event, _headers: headers }));
            Ok(out)
        });
        match r {
            Ok(out) => {
                write_caller(ev, out, size);
                haquic_result::HAQUIC_OK
            }
            Err(err) => err.code,
        }
    }
}

/// Takes the next datagram `worker` wants sent on a host-fed listener: copies
/// it into `buf` (`*len` bytes), its destination into `peer` (room for
/// `peer_cap` bytes, length in `*peer_len`) and its listener's id... the
/// listener is implied: the host sends it from the listener's socket.
///
/// Returns `HAQUIC_ERR_WOULD_BLOCK` when there is none, and
/// `HAQUIC_ERR_BUFFER_TOO_SMALL` (keeping the datagram) when `buf` or `peer`
/// is too small. A datagram is at most 65527 bytes.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_worker_pop_datagram(
    engine: *const haquic_engine,
    worker: u32,
    buf: *mut u8,
    buf_cap: usize,
    len: *mut usize,
    peer: *mut c_void,
    peer_cap: usize,
    peer_len: *mut usize,
) -> haquic_result {
    ffi_panic_boundary! {
        let e = try_ref!(engine);
        let w = match worker_index(e, worker) { Ok(w) => w, Err(c) => return c };
        let Some(buf) = super::borrow_out_slice(buf, buf_cap) else { return haquic_result::HAQUIC_ERR_NULL };
        let len = try_out!(len);
        let Some(peer_buf) = super::borrow_out_slice(peer as *mut u8, peer_cap) else { return haquic_result::HAQUIC_ERR_NULL };
        let peer_len = try_out!(peer_len);
        let r = e.with_worker(w, |st, _| {
            let Some(d) = st.next_datagram() else {
                return Err(Error::new(haquic_result::HAQUIC_ERR_WOULD_BLOCK, "no datagram"));
            };
            let sa = crate::io::sockaddr_bytes(&d.to);
            if d.data.len() > buf.len() || sa.len() > peer_buf.len() {
                st.unpop_datagram(d);
                return Err(Error::new(haquic_result::HAQUIC_ERR_BUFFER_TOO_SMALL, "buffer too small"));
            }
            buf[..d.data.len()].copy_from_slice(&d.data);
            peer_buf[..sa.len()].copy_from_slice(&sa);
            *len = d.data.len();
            *peer_len = sa.len();
            Ok(())
        });
        to_code(r)
    }
}

/// Client role: opens a connection from `worker` (called on its thread)
/// through `listener` (its socket, or host-fed) to `peer`, with `server_name`
/// for SNI and certificate checks (NULL: none).
///
/// On success writes a new reference to `*out`: release it with
/// `haquic_conn_unref`. Requests can be sent once
/// `HAQUIC_EVENT_CONN_ESTABLISHED` arrives.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_worker_connect(
    engine: *const haquic_engine,
    worker: u32,
    listener: *const haquic_listener,
    peer: *const c_void,
    peer_len: usize,
    server_name: *const c_char,
    out: *mut *const haquic_conn,
) -> haquic_result {
    haquic_worker_connect_with_session(engine, worker, listener, peer, peer_len, server_name, std::ptr::null(), 0, out)
}

/// Like `haquic_worker_connect`, resuming the TLS session `session`
/// (`session_len` bytes from `haquic_conn_get_session` on an earlier
/// connection to the same server; NULL and 0 for none). When both sides
/// enable early data (`haquic_config_set_early_data`), requests can be sent
/// at once, as 0-RTT, before `HAQUIC_EVENT_CONN_ESTABLISHED`.
///
/// A session the TLS library cannot parse gives
/// `HAQUIC_ERR_INVALID_ARGUMENT`.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_worker_connect_with_session(
    engine: *const haquic_engine,
    worker: u32,
    listener: *const haquic_listener,
    peer: *const c_void,
    peer_len: usize,
    server_name: *const c_char,
    session: *const u8,
    session_len: usize,
    out: *mut *const haquic_conn,
) -> haquic_result {
    ffi_panic_boundary! {
        let e = try_ref!(engine);
        let out = try_out!(out);
        let Some(l) = clone_handle(listener) else { return haquic_result::HAQUIC_ERR_NULL };
        let Some(peer) = super::borrow_slice(peer as *const u8, peer_len) else { return haquic_result::HAQUIC_ERR_NULL };
        let Some(peer) = crate::io::sockaddr_to(peer) else { return haquic_result::HAQUIC_ERR_INVALID_ARGUMENT };
        let w = match worker_index(e, worker) { Ok(w) => w, Err(c) => return c };
        let sni = match super::borrow_cstr(server_name).map(CStr::to_str) {
            None => None,
            Some(Ok(s)) => Some(s),
            Some(Err(_)) => return haquic_result::HAQUIC_ERR_NOT_UTF8,
        };
        let session = if session_len == 0 { None } else {
            match super::borrow_slice(session, session_len) { Some(s) => Some(s), None => return haquic_result::HAQUIC_ERR_NULL }
        };
        match e.connect(w, l, peer, sni, session) {
            Ok(c) => {
                *out = into_handle::<haquic_conn>(c);
                haquic_result::HAQUIC_OK
            }
            Err(err) => err.code,
        }
    }
}

/// The host reports that `fd` (with the generation from its
/// `HAQUIC_EVENT_FD_REGISTER`) is readable; the next `haquic_worker_process`
/// reads it. A notification for an fd that is gone, or of an older
/// generation (the number was reused), is ignored, counted in
/// `stale_fd_notifications`, and returns `HAQUIC_ERR_CLOSED`.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_worker_fd_ready(engine: *const haquic_engine, worker: u32, fd: i32, generation: u32) -> haquic_result {
    ffi_panic_boundary! {
        let e = try_ref!(engine);
        let w = match worker_index(e, worker) { Ok(w) => w, Err(c) => return c };
        to_code(e.fd_ready(w, fd, generation))
    }
}

/// Confirms that the host stopped polling `fd` after
/// `HAQUIC_EVENT_FD_RELEASE`; the engine closes it now. Any other fd or
/// generation returns `HAQUIC_ERR_INVALID_STATE` and is counted.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_worker_fd_released(engine: *const haquic_engine, worker: u32, fd: i32, generation: u32) -> haquic_result {
    ffi_panic_boundary! {
        let e = try_ref!(engine);
        let w = match worker_index(e, worker) { Ok(w) => w, Err(c) => return c };
        to_code(e.fd_released(w, fd, generation))
    }
}

/// Statistics: counters of an engine or a worker.
///
/// Versioned: initialise with `HAQUIC_STATS_INIT(&stats)`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct haquic_stats {
    /// `sizeof(haquic_stats)` as the caller compiled it.
    pub struct_size: u32,
    /// Reserved.
    pub reserved: u32,
    /// Connections currently open.
    pub conns_open: u64,
    /// Connections accepted (server) or started (client).
    pub conns_accepted: u64,
    /// Connections closed.
    pub conns_closed: u64,
    /// Completed handshakes.
    pub handshakes: u64,
    /// Datagrams received into connections.
    pub packets_in: u64,
    /// Datagrams sent.
    pub packets_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Packets lost (closed connections).
    pub lost: u64,
    /// Packets retransmitted (closed connections).
    pub retransmitted: u64,
    /// Requests received.
    pub requests: u64,
    /// Requests refused with H3_REQUEST_REJECTED after GOAWAY.
    pub requests_rejected: u64,
    /// Streams reset with H3_MESSAGE_ERROR.
    pub h3_message_errors: u64,
    /// HTTP/3 connection errors.
    pub h3_conn_errors: u64,
    /// Streams whose first frame was STOP_SENDING or RESET_STREAM.
    pub streams_aborted_before_headers: u64,
    /// Drops: dispatch queue full.
    pub drop_queue_full: u64,
    /// Drops: no connection ID readable.
    pub drop_unparsable: u64,
    /// Drops: unknown connection ID.
    pub drop_unknown_cid: u64,
    /// Drops: bad Retry token.
    pub drop_bad_token: u64,
    /// Drops: host outbound queue full.
    pub drop_out_queue_full: u64,
    /// Drops: connection limit.
    pub drop_conn_limit: u64,
    /// Drops: not accepting (closed listener, shutdown).
    pub drop_not_accepting: u64,
    /// Drops: rejected by quiche.
    pub drop_invalid: u64,
    /// Stateless resets sent.
    pub resets_sent: u64,
    /// Stateless resets suppressed by the rate limit.
    pub resets_rate_limited: u64,
    /// Retry packets sent.
    pub retries_sent: u64,
    /// Version negotiation packets sent.
    pub version_negotiations: u64,
    /// Path migrations.
    pub migrations: u64,
    /// Stale fd notifications.
    pub stale_fd_notifications: u64,
    /// Calls on closed handles.
    pub stale_handle_calls: u64,
    /// Calls from a non-owner thread.
    pub wrong_thread_calls: u64,
    /// Socket send errors.
    pub send_errors: u64,
    /// Per-connection sockets opened.
    pub conn_sockets_opened: u64,
    /// Per-connection sockets that could not be opened (listener used).
    pub conn_socket_fallbacks: u64,
    /// Sockets closed after the host confirmed their release.
    pub fds_released: u64,
    /// Sends that carried several datagrams with GSO (UDP_SEGMENT).
    pub gso_sends: u64,
    /// Receives that returned several coalesced datagrams (UDP_GRO).
    pub gro_batches: u64,
    /// Connections that accepted 0-RTT data.
    pub zero_rtt_accepted: u64,
    /// Connections dropped after an internal panic (the worker carries on).
    pub conn_panics: u64,
    /// Datagrams held back by pacing until their send time.
    pub packets_paced: u64,
    /// Flushes held back for the host's answer to carry the ACK.
    pub sends_held: u64,
}

impl Versioned for haquic_stats {
    /// The layout before the per-connection socket counters.
    const MIN_SIZE: usize = std::mem::offset_of!(haquic_stats, conn_sockets_opened);
    fn set_struct_size(&mut self, size: u32) {
        self.struct_size = size;
    }
}

fn to_c_stats(s: &Snapshot) -> haquic_stats {
    haquic_stats {
        struct_size: 0, // set to the caller's size when written
        reserved: 0,
        conns_open: s.conns_accepted.saturating_sub(s.conns_closed),
        conns_accepted: s.conns_accepted,
        conns_closed: s.conns_closed,
        handshakes: s.handshakes,
        packets_in: s.packets_in,
        packets_out: s.packets_out,
        bytes_in: s.bytes_in,
        bytes_out: s.bytes_out,
        lost: s.lost,
        retransmitted: s.retransmitted,
        requests: s.requests,
        requests_rejected: s.requests_rejected,
        h3_message_errors: s.h3_message_errors,
        h3_conn_errors: s.h3_conn_errors,
        streams_aborted_before_headers: s.streams_aborted_before_headers,
        drop_queue_full: s.drop_queue_full,
        drop_unparsable: s.drop_unparsable,
        drop_unknown_cid: s.drop_unknown_cid,
        drop_bad_token: s.drop_bad_token,
        drop_out_queue_full: s.drop_out_queue_full,
        drop_conn_limit: s.drop_conn_limit,
        drop_not_accepting: s.drop_not_accepting,
        drop_invalid: s.drop_invalid,
        resets_sent: s.resets_sent,
        resets_rate_limited: s.resets_rate_limited,
        retries_sent: s.retries_sent,
        version_negotiations: s.version_negotiations,
        migrations: s.migrations,
        stale_fd_notifications: s.stale_fd_notifications,
        stale_handle_calls: s.stale_handle_calls,
        wrong_thread_calls: s.wrong_thread_calls,
        send_errors: s.send_errors,
        conn_sockets_opened: s.conn_sockets_opened,
        conn_socket_fallbacks: s.conn_socket_fallbacks,
        fds_released: s.fds_released,
        gso_sends: s.gso_sends,
        gro_batches: s.gro_batches,
        zero_rtt_accepted: s.zero_rtt_accepted,
        conn_panics: s.conn_panics,
        packets_paced: s.packets_paced,
        sends_held: s.sends_held,
    }
}

/// Fills `stats` with zeros and its size. Use `HAQUIC_STATS_INIT(&stats)`.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_stats_init(stats: *mut haquic_stats, struct_size: usize) -> haquic_result {
    ffi_panic_boundary! {
        init_versioned(stats, haquic_stats::default(), struct_size)
    }
}

fn write_stats(out: *mut haquic_stats, s: &Snapshot) -> haquic_result {
    match caller_size(out as *const haquic_stats) {
        Ok(size) => {
            write_caller(out, to_c_stats(s), size);
            haquic_result::HAQUIC_OK
        }
        Err(c) => c,
    }
}

/// Copies the engine's counters (summed over workers) into `*stats`. Any
/// thread.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_engine_stats(engine: *const haquic_engine, stats: *mut haquic_stats) -> haquic_result {
    ffi_panic_boundary! {
        let e = try_ref!(engine);
        write_stats(stats, &e.stats())
    }
}

/// Copies the counters of the connections accepted on one listener into
/// `*stats`: `conns_accepted`, `conns_closed`, `conns_open`, `handshakes`,
/// `requests`, `requests_rejected` and `h3_message_errors`. The datagram
/// and socket counters are kept per worker only and read 0 here. Any
/// thread. (HAProxy shows these per bind line and frontend.)
#[unsafe(no_mangle)]
pub extern "C" fn haquic_listener_stats(listener: *const haquic_listener, stats: *mut haquic_stats) -> haquic_result {
    ffi_panic_boundary! {
        let l = try_ref!(listener);
        write_stats(stats, &l.counters.snapshot())
    }
}

/// Copies one worker's counters into `*stats`. Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_worker_stats(engine: *const haquic_engine, worker: u32, stats: *mut haquic_stats) -> haquic_result {
    ffi_panic_boundary! {
        let e = try_ref!(engine);
        match e.worker_stats(worker as usize) {
            Ok(s) => write_stats(stats, &s),
            Err(err) => err.code,
        }
    }
}

