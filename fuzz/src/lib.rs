//! Shared harness of haquic's fuzz targets (`fuzz_targets/`) and of the seed
//! corpus generator (`examples/gen_corpus.rs`).
//!
//! Everything drives the library through its C ABI (`haquic::ffi`), as HAProxy
//! does: a server engine on a host-fed listener, fed datagrams with
//! `haquic_listener_recv` (so they go through the dispatcher), driven with
//! `haquic_worker_process`, its events pulled with `haquic_worker_poll` and
//! answered by a small host application. The peer is a plain
//! `quiche::Connection` that the harness controls completely: it writes raw
//! HTTP/3 frames (its own QPACK encoding, which keeps names byte for byte),
//! and its packets can be dropped, altered or replaced on the way.
//!
//! quiche is built with its `fuzzing` feature in this crate only: packets
//! are not encrypted and headers not protected, so that altered packets
//! reach frame parsing. The TLS handshake is real.

#![allow(clippy::missing_safety_doc)]

use haquic::error::haquic_result;
use haquic::error::haquic_result::*;
use haquic::ffi::config::*;
use haquic::ffi::conn::*;
use haquic::ffi::engine::*;
use haquic::ffi::version::haquic_live_objects;
use std::collections::HashMap;
use std::net::SocketAddr;

/// A self-signed P-256 certificate for haquic.test and its key, as PEM,
/// made once per process (so that no private key is kept in the tree).
pub fn test_identity() -> &'static (Vec<u8>, Vec<u8>) {
    static ID: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        use boring::asn1::Asn1Time;
        use boring::bn::BigNum;
        use boring::ec::{EcGroup, EcKey};
        use boring::hash::MessageDigest;
        use boring::nid::Nid;
        use boring::pkey::PKey;
        use boring::x509::extension::SubjectAlternativeName;
        use boring::x509::{X509, X509NameBuilder};
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_nid(Nid::COMMONNAME, "haquic.test").unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap()).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::days_from_now(3650).unwrap()).unwrap();
        let san = SubjectAlternativeName::new().dns("haquic.test").build(&b.x509v3_context(None, None)).unwrap();
        b.append_extension(&san).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        (b.build().to_pem().unwrap(), key.private_key_to_pem_pkcs8().unwrap())
    })
}

/// The test certificate, PEM.
pub fn cert_pem() -> &'static [u8] {
    &test_identity().0
}

/// Its private key, PEM.
pub fn key_pem() -> &'static [u8] {
    &test_identity().1
}

/// The server's address (a host-fed listener: nothing is bound).
pub fn server_addr() -> SocketAddr {
    "127.0.0.1:4433".parse().unwrap()
}

/// The client's address, and the ones a NAT rebinding moves it to.
pub fn client_addr(rebinds: u16) -> SocketAddr {
    SocketAddr::new("127.0.0.2".parse().unwrap(), 50000 + rebinds)
}

/// `struct sockaddr_in`/`sockaddr_in6` bytes for an address.
pub fn sockaddr(a: SocketAddr) -> Vec<u8> {
    match a {
        SocketAddr::V4(v4) => {
            // SAFETY: all-zero is a valid sockaddr_in.
            let mut s: libc_sockaddr_in = unsafe { std::mem::zeroed() };
            s.sin_family = 2; // AF_INET
            s.sin_port = v4.port().to_be();
            s.sin_addr = u32::from_ne_bytes(v4.ip().octets());
            as_bytes(&s)
        }
        SocketAddr::V6(v6) => {
            // SAFETY: all-zero is a valid sockaddr_in6.
            let mut s: libc_sockaddr_in6 = unsafe { std::mem::zeroed() };
            s.sin6_family = 10; // AF_INET6
            s.sin6_port = v6.port().to_be();
            s.sin6_addr = v6.ip().octets();
            s.sin6_scope_id = v6.scope_id();
            as_bytes(&s)
        }
    }
}

#[repr(C)]
#[allow(non_camel_case_types)]
struct libc_sockaddr_in {
    sin_family: u16,
    sin_port: u16,
    sin_addr: u32,
    sin_zero: [u8; 8],
}

#[repr(C)]
#[allow(non_camel_case_types)]
struct libc_sockaddr_in6 {
    sin6_family: u16,
    sin6_port: u16,
    sin6_flowinfo: u32,
    sin6_addr: [u8; 16],
    sin6_scope_id: u32,
}

fn as_bytes<T>(v: &T) -> Vec<u8> {
    // SAFETY: plain-old-data structs without padding.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()).to_vec() }
}

/// Fails the run (libFuzzer reports a crash) unless `code` is one of
/// `allowed`. `what` names the call.
#[track_caller]
pub fn expect_code(what: &str, code: haquic_result, allowed: &[haquic_result]) {
    if !allowed.contains(&code) {
        panic!("{what} returned {code:?} ({}), expected one of {allowed:?}", code.description());
    }
}

