//! `haquic_conn_*` and `haquic_stream_*`: connections and HTTP/3 streams.
//!
//! Every action runs on the connection's owner thread (else
//! `HAQUIC_ERR_WRONG_THREAD`) and on a live object (else `HAQUIC_ERR_CLOSED`).
//! Queries (`_is_closed`, `_id`, stats) work from any thread, on any object,
//! closed or not.

use super::{ArcHandle, ffi_panic_boundary, handle_ref, handle_unref, into_handle, to_code, try_out, try_ref};
use crate::conn::{ConnShared, StreamShared};
use crate::error::{Error, Result, haquic_result};
use crate::h3::FieldRef;
use crate::handle::Shared;
use std::ffi::c_void;
use std::sync::atomic::Ordering;

/// A QUIC connection.
///
/// Refcounted (`haquic_conn_ref`/`haquic_conn_unref`). A closed connection
/// stays valid to query; actions on it return `HAQUIC_ERR_CLOSED`.
pub struct haquic_conn {
    _private: [u8; 0],
}

impl ArcHandle for haquic_conn {
    type Rust = ConnShared;
}

/// An HTTP/3 request stream. It holds a reference on its connection.
///
/// Refcounted (`haquic_stream_ref`/`haquic_stream_unref`). A finished or
/// reset stream stays valid to query; actions on it return
/// `HAQUIC_ERR_CLOSED`.
pub struct haquic_stream {
    _private: [u8; 0],
}

impl ArcHandle for haquic_stream {
    type Rust = StreamShared;
}

/// A header field: name and value as bytes (not NUL-terminated).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct haquic_header {
    /// The name.
    pub name: *const u8,
    /// Its length.
    pub name_len: usize,
    /// The value.
    pub value: *const u8,
    /// Its length.
    pub value_len: usize,
}

fn engine_of(conn: &ConnShared) -> Result<Shared<crate::engine::EngineInner>> {
    conn.engine.upgrade().ok_or_else(|| Error::new(haquic_result::HAQUIC_ERR_CLOSED, "the engine is gone"))
}

/// The caller's header array, borrowed for the duration of the call.
fn fields_of<'a>(headers: *const haquic_header, n: usize) -> Option<Vec<FieldRef<'a>>> {
    if n == 0 {
        return Some(Vec::new());
    }
    if headers.is_null() {
        return None;
    }
    // SAFETY: the caller passes `n` readable headers.
    let hs = unsafe { std::slice::from_raw_parts(headers, n) };
    hs.iter()
        .map(|h| {
            let name = super::borrow_slice(h.name, h.name_len)?;
            let value = if h.value_len == 0 { &[][..] } else { super::borrow_slice(h.value, h.value_len)? };
            Some((name, value))
        })
        .collect()
}

fn on_conn<T>(conn: &ConnShared, f: impl FnOnce(&mut crate::conn::Conn, &crate::engine::stats::Counters) -> Result<T>) -> Result<T> {
    engine_of(conn)?.with_conn(conn, f)
}

fn on_stream<T>(stream: &StreamShared, f: impl FnOnce(&mut crate::conn::Conn, &crate::engine::stats::Counters) -> Result<T>) -> Result<T> {
    engine_of(&stream.conn)?.with_stream(stream, f)
}

/// Adds a reference. Returns `conn` as a new reference. NULL is ignored.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_conn_ref(conn: *const haquic_conn) -> *const haquic_conn {
    ffi_panic_boundary! {
        handle_ref(conn);
        conn
    }
}

/// Drops a reference. NULL is a no-op. Dropping the last reference does not
/// close the connection: the engine owns it until it closes.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_conn_unref(conn: *const haquic_conn) {
    ffi_panic_boundary! {
        handle_unref(conn)
    }
}

/// Whether the connection has closed. Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_conn_is_closed(conn: *const haquic_conn) -> bool {
    ffi_panic_boundary! {
        match super::borrow_handle(conn) {
            Some(c) => c.is_closed(),
            None => true,
        }
    }
}

