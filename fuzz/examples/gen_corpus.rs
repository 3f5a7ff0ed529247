//! Writes the seed corpora of the fuzz targets (`make fuzz-corpus`):
//!
//!   gen_corpus <dir>   writes <dir>/datagram_intake/* and <dir>/h3_headers/*
//!
//! datagram_intake: the datagrams of a real handshake and request between the
//! harness's quiche client and a haquic server (quiche's fuzzing mode, as
//! the target is built), as raw replays, replays aimed at the live
//! connection, and the client's 1-RTT frames (its control and QPACK
//! streams, a request) as INJECT operations; plus live sessions that
//! exercise Retry, two workers, a small dispatch queue, migration, GOAWAY,
//! resets and closes. h3_headers: valid and malformed header sections.
//!
//! The input formats are described in the targets and fuzz/README.md.

use haquic_fuzz::*;
use std::path::Path;

fn put(dir: &Path, name: &str, data: &[u8]) {
    std::fs::write(dir.join(name), data).unwrap();
}

/// Operation encodings of datagram_intake.
fn raw(out: &mut Vec<u8>, d: &[u8]) {
    out.push(0);
    out.extend_from_slice(&(d.len() as u16).to_be_bytes());
    out.extend_from_slice(d);
}
fn patched(out: &mut Vec<u8>, d: &[u8]) {
    out.push(1);
    out.extend_from_slice(&(d.len() as u16).to_be_bytes());
    out.extend_from_slice(d);
}
fn pump(out: &mut Vec<u8>, rounds: u8) {
    out.push(2 | ((rounds - 1) << 3));
}
fn handshake(out: &mut Vec<u8>) {
    pump(out, 4);
    pump(out, 4);
}
fn fault(out: &mut Vec<u8>, kind: u8, pos: u16, xor: u8) {
    out.push(3);
    out.push(kind);
    out.extend_from_slice(&pos.to_be_bytes());
    out.push(xor);
}
fn inject(out: &mut Vec<u8>, frames: &[u8]) {
    out.push(4);
    out.extend_from_slice(&(frames.len() as u16).to_be_bytes());
    out.extend_from_slice(frames);
}
fn stream(out: &mut Vec<u8>, sel: u8, fin: bool, bytes: &[u8]) {
    out.push(5 | if fin { 8 } else { 0 });
    out.push(sel);
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}
fn request(out: &mut Vec<u8>, fields: &[(&[u8], &[u8])], body: Option<&[u8]>) {
    let mut f = vec![fields.len() as u8];
    write_fields(&mut f, fields);
    if let Some(b) = body {
        f.extend_from_slice(b);
    }
    out.push(6 | if body.is_some() { 8 } else { 0 });
    out.extend_from_slice(&(f.len() as u16).to_be_bytes());
    out.extend_from_slice(&f);
}
fn ctrl(out: &mut Vec<u8>, what: u8, arg: u8) {
    out.push(7);
    out.push(what);
    out.push(arg);
}

const GET: &[(&[u8], &[u8])] =
    &[(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"haquic.test"), (b":path", b"/")];
const POST: &[(&[u8], &[u8])] = &[
    (b":method", b"POST"),
    (b":scheme", b"https"),
    (b":authority", b"haquic.test"),
    (b":path", b"/upload"),
    (b"content-length", b"5"),
    (b"cookie", b"a=1"),
    (b"cookie", b"b=2"),
];

/// A real session: handshake, the client's HTTP/3 streams, a GET and a
/// POST. Returns every datagram the client sent.
fn record() -> Vec<Vec<u8>> {
    let mut s = Session::new(ServerOptions::default());
    s.record = Some(Vec::new());
    s.client();
    for _ in 0..10 {
        s.pump();
    }
    assert!(s.client.as_ref().unwrap().conn.is_established(), "no handshake");
    let c = s.client.as_mut().unwrap();
    let f = |l: &[(&[u8], &[u8])]| l.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect::<Vec<_>>();
    c.request(&f(GET), None, None).expect("GET");
    c.request(&f(POST), Some(b"hello"), None).expect("POST");
    for _ in 0..6 {
        s.pump();
    }
    assert!(s.server.log.values().filter(|l| !l.requests.is_empty()).count() == 2, "the requests did not arrive: {:?}", s.server.log);
    s.record.take().unwrap()
}

/// The frames of a short-header datagram in quiche's fuzzing mode (no
/// header protection, a 16-byte tag that is not checked).
fn frames_of(d: &[u8]) -> Option<Vec<u8>> {
    if d.first()? & 0x80 != 0 {
        return None;
    }
    let pn_len = (d[0] & 3) as usize + 1;
    let start = 1 + 16 + pn_len;
    let end = d.len().checked_sub(16)?;
    (start < end).then(|| d[start..end].to_vec())
}