/// A byte reader for structured fuzz inputs: running out gives zeros/empty.
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads from `data`.
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data }
    }
    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// Bytes left.
    pub fn len(&self) -> usize {
        self.data.len()
    }
    /// One byte, or None at the end.
    pub fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }
    /// Two bytes, big-endian (0 past the end).
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8().unwrap_or(0), self.u8().unwrap_or(0)])
    }
    /// Up to `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (b, rest) = self.data.split_at(n);
        self.data = rest;
        b
    }
    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.bytes(self.data.len())
    }
}

// ---- HTTP/3 framing, by hand ------------------------------------------------

/// Appends a QUIC variable-length integer.
pub fn put_varint(out: &mut Vec<u8>, v: u64) {
    if v < 1 << 6 {
        out.push(v as u8);
    } else if v < 1 << 14 {
        out.extend_from_slice(&((v as u16) | 0x4000).to_be_bytes());
    } else if v < 1 << 30 {
        out.extend_from_slice(&((v as u32) | 0x8000_0000).to_be_bytes());
    } else {
        out.extend_from_slice(&(v | 0xc000_0000_0000_0000).to_be_bytes());
    }
}

/// A QPACK prefixed integer (RFC 7541 5.1), `first` holding the flag bits.
fn put_prefixed(out: &mut Vec<u8>, first: u8, prefix: u32, mut v: u64) {
    let max = (1u64 << prefix) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A QPACK field section with every field a literal with a literal name, no
/// Huffman coding and no dynamic table: the receiver decodes exactly these
/// bytes (quiche's own encoder would lowercase the names).
pub fn qpack_literal(fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![0, 0]; // Required Insert Count 0, Delta Base 0
    for (n, v) in fields {
        put_prefixed(&mut out, 0x20, 3, n.len() as u64);
        out.extend_from_slice(n);
        put_prefixed(&mut out, 0x00, 7, v.len() as u64);
        out.extend_from_slice(v);
    }
    out
}

/// An HTTP/3 frame.
pub fn h3_frame(ty: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 16);
    put_varint(&mut out, ty);
    put_varint(&mut out, payload.len() as u64);
    out.extend_from_slice(payload);
    out
}

/// A HEADERS frame carrying `fields`.
pub fn headers_frame(fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    h3_frame(0x01, &qpack_literal(fields))
}

/// Parses a header list in the fuzz format: repeated
/// `[name_len u8][value_len u8][name][value]`, at most `max` fields.
pub fn read_fields(r: &mut Reader<'_>, max: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    while out.len() < max {
        let Some(nl) = r.u8() else { break };
        let vl = r.u8().unwrap_or(0);
        let n = r.bytes(nl as usize).to_vec();
        let v = r.bytes(vl as usize).to_vec();
        out.push((n, v));
    }
    out
}

/// Writes a header list in the fuzz format (the inverse of [`read_fields`]).
pub fn write_fields(out: &mut Vec<u8>, fields: &[(&[u8], &[u8])]) {
    for (n, v) in fields {
        out.push(n.len() as u8);
        out.push(v.len() as u8);
        out.extend_from_slice(n);
        out.extend_from_slice(v);
    }
}

/// The RFC 9114 field section size (what max_field_section_size bounds).
pub fn section_size(fields: &[(Vec<u8>, Vec<u8>)]) -> usize {
    fields.iter().map(|(n, v)| n.len() + v.len() + 32).sum()
}

// ---- the server: a haquic engine through the C ABI --------------------------

/// What the host application saw on one request stream.
#[derive(Debug, Default, Clone)]
pub struct StreamLog {
    /// REQUEST events: (headers, fin).
    pub requests: Vec<(Vec<(Vec<u8>, Vec<u8>)>, bool)>,
    /// TRAILERS events.
    pub trailers: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
    /// STREAM_RESET codes.
    pub resets: Vec<u64>,
    /// Body bytes read.
    pub body: Vec<u8>,
    /// The body was read to its end.
    pub fin: bool,
    /// A `haquic_stream_recv` call failed with PROTOCOL (the engine found the
    /// body malformed and reset the stream).
    pub recv_protocol_error: bool,
}

/// The server engine, its listener, and the host application's state.
pub struct Server {
    /// The engine.
    pub engine: *const haquic_engine,
    /// The host-fed listener.
    pub listener: *const haquic_listener,
    /// Number of workers.
    pub workers: u32,
    /// Streams the host holds a reference on.
    pub streams: Vec<*const haquic_stream>,
    /// Connections the host holds a reference on (first seen in an event).
    pub conns: Vec<*const haquic_conn>,
    /// Per stream id, what the host saw.
    pub log: HashMap<u64, StreamLog>,
    /// Answer requests (`:status 200`, a short body).
    pub respond: bool,
    /// Every REQUEST event's headers are checked to be a fixed point of
    /// `haquic::h3::validate_request` (the engine only hands over validated
    /// requests).
    pub check_requests: bool,
}

