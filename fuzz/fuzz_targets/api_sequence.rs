//! Sequences of C API calls, as a host (or a buggy host) makes them: the
//! input, decoded with `arbitrary`, is a list of operations on a few slots
//! of handles (configurations, engines, listeners, connections, streams),
//! calling the `extern "C"` functions directly. It is the single-process,
//! single-input twin of the C spin harness (c-tests/spin.c).
//!
//! Misuse is included as far as the contract allows: an empty slot passes
//! NULL; handles stay in use after their engine is gone (closed objects);
//! calls come from a thread that does not own the worker; struct sizes,
//! worker indices, buffer sizes, addresses, ALPN lists, limits and names
//! are the input's. References are only ever released that the target
//! holds (its own bookkeeping), so nothing here is undefined behaviour.
//!
//! Checked: every result code is one the function documents for the case
//! (NULL handle -> HAQUIC_ERR_NULL, engine gone -> HAQUIC_ERR_CLOSED, other
//! thread -> HAQUIC_ERR_WRONG_THREAD, bad struct size ->
//! HAQUIC_ERR_STRUCT_SIZE, ...); outputs are written only on success; no
//! panic anywhere; and `haquic_live_objects()` is back to 0 once the target
//! has released everything at the end of each input.

#![no_main]

use arbitrary::Arbitrary;
use haquic::error::haquic_result;
use haquic::error::haquic_result::*;
use haquic::ffi::config::*;
use haquic::ffi::conn::*;
use haquic::ffi::engine::*;
use haquic::ffi::result::haquic_strerror;
use haquic::ffi::version::*;
use haquic_fuzz::{cert_pem, expect_code, key_pem, sockaddr};
use libfuzzer_sys::fuzz_target;
use std::ffi::CString;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