/// The worker that owns the connection. Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_conn_worker(conn: *const haquic_conn) -> u32 {
    ffi_panic_boundary! {
        let c = try_ref!(conn);
        c.worker as u32
    }
}

/// The listener the connection was accepted on (server role) or started
/// from (client role). Borrowed: valid as long as the caller holds the
/// connection. Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_conn_listener(conn: *const haquic_conn) -> *const super::engine::haquic_listener {
    ffi_panic_boundary! {
        let c = try_ref!(conn);
        super::borrowed_handle::<super::engine::haquic_listener>(&c.listener)
    }
}

/// Attaches one pointer-sized value of the host's to the connection (HAProxy
/// keeps its mux context there), replacing any earlier one. The engine never
/// dereferences it. Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_conn_set_userdata(conn: *const haquic_conn, userdata: *mut c_void) -> haquic_result {
    ffi_panic_boundary! {
        let c = try_ref!(conn);
        c.userdata.store(userdata as usize, Ordering::Release);
        haquic_result::HAQUIC_OK
    }
}

/// The value last given to `haquic_conn_set_userdata`, or NULL. Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_conn_userdata(conn: *const haquic_conn) -> *mut c_void {
    ffi_panic_boundary! {
        let c = try_ref!(conn);
        c.userdata.load(Ordering::Acquire) as *mut c_void
    }
}

/// Copies our local address of the connection (the listener's, or the
/// address a connection socket is bound to) into `addr` (room for
/// `addr_cap` bytes), its length into `*addr_len`.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_conn_local_address(
    conn: *const haquic_conn,
    addr: *mut c_void,
    addr_cap: usize,
    addr_len: *mut usize,
) -> haquic_result {
    ffi_panic_boundary! {
        let c = try_ref!(conn);
        let Some(buf) = super::borrow_out_slice(addr as *mut u8, addr_cap) else { return haquic_result::HAQUIC_ERR_NULL };
        let out_len = try_out!(addr_len);
        let local = c.info.lock().ok().and_then(|i| i.local).unwrap_or(c.listener.local);
        super::copy_out(&crate::io::sockaddr_bytes(&local), buf, out_len)
    }
}

/// Copies the peer's current address (it changes after a migration) into
/// `addr` (room for `addr_cap` bytes), its length into `*addr_len`.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_conn_peer_address(
    conn: *const haquic_conn,
    addr: *mut c_void,
    addr_cap: usize,
    addr_len: *mut usize,
) -> haquic_result {
    ffi_panic_boundary! {
        let c = try_ref!(conn);
        let Some(buf) = super::borrow_out_slice(addr as *mut u8, addr_cap) else { return haquic_result::HAQUIC_ERR_NULL };
        let out_len = try_out!(addr_len);
        match c.info.lock().map(|i| i.peer) {
            Ok(Some(p)) => super::copy_out(&crate::io::sockaddr_bytes(&p), buf, out_len),
            _ => haquic_result::HAQUIC_ERR_INVALID_STATE,
        }
    }
}

/// Graceful shutdown of one connection: GOAWAY, in-flight streams complete,
/// then it closes. New requests get H3_REQUEST_REJECTED.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_conn_shutdown(conn: *const haquic_conn) -> haquic_result {
    ffi_panic_boundary! {
        let c = try_ref!(conn);
        to_code(on_conn(c, |conn, _| conn.shutdown()))
    }
}

/// Closes the connection now with an HTTP/3 application error `code` and a
/// reason (`reason_len` bytes, may be 0 with `reason` NULL).
#[unsafe(no_mangle)]
pub extern "C" fn haquic_conn_close(
    conn: *const haquic_conn,
    code: u64,
    reason: *const u8,
    reason_len: usize,
) -> haquic_result {
    ffi_panic_boundary! {
        let c = try_ref!(conn);
        let reason = if reason_len == 0 { &[][..] } else {
            match super::borrow_slice(reason, reason_len) { Some(r) => r, None => return haquic_result::HAQUIC_ERR_NULL }
        };
        to_code(on_conn(c, |conn, _| conn.close(code, reason)))
    }
}