/// Options of a server.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerOptions {
    /// 1 or 2 workers.
    pub two_workers: bool,
    /// Retry every Initial without a token.
    pub force_retry: bool,
    /// A small dispatch queue (16), to reach the full-queue path.
    pub small_queue: bool,
}

fn fields_of(headers: *const haquic_header, n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    if n == 0 {
        return Vec::new();
    }
    assert!(!headers.is_null(), "an event with {n} headers and a NULL array");
    // SAFETY: the event's array holds `n` headers, valid until the next poll.
    let hs = unsafe { std::slice::from_raw_parts(headers, n) };
    hs.iter()
        .map(|h| {
            // SAFETY: as above.
            let s = |p: *const u8, l: usize| if l == 0 { Vec::new() } else { unsafe { std::slice::from_raw_parts(p, l) }.to_vec() };
            (s(h.name, h.name_len), s(h.value, h.value_len))
        })
        .collect()
}

/// Checks the properties of a validated request head: what the engine hands
/// to the host (and HAProxy turns into HTX) must satisfy them.
pub fn check_validated_request(fields: &[(Vec<u8>, Vec<u8>)]) {
    const ORDER: [&[u8]; 5] = [b":method", b":scheme", b":authority", b":path", b":protocol"];
    let mut last_rank = None;
    let mut regular = false;
    let mut cookies = 0;
    for (i, (n, v)) in fields.iter().enumerate() {
        if n.first() == Some(&b':') {
            assert!(!regular, "pseudo-header {:?} after a regular field", String::from_utf8_lossy(n));
            let rank = ORDER.iter().position(|p| p == n).expect("unknown pseudo-header handed over");
            assert!(last_rank.is_none_or(|l| l < rank), "pseudo-headers out of canonical order or repeated");
            last_rank = Some(rank);
        } else {
            regular = true;
            assert!(!n.is_empty(), "empty field name handed over");
            assert!(
                n.iter().all(|&c| (0x21..0x7f).contains(&c) && c != b':' && !c.is_ascii_uppercase()),
                "invalid field name {:?} handed over",
                String::from_utf8_lossy(n)
            );
            assert!(!v.iter().any(|&c| c == 0 || c == b'\r' || c == b'\n'), "invalid value handed over");
            assert!(
                ![&b"connection"[..], b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"]
                    .contains(&n.as_slice()),
                "connection-specific field handed over"
            );
            if n == b"te" {
                assert_eq!(v, b"trailers", "te other than trailers handed over");
            }
            if n == b"cookie" {
                cookies += 1;
                assert_eq!(i, fields.len() - 1, "the joined cookie is not last");
            }
        }
    }
    assert!(cookies <= 1, "cookie crumbs not joined");
    assert!(fields.first().is_some_and(|(n, _)| n == b":method"), "no :method first");
    // A validated request validates again, unchanged.
    let again = haquic::h3::validate_request(fields.iter().map(|(n, v)| quiche::h3::Header::new(n, v)).collect())
        .expect("a request the engine handed over fails validation again");
    let again: Vec<(Vec<u8>, Vec<u8>)> = again.fields.iter().map(|h| {
        use quiche::h3::NameValue;
        (h.name().to_vec(), h.value().to_vec())
    }).collect();
    assert_eq!(again, fields, "validation is not idempotent");
}

/// The configuration every server uses, created once per process (the
/// certificate is parsed once). It counts as one live object.
pub fn server_config() -> *const haquic_config {
    thread_local! {
        static CFG: usize = {
            let cfg = haquic_config_new();
            assert!(!cfg.is_null());
            let (cert, key) = (cert_pem(), key_pem());
            let r = haquic_config_load_cert_chain_and_key_pem(cfg, cert.as_ptr(), cert.len(), key.as_ptr(), key.len());
            assert_eq!(r, HAQUIC_OK, "loading the test certificate");
            // Small windows and stream counts: limits are reached sooner.
            let mut l = std::mem::MaybeUninit::<haquic_limits>::zeroed();
            assert_eq!(haquic_limits_init(l.as_mut_ptr(), std::mem::size_of::<haquic_limits>()), HAQUIC_OK);
            // SAFETY: initialised by haquic_limits_init.
            let mut l = unsafe { l.assume_init() };
            l.max_streams_bidi = 16;
            l.initial_max_stream_data_bidi_remote = 65536;
            assert_eq!(haquic_config_set_limits(cfg, &l), HAQUIC_OK);
            assert_eq!(haquic_config_check(cfg), HAQUIC_OK);
            cfg as usize
        };
    }
    CFG.with(|c| *c as *const haquic_config)
}

impl Server {
    /// A server engine with a host-fed listener on [`server_addr`].
    pub fn new(o: ServerOptions) -> Server {
        let mut opts = std::mem::MaybeUninit::<haquic_engine_options>::zeroed();
        assert_eq!(haquic_engine_options_init(opts.as_mut_ptr(), std::mem::size_of::<haquic_engine_options>()), HAQUIC_OK);
        // SAFETY: initialised above.
        let mut opts = unsafe { opts.assume_init() };
        opts.workers = if o.two_workers { 2 } else { 1 };
        opts.force_retry = o.force_retry as u8;
        if o.small_queue {
            opts.dispatch_queue_capacity = 16;
        }
        let mut engine = std::ptr::null();
        let r = haquic_engine_new(server_config(), &opts, None, std::ptr::null_mut(), &mut engine);
        assert_eq!(r, HAQUIC_OK, "haquic_engine_new");
        let sa = sockaddr(server_addr());
        let mut listener = std::ptr::null();
        let r = haquic_listener_new(engine, std::ptr::null(), sa.as_ptr().cast(), sa.len(), HAQUIC_LISTENER_HOST_FED, &mut listener);
        assert_eq!(r, HAQUIC_OK, "haquic_listener_new");
        Server {
            engine,
            listener,
            workers: opts.workers,
            streams: Vec::new(),
            conns: Vec::new(),
            log: HashMap::new(),
            respond: true,
            check_requests: true,
        }
    }

    /// Hands a datagram to the engine as the host does (any worker may own
    /// its connection ID: the dispatcher routes it).
    pub fn recv(&mut self, data: &[u8], from: SocketAddr) -> haquic_result {
        let peer = sockaddr(from);
        let r = haquic_listener_recv(self.engine, self.listener, data.as_ptr(), data.len(), peer.as_ptr().cast(), peer.len());
        expect_code("haquic_listener_recv", r, &[HAQUIC_OK, HAQUIC_ERR_QUEUE_FULL, HAQUIC_ERR_PROTOCOL]);
        if data.is_empty() {
            expect_code("haquic_listener_recv (empty)", r, &[HAQUIC_ERR_PROTOCOL]);
        }
        r
    }

    /// Runs every worker once and lets the host application handle their
    /// events, then runs them again so that its answers leave.
    pub fn process(&mut self) {
        for w in 0..self.workers {
            let r = haquic_worker_process(self.engine, w);
            expect_code("haquic_worker_process", r, &[HAQUIC_OK]);
        }
        self.poll_events();
        for w in 0..self.workers {
            let r = haquic_worker_process(self.engine, w);
            expect_code("haquic_worker_process", r, &[HAQUIC_OK]);
            let _ = haquic_worker_next_timeout(self.engine, w);
        }
    }

    /// Pulls and handles every pending event.
    pub fn poll_events(&mut self) {
        for w in 0..self.workers {
            for _ in 0..10_000 {
                let mut ev = std::mem::MaybeUninit::<haquic_event>::zeroed();
                assert_eq!(haquic_event_init(ev.as_mut_ptr(), std::mem::size_of::<haquic_event>()), HAQUIC_OK);
                let r = haquic_worker_poll(self.engine, w, ev.as_mut_ptr());
                expect_code("haquic_worker_poll", r, &[HAQUIC_OK, HAQUIC_ERR_WOULD_BLOCK]);
                if r != HAQUIC_OK {
                    break;
                }
                // SAFETY: written on success.
                let ev = unsafe { ev.assume_init() };
                self.on_event(w, &ev);
            }
        }
    }

    fn on_event(&mut self, w: u32, ev: &haquic_event) {
        use haquic_event_type::*;
        if !ev.conn.is_null() {
            assert_eq!(haquic_conn_worker(ev.conn), w, "an event of a connection another worker owns");
            if !self.conns.contains(&ev.conn) && self.conns.len() < 64 {
                self.conns.push(haquic_conn_ref(ev.conn));
            }
        }
        let sid = if ev.stream.is_null() { u64::MAX } else { haquic_stream_id(ev.stream) };
        match ev.kind {
            HAQUIC_EVENT_REQUEST => {
                assert!(!ev.stream.is_null(), "REQUEST without a stream");
                let fields = fields_of(ev.headers, ev.headers_len);
                if self.check_requests {
                    check_validated_request(&fields);
                }
                self.log.entry(sid).or_default().requests.push((fields, ev.fin));
                let s = haquic_stream_ref(ev.stream);
                self.streams.push(s);
                if self.respond {
                    self.answer(s);
                }
                if !ev.fin {
                    self.read_body(s);
                }
            }
            HAQUIC_EVENT_TRAILERS => {
                assert!(!ev.stream.is_null(), "TRAILERS without a stream");
                let fields = fields_of(ev.headers, ev.headers_len);
                assert!(fields.iter().all(|(n, _)| n.first() != Some(&b':')), "pseudo-header in trailers handed over");
                self.log.entry(sid).or_default().trailers.push(fields);
            }
            HAQUIC_EVENT_STREAM_READABLE | HAQUIC_EVENT_STREAM_FINISHED => {
                assert!(!ev.stream.is_null());
                self.read_body(ev.stream);
            }
            HAQUIC_EVENT_STREAM_RESET => {
                assert!(!ev.stream.is_null());
                self.log.entry(sid).or_default().resets.push(ev.code);
            }
            HAQUIC_EVENT_STREAM_WRITABLE | HAQUIC_EVENT_STOP_SENDING => assert!(!ev.stream.is_null()),
            HAQUIC_EVENT_CONN_ESTABLISHED | HAQUIC_EVENT_GOAWAY => assert!(!ev.conn.is_null()),
            HAQUIC_EVENT_CONN_CLOSED => {
                assert!(!ev.conn.is_null());
                assert!(haquic_conn_is_closed(ev.conn), "CONN_CLOSED for a connection that is not closed");
                assert!(ev.reason_len == 0 || !ev.reason.is_null());
            }
            HAQUIC_EVENT_FD_REGISTER | HAQUIC_EVENT_FD_RELEASE => panic!("fd event on a host-fed listener"),
            HAQUIC_EVENT_RESPONSE => panic!("a RESPONSE event on a server connection"),
            HAQUIC_EVENT_NONE => panic!("an event of kind NONE"),
        }
    }

    fn answer(&mut self, s: *const haquic_stream) {
        let h = [(&b":status"[..], &b"200"[..]), (b"content-length", b"2")];
        let hs: Vec<haquic_header> = h
            .iter()
            .map(|(n, v)| haquic_header { name: n.as_ptr(), name_len: n.len(), value: v.as_ptr(), value_len: v.len() })
            .collect();
        let r = haquic_stream_send_headers(s, hs.as_ptr(), hs.len(), false);
        expect_code(
            "haquic_stream_send_headers",
            r,
            &[HAQUIC_OK, HAQUIC_ERR_WOULD_BLOCK, HAQUIC_ERR_CLOSED, HAQUIC_ERR_PROTOCOL],
        );
        if r == HAQUIC_OK {
            let mut written = usize::MAX;
            let r = haquic_stream_send(s, b"ok".as_ptr(), 2, true, &mut written);
            expect_code("haquic_stream_send", r, &[HAQUIC_OK, HAQUIC_ERR_WOULD_BLOCK, HAQUIC_ERR_CLOSED, HAQUIC_ERR_PROTOCOL]);
            if r == HAQUIC_OK {
                assert!(written <= 2, "haquic_stream_send wrote {written} of 2 bytes");
            } else {
                assert_eq!(written, usize::MAX, "an output written on error");
            }
        }
    }

    fn read_body(&mut self, s: *const haquic_stream) {
        let sid = haquic_stream_id(s);
        let mut buf = [0u8; 4096];
        for _ in 0..1000 {
            let (mut n, mut fin) = (usize::MAX, false);
            let r = haquic_stream_recv(s, buf.as_mut_ptr(), buf.len(), &mut n, &mut fin);
            expect_code("haquic_stream_recv", r, &[HAQUIC_OK, HAQUIC_ERR_WOULD_BLOCK, HAQUIC_ERR_CLOSED, HAQUIC_ERR_PROTOCOL]);
            let log = self.log.entry(sid).or_default();
            if r == HAQUIC_ERR_PROTOCOL {
                log.recv_protocol_error = true;
            }
            if r != HAQUIC_OK {
                assert_eq!(n, usize::MAX, "an output written on error");
                return;
            }
            assert!(n <= buf.len());
            log.body.extend_from_slice(&buf[..n]);
            if fin {
                log.fin = true;
                return;
            }
            if n == 0 {
                return;
            }
        }
    }

    /// Every datagram the workers want sent: (data, destination).
    pub fn pop_all(&mut self) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        for w in 0..self.workers {
            for _ in 0..100_000 {
                let mut peer = [0u8; 128];
                let (mut len, mut plen) = (0usize, 0usize);
                let r = haquic_worker_pop_datagram(
                    self.engine,
                    w,
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut len,
                    peer.as_mut_ptr().cast(),
                    peer.len(),
                    &mut plen,
                );
                expect_code("haquic_worker_pop_datagram", r, &[HAQUIC_OK, HAQUIC_ERR_WOULD_BLOCK]);
                if r != HAQUIC_OK {
                    break;
                }
                assert!(len <= 65527 && len > 0, "a datagram of {len} bytes");
                out.push((buf[..len].to_vec(), parse_sockaddr(&peer[..plen])));
            }
        }
        out
    }

    /// Releases the host's references on streams that are closed.
    pub fn release_closed_streams(&mut self) {
        self.streams.retain(|&s| {
            if haquic_stream_is_closed(s) {
                haquic_stream_unref(s);
                false
            } else {
                true
            }
        });
        self.conns.retain(|&c| {
            if haquic_conn_is_closed(c) {
                haquic_conn_unref(c);
                false
            } else {
                true
            }
        });
    }

    /// Engine-wide counters.
    pub fn stats(&self) -> haquic_stats {
        let mut s = std::mem::MaybeUninit::<haquic_stats>::zeroed();
        assert_eq!(haquic_stats_init(s.as_mut_ptr(), std::mem::size_of::<haquic_stats>()), HAQUIC_OK);
        assert_eq!(haquic_engine_stats(self.engine, s.as_mut_ptr()), HAQUIC_OK);
        // SAFETY: written above.
        unsafe { s.assume_init() }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for s in self.streams.drain(..) {
            haquic_stream_unref(s);
        }
        for c in self.conns.drain(..) {
            haquic_conn_unref(c);
        }
        haquic_listener_unref(self.listener);
        haquic_engine_unref(self.engine);
    }
}