const NCFG: usize = 3;
const NENG: usize = 2;
const NLIS: usize = 4;
const NCONN: usize = 4;
const NSTREAM: usize = 6;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Pem {
    Good,
    Garbage,
    Swapped,
    Truncated,
    Null,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Size {
    Right,
    Zero,
    Small,
    Big,
    Min,
}

#[derive(Arbitrary, Debug)]
enum Op {
    ConfigNew,
    ConfigRef(u8),
    ConfigUnref(u8),
    LoadCert { c: u8, pem: Pem, sni: bool },
    LoadCertFile { c: u8, missing: bool },
    SetAlpn { c: u8, protos: Vec<Vec<u8>>, null: bool },
    SetAlpnWire { c: u8, wire: Vec<u8> },
    GetAlpnWire { c: u8, cap: u16 },
    SetLimits { c: u8, size: Size, reserved: bool, idle: u64, bidi: u64, uni: u64, data: u64, field: u64, udp: u64 },
    GetLimits { c: u8, size: Size },
    SetIdle { c: u8, ms: u64 },
    SetCc { c: u8, name: u8, raw: Vec<u8> },
    GetCc(u8),
    SetCurves { c: u8, curves: Vec<u8> },
    SetSecret { c: u8, secret: Vec<u8>, null: bool },
    SetVerify { c: u8, verify: bool, ca_missing: bool },
    SetEarlyData { c: u8, on: bool },
    SetPacing { c: u8, on: bool },
    Subject { c: u8, cap: u8 },
    Check(u8),
    LastError(u8),
    EngineNew { c: u8, workers: u8, queue: u16, size: Size, reserved: bool, wake: bool, force_retry: bool },
    EngineRef(u8),
    EngineUnref(u8),
    EngineShutdown(u8),
    EngineStats { e: u8, size: Size },
    WorkerStats { e: u8, w: u8, size: Size },
    WorkerCount(u8),
    ListenerNew { e: u8, c: Option<u8>, port: u8, v6: bool, bad_addr: bool, flags: u8 },
    ListenerRef(u8),
    ListenerUnref(u8),
    ListenerClose(u8),
    ListenerShutdown(u8),
    ListenerAddress { l: u8, cap: u8 },
    ListenerFd { l: u8, w: u8 },
    ListenerStats { l: u8, size: Size },
    Process { e: u8, w: u8 },
    Poll { e: u8, w: u8, keep: bool, size: Size, count: u8 },
    NextTimeout { e: u8, w: u8 },
    Shuttle { e: u8, w: u8, to: u8, from: u8, cap: u16, rounds: u8 },
    Inject { e: u8, l: u8, data: Vec<u8>, port: u8 },
    Connect { e: u8, w: u8, l: u8, peer: u8, sni: bool, session: u8 },
    FdReady { e: u8, w: u8, fd: i32, generation: u32 },
    FdReleased { e: u8, w: u8, fd: i32, generation: u32 },
    ConnRef(u8),
    ConnUnref(u8),
    ConnQuery(u8),
    ConnUserdata { c: u8, v: usize },
    ConnAddress { c: u8, local: bool, cap: u8 },
    ConnShutdown(u8),
    ConnClose { c: u8, code: u64, reason: Vec<u8> },
    SendRequest { c: u8, headers: u8, fin: bool },
    ConnStats { c: u8, size: Size },
    ConnSession { c: u8, cap: u16 },
    StreamRef(u8),
    StreamUnref(u8),
    StreamQuery(u8),
    StreamUserdata { s: u8, v: usize },
    StreamRecv { s: u8, cap: u16 },
    StreamSendHeaders { s: u8, headers: u8, fin: bool },
    StreamSend { s: u8, len: u16, fin: bool, null: bool },
    StreamTrailers { s: u8, headers: u8 },
    StreamReset { s: u8, code: u64 },
    StreamStop { s: u8, code: u64 },
    OtherThread { what: u8, slot: u8 },
    /// A whole client and server setup in one operation (configurations,
    /// engines, host-fed listeners, a connection), when the slots are free.
    Pair { two_workers: bool, retry: bool, request: bool },
    /// Moves every datagram to the listener at its destination, drives every
    /// worker and pulls every event (keeping new connections and streams).
    Pump { rounds: u8 },
    Strerror(i32),
    Versions,
}

struct Held<T> {
    ptr: *const T,
    refs: u32,
}

impl<T> Clone for Held<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Held<T> {}

struct EngineSlot {
    h: Held<haquic_engine>,
    uid: u64,
    workers: u32,
}

struct ListenerSlot {
    h: Held<haquic_listener>,
    engine: u64,
    addr: SocketAddr,
    host_fed: bool,
}

struct ConnSlot {
    h: Held<haquic_conn>,
    engine: u64,
}

struct StreamSlot {
    h: Held<haquic_stream>,
    engine: u64,
}

#[derive(Default)]
struct State {
    cfgs: [Option<Held<haquic_config>>; NCFG],
    engines: [Option<EngineSlot>; NENG],
    listeners: [Option<ListenerSlot>; NLIS],
    conns: [Option<ConnSlot>; NCONN],
    streams: [Option<StreamSlot>; NSTREAM],
    /// Engines still alive (the target held the last reference).
    alive: Vec<u64>,
    next_uid: u64,
    session: Option<Vec<u8>>,
}

static WAKES: AtomicU64 = AtomicU64::new(0);
/// Events seen, by kind (printed with HAQUIC_FUZZ_DEBUG, to check that the
/// corpus gets connections and requests going).
static EVENTS: [AtomicU64; 14] = [const { AtomicU64::new(0) }; 14];

extern "C" fn wake(_ud: *mut std::ffi::c_void, _w: u32) {
    WAKES.fetch_add(1, Ordering::Relaxed);
}

fn size_of_sel<T>(s: Size, min: usize) -> usize {
    let full = std::mem::size_of::<T>();
    match s {
        Size::Right => full,
        Size::Zero => 0,
        Size::Small => min.saturating_sub(1),
        Size::Big => full + 8,
        Size::Min => min,
    }
}

/// A buffer the size of `T` plus room for a too-big struct_size, filled with
/// a pattern, with `struct_size` stamped: outputs must be written only on
/// success, and never past the declared size.
struct Out<T> {
    buf: Vec<u64>,
    size: usize,
    _t: std::marker::PhantomData<T>,
}

const PATTERN: u64 = 0x5a5a_5a5a_5a5a_5a5a;

impl<T> Out<T> {
    fn new(size: usize) -> Out<T> {
        let words = (std::mem::size_of::<T>() + 16) / 8 + 1;
        let mut buf = vec![PATTERN; words];
        // SAFETY: the buffer is at least 4 bytes.
        unsafe { *(buf.as_mut_ptr() as *mut u32) = size as u32 };
        Out { buf, size, _t: std::marker::PhantomData }
    }
    fn ptr(&mut self) -> *mut T {
        self.buf.as_mut_ptr() as *mut T
    }
    fn bytes(&self) -> &[u8] {
        // SAFETY: plain u64 storage.
        unsafe { std::slice::from_raw_parts(self.buf.as_ptr() as *const u8, self.buf.len() * 8) }
    }
    /// Checks nothing was written (error) or nothing past the declared size.
    fn check(&self, ok: bool, what: &str) {
        let b = self.bytes();
        let from = if ok { self.size.max(4) } else { 4 };
        if from < b.len() {
            assert!(b[from..].iter().all(|&x| x == 0x5a), "{what}: bytes written past the declared size or on error");
        }
    }
}

fn pick<T>(slots: &[Option<T>], i: u8) -> usize {
    i as usize % slots.len()
}

const HEADER_SETS: &[&[(&[u8], &[u8])]] = &[
    &[(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"haquic.test"), (b":path", b"/")],
    &[(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"haquic.test"), (b":path", b"/p"), (b"content-length", b"3")],
    &[(b":status", b"200"), (b"content-length", b"0")],
    &[(b":status", b"103")],
    &[(b"x-trailer", b"1")],
    &[(b":path", b"/"), (b"Bad", b"x")],
    &[],
    &[(b":status", b"200")],
];

fn headers(sel: u8) -> Vec<haquic_header> {
    HEADER_SETS[sel as usize % HEADER_SETS.len()]
        .iter()
        .map(|(n, v)| haquic_header { name: n.as_ptr(), name_len: n.len(), value: v.as_ptr(), value_len: v.len() })
        .collect()
}

impl State {
    fn cfg(&self, i: u8) -> *const haquic_config {
        self.cfgs[pick(&self.cfgs, i)].map_or(std::ptr::null(), |h| h.ptr)
    }
    fn engine(&self, i: u8) -> Option<&EngineSlot> {
        self.engines[pick(&self.engines, i)].as_ref()
    }
    fn engine_ptr(&self, i: u8) -> *const haquic_engine {
        self.engine(i).map_or(std::ptr::null(), |e| e.h.ptr)
    }
    fn alive(&self, uid: u64) -> bool {
        self.alive.contains(&uid)
    }

    fn put_conn(&mut self, ptr: *const haquic_conn, engine: u64) {
        if let Some(slot) = self.conns.iter_mut().find(|s| s.is_none()) {
            *slot = Some(ConnSlot { h: Held { ptr: haquic_conn_ref(ptr), refs: 1 }, engine });
        }
    }
    fn put_stream(&mut self, ptr: *const haquic_stream, engine: u64) {
        if let Some(slot) = self.streams.iter_mut().find(|s| s.is_none()) {
            *slot = Some(StreamSlot { h: Held { ptr: haquic_stream_ref(ptr), refs: 1 }, engine });
        }
    }

    /// Releases one reference of an engine; the last one frees it.
    fn engine_unref(&mut self, i: usize) {
        let Some(e) = self.engines[i].as_mut() else { return };
        haquic_engine_unref(e.h.ptr);
        e.h.refs -= 1;
        if e.h.refs == 0 {
            let uid = e.uid;
            self.engines[i] = None;
            self.alive.retain(|&u| u != uid);
            self.after_engine_gone(uid);
        }
    }

    /// Once an engine is gone, its connections and streams are closed
    /// objects: still valid to query, every action HAQUIC_ERR_CLOSED.
    fn after_engine_gone(&self, uid: u64) {
        for c in self.conns.iter().flatten().filter(|c| c.engine == uid) {
            let r = haquic_conn_shutdown(c.h.ptr);
            expect_code("haquic_conn_shutdown (engine gone)", r, &[HAQUIC_ERR_CLOSED]);
            assert!(haquic_conn_is_closed(c.h.ptr), "a connection whose engine is gone does not read as closed");
        }
        for s in self.streams.iter().flatten().filter(|s| s.engine == uid) {
            let r = haquic_stream_reset(s.h.ptr, 0x10c);
            expect_code("haquic_stream_reset (engine gone)", r, &[HAQUIC_ERR_CLOSED]);
            assert!(haquic_stream_is_closed(s.h.ptr), "a stream whose engine is gone does not read as closed");
        }
    }

    fn release_all(&mut self) {
        for s in self.streams.iter_mut() {
            if let Some(s) = s.take() {
                for _ in 0..s.h.refs {
                    haquic_stream_unref(s.h.ptr);
                }
            }
        }
        for c in self.conns.iter_mut() {
            if let Some(c) = c.take() {
                for _ in 0..c.h.refs {
                    haquic_conn_unref(c.h.ptr);
                }
            }
        }
        for l in self.listeners.iter_mut() {
            if let Some(l) = l.take() {
                for _ in 0..l.h.refs {
                    haquic_listener_unref(l.h.ptr);
                }
            }
        }
        for i in 0..NENG {
            while self.engines[i].is_some() {
                self.engine_unref(i);
            }
        }
        for c in self.cfgs.iter_mut() {
            if let Some(c) = c.take() {
                for _ in 0..c.refs {
                    haquic_config_unref(c.ptr);
                }
            }
        }
    }

    /// The documented outcome of an action on a connection of engine `uid`
    /// (None: NULL handle).
    fn conn_action(&self, engine: Option<u64>, what: &str, r: haquic_result, live: &[haquic_result]) {
        match engine {
            None => expect_code(what, r, &[HAQUIC_ERR_NULL]),
            Some(uid) if !self.alive(uid) => expect_code(what, r, &[HAQUIC_ERR_CLOSED]),
            Some(_) => expect_code(what, r, live),
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    assert_eq!(haquic_live_objects(), 0, "objects left over from an earlier input");
    let mut st = State::default();
    if haquic_fuzz::debug() {
        eprintln!("ops: {ops:#?}");
    }
    for op in ops.into_iter().take(200) {
        step(&mut st, op);
    }
    st.release_all();
    if haquic_fuzz::debug() {
        let ev: Vec<u64> = EVENTS.iter().map(|e| e.load(Ordering::Relaxed)).collect();
        eprintln!("events by kind so far: {ev:?}, wakes {}", WAKES.load(Ordering::Relaxed));
    }
    assert_eq!(haquic_live_objects(), 0, "objects leaked: {} still live after every reference was released", haquic_live_objects());
});

fn ensure_owned(e: *const haquic_engine, workers: u32) {
    // The fuzzing thread drives every worker of its engines, so that it owns
    // them all: a call from another thread is then always the wrong thread.
    for w in 0..workers {
        let r = haquic_worker_process(e, w);
        expect_code("haquic_worker_process", r, &[HAQUIC_OK]);
    }
}

fn step(st: &mut State, op: Op) {
    match op {
        Op::ConfigNew => {
            if let Some(slot) = st.cfgs.iter_mut().find(|c| c.is_none()) {
                let p = haquic_config_new();
                assert!(!p.is_null(), "haquic_config_new returned NULL");
                *slot = Some(Held { ptr: p, refs: 1 });
            }
        }
        Op::ConfigRef(i) => {
            let i = pick(&st.cfgs, i);
            match st.cfgs[i].as_mut() {
                Some(h) if h.refs < 8 => {
                    assert_eq!(haquic_config_ref(h.ptr), h.ptr);
                    h.refs += 1;
                }
                Some(_) => {}
                None => assert!(haquic_config_ref(std::ptr::null()).is_null()),
            }
        }
        Op::ConfigUnref(i) => {
            let i = pick(&st.cfgs, i);
            match st.cfgs[i].as_mut() {
                Some(h) => {
                    haquic_config_unref(h.ptr);
                    h.refs -= 1;
                    if h.refs == 0 {
                        st.cfgs[i] = None;
                    }
                }
                None => haquic_config_unref(std::ptr::null()),
            }
        }
        Op::LoadCert { c, pem, sni } => {
            let cfg = st.cfg(c);
            let garbage = b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n";
            let (cert, key): (&[u8], &[u8]) = match pem {
                Pem::Good => (cert_pem(), key_pem()),
                Pem::Garbage => (garbage, garbage),
                Pem::Swapped => (key_pem(), cert_pem()),
                Pem::Truncated => (&cert_pem()[..cert_pem().len() / 2], key_pem()),
                Pem::Null => (&[], &[]),
            };
            let (cp, kp) = if matches!(pem, Pem::Null) { (std::ptr::null(), std::ptr::null()) } else { (cert.as_ptr(), key.as_ptr()) };
            let r = if sni {
                haquic_config_add_certificate_pem(cfg, cp, cert.len(), kp, key.len())
            } else {
                haquic_config_load_cert_chain_and_key_pem(cfg, cp, cert.len(), kp, key.len())
            };
            let allowed: &[haquic_result] = if cfg.is_null() || matches!(pem, Pem::Null) {
                &[HAQUIC_ERR_NULL]
            } else if matches!(pem, Pem::Good) {
                &[HAQUIC_OK, HAQUIC_ERR_LIMIT]
            } else {
                &[HAQUIC_ERR_BAD_CERTIFICATE, HAQUIC_ERR_BAD_PRIVATE_KEY, HAQUIC_ERR_KEY_MISMATCH]
            };
            expect_code("haquic_config_load/add certificate (pem)", r, allowed);
        }
        Op::LoadCertFile { c, missing } => {
            let cfg = st.cfg(c);
            let p = CString::new(if missing { "/nonexistent/haquic-fuzz.pem" } else { "/" }).unwrap();
            let r = haquic_config_load_cert_chain_and_key(cfg, p.as_ptr(), p.as_ptr());
            let allowed: &[haquic_result] = if cfg.is_null() {
                &[HAQUIC_ERR_NULL]
            } else if missing {
                &[HAQUIC_ERR_FILE_NOT_FOUND]
            } else {
                &[HAQUIC_ERR_FILE_UNREADABLE]
            };
            expect_code("haquic_config_load_cert_chain_and_key", r, allowed);
        }
        Op::SetAlpn { c, protos, null } => {
            let cfg = st.cfg(c);
            let cs: Vec<CString> = protos.iter().take(20).map(|p| CString::new(p.iter().copied().filter(|&b| b != 0).collect::<Vec<u8>>()).unwrap()).collect();
            let ptrs: Vec<*const std::os::raw::c_char> = cs.iter().map(|c| c.as_ptr()).collect();
            let r = haquic_config_set_alpn(cfg, if null { std::ptr::null() } else { ptrs.as_ptr() }, ptrs.len());
            let allowed: &[haquic_result] = if cfg.is_null() || null { &[HAQUIC_ERR_NULL] } else { &[HAQUIC_OK, HAQUIC_ERR_BAD_ALPN] };
            expect_code("haquic_config_set_alpn", r, allowed);
            if r == HAQUIC_OK {
                assert!((1..=16).contains(&cs.len()));
                assert!(cs.iter().all(|c| (1..=255).contains(&c.as_bytes().len()) && c.as_bytes().iter().all(|b| (0x20..0x7f).contains(b))),
                    "an ALPN list outside the documented rules accepted");
            }
        }
        Op::SetAlpnWire { c, wire } => {
            let cfg = st.cfg(c);
            let r = haquic_config_set_alpn_wire(cfg, wire.as_ptr(), wire.len());
            let allowed: &[haquic_result] = if cfg.is_null() { &[HAQUIC_ERR_NULL] } else { &[HAQUIC_OK, HAQUIC_ERR_BAD_ALPN] };
            expect_code("haquic_config_set_alpn_wire", r, allowed);
            if r == HAQUIC_OK {
                // It reads back the same.
                let mut buf = vec![0u8; HAQUIC_ALPN_WIRE_MAX as usize];
                let mut len = 0;
                assert_eq!(haquic_config_get_alpn_wire(cfg, buf.as_mut_ptr(), buf.len(), &mut len), HAQUIC_OK);
                assert_eq!(&buf[..len], &wire[..], "the ALPN wire list does not read back");
            }
        }
        Op::GetAlpnWire { c, cap } => {
            let cfg = st.cfg(c);
            let mut buf = vec![0x5au8; cap as usize % 5000];
            let mut len = usize::MAX;
            let r = haquic_config_get_alpn_wire(cfg, buf.as_mut_ptr(), buf.len(), &mut len);
            let allowed: &[haquic_result] = if cfg.is_null() { &[HAQUIC_ERR_NULL] } else { &[HAQUIC_OK, HAQUIC_ERR_BUFFER_TOO_SMALL] };
            expect_code("haquic_config_get_alpn_wire", r, allowed);
            if r == HAQUIC_OK {
                assert!(len <= buf.len() && len <= HAQUIC_ALPN_WIRE_MAX as usize);
            } else {
                assert_eq!(len, usize::MAX, "output written on error");
                assert!(buf.iter().all(|&b| b == 0x5a), "buffer written on error");
            }
        }
        Op::SetLimits { c, size, reserved, idle, bidi, uni, data, field, udp } => {
            let cfg = st.cfg(c);
            let mut l = Out::<haquic_limits>::new(std::mem::size_of::<haquic_limits>());
            assert_eq!(haquic_limits_init(l.ptr(), std::mem::size_of::<haquic_limits>()), HAQUIC_OK);
            // SAFETY: initialised above.
            let lim = unsafe { &mut *l.ptr() };
            let pick_val = |v: u64, d: u64| if v & 1 == 0 { d } else { v >> 1 };
            lim.idle_timeout_ms = pick_val(idle, lim.idle_timeout_ms);
            lim.max_streams_bidi = pick_val(bidi, lim.max_streams_bidi);
            lim.max_streams_uni = pick_val(uni, lim.max_streams_uni);
            lim.initial_max_data = pick_val(data, lim.initial_max_data);
            lim.max_field_section_size = pick_val(field, lim.max_field_section_size);
            lim.max_udp_payload_size = pick_val(udp, lim.max_udp_payload_size);
            lim.reserved = reserved as u32;
            let declared = size_of_sel::<haquic_limits>(size, std::mem::size_of::<haquic_limits>());
            lim.struct_size = declared as u32;
            let r = haquic_config_set_limits(cfg, l.ptr());
            let allowed: &[haquic_result] = if cfg.is_null() {
                &[HAQUIC_ERR_NULL]
            } else if declared != std::mem::size_of::<haquic_limits>() {
                &[HAQUIC_ERR_STRUCT_SIZE]
            } else if reserved {
                &[HAQUIC_ERR_INVALID_ARGUMENT]
            } else {
                &[HAQUIC_OK, HAQUIC_ERR_OUT_OF_RANGE]
            };
            expect_code("haquic_config_set_limits", r, allowed);
        }
        Op::GetLimits { c, size } => {
            let cfg = st.cfg(c);
            let declared = size_of_sel::<haquic_limits>(size, std::mem::size_of::<haquic_limits>());
            let mut l = Out::<haquic_limits>::new(declared);
            let r = haquic_config_get_limits(cfg, l.ptr());
            let allowed: &[haquic_result] = if cfg.is_null() {
                &[HAQUIC_ERR_NULL]
            } else if declared != std::mem::size_of::<haquic_limits>() {
                &[HAQUIC_ERR_STRUCT_SIZE]
            } else {
                &[HAQUIC_OK]
            };
            expect_code("haquic_config_get_limits", r, allowed);
            l.check(r == HAQUIC_OK, "haquic_config_get_limits");
        }
        Op::SetIdle { c, ms } => {
            let cfg = st.cfg(c);
            let ms = if ms & 1 == 0 { ms % 4_000_000 } else { ms };
            let r = haquic_config_set_idle_timeout(cfg, ms);
            let allowed: &[haquic_result] = if cfg.is_null() {
                &[HAQUIC_ERR_NULL]
            } else if (1..=3_600_000).contains(&ms) {
                &[HAQUIC_OK]
            } else {
                &[HAQUIC_ERR_OUT_OF_RANGE]
            };
            expect_code("haquic_config_set_idle_timeout", r, allowed);
        }
        Op::SetCc { c, name, raw } => {
            let cfg = st.cfg(c);
            const NAMES: &[&str] = &["cubic", "reno", "newreno", "bbr2", "bbr", "CUBIC", "BbR", "", "vegas"];
            let s = match NAMES.get(name as usize) {
                Some(n) => CString::new(*n).unwrap(),
                None => CString::new(raw.iter().copied().filter(|&b| b != 0).collect::<Vec<u8>>()).unwrap(),
            };
            let r = haquic_config_set_cc_algorithm(cfg, s.as_ptr());
            let known = ["cubic", "reno", "newreno", "bbr2", "bbr"].iter().any(|k| s.to_bytes().eq_ignore_ascii_case(k.as_bytes()));
            let allowed: &[haquic_result] = if cfg.is_null() {
                &[HAQUIC_ERR_NULL]
            } else if known {
                &[HAQUIC_OK]
            } else if std::str::from_utf8(s.to_bytes()).is_err() {
                &[HAQUIC_ERR_NOT_UTF8]
            } else {
                &[HAQUIC_ERR_UNKNOWN_CC_ALGORITHM]
            };
            expect_code("haquic_config_set_cc_algorithm", r, allowed);
        }
        Op::GetCc(c) => {
            let cfg = st.cfg(c);
            let p = haquic_config_get_cc_algorithm(cfg);
            if cfg.is_null() {
                assert!(p.is_null());
            } else {
                assert!(!p.is_null());
                // SAFETY: static NUL-terminated string.
                let s = unsafe { std::ffi::CStr::from_ptr(p) }.to_bytes();
                assert!([&b"cubic"[..], b"reno", b"bbr2"].contains(&s), "unknown canonical name");
            }
        }
        Op::SetCurves { c, curves } => {
            let cfg = st.cfg(c);
            let s = CString::new(curves.into_iter().filter(|&b| b != 0).collect::<Vec<u8>>()).unwrap();
            let r = haquic_config_set_curves(cfg, s.as_ptr());
            let allowed: &[haquic_result] =
                if cfg.is_null() { &[HAQUIC_ERR_NULL] } else { &[HAQUIC_OK, HAQUIC_ERR_INVALID_ARGUMENT, HAQUIC_ERR_NOT_UTF8] };
            expect_code("haquic_config_set_curves", r, allowed);
        }
        Op::SetSecret { c, secret, null } => {
            let cfg = st.cfg(c);
            let r = haquic_config_set_cluster_secret(cfg, if null { std::ptr::null() } else { secret.as_ptr() }, secret.len());
            let allowed: &[haquic_result] = if cfg.is_null() || null {
                &[HAQUIC_ERR_NULL]
            } else if (1..=1024).contains(&secret.len()) {
                &[HAQUIC_OK]
            } else {
                &[HAQUIC_ERR_OUT_OF_RANGE, HAQUIC_ERR_INVALID_ARGUMENT]
            };
            expect_code("haquic_config_set_cluster_secret", r, allowed);
        }
        Op::SetVerify { c, verify, ca_missing } => {
            let cfg = st.cfg(c);
            let ca = CString::new("/nonexistent/ca.pem").unwrap();
            let r = haquic_config_set_verify_peer(cfg, verify, if ca_missing { ca.as_ptr() } else { std::ptr::null() });
            let allowed: &[haquic_result] = if cfg.is_null() {
                &[HAQUIC_ERR_NULL]
            } else if ca_missing {
                &[HAQUIC_ERR_FILE_NOT_FOUND]
            } else {
                &[HAQUIC_OK]
            };
            expect_code("haquic_config_set_verify_peer", r, allowed);
        }
        Op::SetEarlyData { c, on } => {
            let cfg = st.cfg(c);
            let r = haquic_config_set_early_data(cfg, on);
            expect_code("haquic_config_set_early_data", r, if cfg.is_null() { &[HAQUIC_ERR_NULL] } else { &[HAQUIC_OK] });
        }
        Op::SetPacing { c, on } => {
            let cfg = st.cfg(c);
            let r = haquic_config_set_pacing(cfg, on);
            expect_code("haquic_config_set_pacing", r, if cfg.is_null() { &[HAQUIC_ERR_NULL] } else { &[HAQUIC_OK] });
        }
        Op::Subject { c, cap } => {
            let cfg = st.cfg(c);
            let mut buf = vec![0x5au8; cap as usize];
            let mut len = usize::MAX;
            let r = haquic_config_get_certificate_subject(cfg, buf.as_mut_ptr().cast(), buf.len(), &mut len);
            let allowed: &[haquic_result] = if cfg.is_null() {
                &[HAQUIC_ERR_NULL]
            } else {
                &[HAQUIC_OK, HAQUIC_ERR_BUFFER_TOO_SMALL, HAQUIC_ERR_INCOMPLETE_CONFIG]
            };
            expect_code("haquic_config_get_certificate_subject", r, allowed);
            if r != HAQUIC_OK {
                assert_eq!(len, usize::MAX);
                assert!(buf.iter().all(|&b| b == 0x5a));
            }
        }
        Op::Check(c) => {
            let cfg = st.cfg(c);
            let r = haquic_config_check(cfg);
            let allowed: &[haquic_result] = if cfg.is_null() {
                &[HAQUIC_ERR_NULL]
            } else {
                &[HAQUIC_OK, HAQUIC_ERR_INCOMPLETE_CONFIG, HAQUIC_ERR_TLS, HAQUIC_ERR_BAD_ALPN, HAQUIC_ERR_OUT_OF_RANGE]
            };
            expect_code("haquic_config_check", r, allowed);
        }
        Op::LastError(c) => {
            let cfg = st.cfg(c);
            let p = haquic_config_last_error(cfg);
            assert_eq!(p.is_null(), cfg.is_null());
            if !p.is_null() {
                // SAFETY: valid until the next call on the configuration.
                let _ = unsafe { std::ffi::CStr::from_ptr(p) }.to_bytes().len();
            }
        }
        Op::EngineNew { c, workers, queue, size, reserved, wake: with_wake, force_retry } => {
            let Some(slot) = st.engines.iter().position(|e| e.is_none()) else { return };
            let cfg = st.cfg(c);
            let mut o = Out::<haquic_engine_options>::new(std::mem::size_of::<haquic_engine_options>());
            assert_eq!(haquic_engine_options_init(o.ptr(), std::mem::size_of::<haquic_engine_options>()), HAQUIC_OK);
            // SAFETY: initialised above.
            let opts = unsafe { &mut *o.ptr() };
            opts.workers = (workers % 5) as u32; // 0 is out of range
            opts.dispatch_queue_capacity = if queue & 1 == 0 { opts.dispatch_queue_capacity } else { (queue >> 1) as u32 };
            opts.reserved = [reserved as u8, 0, 0];
            opts.force_retry = force_retry as u8;
            let declared = size_of_sel::<haquic_engine_options>(size, std::mem::size_of::<haquic_engine_options>());
            opts.struct_size = declared as u32;
            let (workers, qcap) = (opts.workers, opts.dispatch_queue_capacity);
            let mut out = std::ptr::null();
            let r = haquic_engine_new(cfg, o.ptr(), if with_wake { Some(wake) } else { None }, std::ptr::null_mut(), &mut out);
            let allowed: &[haquic_result] = if cfg.is_null() {
                &[HAQUIC_ERR_NULL]
            } else if declared != std::mem::size_of::<haquic_engine_options>() {
                &[HAQUIC_ERR_STRUCT_SIZE]
            } else if reserved {
                &[HAQUIC_ERR_INVALID_ARGUMENT]
            } else if !(1..=256).contains(&workers) || !(16..=1 << 20).contains(&qcap) {
                &[HAQUIC_ERR_OUT_OF_RANGE]
            } else {
                &[HAQUIC_OK]
            };
            expect_code("haquic_engine_new", r, allowed);
            if r == HAQUIC_OK {
                assert!(!out.is_null());
                assert_eq!(haquic_engine_worker_count(out), workers);
                let uid = st.next_uid;
                st.next_uid += 1;
                st.alive.push(uid);
                ensure_owned(out, workers);
                st.engines[slot] = Some(EngineSlot { h: Held { ptr: out, refs: 1 }, uid, workers });
            } else {
                assert!(out.is_null(), "engine written on error");
            }
        }
        Op::EngineRef(i) => {
            let i = pick(&st.engines, i);
            match st.engines[i].as_mut() {
                Some(e) if e.h.refs < 8 => {
                    assert_eq!(haquic_engine_ref(e.h.ptr), e.h.ptr);
                    e.h.refs += 1;
                }
                Some(_) => {}
                None => assert!(haquic_engine_ref(std::ptr::null()).is_null()),
            }
        }
        Op::EngineUnref(i) => {
            let i = pick(&st.engines, i);
            if st.engines[i].is_some() {
                st.engine_unref(i);
            } else {
                haquic_engine_unref(std::ptr::null());
            }
        }
        Op::EngineShutdown(i) => {
            let e = st.engine_ptr(i);
            let r = haquic_engine_shutdown(e);
            expect_code("haquic_engine_shutdown", r, if e.is_null() { &[HAQUIC_ERR_NULL] } else { &[HAQUIC_OK] });
        }
        Op::EngineStats { e, size } => {
            let e = st.engine_ptr(e);
            let min = std::mem::offset_of!(haquic_stats, conn_sockets_opened);
            let declared = size_of_sel::<haquic_stats>(size, min);
            let mut s = Out::<haquic_stats>::new(declared);
            let r = haquic_engine_stats(e, s.ptr());
            let allowed: &[haquic_result] = if e.is_null() {
                &[HAQUIC_ERR_NULL]
            } else if declared < min || declared > std::mem::size_of::<haquic_stats>() {
                &[HAQUIC_ERR_STRUCT_SIZE]
            } else {
                &[HAQUIC_OK]
            };
            expect_code("haquic_engine_stats", r, allowed);
            s.check(r == HAQUIC_OK, "haquic_engine_stats");
            if r == HAQUIC_OK && declared == std::mem::size_of::<haquic_stats>() {
                // SAFETY: written on success.
                let v = unsafe { &*s.ptr() };
                assert_eq!(v.conn_panics, 0, "a connection panicked inside its worker");
                assert!(v.conns_closed <= v.conns_accepted);
            }
        }
        Op::WorkerStats { e, w, size } => {
            let eng = st.engine(e).map(|x| (x.h.ptr, x.workers));
            let declared = size_of_sel::<haquic_stats>(size, std::mem::offset_of!(haquic_stats, conn_sockets_opened));
            let mut s = Out::<haquic_stats>::new(declared);
            let w = w as u32 % 6;
            let r = haquic_worker_stats(eng.map_or(std::ptr::null(), |x| x.0), w, s.ptr());
            let ok_size = (std::mem::offset_of!(haquic_stats, conn_sockets_opened)..=std::mem::size_of::<haquic_stats>()).contains(&declared);
            let allowed: &[haquic_result] = match eng {
                None => &[HAQUIC_ERR_NULL],
                Some((_, n)) if w >= n => &[HAQUIC_ERR_OUT_OF_RANGE],
                Some(_) if !ok_size => &[HAQUIC_ERR_STRUCT_SIZE],
                Some(_) => &[HAQUIC_OK],
            };
            expect_code("haquic_worker_stats", r, allowed);
            s.check(r == HAQUIC_OK, "haquic_worker_stats");
        }
        Op::WorkerCount(e) => {
            let eng = st.engine(e);
            let n = haquic_engine_worker_count(eng.map_or(std::ptr::null(), |x| x.h.ptr));
            assert_eq!(n, eng.map_or(0, |x| x.workers));
        }
        Op::ListenerNew { e, c, port, v6, bad_addr, flags } => {
            let Some(slot) = st.listeners.iter().position(|l| l.is_none()) else { return };
            let eng = st.engine(e).map(|x| (x.h.ptr, x.uid));
            let cfg = c.map_or(std::ptr::null(), |c| st.cfg(c));
            let flags = match flags % 6 {
                0 | 1 | 2 => HAQUIC_LISTENER_HOST_FED,
                3 => 0,
                4 => HAQUIC_LISTENER_HOST_FED | HAQUIC_LISTENER_CONN_SOCKETS,
                _ => 0x80,
            };
            let host_fed = flags & HAQUIC_LISTENER_HOST_FED != 0;
            // Engine-owned sockets only on the loopback, on a port the
            // kernel picks.
            let addr: SocketAddr = match (v6, host_fed) {
                (false, true) => SocketAddr::new([127, 0, 0, 1].into(), 4000 + port as u16),
                (true, true) => SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), 4000 + port as u16),
                (false, false) => "127.0.0.1:0".parse().unwrap(),
                (true, false) => "[::1]:0".parse().unwrap(),
            };
            let mut sa = sockaddr(addr);
            if bad_addr {
                sa.truncate(7);
            }
            let mut out = std::ptr::null();
            let r = haquic_listener_new(eng.map_or(std::ptr::null(), |x| x.0), cfg, sa.as_ptr().cast(), sa.len(), flags, &mut out);
            let allowed: &[haquic_result] = if eng.is_none() {
                &[HAQUIC_ERR_NULL]
            } else if bad_addr || flags == 0x80 || flags == HAQUIC_LISTENER_HOST_FED | HAQUIC_LISTENER_CONN_SOCKETS {
                &[HAQUIC_ERR_INVALID_ARGUMENT]
            } else {
                &[HAQUIC_OK, HAQUIC_ERR_INCOMPLETE_CONFIG, HAQUIC_ERR_BAD_ALPN, HAQUIC_ERR_OUT_OF_RANGE, HAQUIC_ERR_IO]
            };
            expect_code("haquic_listener_new", r, allowed);
            if r == HAQUIC_OK {
                let mut real = [0u8; 128];
                let mut len = 0;
                assert_eq!(haquic_listener_address(out, real.as_mut_ptr().cast(), real.len(), &mut len), HAQUIC_OK);
                let addr = haquic_fuzz::parse_sockaddr(&real[..len]);
                st.listeners[slot] = Some(ListenerSlot { h: Held { ptr: out, refs: 1 }, engine: eng.unwrap().1, addr, host_fed });
                // New sockets are adopted by the workers' next pass.
                if let Some(e) = st.engine(e) {
                    ensure_owned(e.h.ptr, e.workers);
                }
            } else {
                assert!(out.is_null(), "listener written on error");
            }
        }
        Op::ListenerRef(i) => {
            let i = pick(&st.listeners, i);
            match st.listeners[i].as_mut() {
                Some(l) if l.h.refs < 8 => {
                    assert_eq!(haquic_listener_ref(l.h.ptr), l.h.ptr);
                    l.h.refs += 1;
                }
                Some(_) => {}
                None => assert!(haquic_listener_ref(std::ptr::null()).is_null()),
            }
        }
        Op::ListenerUnref(i) => {
            let i = pick(&st.listeners, i);
            match st.listeners[i].as_mut() {
                Some(l) => {
                    haquic_listener_unref(l.h.ptr);
                    l.h.refs -= 1;
                    if l.h.refs == 0 {
                        st.listeners[i] = None;
                    }
                }
                None => haquic_listener_unref(std::ptr::null()),
            }
        }
        Op::ListenerClose(i) | Op::ListenerShutdown(i) => {
            let l = st.listeners[pick(&st.listeners, i)].as_ref().map_or(std::ptr::null(), |l| l.h.ptr);
            let r = if matches!(op, Op::ListenerClose(_)) { haquic_listener_close(l) } else { haquic_listener_shutdown(l) };
            expect_code("haquic_listener_close/shutdown", r, if l.is_null() { &[HAQUIC_ERR_NULL] } else { &[HAQUIC_OK] });
        }
        Op::ListenerAddress { l, cap } => {
            let l = st.listeners[pick(&st.listeners, l)].as_ref().map_or(std::ptr::null(), |l| l.h.ptr);
            let mut buf = vec![0x5au8; cap as usize % 64];
            let mut len = usize::MAX;
            let r = haquic_listener_address(l, buf.as_mut_ptr().cast(), buf.len(), &mut len);
            let allowed: &[haquic_result] = if l.is_null() { &[HAQUIC_ERR_NULL] } else { &[HAQUIC_OK, HAQUIC_ERR_BUFFER_TOO_SMALL] };
            expect_code("haquic_listener_address", r, allowed);
            if r != HAQUIC_OK {
                assert_eq!(len, usize::MAX);
            }
        }
        Op::ListenerFd { l, w } => {
            let ls = st.listeners[pick(&st.listeners, l)].as_ref();
            let (mut fd, mut generation) = (-7, 7u32);
            let r = haquic_listener_fd(ls.map_or(std::ptr::null(), |l| l.h.ptr), w as u32 % 6, &mut fd, &mut generation);
            let allowed: &[haquic_result] = match ls {
                None => &[HAQUIC_ERR_NULL],
                Some(l) if l.host_fed => &[HAQUIC_ERR_INVALID_STATE],
                Some(_) => &[HAQUIC_OK, HAQUIC_ERR_INVALID_STATE, HAQUIC_ERR_CLOSED],
            };
            expect_code("haquic_listener_fd", r, allowed);
            if r != HAQUIC_OK {
                assert_eq!((fd, generation), (-7, 7), "output written on error");
            }
        }
        Op::ListenerStats { l, size } => {
            let l = st.listeners[pick(&st.listeners, l)].as_ref().map_or(std::ptr::null(), |l| l.h.ptr);
            let min = std::mem::offset_of!(haquic_stats, conn_sockets_opened);
            let declared = size_of_sel::<haquic_stats>(size, min);
            let mut s = Out::<haquic_stats>::new(declared);
            let r = haquic_listener_stats(l, s.ptr());
            let allowed: &[haquic_result] = if l.is_null() {
                &[HAQUIC_ERR_NULL]
            } else if declared < min || declared > std::mem::size_of::<haquic_stats>() {
                &[HAQUIC_ERR_STRUCT_SIZE]
            } else {
                &[HAQUIC_OK]
            };
            expect_code("haquic_listener_stats", r, allowed);
            s.check(r == HAQUIC_OK, "haquic_listener_stats");
        }
        Op::Process { e, w } => {
            let eng = st.engine(e).map(|x| (x.h.ptr, x.workers));
            let w = w as u32 % 6;
            let r = haquic_worker_process(eng.map_or(std::ptr::null(), |x| x.0), w);
            let allowed: &[haquic_result] = match eng {
                None => &[HAQUIC_ERR_NULL],
                Some((_, n)) if w >= n => &[HAQUIC_ERR_OUT_OF_RANGE],
                Some(_) => &[HAQUIC_OK],
            };
            expect_code("haquic_worker_process", r, allowed);
        }
        Op::NextTimeout { e, w } => {
            let eng = st.engine(e).map(|x| (x.h.ptr, x.workers));
            let w = w as u32 % 6;
            let t = haquic_worker_next_timeout(eng.map_or(std::ptr::null(), |x| x.0), w);
            match eng {
                Some((_, n)) if w < n => assert!(t >= -1),
                _ => assert_eq!(t, -1),
            }
        }
        Op::Poll { e, w, keep, size, count } => {
            let eng = st.engine(e).map(|x| (x.h.ptr, x.workers, x.uid));
            let w = w as u32 % 6;
            for _ in 0..=count % 16 {
                let min = std::mem::offset_of!(haquic_event, fd);
                let declared = size_of_sel::<haquic_event>(size, min);
                let mut ev = Out::<haquic_event>::new(declared);
                let r = haquic_worker_poll(eng.map_or(std::ptr::null(), |x| x.0), w, ev.ptr());
                let ok_size = (min..=std::mem::size_of::<haquic_event>()).contains(&declared);
                let allowed: &[haquic_result] = match eng {
                    None => &[HAQUIC_ERR_NULL],
                    Some((_, n, _)) if w >= n => &[HAQUIC_ERR_OUT_OF_RANGE],
                    Some(_) if !ok_size => &[HAQUIC_ERR_STRUCT_SIZE],
                    Some(_) => &[HAQUIC_OK, HAQUIC_ERR_WOULD_BLOCK],
                };
                expect_code("haquic_worker_poll", r, allowed);
                ev.check(r == HAQUIC_OK, "haquic_worker_poll");
                if r != HAQUIC_OK {
                    break;
                }
                // SAFETY: written on success (the first `declared` bytes; the
                // fields read here are in every accepted layout).
                let evr = unsafe { &*ev.ptr() };
                let (_, _, uid) = eng.unwrap();
                check_event(evr, w);
                if keep {
                    if !evr.conn.is_null() {
                        st.put_conn(evr.conn, uid);
                    }
                    if !evr.stream.is_null() {
                        st.put_stream(evr.stream, uid);
                    }
                }
                if evr.kind == haquic_event_type::HAQUIC_EVENT_FD_RELEASE && declared == std::mem::size_of::<haquic_event>() {
                    let r = haquic_worker_fd_released(eng.unwrap().0, w, evr.fd, evr.fd_generation);
                    expect_code("haquic_worker_fd_released", r, &[HAQUIC_OK]);
                }
            }
        }
        Op::Shuttle { e, w, to, from, cap, rounds } => {
            // Moves datagrams from a worker of one engine to a listener
            // (usually of the other engine): a client and a server talking.
            let eng = st.engine(e).map(|x| (x.h.ptr, x.workers));
            let dst = st.listeners[pick(&st.listeners, to)].as_ref().map(|l| (l.h.ptr, l.engine));
            let src_addr = st.listeners[pick(&st.listeners, from)].as_ref().map(|l| l.addr);
            let w = w as u32 % 6;
            for _ in 0..=rounds % 32 {
                let cap = if cap % 4 == 0 { cap as usize % 64 } else { 65536 };
                let mut buf = vec![0x5au8; cap];
                let mut peer = [0x5au8; 128];
                let (mut len, mut plen) = (usize::MAX, usize::MAX);
                let r = haquic_worker_pop_datagram(
                    eng.map_or(std::ptr::null(), |x| x.0),
                    w,
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut len,
                    peer.as_mut_ptr().cast(),
                    peer.len(),
                    &mut plen,
                );
                let allowed: &[haquic_result] = match eng {
                    None => &[HAQUIC_ERR_NULL],
                    Some((_, n)) if w >= n => &[HAQUIC_ERR_OUT_OF_RANGE],
                    Some(_) => &[HAQUIC_OK, HAQUIC_ERR_WOULD_BLOCK, HAQUIC_ERR_BUFFER_TOO_SMALL],
                };
                expect_code("haquic_worker_pop_datagram", r, allowed);
                if r != HAQUIC_OK {
                    assert_eq!((len, plen), (usize::MAX, usize::MAX), "output written on error");
                    break;
                }
                let Some((l, leng)) = dst else { continue };
                let Some(owner) = st.engines.iter().flatten().find(|x| x.uid == leng).map(|x| (x.h.ptr, x.workers)) else {
                    continue;
                };
                let from = sockaddr(src_addr.unwrap_or_else(|| "127.0.0.9:9".parse().unwrap()));
                let r = haquic_listener_recv(owner.0, l, buf.as_ptr(), len, from.as_ptr().cast(), from.len());
                expect_code("haquic_listener_recv", r, &[HAQUIC_OK, HAQUIC_ERR_QUEUE_FULL, HAQUIC_ERR_PROTOCOL]);
                for w in 0..owner.1 {
                    expect_code("haquic_worker_process", haquic_worker_process(owner.0, w), &[HAQUIC_OK]);
                }
            }
        }
        Op::Inject { e, l, data, port } => {
            let eng = st.engine(e).map(|x| x.h.ptr);
            let lis = st.listeners[pick(&st.listeners, l)].as_ref().map(|l| l.h.ptr);
            let from = sockaddr(SocketAddr::new([127, 0, 0, 3].into(), 1000 + port as u16));
            let r = haquic_listener_recv(
                eng.unwrap_or(std::ptr::null()),
                lis.unwrap_or(std::ptr::null()),
                data.as_ptr(),
                data.len(),
                from.as_ptr().cast(),
                from.len(),
            );
            let allowed: &[haquic_result] =
                if eng.is_none() || lis.is_none() { &[HAQUIC_ERR_NULL] } else { &[HAQUIC_OK, HAQUIC_ERR_QUEUE_FULL, HAQUIC_ERR_PROTOCOL] };
            expect_code("haquic_listener_recv", r, allowed);
        }
        Op::Connect { e, w, l, peer, sni, session } => {
            let eng = st.engine(e).map(|x| (x.h.ptr, x.workers, x.uid));
            let lis = st.listeners[pick(&st.listeners, l)].as_ref().map(|l| l.h.ptr);
            let peer_addr = st.listeners[pick(&st.listeners, peer)].as_ref().map_or("127.0.0.1:4433".parse().unwrap(), |l| l.addr);
            let sa = sockaddr(peer_addr);
            let name = CString::new("haquic.test").unwrap();
            let garbage = [0x30u8, 0x03, 0x02, 0x01, 0x00];
            let sess: Option<Vec<u8>> = match session % 3 {
                0 => None,
                1 => st.session.clone(),
                _ => Some(garbage.to_vec()),
            };
            let w = w as u32 % 6;
            let mut out = std::ptr::null();
            let r = haquic_worker_connect_with_session(
                eng.map_or(std::ptr::null(), |x| x.0),
                w,
                lis.unwrap_or(std::ptr::null()),
                sa.as_ptr().cast(),
                sa.len(),
                if sni { name.as_ptr() } else { std::ptr::null() },
                sess.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
                sess.as_ref().map_or(0, |s| s.len()),
                &mut out,
            );
            let allowed: &[haquic_result] = match eng {
                None => &[HAQUIC_ERR_NULL],
                Some(_) if lis.is_none() => &[HAQUIC_ERR_NULL],
                Some((_, n, _)) if w >= n => &[HAQUIC_ERR_OUT_OF_RANGE],
                // A listener of another engine, an unparsable session, a
                // config quiche refuses, a full connection table.
                Some(_) => &[HAQUIC_OK, HAQUIC_ERR_INVALID_ARGUMENT, HAQUIC_ERR_TLS, HAQUIC_ERR_LIMIT, HAQUIC_ERR_IO, HAQUIC_ERR_PROTOCOL],
            };
            expect_code("haquic_worker_connect_with_session", r, allowed);
            if r == HAQUIC_OK {
                assert!(!out.is_null());
                let uid = eng.unwrap().2;
                // `out` is a new reference: the slot takes it over.
                match st.conns.iter_mut().find(|s| s.is_none()) {
                    Some(slot) => *slot = Some(ConnSlot { h: Held { ptr: out, refs: 1 }, engine: uid }),
                    None => haquic_conn_unref(out),
                }
            } else {
                assert!(out.is_null(), "connection written on error");
            }
        }
        Op::FdReady { e, w, fd, generation } | Op::FdReleased { e, w, fd, generation } => {
            let eng = st.engine(e).map(|x| (x.h.ptr, x.workers));
            let w = w as u32 % 6;
            let ready = matches!(op, Op::FdReady { .. });
            let ptr = eng.map_or(std::ptr::null(), |x| x.0);
            let r = if ready { haquic_worker_fd_ready(ptr, w, fd, generation) } else { haquic_worker_fd_released(ptr, w, fd, generation) };
            let allowed: &[haquic_result] = match eng {
                None => &[HAQUIC_ERR_NULL],
                Some((_, n)) if w >= n => &[HAQUIC_ERR_OUT_OF_RANGE],
                Some(_) if ready => &[HAQUIC_OK, HAQUIC_ERR_CLOSED],
                Some(_) => &[HAQUIC_ERR_INVALID_STATE],
            };
            expect_code("haquic_worker_fd_ready/released", r, allowed);
        }
        Op::ConnRef(i) => {
            let i = pick(&st.conns, i);
            match st.conns[i].as_mut() {
                Some(c) if c.h.refs < 8 => {
                    assert_eq!(haquic_conn_ref(c.h.ptr), c.h.ptr);
                    c.h.refs += 1;
                }
                Some(_) => {}
                None => assert!(haquic_conn_ref(std::ptr::null()).is_null()),
            }
        }
        Op::ConnUnref(i) => {
            let i = pick(&st.conns, i);
            match st.conns[i].as_mut() {
                Some(c) => {
                    haquic_conn_unref(c.h.ptr);
                    c.h.refs -= 1;
                    if c.h.refs == 0 {
                        st.conns[i] = None;
                    }
                }
                None => haquic_conn_unref(std::ptr::null()),
            }
        }
        Op::ConnQuery(i) => {
            let c = st.conns[pick(&st.conns, i)].as_ref().map(|c| (c.h.ptr, c.engine));
            let p = c.map_or(std::ptr::null(), |c| c.0);
            let closed = haquic_conn_is_closed(p);
            let w = haquic_conn_worker(p);
            let l = haquic_conn_listener(p);
            match c {
                None => {
                    assert!(closed && w == 0 && l.is_null());
                    assert!(haquic_conn_userdata(p).is_null());
                }
                Some((_, uid)) => {
                    assert!(!l.is_null(), "a connection without a listener");
                    if let Some(e) = st.engines.iter().flatten().find(|e| e.uid == uid) {
                        assert!(w < e.workers, "a connection on worker {w} of {}", e.workers);
                    }
                    if !st.alive(uid) {
                        assert!(closed, "a connection whose engine is gone does not read as closed");
                    }
                }
            }
        }
        Op::ConnUserdata { c, v } => {
            let p = st.conns[pick(&st.conns, c)].as_ref().map_or(std::ptr::null(), |c| c.h.ptr);
            let r = haquic_conn_set_userdata(p, v as *mut std::ffi::c_void);
            expect_code("haquic_conn_set_userdata", r, if p.is_null() { &[HAQUIC_ERR_NULL] } else { &[HAQUIC_OK] });
            if !p.is_null() {
                assert_eq!(haquic_conn_userdata(p) as usize, v);
            }
        }
        Op::ConnAddress { c, local, cap } => {
            let p = st.conns[pick(&st.conns, c)].as_ref().map_or(std::ptr::null(), |c| c.h.ptr);
            let mut buf = vec![0x5au8; cap as usize % 64];
            let mut len = usize::MAX;
            let r = if local {
                haquic_conn_local_address(p, buf.as_mut_ptr().cast(), buf.len(), &mut len)
            } else {
                haquic_conn_peer_address(p, buf.as_mut_ptr().cast(), buf.len(), &mut len)
            };
            let allowed: &[haquic_result] = if p.is_null() {
                &[HAQUIC_ERR_NULL]
            } else {
                &[HAQUIC_OK, HAQUIC_ERR_BUFFER_TOO_SMALL, HAQUIC_ERR_INVALID_STATE]
            };
            expect_code("haquic_conn_local/peer_address", r, allowed);
            if r != HAQUIC_OK {
                assert_eq!(len, usize::MAX);
            }
        }
        Op::ConnShutdown(i) => {
            let c = st.conns[pick(&st.conns, i)].as_ref().map(|c| (c.h.ptr, c.engine));
            let r = haquic_conn_shutdown(c.map_or(std::ptr::null(), |c| c.0));
            st.conn_action(c.map(|c| c.1), "haquic_conn_shutdown", r, &[HAQUIC_OK, HAQUIC_ERR_CLOSED]);
        }
        Op::ConnClose { c, code, reason } => {
            let c = st.conns[pick(&st.conns, c)].as_ref().map(|c| (c.h.ptr, c.engine));
            let r = haquic_conn_close(c.map_or(std::ptr::null(), |c| c.0), code, reason.as_ptr(), reason.len());
            st.conn_action(c.map(|c| c.1), "haquic_conn_close", r, &[HAQUIC_OK, HAQUIC_ERR_CLOSED, HAQUIC_ERR_PROTOCOL]);
        }
        Op::SendRequest { c, headers: sel, fin } => {
            let c = st.conns[pick(&st.conns, c)].as_ref().map(|c| (c.h.ptr, c.engine));
            let hs = headers(sel);
            let mut out = std::ptr::null();
            let r = haquic_conn_send_request(c.map_or(std::ptr::null(), |c| c.0), hs.as_ptr(), hs.len(), fin, &mut out);
            st.conn_action(
                c.map(|c| c.1),
                "haquic_conn_send_request",
                r,
                &[HAQUIC_OK, HAQUIC_ERR_CLOSED, HAQUIC_ERR_WOULD_BLOCK, HAQUIC_ERR_INVALID_STATE, HAQUIC_ERR_PROTOCOL],
            );
            if r == HAQUIC_OK {
                assert!(!out.is_null());
                let uid = c.unwrap().1;
                match st.streams.iter_mut().find(|s| s.is_none()) {
                    Some(slot) => *slot = Some(StreamSlot { h: Held { ptr: out, refs: 1 }, engine: uid }),
                    None => haquic_stream_unref(out),
                }
            } else {
                assert!(out.is_null(), "stream written on error");
            }
        }
        Op::ConnStats { c, size } => {
            let p = st.conns[pick(&st.conns, c)].as_ref().map_or(std::ptr::null(), |c| c.h.ptr);
            let full = std::mem::size_of::<haquic_conn_stats>();
            let declared = size_of_sel::<haquic_conn_stats>(size, full);
            let mut s = Out::<haquic_conn_stats>::new(declared);
            let r = haquic_conn_get_stats(p, s.ptr());
            let allowed: &[haquic_result] = if p.is_null() {
                &[HAQUIC_ERR_NULL]
            } else if declared != full {
                &[HAQUIC_ERR_STRUCT_SIZE]
            } else {
                &[HAQUIC_OK]
            };
            expect_code("haquic_conn_get_stats", r, allowed);
            s.check(r == HAQUIC_OK, "haquic_conn_get_stats");
        }
        Op::ConnSession { c, cap } => {
            let p = st.conns[pick(&st.conns, c)].as_ref().map_or(std::ptr::null(), |c| c.h.ptr);
            let mut buf = vec![0x5au8; cap as usize];
            let mut len = usize::MAX;
            let r = haquic_conn_get_session(p, buf.as_mut_ptr(), buf.len(), &mut len);
            let allowed: &[haquic_result] = if p.is_null() {
                &[HAQUIC_ERR_NULL]
            } else {
                &[HAQUIC_OK, HAQUIC_ERR_WOULD_BLOCK, HAQUIC_ERR_BUFFER_TOO_SMALL]
            };
            expect_code("haquic_conn_get_session", r, allowed);
            if r == HAQUIC_OK {
                st.session = Some(buf[..len].to_vec());
            } else {
                assert_eq!(len, usize::MAX);
                assert!(buf.iter().all(|&b| b == 0x5a));
            }
        }
        Op::StreamRef(i) => {
            let i = pick(&st.streams, i);
            match st.streams[i].as_mut() {
                Some(s) if s.h.refs < 8 => {
                    assert_eq!(haquic_stream_ref(s.h.ptr), s.h.ptr);
                    s.h.refs += 1;
                }
                Some(_) => {}
                None => assert!(haquic_stream_ref(std::ptr::null()).is_null()),
            }
        }
        Op::StreamUnref(i) => {
            let i = pick(&st.streams, i);
            match st.streams[i].as_mut() {
                Some(s) => {
                    haquic_stream_unref(s.h.ptr);
                    s.h.refs -= 1;
                    if s.h.refs == 0 {
                        st.streams[i] = None;
                    }
                }
                None => haquic_stream_unref(std::ptr::null()),
            }
        }
        Op::StreamQuery(i) => {
            let s = st.streams[pick(&st.streams, i)].as_ref().map(|s| (s.h.ptr, s.engine));
            let p = s.map_or(std::ptr::null(), |s| s.0);
            let closed = haquic_stream_is_closed(p);
            let id = haquic_stream_id(p);
            let conn = haquic_stream_conn(p);
            match s {
                None => assert!(closed && id == 0 && conn.is_null() && haquic_stream_userdata(p).is_null()),
                Some((_, uid)) => {
                    assert!(!conn.is_null(), "a stream without its connection");
                    assert!(id % 4 == 0, "stream id {id} is not a client-initiated bidirectional stream");
                    if !st.alive(uid) {
                        assert!(closed, "a stream whose engine is gone does not read as closed");
                    }
                    if haquic_conn_is_closed(conn) {
                        assert!(closed, "a stream of a closed connection does not read as closed");
                    }
                }
            }
        }
        Op::StreamUserdata { s, v } => {
            let p = st.streams[pick(&st.streams, s)].as_ref().map_or(std::ptr::null(), |s| s.h.ptr);
            let r = haquic_stream_set_userdata(p, v as *mut std::ffi::c_void);
            expect_code("haquic_stream_set_userdata", r, if p.is_null() { &[HAQUIC_ERR_NULL] } else { &[HAQUIC_OK] });
            if !p.is_null() {
                assert_eq!(haquic_stream_userdata(p) as usize, v);
            }
        }
        Op::StreamRecv { s, cap } => {
            let s = st.streams[pick(&st.streams, s)].as_ref().map(|s| (s.h.ptr, s.engine));
            let mut buf = vec![0x5au8; cap as usize % 8192];
            let (mut len, mut fin) = (usize::MAX, false);
            let r = haquic_stream_recv(s.map_or(std::ptr::null(), |s| s.0), buf.as_mut_ptr(), buf.len(), &mut len, &mut fin);
            st.conn_action(
                s.map(|s| s.1),
                "haquic_stream_recv",
                r,
                &[HAQUIC_OK, HAQUIC_ERR_WOULD_BLOCK, HAQUIC_ERR_CLOSED, HAQUIC_ERR_PROTOCOL],
            );
            if r == HAQUIC_OK {
                assert!(len <= buf.len());
            } else {
                assert_eq!(len, usize::MAX);
            }
        }
        Op::StreamSendHeaders { s, headers: sel, fin } => {
            let s = st.streams[pick(&st.streams, s)].as_ref().map(|s| (s.h.ptr, s.engine));
            let hs = headers(sel);
            let r = haquic_stream_send_headers(s.map_or(std::ptr::null(), |s| s.0), hs.as_ptr(), hs.len(), fin);
            st.conn_action(
                s.map(|s| s.1),
                "haquic_stream_send_headers",
                r,
                &[HAQUIC_OK, HAQUIC_ERR_WOULD_BLOCK, HAQUIC_ERR_CLOSED, HAQUIC_ERR_INVALID_STATE, HAQUIC_ERR_PROTOCOL],
            );
        }
        Op::StreamSend { s, len, fin, null } => {
            let s = st.streams[pick(&st.streams, s)].as_ref().map(|s| (s.h.ptr, s.engine));
            let data = vec![0x42u8; len as usize % 20000];
            let mut written = usize::MAX;
            let ptr = if null { std::ptr::null() } else { data.as_ptr() };
            let r = haquic_stream_send(s.map_or(std::ptr::null(), |s| s.0), ptr, data.len(), fin, &mut written);
            if null && !data.is_empty() && s.is_some() {
                expect_code("haquic_stream_send (NULL data)", r, &[HAQUIC_ERR_NULL]);
            } else {
                st.conn_action(
                    s.map(|s| s.1),
                    "haquic_stream_send",
                    r,
                    &[HAQUIC_OK, HAQUIC_ERR_WOULD_BLOCK, HAQUIC_ERR_CLOSED, HAQUIC_ERR_INVALID_STATE, HAQUIC_ERR_PROTOCOL],
                );
            }
            if r == HAQUIC_OK {
                assert!(written <= data.len());
            } else {
                assert_eq!(written, usize::MAX);
            }
        }
        Op::StreamTrailers { s, headers: sel } => {
            let s = st.streams[pick(&st.streams, s)].as_ref().map(|s| (s.h.ptr, s.engine));
            let hs = headers(sel);
            let r = haquic_stream_send_trailers(s.map_or(std::ptr::null(), |s| s.0), hs.as_ptr(), hs.len());
            st.conn_action(
                s.map(|s| s.1),
                "haquic_stream_send_trailers",
                r,
                &[
                    HAQUIC_OK,
                    HAQUIC_ERR_WOULD_BLOCK,
                    HAQUIC_ERR_CLOSED,
                    HAQUIC_ERR_INVALID_STATE,
                    HAQUIC_ERR_INVALID_ARGUMENT,
                    HAQUIC_ERR_PROTOCOL,
                ],
            );
        }
        Op::StreamReset { s, code } | Op::StreamStop { s, code } => {
            let reset = matches!(op, Op::StreamReset { .. });
            let s = st.streams[pick(&st.streams, s)].as_ref().map(|s| (s.h.ptr, s.engine));
            let p = s.map_or(std::ptr::null(), |s| s.0);
            let r = if reset { haquic_stream_reset(p, code) } else { haquic_stream_stop_sending(p, code) };
            st.conn_action(s.map(|s| s.1), "haquic_stream_reset/stop_sending", r, &[HAQUIC_OK, HAQUIC_ERR_CLOSED]);
        }
        Op::OtherThread { what, slot } => other_thread(st, what, slot),
        Op::Pair { two_workers, retry, request } => pair(st, two_workers, retry, request),
        Op::Pump { rounds } => {
            for _ in 0..=rounds % 8 {
                pump(st);
            }
        }
        Op::Strerror(code) => {
            let p = haquic_strerror(code);
            assert!(!p.is_null(), "haquic_strerror returned NULL");
            // SAFETY: static string.
            let s = unsafe { std::ffi::CStr::from_ptr(p) };
            assert!(!s.to_bytes().is_empty());
        }
        Op::Versions => {
            assert_eq!(haquic_version(), HAQUIC_VERSION_NUMBER);
            assert!(!haquic_version_string().is_null());
            assert!(!haquic_build_info().is_null());
        }
    }
}

