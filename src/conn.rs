//! One connection's state machine over `quiche::Connection` and
//! `quiche::h3::Connection`: streams, header validation, GOAWAY, and the
//! events the host pulls.
//!
//! A [`Conn`] lives inside its worker's state and is only ever touched by the
//! worker's owner thread (the engine checks this before it gets here). What
//! other threads may see, the handle's [`ConnShared`], holds no protocol
//! state: an id, a closed flag and a snapshot of addresses and statistics.
//! Streams are entries in the connection; a stream handle holds its
//! connection's handle, so it can never dangle, and an action on a stream the
//! connection no longer has returns `HAQUIC_ERR_CLOSED`.

use crate::engine::event::{Event, EventKind};
use crate::engine::listener::Listener;
use crate::engine::stats::Counters;
use crate::error::{Error, Result, haquic_result};
use crate::fasthash::FastMap;
use crate::h3::{self as h3rules, BodyCounter, Field, FieldRef};
use crate::handle::{Shared, shared};
use quiche::h3::NameValue;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

/// Bounds of the wait between queueing a GOAWAY and a graceful close. A
/// request the client sent before it processed the GOAWAY must still find
/// the connection open, to be refused with H3_REQUEST_REJECTED (which the
/// client may retry) rather than lost with the connection; a busy client
/// can take much longer than a round trip to read the frame.
const GOAWAY_LINGER_MIN: Duration = Duration::from_millis(200);
const GOAWAY_LINGER_MAX: Duration = Duration::from_millis(2000);
/// How long a connection that completes its handshake during a graceful
/// shutdown waits for its first request before the GOAWAY.
const SHUTDOWN_FIRST_REQUEST_WAIT: Duration = Duration::from_millis(1000);

/// Snapshot of a connection for queries from any thread.
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    /// The peer's current address.
    pub peer: Option<SocketAddr>,
    /// Our address.
    pub local: Option<SocketAddr>,
    /// quiche's statistics at the last processing.
    pub stats: Option<quiche::Stats>,
    /// Number of completed path migrations.
    pub migrations: u64,
    /// Why it closed: (application error?, code, reason).
    pub close: Option<(bool, u64, Vec<u8>)>,
    /// Whether the handshake completed.
    pub established: bool,
    /// Smoothed RTT of the active path.
    pub rtt: Option<std::time::Duration>,
    /// Congestion window of the active path, in bytes.
    pub cwnd: Option<usize>,
    /// Streams open for the host right now.
    pub open_streams: usize,
    /// Client role: the latest TLS session, for resuming (and 0-RTT) later.
    pub session: Option<Vec<u8>>,
    /// The handshake resumed an earlier session.
    pub resumed: bool,
}

/// The part of a connection any thread may hold (behind `haquic_conn`).
#[derive(Debug)]
pub struct ConnShared {
    /// Engine-unique connection number.
    pub id: u64,
    /// The owning worker.
    pub worker: usize,
    /// quiche's trace id, for logs.
    pub trace_id: String,
    /// Server or client role.
    pub is_server: bool,
    /// The engine, weakly (the engine owns the connection, not the reverse).
    pub engine: Weak<crate::handle::Tracked<crate::engine::EngineInner>>,
    closed: AtomicBool,
    /// Snapshot for queries.
    pub info: Mutex<ConnInfo>,
    /// The listener it was accepted on (or started from).
    pub listener: Shared<Listener>,
    /// One pointer-sized value the host attaches (HAProxy: its mux context).
    pub userdata: AtomicUsize,
}

impl ConnShared {
    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// The part of a stream any thread may hold (behind `haquic_stream`).
#[derive(Debug)]
pub struct StreamShared {
    /// The connection; a stream keeps it alive.
    pub conn: Shared<ConnShared>,
    /// The QUIC stream id.
    pub id: u64,
    closed: AtomicBool,
    /// One pointer-sized value the host attaches (HAProxy: its stream context).
    pub userdata: AtomicUsize,
}

impl StreamShared {
    /// Whether the stream is finished on both sides, reset, or its connection
    /// has closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.conn.is_closed()
    }
}

/// A stream inside its connection.
struct StreamEntry {
    shared: Shared<StreamShared>,
    body: BodyCounter,
    /// The peer finished its side and the host read it all, or it was reset.
    recv_done: bool,
    /// quiche reported Finished (all data received), not yet read to the end.
    recv_fin_seen: bool,
    /// We finished our side, reset it, or the peer stopped it.
    send_done: bool,
    headers_sent: bool,
    headers_received: bool,
    want_write: bool,
    readable_pending: bool,
    stop_reported: bool,
}