/// The address in a `sockaddr_in`/`sockaddr_in6`.
pub fn parse_sockaddr(b: &[u8]) -> SocketAddr {
    let family = u16::from_ne_bytes([b[0], b[1]]);
    let port = u16::from_be_bytes([b[2], b[3]]);
    if family == 2 {
        SocketAddr::new(std::net::IpAddr::from([b[4], b[5], b[6], b[7]]), port)
    } else {
        let mut ip = [0u8; 16];
        ip.copy_from_slice(&b[8..24]);
        SocketAddr::new(std::net::IpAddr::from(ip), port)
    }
}

// ---- the peer: a quiche client the harness controls -------------------------

/// A client connection (plain quiche) with its own HTTP/3 framing.
pub struct Client {
    /// The connection.
    pub conn: quiche::Connection,
    /// Where its datagrams appear to come from (changes on a rebinding).
    pub nat_addr: SocketAddr,
    /// Its own idea of its address.
    pub local: SocketAddr,
    /// Next client-initiated bidirectional stream id.
    pub next_bidi: u64,
    h3_started: bool,
}

/// quiche's client configuration.
pub fn client_config() -> quiche::Config {
    let mut c = quiche::Config::new(quiche::PROTOCOL_VERSION).unwrap();
    c.verify_peer(false);
    c.set_application_protos(&[b"h3"]).unwrap();
    c.set_initial_max_data(10_000_000);
    c.set_initial_max_stream_data_bidi_local(1_000_000);
    c.set_initial_max_stream_data_bidi_remote(1_000_000);
    c.set_initial_max_stream_data_uni(1_000_000);
    c.set_initial_max_streams_bidi(100);
    c.set_initial_max_streams_uni(100);
    c.set_max_idle_timeout(60_000);
    c.set_disable_active_migration(false);
    c
}