fn datagram_intake(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let dgrams = record();
    let initial = &dgrams[0];

    // Raw replays of the client's datagrams: the Initial starts a handshake
    // (its CRYPTO frames are a real ClientHello); the rest arrive for a
    // connection ID that is not this server's, or, patched, for the live one.
    let mut v = vec![0u8];
    for d in dgrams.iter().take(12) {
        raw(&mut v, d);
    }
    put(dir, "replay-raw", &v);
    let mut v = vec![0u8];
    raw(&mut v, initial);
    for d in dgrams.iter().skip(1).take(12) {
        patched(&mut v, d);
    }
    put(dir, "replay-patched", &v);
    let mut v = vec![0u8];
    raw(&mut v, initial);
    put(dir, "initial", &v);
    let mut v = vec![1u8];
    raw(&mut v, initial);
    raw(&mut v, initial);
    put(dir, "initial-twice-2workers", &v);
    let mut v = vec![2u8]; // force_retry
    raw(&mut v, initial);
    put(dir, "initial-retry", &v);
    // Another version: version negotiation.
    let mut other = initial.clone();
    other[1..5].copy_from_slice(&0x1a2a_3a4au32.to_be_bytes());
    let mut v = vec![0u8];
    raw(&mut v, &other);
    put(dir, "version-negotiation", &v);
    // Short header with an unknown ID from another port.
    let mut v = vec![0u8];
    let short = dgrams.iter().find(|d| d[0] & 0x80 == 0).expect("a 1-RTT datagram");
    v.push(0x80 | (3 << 3)); // RAW from another address
    v.extend_from_slice(&(short.len() as u16).to_be_bytes());
    v.extend_from_slice(short);
    put(dir, "short-unknown-cid", &v);

    // The client's 1-RTT frames, injected into a live connection.
    let mut n = 0;
    for d in &dgrams {
        let Some(frames) = frames_of(d) else { continue };
        if frames.iter().all(|&b| b == 0) {
            continue;
        }
        let mut v = vec![0u8];
        handshake(&mut v);
        inject(&mut v, &frames);
        pump(&mut v, 2);
        put(dir, &format!("inject-{n:02}"), &v);
        n += 1;
        if n >= 12 {
            break;
        }
    }

    // Live sessions.
    let mut v = vec![0u8];
    handshake(&mut v);
    request(&mut v, GET, None);
    pump(&mut v, 3);
    put(dir, "live-get", &v);
    let mut v = vec![1u8];
    handshake(&mut v);
    request(&mut v, POST, Some(b"hello"));
    pump(&mut v, 3);
    put(dir, "live-post-2workers", &v);
    let mut v = vec![2u8];
    handshake(&mut v);
    request(&mut v, GET, None);
    pump(&mut v, 3);
    put(dir, "live-retry", &v);
    let mut v = vec![4u8];
    handshake(&mut v);
    for _ in 0..4 {
        request(&mut v, GET, None);
    }
    pump(&mut v, 3);
    put(dir, "live-small-queue", &v);
    let mut v = vec![0u8];
    handshake(&mut v);
    request(&mut v, GET, None);
    ctrl(&mut v, 3, 0); // rebinding
    request(&mut v, GET, None);
    pump(&mut v, 4);
    put(dir, "live-rebind", &v);
    let mut v = vec![0u8];
    handshake(&mut v);
    request(&mut v, GET, None);
    ctrl(&mut v, 4, 0); // engine shutdown: GOAWAY
    request(&mut v, GET, None);
    pump(&mut v, 4);
    put(dir, "live-goaway", &v);
    let mut v = vec![0u8];
    handshake(&mut v);
    // STOP_SENDING and RESET_STREAM as the first frames of new streams.
    ctrl(&mut v, 1, 8);
    ctrl(&mut v, 0, 10);
    pump(&mut v, 2);
    put(dir, "live-abort-first", &v);
    let mut v = vec![0u8];
    handshake(&mut v);
    request(&mut v, &POST[..4], None);
    request(&mut v, POST, None); // content-length without a body
    pump(&mut v, 2);
    ctrl(&mut v, 9, 0); // the host stops the stream
    ctrl(&mut v, 7, 0); // and closes the connection
    pump(&mut v, 3);
    put(dir, "live-host-close", &v);
    let mut v = vec![0u8];
    handshake(&mut v);
    // Raw HTTP/3 on a request stream: an unknown frame, then HEADERS.
    let mut bytes = h3_frame(0x21, b"grease");
    let fields: Vec<(Vec<u8>, Vec<u8>)> = GET.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
    bytes.extend(headers_frame(&fields));
    stream(&mut v, 0, true, &bytes);
    pump(&mut v, 3);
    put(dir, "live-raw-stream", &v);
    let mut v = vec![0u8];
    pump(&mut v, 1);
    fault(&mut v, 1, 40, 0x10); // a flipped byte in the Initial
    pump(&mut v, 4);
    handshake(&mut v);
    put(dir, "live-flip-initial", &v);
    let mut v = vec![0u8];
    fault(&mut v, 0, 0, 1); // the first Initial is lost
    pump(&mut v, 1);
    fault(&mut v, 3, 0, 1); // and the next is duplicated
    handshake(&mut v);
    put(dir, "live-drop-dup", &v);
    println!("datagram_intake: {} recorded datagrams", dgrams.len());
}