/// One connection.
pub struct Conn {
    /// The handle part.
    pub shared: Shared<ConnShared>,
    /// The transport.
    pub q: quiche::Connection,
    h3: Option<quiche::h3::Connection>,
    h3_config: quiche::h3::Config,
    /// The listener (local endpoint) it runs on.
    pub listener: Shared<Listener>,
    streams: FastMap<u64, StreamEntry>,
    /// Streams finished for the host whose data quiche may still be
    /// delivering; a graceful close waits for them.
    lingering: Vec<u64>,
    /// Connection IDs registered for it in the worker's map.
    pub scids: Vec<Vec<u8>>,
    /// The GOAWAY id decided at shutdown: requests at or above it are
    /// refused from then on, whether or not the frame has left yet.
    goaway_sent: Option<u64>,
    /// The GOAWAY frame could not be queued yet (congestion window full).
    goaway_pending: bool,
    /// A graceful shutdown came during the handshake: it takes effect once
    /// HTTP/3 is up and the requests that came with the handshake are in,
    /// so that they are served rather than the connection refused.
    shutdown_deferred: bool,
    /// Until when a deferred shutdown waits for the first request.
    deferred_until: Option<Instant>,
    /// A graceful close waits until then after queueing the GOAWAY, so
    /// that the frame leaves (and likely arrives) before CONNECTION_CLOSE:
    /// quiche sends no stream data once closing.
    goaway_linger_until: Option<Instant>,
    /// The GOAWAY frame is queued in quiche but no packet has left since:
    /// the linger starts when it does (`after_send`).
    goaway_unsent: bool,
    /// Highest client-initiated bidirectional stream id seen.
    max_request_id: Option<u64>,
    close_when_drained: bool,
    /// When to call `on_timeout`.
    pub timeout_at: Option<Instant>,
    established_reported: bool,
    /// Still in the handshake, for the Retry threshold.
    pub half_open: bool,
    /// Its own connected socket (per-connection sockets), by fd.
    pub sock_fd: Option<i32>,
    /// The peer moved to a new address since the last flush.
    pub migrated: bool,
    /// Honour quiche's pacing times (`SendInfo::at`).
    pub pacing: bool,
    flushes: u32,
    /// Something a host would query just happened: refresh the snapshot.
    refresh_due: bool,
    /// Server role: 0-RTT data was accepted on this connection (counted once).
    early_data_counted: bool,
    /// The anti-amplification budget before the client's address is
    /// validated (server role; the worker sets it at accept).
    pub amp: crate::amp::AmpLimit,
    /// Sending is held back until then (or until the host acts on the
    /// connection): new requests were just handed to the host, and its
    /// answer can carry the ACK of their packets.
    pub ack_hold_until: Option<Instant>,
    /// The host called into this connection since the last flush.
    pub host_acted: bool,
    /// Test hook: the next flush of this connection panics.
    #[cfg(feature = "test-hooks")]
    pub panic_next_flush: bool,
}

/// HTTP/3 events one connection hands over per pass, at most: the event
/// queue stays bounded, and one busy connection cannot starve the others.
const MAX_H3_EVENTS_PER_PASS: usize = 1024;

fn to_headers<'a>(fields: &[FieldRef<'a>]) -> Vec<quiche::h3::HeaderRef<'a>> {
    fields.iter().map(|(n, v)| quiche::h3::HeaderRef::new(n, v)).collect()
}

fn closed_err() -> Error {
    Error::new(haquic_result::HAQUIC_ERR_CLOSED, "the stream is closed")
}

fn not_ready() -> Error {
    Error::new(haquic_result::HAQUIC_ERR_WOULD_BLOCK, "the handshake is not complete yet")
}

fn would_block() -> Error {
    Error::new(haquic_result::HAQUIC_ERR_WOULD_BLOCK, "no flow-control credit; wait for STREAM_WRITABLE")
}

fn h3_err(e: quiche::h3::Error) -> Error {
    match e {
        quiche::h3::Error::Done | quiche::h3::Error::StreamBlocked => would_block(),
        quiche::h3::Error::TransportError(quiche::Error::StreamStopped(c)) => Error::new(
            haquic_result::HAQUIC_ERR_CLOSED,
            format!("the peer stopped the stream (STOP_SENDING 0x{c:x})"),
        ),
        quiche::h3::Error::TransportError(quiche::Error::StreamLimit) | quiche::h3::Error::IdError => {
            Error::new(haquic_result::HAQUIC_ERR_LIMIT, "the peer's stream limit is reached")
        }
        quiche::h3::Error::FrameUnexpected => {
            Error::new(haquic_result::HAQUIC_ERR_INVALID_STATE, "not allowed in the stream's current state")
        }
        other => Error::new(haquic_result::HAQUIC_ERR_PROTOCOL, format!("HTTP/3: {other}")),
    }
}

impl Drop for Conn {
    /// A connection dropped while still open (its engine was freed with it)
    /// is closed for the host too: its handles and its streams' read as
    /// closed, as every action on them already returns HAQUIC_ERR_CLOSED.
    fn drop(&mut self) {
        for (_, e) in self.streams.drain() {
            e.shared.closed.store(true, Ordering::Release);
        }
        self.shared.closed.store(true, Ordering::Release);
    }
}