impl Client {
    /// Starts a connection to [`server_addr`].
    pub fn new(scid: [u8; 16]) -> Client {
        // One configuration per process: building one loads the system's CA
        // store, which would cost more than the rest of an input.
        thread_local! {
            static CFG: std::cell::RefCell<quiche::Config> = std::cell::RefCell::new(client_config());
        }
        let local = client_addr(0);
        let conn = CFG
            .with(|cfg| {
                quiche::connect(Some("haquic.test"), &quiche::ConnectionId::from_ref(&scid), local, server_addr(), &mut cfg.borrow_mut())
            })
            .expect("quiche::connect");
        Client { conn, nat_addr: local, local, next_bidi: 0, h3_started: false }
    }

    /// Opens the HTTP/3 control and QPACK streams once the handshake is
    /// done (SETTINGS with nothing in it).
    pub fn start_h3(&mut self) {
        if self.h3_started || !self.conn.is_established() {
            return;
        }
        self.h3_started = true;
        let mut control = vec![0x00];
        control.extend(h3_frame(0x04, &[]));
        let _ = self.conn.stream_send(2, &control, false);
        let _ = self.conn.stream_send(6, &[0x02], false);
        let _ = self.conn.stream_send(10, &[0x03], false);
    }

    /// Every datagram it has to send now.
    pub fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1500];
        for _ in 0..10_000 {
            match self.conn.send(&mut buf) {
                Ok((n, _)) => out.push(buf[..n].to_vec()),
                Err(_) => break,
            }
        }
        out
    }

    /// Takes a datagram from the server.
    pub fn recv(&mut self, mut d: Vec<u8>) {
        let info = quiche::RecvInfo { from: server_addr(), to: self.local };
        let _ = self.conn.recv(&mut d, info);
    }

    /// Sends a request on a new stream: HEADERS, then `body` in a DATA frame,
    /// then `trailers`, then FIN. Returns the stream id, None when quiche
    /// refuses (stream limit or flow control).
    pub fn request(
        &mut self,
        fields: &[(Vec<u8>, Vec<u8>)],
        body: Option<&[u8]>,
        trailers: Option<&[(Vec<u8>, Vec<u8>)]>,
    ) -> Option<u64> {
        self.start_h3();
        let sid = self.next_bidi;
        let mut data = headers_frame(fields);
        if let Some(b) = body {
            data.extend(h3_frame(0x00, b));
        }
        if let Some(t) = trailers {
            data.extend(headers_frame(t));
        }
        match self.conn.stream_send(sid, &data, true) {
            Ok(n) if n == data.len() => {
                self.next_bidi += 4;
                Some(sid)
            }
            Ok(_) => {
                // Flow control took only part: this stream is spoiled.
                self.next_bidi += 4;
                let _ = self.conn.stream_shutdown(sid, quiche::Shutdown::Write, 0x10c);
                None
            }
            Err(_) => None,
        }
    }
}