fn pair(st: &mut State, two_workers: bool, retry: bool, request: bool) {
    let free = |n: usize, it: &mut dyn Iterator<Item = bool>| it.filter(|f| *f).count() >= n;
    if !free(2, &mut st.cfgs.iter().map(|c| c.is_none()))
        || !free(2, &mut st.engines.iter().map(|e| e.is_none()))
        || !free(2, &mut st.listeners.iter().map(|l| l.is_none()))
        || !free(1, &mut st.conns.iter().map(|c| c.is_none()))
    {
        return;
    }
    let scfg = haquic_config_new();
    let (cert, key) = (cert_pem(), key_pem());
    assert_eq!(haquic_config_load_cert_chain_and_key_pem(scfg, cert.as_ptr(), cert.len(), key.as_ptr(), key.len()), HAQUIC_OK);
    let ccfg = haquic_config_new();
    assert_eq!(haquic_config_set_verify_peer(ccfg, false, std::ptr::null()), HAQUIC_OK);
    let slot = st.cfgs.iter().position(|c| c.is_none()).unwrap();
    st.cfgs[slot] = Some(Held { ptr: scfg, refs: 1 });
    let slot = st.cfgs.iter().position(|c| c.is_none()).unwrap();
    st.cfgs[slot] = Some(Held { ptr: ccfg, refs: 1 });
    let mut engines = Vec::new();
    for (cfg, workers, force_retry) in [(scfg, if two_workers { 2 } else { 1 }, retry), (ccfg, 1, false)] {
        let mut o = std::mem::MaybeUninit::<haquic_engine_options>::zeroed();
        assert_eq!(haquic_engine_options_init(o.as_mut_ptr(), std::mem::size_of::<haquic_engine_options>()), HAQUIC_OK);
        // SAFETY: initialised above.
        let mut o = unsafe { o.assume_init() };
        o.workers = workers;
        o.force_retry = force_retry as u8;
        let mut e = std::ptr::null();
        assert_eq!(haquic_engine_new(cfg, &o, Some(wake), std::ptr::null_mut(), &mut e), HAQUIC_OK);
        ensure_owned(e, workers);
        let uid = st.next_uid;
        st.next_uid += 1;
        st.alive.push(uid);
        let slot = st.engines.iter().position(|e| e.is_none()).unwrap();
        st.engines[slot] = Some(EngineSlot { h: Held { ptr: e, refs: 1 }, uid, workers });
        engines.push((e, uid));
    }
    let saddr: SocketAddr = "127.0.0.1:4433".parse().unwrap();
    let caddr: SocketAddr = "127.0.0.2:50000".parse().unwrap();
    let mut lis = Vec::new();
    for ((e, uid), addr) in engines.iter().zip([saddr, caddr]) {
        let sa = sockaddr(addr);
        let mut l = std::ptr::null();
        // The client's listener needs no certificate: give it the server's
        // configuration (as c-tests/pair.c does).
        assert_eq!(haquic_listener_new(*e, scfg, sa.as_ptr().cast(), sa.len(), HAQUIC_LISTENER_HOST_FED, &mut l), HAQUIC_OK);
        let slot = st.listeners.iter().position(|l| l.is_none()).unwrap();
        st.listeners[slot] = Some(ListenerSlot { h: Held { ptr: l, refs: 1 }, engine: *uid, addr, host_fed: true });
        lis.push(l);
    }
    let sa = sockaddr(saddr);
    let name = CString::new("haquic.test").unwrap();
    let mut conn = std::ptr::null();
    let r = haquic_worker_connect(engines[1].0, 0, lis[1], sa.as_ptr().cast(), sa.len(), name.as_ptr(), &mut conn);
    assert_eq!(r, HAQUIC_OK, "haquic_worker_connect");
    let slot = st.conns.iter().position(|c| c.is_none()).unwrap();
    st.conns[slot] = Some(ConnSlot { h: Held { ptr: conn, refs: 1 }, engine: engines[1].1 });
    // The handshake, then (with `request`) a GET whose stream both sides
    // keep, so that the operations on streams have live ones to act on.
    for _ in 0..6 {
        pump(st);
    }
    if request {
        let hs = headers(0);
        let mut out = std::ptr::null();
        let r = haquic_conn_send_request(conn, hs.as_ptr(), hs.len(), true, &mut out);
        expect_code("haquic_conn_send_request", r, &[HAQUIC_OK, HAQUIC_ERR_WOULD_BLOCK]);
        if r == HAQUIC_OK {
            match st.streams.iter_mut().find(|s| s.is_none()) {
                Some(slot) => *slot = Some(StreamSlot { h: Held { ptr: out, refs: 1 }, engine: engines[1].1 }),
                None => haquic_stream_unref(out),
            }
        }
        for _ in 0..2 {
            pump(st);
        }
        // The server answers with a head but no FIN: both directions of
        // the stream stay open for the operations that follow.
        let server_uid = engines[0].1;
        if let Some(s) = st.streams.iter().flatten().find(|s| s.engine == server_uid).map(|s| s.h.ptr) {
            let hs = headers(7);
            let r = haquic_stream_send_headers(s, hs.as_ptr(), hs.len(), false);
            expect_code("haquic_stream_send_headers", r, &[HAQUIC_OK, HAQUIC_ERR_WOULD_BLOCK]);
            for _ in 0..2 {
                pump(st);
            }
        }
    }
}