impl Conn {
    /// Wraps a new quiche connection.
    pub fn new(
        id: u64,
        worker: usize,
        q: quiche::Connection,
        listener: Shared<Listener>,
        engine: Weak<crate::handle::Tracked<crate::engine::EngineInner>>,
        max_field_section_size: u64,
    ) -> Conn {
        let mut h3_config = quiche::h3::Config::new().expect("h3 config");
        h3_config.set_max_field_section_size(max_field_section_size);
        let shared = shared(ConnShared {
            id,
            worker,
            trace_id: q.trace_id().to_owned(),
            is_server: q.is_server(),
            engine,
            closed: AtomicBool::new(false),
            info: Mutex::new(ConnInfo::default()),
            listener: listener.clone(),
            userdata: AtomicUsize::new(0),
        });
        Conn {
            shared,
            q,
            h3: None,
            h3_config,
            listener,
            streams: FastMap::default(),
            lingering: Vec::new(),
            scids: Vec::new(),
            goaway_sent: None,
            goaway_pending: false,
            goaway_linger_until: None,
            goaway_unsent: false,
            shutdown_deferred: false,
            deferred_until: None,
            max_request_id: None,
            close_when_drained: false,
            timeout_at: None,
            established_reported: false,
            half_open: true,
            sock_fd: None,
            migrated: false,
            pacing: true,
            flushes: 0,
            refresh_due: false,
            early_data_counted: false,
            amp: crate::amp::AmpLimit::validated(),
            ack_hold_until: None,
            host_acted: false,
            #[cfg(feature = "test-hooks")]
            panic_next_flush: false,
        }
    }

    fn entry(&mut self, stream: &StreamShared) -> Result<&mut StreamEntry> {
        match self.streams.get_mut(&stream.id) {
            Some(e) if std::ptr::eq(&**e.shared, stream) => Ok(e),
            _ => Err(closed_err()),
        }
    }

    fn new_stream(&mut self, id: u64) -> Shared<StreamShared> {
        let s = shared(StreamShared { conn: self.shared.clone(), id, closed: AtomicBool::new(false), userdata: AtomicUsize::new(0) });
        self.streams.insert(
            id,
            StreamEntry {
                shared: s.clone(),
                body: BodyCounter::default(),
                recv_done: false,
                recv_fin_seen: false,
                send_done: false,
                headers_sent: false,
                headers_received: false,
                want_write: false,
                readable_pending: false,
                stop_reported: false,
            },
        );
        s
    }

    /// Resets both directions of a stream with `code` and forgets it.
    fn abort_stream(&mut self, id: u64, code: u64) {
        let _ = self.q.stream_shutdown(id, quiche::Shutdown::Read, code);
        let _ = self.q.stream_shutdown(id, quiche::Shutdown::Write, code);
        if let Some(e) = self.streams.remove(&id) {
            e.shared.closed.store(true, Ordering::Release);
        }
    }

    /// Processes everything quiche has for the application after input or a
    /// timeout: the handshake, HTTP/3 events, writability, STOP_SENDING,
    /// graceful close. Appends events for the host.
    /// Returns whether HTTP/3 events were left for the next pass.
    pub fn process(&mut self, events: &mut VecDeque<Event>, counters: &Counters) -> bool {
        if self.h3.is_none() && (self.q.is_established() || self.q.is_in_early_data()) {
            match quiche::h3::Connection::with_transport(&mut self.q, &self.h3_config) {
                Ok(h3) => self.h3 = Some(h3),
                Err(e) => {
                    log::warn!("{} HTTP/3 setup failed: {e}", self.shared.trace_id);
                    let _ = self.q.close(true, h3rules::H3_INTERNAL_ERROR, b"h3 setup");
                }
            }
        }
        if self.shared.is_server && !self.early_data_counted && self.q.is_in_early_data() {
            self.early_data_counted = true;
            counters.inc(&counters.zero_rtt_accepted);
        }
        if !self.shared.is_server {
            // Session tickets arrive after the handshake: keep the latest.
            if let Some(sess) = self.q.session() {
                let mut info = self.shared.info.lock().unwrap();
                if info.session.as_deref() != Some(sess) {
                    info.session = Some(sess.to_vec());
                }
            }
        }
        if self.q.is_established() && !self.established_reported {
            self.established_reported = true;
            self.half_open = false;
            self.refresh_due = true;
            counters.inc(&counters.handshakes);
            self.listener.counters.inc(&self.listener.counters.handshakes);
            {
                let mut info = self.shared.info.lock().unwrap();
                info.established = true;
                info.resumed = self.q.is_resumed();
            }
            events.push_back(self.event(EventKind::Established, None));
        }
        let more = self.poll_h3(events, counters);
        if self.shutdown_deferred && self.h3.is_some() {
            // Wait for the client's first request (it may only send it
            // once the handshake is confirmed), or a bounded time: a
            // GOAWAY before any request refuses every request the client
            // wanted this connection for.
            let now = Instant::now();
            let until = *self.deferred_until.get_or_insert(now + SHUTDOWN_FIRST_REQUEST_WAIT);
            if self.max_request_id.is_some() || now >= until {
                self.shutdown_deferred = false;
                let _ = self.shutdown();
            }
        }
        self.send_pending_goaway();
        self.poll_writable(events, counters);
        self.collect_streams();
        // quiche forgets a stream once everything is delivered and acknowledged.
        let q = &mut self.q;
        self.lingering.retain(|&sid| !matches!(q.stream_capacity(sid), Err(quiche::Error::InvalidStreamState(_))));
        if self.close_when_drained
            && !self.goaway_pending
            && !self.goaway_unsent
            && self.goaway_linger_until.is_none_or(|t| Instant::now() >= t)
            && self.streams.is_empty()
            && self.lingering.is_empty()
            && !self.q.is_closed()
            && !self.q.is_draining()
        {
            let _ = self.q.close(true, h3rules::H3_NO_ERROR, b"graceful shutdown");
        }
        while let Some(ev) = self.q.path_event_next() {
            if let quiche::PathEvent::PeerMigrated(local, peer) = ev {
                counters.inc(&counters.migrations);
                self.migrated = true;
                self.refresh_due = true;
                let mut info = self.shared.info.lock().unwrap();
                info.migrations += 1;
                info.peer = Some(peer);
                info.local = Some(local);
            }
        }
        more
    }