/// A server and, once a live operation needs it, a client, with the network
/// between them.
pub struct Session {
    /// The server.
    pub server: Server,
    /// The client.
    pub client: Option<Client>,
    /// The server's connection ID most recently seen (the SCID of its long
    /// header packets, or the client's DCID).
    pub server_cid: Option<Vec<u8>>,
    /// Datagrams the server sent to addresses other than the live client's.
    pub stray: usize,
    /// Deterministic client SCIDs.
    pub next_scid: u8,
    /// A fault for the next client-to-server datagram.
    pub fault: Option<Fault>,
    /// When set, every datagram handed to the server is recorded here (the
    /// seed corpus generator uses it).
    pub record: Option<Vec<Vec<u8>>>,
}

/// Something that happens to one datagram on its way to the server.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Lost.
    Drop,
    /// One byte XORed.
    Flip { pos: u16, xor: u8 },
    /// Cut at `pos`.
    Truncate { pos: u16 },
    /// Delivered twice.
    Duplicate,
}

impl Session {
    /// A session with a fresh server and no client yet.
    pub fn new(o: ServerOptions) -> Session {
        Session { server: Server::new(o), client: None, server_cid: None, stray: 0, next_scid: 0, fault: None, record: None }
    }

    /// The client, connecting it first if needed.
    pub fn client(&mut self) -> &mut Client {
        if self.client.is_none() {
            self.next_scid = self.next_scid.wrapping_add(1);
            let mut scid = [0xc1u8; 16];
            scid[15] = self.next_scid;
            self.client = Some(Client::new(scid));
        }
        self.client.as_mut().unwrap()
    }