/// Client role: sends a request head (`n` headers, pseudo-headers first) and,
/// when `fin`, no body. On success writes a new reference to the stream to
/// `*out`: release it with `haquic_stream_unref`.
///
/// Returns `HAQUIC_ERR_WOULD_BLOCK` before the handshake completes or while
/// the peer's stream limit is exhausted.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_conn_send_request(
    conn: *const haquic_conn,
    headers: *const haquic_header,
    n: usize,
    fin: bool,
    out: *mut *const haquic_stream,
) -> haquic_result {
    ffi_panic_boundary! {
        let c = try_ref!(conn);
        let out = try_out!(out);
        let Some(fields) = fields_of(headers, n) else { return haquic_result::HAQUIC_ERR_NULL };
        match on_conn(c, |conn, _| conn.send_request(&fields, fin)) {
            Ok(s) => {
                *out = into_handle::<haquic_stream>(s);
                haquic_result::HAQUIC_OK
            }
            Err(e) if e.code == haquic_result::HAQUIC_ERR_LIMIT => haquic_result::HAQUIC_ERR_WOULD_BLOCK,
            Err(e) => e.code,
        }
    }
}

/// Adds a reference. Returns `stream` as a new reference. NULL is ignored.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_stream_ref(stream: *const haquic_stream) -> *const haquic_stream {
    ffi_panic_boundary! {
        handle_ref(stream);
        stream
    }
}

/// Drops a reference. NULL is a no-op.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_stream_unref(stream: *const haquic_stream) {
    ffi_panic_boundary! {
        handle_unref(stream)
    }
}

/// The QUIC stream id. Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_stream_id(stream: *const haquic_stream) -> u64 {
    ffi_panic_boundary! {
        let s = try_ref!(stream);
        s.id
    }
}

/// The stream's connection. Borrowed: valid as long as the caller holds the
/// stream (a stream holds its connection).
#[unsafe(no_mangle)]
pub extern "C" fn haquic_stream_conn(stream: *const haquic_stream) -> *const haquic_conn {
    ffi_panic_boundary! {
        let s = try_ref!(stream);
        super::borrowed_handle::<haquic_conn>(&s.conn)
    }
}

/// Attaches one pointer-sized value of the host's to the stream (HAProxy
/// keeps its stream context there), replacing any earlier one. The engine
/// never dereferences it. Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_stream_set_userdata(stream: *const haquic_stream, userdata: *mut c_void) -> haquic_result {
    ffi_panic_boundary! {
        let s = try_ref!(stream);
        s.userdata.store(userdata as usize, Ordering::Release);
        haquic_result::HAQUIC_OK
    }
}

/// The value last given to `haquic_stream_set_userdata`, or NULL. Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_stream_userdata(stream: *const haquic_stream) -> *mut c_void {
    ffi_panic_boundary! {
        let s = try_ref!(stream);
        s.userdata.load(Ordering::Acquire) as *mut c_void
    }
}

/// Whether the stream is finished both ways, reset, or its connection has
/// closed. Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_stream_is_closed(stream: *const haquic_stream) -> bool {
    ffi_panic_boundary! {
        match super::borrow_handle(stream) {
            Some(s) => s.is_closed(),
            None => true,
        }
    }
}

/// Reads body bytes into `buf`: `*len` gets the count, `*fin` whether the
/// body is complete. Returns `HAQUIC_ERR_WOULD_BLOCK` when nothing is
/// buffered yet (wait for `HAQUIC_EVENT_STREAM_READABLE`). Reading is the
/// backpressure: unread data holds the peer's flow-control window.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_stream_recv(
    stream: *const haquic_stream,
    buf: *mut u8,
    buf_cap: usize,
    len: *mut usize,
    fin: *mut bool,
) -> haquic_result {
    ffi_panic_boundary! {
        let s = try_ref!(stream);
        let Some(buf) = super::borrow_out_slice(buf, buf_cap) else { return haquic_result::HAQUIC_ERR_NULL };
        let len = try_out!(len);
        let fin = try_out!(fin);
        match on_stream(s, |conn, counters| conn.recv_body(s, buf, counters)) {
            Ok((n, f)) => {
                *len = n;
                *fin = f;
                haquic_result::HAQUIC_OK
            }
            Err(e) => e.code,
        }
    }
}