    fn event(&self, kind: EventKind, stream: Option<Shared<StreamShared>>) -> Event {
        Event { kind, conn: Some(self.shared.clone()), stream }
    }

    /// Takes quiche's HTTP/3 events, at most [`MAX_H3_EVENTS_PER_PASS`] per
    /// pass; returns whether some were left for the next pass.
    fn poll_h3(&mut self, events: &mut VecDeque<Event>, counters: &Counters) -> bool {
        for _ in 0..MAX_H3_EVENTS_PER_PASS {
            let Some(h3) = self.h3.as_mut() else { return false };
            let (sid, ev) = match h3.poll(&mut self.q) {
                Ok(v) => v,
                Err(quiche::h3::Error::Done) => return false,
                Err(e) => {
                    log::info!("{} HTTP/3 connection error: {e}", self.shared.trace_id);
                    counters.inc(&counters.h3_conn_errors);
                    let _ = self.q.close(true, h3rules::wire_code(&e), b"");
                    return false;
                }
            };
            match ev {
                quiche::h3::Event::Headers { list, more_frames } => {
                    self.on_headers(sid, list, more_frames, events, counters)
                }
                quiche::h3::Event::Data => {
                    if let Some(e) = self.streams.get_mut(&sid) {
                        if !e.readable_pending {
                            e.readable_pending = true;
                            let s = e.shared.clone();
                            events.push_back(self.event(EventKind::Readable, Some(s)));
                        }
                    } else {
                        // Data on a stream we rejected or aborted: discard it.
                        let mut sink = [0u8; 4096];
                        while let Ok(n) = h3.recv_body(&mut self.q, sid, &mut sink) {
                            if n == 0 {
                                break;
                            }
                        }
                    }
                }
                quiche::h3::Event::Finished => {
                    if let Some(e) = self.streams.get_mut(&sid) {
                        e.recv_fin_seen = true;
                        if let Err(m) = e.body.finish() {
                            counters.inc(&counters.h3_message_errors);
                            self.listener.counters.inc(&self.listener.counters.h3_message_errors);
                            log::info!("{} stream {sid}: {}", self.shared.trace_id, m.0);
                            let s = e.shared.clone();
                            self.abort_stream(sid, h3rules::H3_MESSAGE_ERROR);
                            events.push_back(self.event(EventKind::Reset(h3rules::H3_MESSAGE_ERROR), Some(s)));
                        } else {
                            // Readable with FIN tells a host that reads lazily
                            // to come and read the end.
                            let s = e.shared.clone();
                            events.push_back(self.event(EventKind::Finished, Some(s)));
                        }
                    }
                }
                quiche::h3::Event::Reset(code) => {
                    // A reset stream stays readable in quiche, and h3::poll
                    // reports it again on every call, until its receiving
                    // side is shut down.
                    let _ = self.q.stream_shutdown(sid, quiche::Shutdown::Read, code);
                    if let Some(e) = self.streams.get_mut(&sid) {
                        if e.recv_done {
                            continue; // already reported to the host
                        }
                        e.recv_done = true;
                        let s = e.shared.clone();
                        events.push_back(self.event(EventKind::Reset(code), Some(s)));
                    } else {
                        // RESET_STREAM as the first frame of a stream: there
                        // is no request to cancel. Close our side cleanly.
                        counters.inc(&counters.streams_aborted_before_headers);
                        let _ = self.q.stream_shutdown(sid, quiche::Shutdown::Write, h3rules::H3_REQUEST_CANCELLED);
                    }
                }
                quiche::h3::Event::GoAway => {
                    events.push_back(self.event(EventKind::GoawayReceived(sid), None));
                }
                quiche::h3::Event::PriorityUpdate => {}
            }
        }
        true
    }