    /// Feeds one datagram to the server from `from`, applying the pending
    /// fault if `faulty`.
    pub fn to_server(&mut self, mut d: Vec<u8>, from: SocketAddr, faulty: bool) {
        let fault = if faulty { self.fault.take() } else { None };
        match fault {
            Some(Fault::Drop) => return,
            Some(Fault::Flip { pos, xor }) if !d.is_empty() => {
                let i = pos as usize % d.len();
                d[i] ^= xor;
            }
            Some(Fault::Truncate { pos }) => d.truncate(pos as usize),
            Some(Fault::Duplicate) => {
                self.server.recv(&d, from);
            }
            _ => {}
        }
        if let Some(rec) = self.record.as_mut() {
            rec.push(d.clone());
        }
        self.server.recv(&d, from);
    }

    /// One round: the client's datagrams to the server, the server's work
    /// and its host application, the server's datagrams to the client.
    /// Returns how many datagrams moved.
    pub fn pump(&mut self) -> usize {
        let mut moved = 0;
        if let Some(c) = self.client.as_mut() {
            let from = c.nat_addr;
            let out = c.drain();
            moved += out.len();
            for d in out {
                self.to_server(d, from, true);
            }
        }
        self.server.process();
        let out = self.server.pop_all();
        moved += out.len();
        for (d, to) in out {
            self.learn_cid(&d);
            match self.client.as_mut() {
                Some(c) if to == c.nat_addr => c.recv(d),
                _ => self.stray += 1,
            }
        }
        if let Some(c) = self.client.as_mut() {
            if c.conn.timeout().is_some_and(|t| t.is_zero()) {
                c.conn.on_timeout();
            }
            c.start_h3();
            if c.conn.is_established() {
                self.server_cid = Some(c.conn.destination_id().as_ref().to_vec());
            }
        }
        self.server.release_closed_streams();
        moved
    }