fn h3(flags: u8, fields: &[(&[u8], &[u8])], body: Option<&[u8]>, trailers: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = vec![flags, fields.len() as u8];
    write_fields(&mut out, fields);
    if flags & 1 != 0 {
        let b = body.unwrap_or(b"");
        out.push(b.len() as u8);
        out.extend_from_slice(b);
    }
    if flags & 2 != 0 {
        write_fields(&mut out, trailers);
    }
    out
}

fn h3_headers(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let with = |extra: &[(&'static [u8], &'static [u8])]| {
        let mut l: Vec<(&[u8], &[u8])> = GET.to_vec();
        l.extend_from_slice(extra);
        l
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("get", h3(0, GET, None, &[])),
        ("get-cookies", h3(0, &with(&[(b"cookie", b"a=1"), (b"x-y", b"z"), (b"cookie", b"b=2")]), None, &[])),
        ("get-te-trailers", h3(0, &with(&[(b"te", b"trailers")]), None, &[])),
        ("get-host-only", h3(0, &[(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b"host", b"haquic.test")], None, &[])),
        ("get-pseudo-reordered", h3(0, &[(b":path", b"/a?b"), (b":authority", b"h"), (b":scheme", b"http"), (b":method", b"HEAD")], None, &[])),
        ("post-body", h3(1, POST, Some(b"hello"), &[])),
        ("post-body-trailers", h3(3, POST, Some(b"hello"), &[(b"x-checksum", b"1")])),
        ("post-short-body", h3(1, POST, Some(b"hel"), &[])),
        ("post-long-body", h3(1, POST, Some(b"hello world"), &[])),
        ("post-no-body-cl", h3(0, POST, None, &[])),
        ("post-bad-trailers", h3(3, POST, Some(b"hello"), &[(b":path", b"/")])),
        ("connect", h3(0, &[(b":method", b"CONNECT"), (b":authority", b"haquic.test:443")], None, &[])),
        ("connect-udp", h3(0, &[(b":method", b"CONNECT"), (b":protocol", b"connect-udp"), (b":scheme", b"https"), (b":authority", b"h"), (b":path", b"/masque")], None, &[])),
        ("uppercase", h3(0, &with(&[(b"X-Up", b"1")]), None, &[])),
        ("connection", h3(0, &with(&[(b"connection", b"close")]), None, &[])),
        ("te-gzip", h3(0, &with(&[(b"te", b"gzip")]), None, &[])),
        ("cl-list", h3(0, &with(&[(b"content-length", b"0, 0")]), None, &[])),
        ("cl-mismatch", h3(0, &with(&[(b"content-length", b"1, 2")]), None, &[])),
        ("dup-method", h3(0, &[(b":method", b"GET"), (b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a"), (b":path", b"/")], None, &[])),
        ("pseudo-after-regular", h3(0, &[(b":method", b"GET"), (b"a", b"b"), (b":scheme", b"https"), (b":authority", b"a"), (b":path", b"/")], None, &[])),
        ("unknown-pseudo", h3(0, &with(&[(b":foo", b"x")]), None, &[])),
        ("empty-path", h3(0, &[(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a"), (b":path", b"")], None, &[])),
        ("authority-host-differ", h3(0, &with(&[(b"host", b"other")]), None, &[])),
        ("nul-in-value", h3(0, &with(&[(b"x-a", b"a\0b")]), None, &[])),
        ("crlf-in-value", h3(0, &with(&[(b"x-a", b"a\r\nb: c")]), None, &[])),
        ("empty-name", h3(0, &with(&[(b"", b"v")]), None, &[])),
        ("missing-scheme", h3(0, &[(b":method", b"GET"), (b":authority", b"a"), (b":path", b"/")], None, &[])),
        ("empty", h3(0, &[], None, &[])),
    ];
    for (name, data) in &cases {
        put(dir, name, data);
    }
    println!("h3_headers: {} cases", cases.len());
}

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus".into());
    let dir = Path::new(&dir);
    datagram_intake(&dir.join("datagram_intake"));
    h3_headers(&dir.join("h3_headers"));
    assert_eq!(live_objects(), 1, "objects leaked (the server configuration stays)");
}