fn pump(st: &mut State) {
    let engines: Vec<(*const haquic_engine, u32, u64)> = st.engines.iter().flatten().map(|e| (e.h.ptr, e.workers, e.uid)).collect();
    let mut buf = vec![0u8; 65536];
    for &(e, workers, uid) in &engines {
        let src = st.listeners.iter().flatten().find(|l| l.engine == uid).map_or("127.0.0.9:9".parse().unwrap(), |l| l.addr);
        for w in 0..workers {
            for _ in 0..1000 {
                let mut peer = [0u8; 128];
                let (mut len, mut plen) = (0, 0);
                let r = haquic_worker_pop_datagram(e, w, buf.as_mut_ptr(), buf.len(), &mut len, peer.as_mut_ptr().cast(), peer.len(), &mut plen);
                expect_code("haquic_worker_pop_datagram", r, &[HAQUIC_OK, HAQUIC_ERR_WOULD_BLOCK]);
                if r != HAQUIC_OK {
                    break;
                }
                let to = haquic_fuzz::parse_sockaddr(&peer[..plen]);
                let Some(l) = st.listeners.iter().flatten().find(|l| l.host_fed && l.addr == to) else { continue };
                let Some(owner) = engines.iter().find(|x| x.2 == l.engine) else { continue };
                let from = sockaddr(src);
                let r = haquic_listener_recv(owner.0, l.h.ptr, buf.as_ptr(), len, from.as_ptr().cast(), from.len());
                expect_code("haquic_listener_recv", r, &[HAQUIC_OK, HAQUIC_ERR_QUEUE_FULL, HAQUIC_ERR_PROTOCOL]);
            }
        }
    }
    for &(e, workers, uid) in &engines {
        for w in 0..workers {
            expect_code("haquic_worker_process", haquic_worker_process(e, w), &[HAQUIC_OK]);
            for _ in 0..1000 {
                let mut ev = std::mem::MaybeUninit::<haquic_event>::zeroed();
                assert_eq!(haquic_event_init(ev.as_mut_ptr(), std::mem::size_of::<haquic_event>()), HAQUIC_OK);
                let r = haquic_worker_poll(e, w, ev.as_mut_ptr());
                expect_code("haquic_worker_poll", r, &[HAQUIC_OK, HAQUIC_ERR_WOULD_BLOCK]);
                if r != HAQUIC_OK {
                    break;
                }
                // SAFETY: written on success.
                let ev = unsafe { ev.assume_init() };
                check_event(&ev, w);
                use haquic_event_type::*;
                match ev.kind {
                    HAQUIC_EVENT_CONN_ESTABLISHED => {
                        if !st.conns.iter().flatten().any(|c| c.h.ptr == ev.conn) {
                            st.put_conn(ev.conn, uid);
                        }
                    }
                    HAQUIC_EVENT_REQUEST | HAQUIC_EVENT_RESPONSE => {
                        if !st.streams.iter().flatten().any(|s| s.h.ptr == ev.stream) {
                            st.put_stream(ev.stream, uid);
                        }
                    }
                    HAQUIC_EVENT_FD_RELEASE => {
                        expect_code("haquic_worker_fd_released", haquic_worker_fd_released(e, w, ev.fd, ev.fd_generation), &[HAQUIC_OK]);
                    }
                    _ => {}
                }
            }
        }
    }
}