    fn on_headers(
        &mut self,
        sid: u64,
        fields: Vec<Field>,
        more_frames: bool,
        events: &mut VecDeque<Event>,
        counters: &Counters,
    ) {
        let is_server = self.shared.is_server;
        // A second HEADERS on a known stream is a trailer section.
        if let Some(e) = self.streams.get_mut(&sid) {
            if e.headers_received {
                if let Err(m) = h3rules::validate_trailers(&fields).and_then(|_| e.body.finish()) {
                    self.message_error(sid, &m.0, events, counters);
                    return;
                }
                let s = e.shared.clone();
                events.push_back(self.event(EventKind::Trailers(fields), Some(s)));
                return;
            }
        }
        if is_server {
            self.max_request_id = Some(self.max_request_id.map_or(sid, |m| m.max(sid)));
            if self.goaway_sent.is_some_and(|g| sid >= g) {
                // The client still sends: give it time to see the GOAWAY.
                if self.goaway_linger_until.is_some() {
                    self.goaway_linger_until = Some(Instant::now() + self.goaway_linger());
                }
                counters.inc(&counters.requests_rejected);
                self.listener.counters.inc(&self.listener.counters.requests_rejected);
                self.abort_stream(sid, h3rules::H3_REQUEST_REJECTED);
                return;
            }
            match h3rules::validate_request(fields) {
                Ok(req) => {
                    let s = self.new_stream(sid);
                    let e = self.streams.get_mut(&sid).unwrap();
                    e.headers_received = true;
                    e.body.expected = req.content_length;
                    if !more_frames {
                        // Nothing to read: the incoming side is complete.
                        e.recv_fin_seen = true;
                        e.recv_done = true;
                        if let Err(m) = e.body.finish() {
                            self.message_error(sid, &m.0, events, counters);
                            return;
                        }
                    }
                    counters.inc(&counters.requests);
                    self.listener.counters.inc(&self.listener.counters.requests);
                    events.push_back(self.event(EventKind::Request { fields: req.fields, fin: !more_frames }, Some(s)));
                }
                Err(m) => {
                    // No stream handle exists yet: reset it quietly.
                    counters.inc(&counters.h3_message_errors);
                    self.listener.counters.inc(&self.listener.counters.h3_message_errors);
                    log::info!("{} stream {sid}: malformed request: {}", self.shared.trace_id, m.0);
                    self.abort_stream(sid, h3rules::H3_MESSAGE_ERROR);
                }
            }
        } else {
            let Some(e) = self.streams.get_mut(&sid) else { return };
            match h3rules::validate_response(&fields) {
                Ok(cl) => {
                    // Interim (1xx) responses are passed on; the final one
                    // marks the headers as received.
                    let interim = fields.first().is_some_and(|h| h.value().first() == Some(&b'1'));
                    if !interim {
                        e.headers_received = true;
                        e.body.expected = cl;
                    }
                    if !more_frames && !interim {
                        e.recv_fin_seen = true;
                        e.recv_done = true;
                    }
                    let s = e.shared.clone();
                    events.push_back(self.event(EventKind::Response { fields, fin: !more_frames }, Some(s)));
                    self.collect_streams();
                }
                Err(m) => self.message_error(sid, &m.0, events, counters),
            }
        }
    }

    fn message_error(&mut self, sid: u64, why: &str, events: &mut VecDeque<Event>, counters: &Counters) {
        counters.inc(&counters.h3_message_errors);
        self.listener.counters.inc(&self.listener.counters.h3_message_errors);
        log::info!("{} stream {sid}: malformed message: {why}", self.shared.trace_id);
        let s = self.streams.get(&sid).map(|e| e.shared.clone());
        self.abort_stream(sid, h3rules::H3_MESSAGE_ERROR);
        if let Some(s) = s {
            events.push_back(self.event(EventKind::Reset(h3rules::H3_MESSAGE_ERROR), Some(s)));
        }
    }