/// Server role: sends the response head (`n` headers, `:status` first), with
/// `fin` when no body follows. Returns `HAQUIC_ERR_WOULD_BLOCK` when it
/// cannot be sent now (retry on `HAQUIC_EVENT_STREAM_WRITABLE`).
#[unsafe(no_mangle)]
pub extern "C" fn haquic_stream_send_headers(
    stream: *const haquic_stream,
    headers: *const haquic_header,
    n: usize,
    fin: bool,
) -> haquic_result {
    ffi_panic_boundary! {
        let s = try_ref!(stream);
        let Some(fields) = fields_of(headers, n) else { return haquic_result::HAQUIC_ERR_NULL };
        to_code(on_stream(s, |conn, _| conn.send_headers(s, &fields, fin)))
    }
}

/// Sends body bytes; `*written` gets how many were taken. Fewer than `len`
/// (even 0, with `HAQUIC_ERR_WOULD_BLOCK`) means flow control is exhausted:
/// send the rest after `HAQUIC_EVENT_STREAM_WRITABLE`. `fin` takes effect
/// only when everything was taken.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_stream_send(
    stream: *const haquic_stream,
    data: *const u8,
    len: usize,
    fin: bool,
    written: *mut usize,
) -> haquic_result {
    ffi_panic_boundary! {
        let s = try_ref!(stream);
        let data = if len == 0 { &[][..] } else {
            match super::borrow_slice(data, len) { Some(d) => d, None => return haquic_result::HAQUIC_ERR_NULL }
        };
        let written = try_out!(written);
        match on_stream(s, |conn, _| conn.send_body(s, data, fin)) {
            Ok(n) => {
                *written = n;
                haquic_result::HAQUIC_OK
            }
            Err(e) => e.code,
        }
    }
}

/// Sends a trailer section (no pseudo-headers), which ends the stream.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_stream_send_trailers(
    stream: *const haquic_stream,
    headers: *const haquic_header,
    n: usize,
) -> haquic_result {
    ffi_panic_boundary! {
        let s = try_ref!(stream);
        let Some(fields) = fields_of(headers, n) else { return haquic_result::HAQUIC_ERR_NULL };
        to_code(on_stream(s, |conn, _| conn.send_trailers(s, &fields)))
    }
}

/// Resets our side of the stream (RESET_STREAM) with an HTTP/3 error code.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_stream_reset(stream: *const haquic_stream, code: u64) -> haquic_result {
    ffi_panic_boundary! {
        let s = try_ref!(stream);
        to_code(on_stream(s, |conn, _| conn.reset_stream(s, code)))
    }
}

/// Asks the peer to stop sending (STOP_SENDING) with an HTTP/3 error code.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_stream_stop_sending(stream: *const haquic_stream, code: u64) -> haquic_result {
    ffi_panic_boundary! {
        let s = try_ref!(stream);
        to_code(on_stream(s, |conn, _| conn.stop_sending(s, code)))
    }
}


/// Statistics of one connection.
///
/// Versioned: initialise with `HAQUIC_CONN_STATS_INIT(&stats)`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct haquic_conn_stats {
    /// `sizeof(haquic_conn_stats)` as the caller compiled it.
    pub struct_size: u32,
    /// 1 once the handshake completed.
    pub established: u32,
    /// QUIC packets received.
    pub packets_in: u64,
    /// QUIC packets sent.
    pub packets_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Packets declared lost.
    pub lost: u64,
    /// Packets retransmitted.
    pub retransmitted: u64,
    /// Smoothed round-trip time of the active path, in microseconds.
    pub rtt_us: u64,
    /// Congestion window of the active path, in bytes.
    pub cwnd: u64,
    /// Completed path migrations.
    pub migrations: u64,
    /// Streams open for the host.
    pub open_streams: u64,
    /// After close: the error code (transport or application).
    pub close_code: u64,
    /// After close: 1 for an application (HTTP/3) error code.
    pub close_is_app: u32,
    /// 1 once closed.
    pub closed: u32,
    /// 1 when the handshake resumed an earlier TLS session.
    pub resumed: u32,
    /// Reserved.
    pub reserved: u32,
}