    /// Pumps until nothing moves (at most `rounds` rounds).
    pub fn settle(&mut self, rounds: usize) {
        for _ in 0..rounds {
            if self.pump() == 0 {
                break;
            }
        }
    }

    fn learn_cid(&mut self, d: &[u8]) {
        if d.first().is_some_and(|b| b & 0x80 != 0) {
            if let Ok(h) = quiche::Header::from_slice(&mut d.to_vec(), 16) {
                if !h.scid.is_empty() {
                    self.server_cid = Some(h.scid.as_ref().to_vec());
                }
            }
        }
    }

    /// Rewrites the destination connection ID of `d` to the server's
    /// current one (long or short header), so that a recorded datagram
    /// reaches the live connection.
    pub fn patch_dcid(&self, d: &mut Vec<u8>) {
        let Some(cid) = &self.server_cid else { return };
        if d.is_empty() {
            return;
        }
        if d[0] & 0x80 != 0 {
            if d.len() < 6 {
                return;
            }
            let old = d[5] as usize;
            if d.len() < 6 + old {
                return;
            }
            let mut out = d[..5].to_vec();
            out.push(cid.len() as u8);
            out.extend_from_slice(cid);
            out.extend_from_slice(&d[6 + old..]);
            *d = out;
        } else {
            let mut out = vec![d[0]];
            out.extend_from_slice(cid);
            out.extend_from_slice(d.get(1 + cid.len()..).unwrap_or(&[]));
            *d = out;
        }
    }

    /// A 1-RTT packet carrying `frames`: the client is made to send a packet
    /// (a PING if it has nothing else), and its payload is replaced. Its
    /// packet number is one the client really used, so the server's ACK of
    /// it stays valid. None before the client has 1-RTT keys.
    pub fn forge_1rtt(&mut self, frames: &[u8]) -> Option<Vec<u8>> {
        let c = self.client.as_mut()?;
        if !c.conn.is_established() {
            return None;
        }
        let _ = c.conn.send_ack_eliciting();
        let from = c.nat_addr;
        let mut template = None;
        let mut others = Vec::new();
        for d in c.drain() {
            // The first short-header datagram is the template; the others go
            // out as they are.
            if template.is_none() && d.first().is_some_and(|b| b & 0x80 == 0) {
                template = Some(d);
            } else {
                others.push(d);
            }
        }
        for d in others {
            self.to_server(d, from, false);
        }
        let t = template?;
        let dcid_len = self.client.as_ref()?.conn.destination_id().len();
        let pn_len = (t[0] & 0x03) as usize + 1;
        let hdr_len = 1 + dcid_len + pn_len;
        if t.len() < hdr_len {
            return None;
        }
        let mut d = t[..hdr_len].to_vec();
        d.extend_from_slice(frames);
        // quiche's fuzzing mode keeps a 16-byte tag, unchecked; pad so that
        // the header-protection sample would exist.
        while d.len() < hdr_len + 4 {
            d.push(0x00); // PADDING
        }
        d.extend_from_slice(&[0xa5; 16]);
        Some(d)
    }

    /// Final rounds, then the invariants that hold for any input.
    pub fn finish(mut self) {
        self.settle(8);
        let s = self.server.stats();
        if debug() {
            eprintln!(
                "session: accepted {} handshakes {} requests {} rejected {} msg-errors {} h3-conn-errors {} packets-in {} \
                 drops: invalid {} unknown-cid {} unparsable {} queue {} bad-token {}; retries {} vn {} resets {} migrations {} aborted-first {}",
                s.conns_accepted, s.handshakes, s.requests, s.requests_rejected, s.h3_message_errors, s.h3_conn_errors,
                s.packets_in, s.drop_invalid, s.drop_unknown_cid, s.drop_unparsable, s.drop_queue_full, s.drop_bad_token,
                s.retries_sent, s.version_negotiations, s.resets_sent, s.migrations, s.streams_aborted_before_headers
            );
        }
        assert_eq!(s.conn_panics, 0, "a connection panicked inside its worker");
        assert!(s.conns_closed <= s.conns_accepted, "more connections closed than accepted");
        drop(self.server);
    }
}

/// Whether HAQUIC_FUZZ_DEBUG is set: the targets then print what each input
/// did (for checking seeds).
pub fn debug() -> bool {
    static D: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *D.get_or_init(|| std::env::var_os("HAQUIC_FUZZ_DEBUG").is_some())
}

/// The number of live haquic objects (configurations, engines, listeners,
/// connections, streams).
pub fn live_objects() -> usize {
    haquic_live_objects()
}