    fn poll_writable(&mut self, events: &mut VecDeque<Event>, counters: &Counters) {
        let mut writable: Vec<(u64, bool)> = self.q.writable().map(|sid| (sid, true)).collect();
        // quiche lists a stream the peer stopped as writable only if it was
        // flow-control blocked or had data queued: a STOP_SENDING on a
        // stream the host has not written to yet would never be reported,
        // and once quiche's automatic RESET_STREAM is acknowledged it forgets
        // the stream while the host's entry stays open. Ask for every stream
        // whose sending side is still ours (a few per connection).
        for (&sid, e) in &self.streams {
            if !e.send_done && !e.stop_reported && !writable.iter().any(|&(w, _)| w == sid) {
                writable.push((sid, false));
            }
        }
        for (sid, listed) in writable {
            // stream_capacity() asks without side effects; stream_writable()
            // would also announce the stream blocked when it has no credit.
            let r = if listed { self.q.stream_writable(sid, 1).map(|_| ()) } else { self.q.stream_capacity(sid).map(|_| ()) };
            let stopped = match r {
                Err(quiche::Error::StreamStopped(code)) => Some(code),
                // Our sending side is open, yet quiche has forgotten the
                // stream: it was complete, which without our FIN means the
                // peer stopped it. quiche collects such a stream as soon as
                // the request's FIN is read when nothing was sent on it yet
                // (a STOP_SENDING then completes the sending side at once),
                // before this pass could ask, and the peer's code went with
                // it: report H3_REQUEST_CANCELLED.
                Err(quiche::Error::InvalidStreamState(_)) if !listed => Some(h3rules::H3_REQUEST_CANCELLED),
                _ => None,
            };
            if !listed && stopped.is_none() {
                continue;
            }
            match self.streams.get_mut(&sid) {
                Some(e) => {
                    if let Some(code) = stopped {
                        if !e.stop_reported {
                            e.stop_reported = true;
                            e.send_done = true;
                            e.want_write = false;
                            let s = e.shared.clone();
                            events.push_back(self.event(EventKind::StopSending(code), Some(s)));
                        }
                    } else if e.want_write {
                        e.want_write = false;
                        let s = e.shared.clone();
                        events.push_back(self.event(EventKind::Writable, Some(s)));
                    }
                }
                None => {
                    if stopped.is_some() && self.q.is_server() && sid % 4 == 0 {
                        // STOP_SENDING as the first frame of a new request
                        // stream (before or after GOAWAY): there is nothing to
                        // stop. Reset our side so the stream completes, and
                        // count it; no stream object ever existed.
                        counters.inc(&counters.streams_aborted_before_headers);
                        let code = if self.goaway_sent.is_some_and(|g| sid >= g) {
                            h3rules::H3_REQUEST_REJECTED
                        } else {
                            h3rules::H3_REQUEST_CANCELLED
                        };
                        let _ = self.q.stream_shutdown(sid, quiche::Shutdown::Write, code);
                        let _ = self.q.stream_shutdown(sid, quiche::Shutdown::Read, code);
                    }
                }
            }
        }
    }

    fn collect_streams(&mut self) {
        let lingering = &mut self.lingering;
        self.streams.retain(|&sid, e| {
            let done = e.recv_done && e.send_done;
            if done {
                e.shared.closed.store(true, Ordering::Release);
                if lingering.len() < 4096 {
                    lingering.push(sid);
                }
            }
            !done
        });
    }

    /// Marks every stream and the connection closed, for the host's handles.
    pub fn mark_closed(&mut self) {
        let close = match self.q.peer_error().or(self.q.local_error()) {
            Some(e) => (e.is_app, e.error_code, e.reason.clone()),
            None if self.q.is_timed_out() => (false, 0, b"idle timeout".to_vec()),
            None => (false, 0, Vec::new()),
        };
        let stats = self.q.stats();
        self.record_close(close, Some(stats));
    }

    /// Marks the connection closed after an internal panic, without asking
    /// quiche (whose state can no longer be trusted): INTERNAL_ERROR (0x1).
    pub fn mark_closed_internal_error(&mut self) {
        self.record_close((false, 0x1, b"internal error".to_vec()), None);
    }

    /// Closes every stream handle, then records why the connection closed
    /// (and its final statistics) for the host to read.
    fn record_close(&mut self, close: (bool, u64, Vec<u8>), stats: Option<quiche::Stats>) {
        for (_, e) in self.streams.drain() {
            e.shared.closed.store(true, Ordering::Release);
        }
        if let Ok(mut info) = self.shared.info.lock() {
            info.close = Some(close);
            if stats.is_some() {
                info.stats = stats;
            }
        }
        self.shared.closed.store(true, Ordering::Release);
    }

    /// The close event for the host.
    pub fn closed_event(&self) -> Event {
        let (app, code, reason) = self.shared.info.lock().unwrap().close.clone().unwrap_or_default();
        self.event(EventKind::Closed { app, code, reason }, None)
    }

    /// Updates the snapshot other threads may read: every 32nd pass, when the
    /// handshake completes or the path changes, and at close (keeping the hot
    /// path light).
    pub fn refresh_info(&mut self) {
        self.flushes = self.flushes.wrapping_add(1);
        if self.flushes % 32 != 1 && !std::mem::take(&mut self.refresh_due) {
            return;
        }
        let mut info = self.shared.info.lock().unwrap();
        info.stats = Some(self.q.stats());
        info.open_streams = self.streams.len();
        if let Some(p) = self.q.path_stats().next() {
            info.rtt = Some(p.rtt);
            info.cwnd = Some(p.cwnd);
            if info.peer.is_none() {
                info.peer = Some(p.peer_addr);
            }
            if info.local.is_none() {
                info.local = Some(p.local_addr);
            }
        }
    }

    // ---- host actions (owner thread only; the engine checked) -------------