fn check_event(ev: &haquic_event, w: u32) {
    use haquic_event_type::*;
    EVENTS[(ev.kind as usize).min(13)].fetch_add(1, Ordering::Relaxed);
    match ev.kind {
        HAQUIC_EVENT_NONE => panic!("an event of kind NONE"),
        HAQUIC_EVENT_REQUEST | HAQUIC_EVENT_RESPONSE | HAQUIC_EVENT_TRAILERS => {
            assert!(!ev.stream.is_null() && !ev.conn.is_null());
            assert!(ev.headers_len == 0 || !ev.headers.is_null());
        }
        HAQUIC_EVENT_STREAM_READABLE
        | HAQUIC_EVENT_STREAM_WRITABLE
        | HAQUIC_EVENT_STREAM_FINISHED
        | HAQUIC_EVENT_STREAM_RESET
        | HAQUIC_EVENT_STOP_SENDING => assert!(!ev.stream.is_null() && !ev.conn.is_null()),
        HAQUIC_EVENT_CONN_ESTABLISHED | HAQUIC_EVENT_GOAWAY => assert!(!ev.conn.is_null()),
        HAQUIC_EVENT_CONN_CLOSED => {
            assert!(!ev.conn.is_null());
            assert!(haquic_conn_is_closed(ev.conn), "CONN_CLOSED for a connection that is not closed");
        }
        HAQUIC_EVENT_FD_REGISTER | HAQUIC_EVENT_FD_RELEASE => {}
    }
    if !ev.conn.is_null() {
        assert_eq!(haquic_conn_worker(ev.conn), w, "an event of a connection another worker owns");
    }
    if !ev.stream.is_null() {
        assert_eq!(haquic_stream_conn(ev.stream), ev.conn, "an event whose stream belongs to another connection");
    }
}