impl super::Versioned for haquic_conn_stats {
    /// Only one layout has been published.
    const MIN_SIZE: usize = std::mem::size_of::<haquic_conn_stats>();
    fn set_struct_size(&mut self, size: u32) {
        self.struct_size = size;
    }
}

/// Fills `stats` with zeros and its size. Use `HAQUIC_CONN_STATS_INIT(&s)`.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_conn_stats_init(stats: *mut haquic_conn_stats, struct_size: usize) -> haquic_result {
    ffi_panic_boundary! {
        super::init_versioned(stats, haquic_conn_stats::default(), struct_size)
    }
}

/// Copies a snapshot of the connection's statistics into `*stats`. Any
/// thread, open or closed connection. The snapshot is refreshed as the owner
/// processes the connection (at least every 32 passes, and at close).
#[unsafe(no_mangle)]
pub extern "C" fn haquic_conn_get_stats(conn: *const haquic_conn, stats: *mut haquic_conn_stats) -> haquic_result {
    ffi_panic_boundary! {
        let c = try_ref!(conn);
        let size = match super::caller_size(stats as *const haquic_conn_stats) { Ok(s) => s, Err(c) => return c };
        let Ok(info) = c.info.lock().map(|i| i.clone()) else { return haquic_result::HAQUIC_ERR_PANIC };
        let q = info.stats.unwrap_or_default();
        let (close_is_app, close_code) = info.close.as_ref().map_or((false, 0), |(a, code, _)| (*a, *code));
        let v = haquic_conn_stats {
            struct_size: 0,
            established: info.established as u32,
            packets_in: q.recv as u64,
            packets_out: q.sent as u64,
            bytes_in: q.recv_bytes,
            bytes_out: q.sent_bytes,
            lost: q.lost as u64,
            retransmitted: q.retrans as u64,
            rtt_us: info.rtt.map_or(0, |d| d.as_micros() as u64),
            cwnd: info.cwnd.unwrap_or(0) as u64,
            migrations: info.migrations,
            open_streams: info.open_streams as u64,
            close_code,
            close_is_app: close_is_app as u32,
            closed: c.is_closed() as u32,
            resumed: info.resumed as u32,
            reserved: 0,
        };
        super::write_caller(stats, v, size);
        haquic_result::HAQUIC_OK
    }
}

/// Client role: copies the connection's latest TLS session (for
/// `haquic_worker_connect_with_session` later) into `buf`, its length into
/// `*len`. Sessions arrive shortly after the handshake; before that, or on a
/// server connection, returns `HAQUIC_ERR_WOULD_BLOCK`.
/// `HAQUIC_ERR_BUFFER_TOO_SMALL` writes nothing. Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn haquic_conn_get_session(
    conn: *const haquic_conn,
    buf: *mut u8,
    buf_cap: usize,
    len: *mut usize,
) -> haquic_result {
    ffi_panic_boundary! {
        let c = try_ref!(conn);
        let Some(buf) = super::borrow_out_slice(buf, buf_cap) else { return haquic_result::HAQUIC_ERR_NULL };
        let len = try_out!(len);
        match c.info.lock().map(|i| i.session.clone()) {
            Ok(Some(sess)) => super::copy_out(&sess, buf, len),
            Ok(None) => haquic_result::HAQUIC_ERR_WOULD_BLOCK,
            Err(_) => haquic_result::HAQUIC_ERR_PANIC,
        }
    }
}