    /// Reads request (or response) body bytes. Returns (bytes, fin).
    pub fn recv_body(&mut self, stream: &StreamShared, buf: &mut [u8], counters: &Counters) -> Result<(usize, bool)> {
        let sid = stream.id;
        let e = self.entry(stream)?;
        if e.recv_done {
            return Ok((0, true));
        }
        let h3 = self.h3.as_mut().ok_or_else(closed_err)?;
        match h3.recv_body(&mut self.q, sid, buf) {
            Ok(n) => {
                let e = self.streams.get_mut(&sid).unwrap();
                if let Err(m) = e.body.add(n) {
                    let mut dummy = VecDeque::new();
                    self.message_error(sid, &m.0, &mut dummy, counters);
                    return Err(Error::new(haquic_result::HAQUIC_ERR_PROTOCOL, m.0));
                }
                let fin = self.q.stream_finished(sid);
                if fin {
                    self.check_body_complete(sid, counters)?;
                    self.finish_recv(sid);
                }
                Ok((n, fin))
            }
            Err(quiche::h3::Error::Done) => {
                let e = self.streams.get_mut(&sid).unwrap();
                e.readable_pending = false;
                if e.recv_fin_seen || self.q.stream_finished(sid) {
                    self.check_body_complete(sid, counters)?;
                    self.finish_recv(sid);
                    Ok((0, true))
                } else {
                    Err(would_block())
                }
            }
            Err(e) => Err(h3_err(e)),
        }
    }

    /// At the end of a body: one shorter than its content-length is a
    /// malformed message (RFC 9114 4.1.2); the stream is reset.
    fn check_body_complete(&mut self, sid: u64, counters: &Counters) -> Result<()> {
        let Some(e) = self.streams.get(&sid) else { return Ok(()) };
        if let Err(m) = e.body.finish() {
            let mut dummy = VecDeque::new();
            self.message_error(sid, &m.0, &mut dummy, counters);
            return Err(Error::new(haquic_result::HAQUIC_ERR_PROTOCOL, m.0));
        }
        Ok(())
    }

    fn finish_recv(&mut self, sid: u64) {
        if let Some(e) = self.streams.get_mut(&sid) {
            e.recv_done = true;
            e.readable_pending = false;
        }
        self.collect_streams();
    }

    /// Checks that the stream can send: open, not finished, and with its
    /// headers already sent (`after_headers`) or not yet sent.
    fn sendable(&mut self, stream: &StreamShared, after_headers: bool) -> Result<u64> {
        let e = self.entry(stream)?;
        if e.send_done {
            return Err(Error::new(haquic_result::HAQUIC_ERR_CLOSED, "the sending side is finished"));
        }
        match (after_headers, e.headers_sent) {
            (true, false) => Err(Error::new(haquic_result::HAQUIC_ERR_INVALID_STATE, "send the headers first")),
            (false, true) => Err(Error::new(haquic_result::HAQUIC_ERR_INVALID_STATE, "headers were already sent")),
            _ => Ok(stream.id),
        }
    }

    /// A send that quiche refused: ask for STREAM_WRITABLE, map the error.
    fn blocked(&mut self, sid: u64, err: quiche::h3::Error) -> Error {
        if let Some(e) = self.streams.get_mut(&sid) {
            e.want_write = true;
        }
        h3_err(err)
    }