/// A call from a thread that does not own the worker: the owner checks say
/// HAQUIC_ERR_WRONG_THREAD; queries and refcounts work from any thread.
fn other_thread(st: &State, what: u8, slot: u8) {
    struct P(usize, Option<u64>, bool);
    let (p, engine, alive) = match what % 5 {
        0 | 1 => {
            let e = st.engine(slot);
            (e.map_or(0, |e| e.h.ptr as usize), e.map(|e| e.uid), true)
        }
        2 | 3 => {
            let c = st.conns[pick(&st.conns, slot)].as_ref();
            (c.map_or(0, |c| c.h.ptr as usize), c.map(|c| c.engine), c.is_some_and(|c| st.alive(c.engine)))
        }
        _ => {
            let s = st.streams[pick(&st.streams, slot)].as_ref();
            (s.map_or(0, |s| s.h.ptr as usize), s.map(|s| s.engine), s.is_some_and(|s| st.alive(s.engine)))
        }
    };
    let arg = P(p, engine, alive);
    let what = what % 5;
    std::thread::scope(|sc| {
        sc.spawn(move || {
            let P(p, engine, alive) = arg;
            let r = match what {
                0 => haquic_worker_process(p as *const haquic_engine, 0),
                1 => {
                    // Statistics and refcounts: any thread.
                    let e = p as *const haquic_engine;
                    if !e.is_null() {
                        haquic_engine_ref(e);
                        haquic_engine_unref(e);
                    }
                    let mut s = std::mem::MaybeUninit::<haquic_stats>::zeroed();
                    haquic_stats_init(s.as_mut_ptr(), std::mem::size_of::<haquic_stats>());
                    let r = haquic_engine_stats(e, s.as_mut_ptr());
                    expect_code("haquic_engine_stats (other thread)", r, if e.is_null() { &[HAQUIC_ERR_NULL] } else { &[HAQUIC_OK] });
                    return;
                }
                2 => haquic_conn_shutdown(p as *const haquic_conn),
                3 => {
                    let c = p as *const haquic_conn;
                    let _ = haquic_conn_is_closed(c);
                    let _ = haquic_conn_worker(c);
                    return;
                }
                _ => haquic_stream_reset(p as *const haquic_stream, 0x10c),
            };
            let allowed: &[haquic_result] = match engine {
                None => &[HAQUIC_ERR_NULL],
                Some(_) if !alive => &[HAQUIC_ERR_CLOSED],
                Some(_) => &[HAQUIC_ERR_WRONG_THREAD],
            };
            expect_code("a call from another thread", r, allowed);
        });
    });
}