    /// Sends the response (server) head, with FIN when there is no body.
    pub fn send_headers(&mut self, stream: &StreamShared, fields: &[FieldRef<'_>], fin: bool) -> Result<()> {
        let sid = self.sendable(stream, false)?;
        let headers = to_headers(fields);
        let h3 = self.h3.as_mut().ok_or_else(not_ready)?;
        match h3.send_response(&mut self.q, sid, &headers, fin) {
            Ok(()) => {
                let e = self.streams.get_mut(&sid).unwrap();
                e.headers_sent = true;
                if fin {
                    e.send_done = true;
                    self.collect_streams();
                }
                Ok(())
            }
            Err(err) => Err(self.blocked(sid, err)),
        }
    }

    /// Sends body bytes; returns how many were taken (possibly fewer than
    /// given: the host waits for STREAM_WRITABLE and sends the rest).
    pub fn send_body(&mut self, stream: &StreamShared, data: &[u8], fin: bool) -> Result<usize> {
        let sid = self.sendable(stream, true)?;
        let h3 = self.h3.as_mut().ok_or_else(not_ready)?;
        match h3.send_body(&mut self.q, sid, data, fin) {
            Ok(n) => {
                let e = self.streams.get_mut(&sid).unwrap();
                if n < data.len() {
                    e.want_write = true;
                } else if fin {
                    e.send_done = true;
                    self.collect_streams();
                }
                Ok(n)
            }
            Err(err) => Err(self.blocked(sid, err)),
        }
    }

    /// Sends a trailer section, which ends the stream.
    pub fn send_trailers(&mut self, stream: &StreamShared, fields: &[FieldRef<'_>]) -> Result<()> {
        let sid = self.sendable(stream, true)?;
        let headers = to_headers(fields);
        if let Err(m) = h3rules::validate_trailers(&headers) {
            return Err(Error::new(haquic_result::HAQUIC_ERR_INVALID_ARGUMENT, m.0));
        }
        let h3 = self.h3.as_mut().ok_or_else(not_ready)?;
        match h3.send_additional_headers(&mut self.q, sid, &headers, true, true) {
            Ok(()) => {
                self.streams.get_mut(&sid).unwrap().send_done = true;
                self.collect_streams();
                Ok(())
            }
            Err(err) => Err(self.blocked(sid, err)),
        }
    }

    /// Resets our sending side (RESET_STREAM) with an HTTP/3 error code.
    pub fn reset_stream(&mut self, stream: &StreamShared, code: u64) -> Result<()> {
        let sid = stream.id;
        let e = self.entry(stream)?;
        e.send_done = true;
        e.want_write = false;
        let _ = self.q.stream_shutdown(sid, quiche::Shutdown::Write, code);
        self.collect_streams();
        Ok(())
    }

    /// Asks the peer to stop sending (STOP_SENDING) with an HTTP/3 error code.
    pub fn stop_sending(&mut self, stream: &StreamShared, code: u64) -> Result<()> {
        let sid = stream.id;
        let e = self.entry(stream)?;
        e.recv_done = true;
        let _ = self.q.stream_shutdown(sid, quiche::Shutdown::Read, code);
        self.collect_streams();
        Ok(())
    }

    /// Client role: sends a request head and returns its stream.
    pub fn send_request(&mut self, fields: &[FieldRef<'_>], fin: bool) -> Result<Shared<StreamShared>> {
        if self.shared.is_server {
            return Err(Error::new(haquic_result::HAQUIC_ERR_INVALID_STATE, "only a client sends requests"));
        }
        let headers = to_headers(fields);
        let h3 = self.h3.as_mut().ok_or_else(not_ready)?;
        let sid = h3.send_request(&mut self.q, &headers, fin).map_err(h3_err)?;
        let s = self.new_stream(sid);
        let e = self.streams.get_mut(&sid).unwrap();
        e.headers_sent = true;
        e.send_done = fin;
        Ok(s)
    }

    /// How long a graceful close waits after the GOAWAY: three round trips,
    /// within [GOAWAY_LINGER_MIN, GOAWAY_LINGER_MAX].
    fn goaway_linger(&self) -> Duration {
        let rtt = self.q.path_stats().next().map_or(Duration::from_millis(20), |p| p.rtt);
        (rtt * 3).clamp(GOAWAY_LINGER_MIN, GOAWAY_LINGER_MAX)
    }

    /// Called after the worker sent this connection's packets: a queued
    /// GOAWAY has left, and the graceful close lingers from now.
    pub fn after_send(&mut self) {
        if self.goaway_unsent {
            self.goaway_unsent = false;
            self.goaway_linger_until = Some(Instant::now() + self.goaway_linger());
        }
    }

    /// A deadline of the connection's own, besides quiche's timers: the end
    /// of the GOAWAY linger of a graceful close.
    pub fn own_deadline(&self) -> Option<Instant> {
        if self.q.is_closed() {
            return None;
        }
        let linger = self.goaway_linger_until.filter(|_| self.close_when_drained);
        let first_request = self.deferred_until.filter(|_| self.shutdown_deferred);
        [linger, first_request, self.ack_hold_until].into_iter().flatten().min()
    }

    /// Starts a graceful shutdown: GOAWAY now, close once the streams in
    /// flight have finished. New requests are refused with
    /// H3_REQUEST_REJECTED.
    pub fn shutdown(&mut self) -> Result<()> {
        if self.shared.is_server && (self.h3.is_none() || self.max_request_id.is_none()) && !self.q.is_closed() {
            // The handshake is in progress, or just over with no request
            // yet: the client is about to send one. A GOAWAY now (id 0)
            // would refuse it before it is sent; instead the GOAWAY goes
            // out once HTTP/3 is up and the first request is in (or a
            // second has passed).
            self.shutdown_deferred = true;
            return Ok(());
        }
        self.close_when_drained = true;
        if self.shared.is_server && self.goaway_sent.is_none() {
            self.goaway_sent = Some(self.max_request_id.map_or(0, |m| m + 4));
            self.goaway_pending = true;
            self.send_pending_goaway();
        }
        Ok(())
    }

    /// Queues the GOAWAY frame if it is still owed; quiche refuses it while
    /// the congestion window is full, so this runs on every pass.
    fn send_pending_goaway(&mut self) {
        let (Some(id), true) = (self.goaway_sent, self.goaway_pending) else { return };
        let Some(h3) = self.h3.as_mut() else { return };
        match h3.send_goaway(&mut self.q, id) {
            Ok(()) => {
                self.goaway_pending = false;
                self.goaway_unsent = true;
            }
            Err(quiche::h3::Error::StreamBlocked) | Err(quiche::h3::Error::Done) => {}
            Err(e) => {
                log::info!("{} GOAWAY failed: {e}", self.shared.trace_id);
                self.goaway_pending = false;
            }
        }
    }

    /// Closes now with an application error code.
    pub fn close(&mut self, code: u64, reason: &[u8]) -> Result<()> {
        match self.q.close(true, code, reason) {
            Ok(()) | Err(quiche::Error::Done) => Ok(()),
            Err(e) => Err(Error::new(haquic_result::HAQUIC_ERR_PROTOCOL, format!("close: {e}"))),
        }
    }

    /// Streams currently open.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }
}
