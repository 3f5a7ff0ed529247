//! HTTP/3 request headers through validation (`haquic::h3`) and through the
//! engine to the header list the C side receives in a REQUEST event (which
//! HAProxy's mux turns into HTX).
//!
//! Input: `[flags][n][n fields][body_len][body][trailer fields]`, a field
//! being `[name_len u8][value_len u8][name][value]`; flags bit 0: a body
//! follows (DATA frame), bit 1: a trailer section follows.
//!
//! Two layers, both for every input:
//! 1. the pure rules: `validate_request`, `validate_response` and
//!    `validate_trailers` never panic, and an accepted request has the
//!    properties the host relies on (pseudo-headers first in canonical
//!    order, valid lowercase names, no connection-specific field, cookie
//!    crumbs joined in order, the other fields untouched, idempotence);
//! 2. end to end: a client on a live connection (kept across inputs) sends
//!    the fields byte for byte (QPACK literals, no Huffman, so that nothing
//!    is lowercased on the way), and what the host gets from
//!    `haquic_worker_poll` must be exactly what `validate_request` returns:
//!    a REQUEST event with those headers and `fin`, or no event at all (the
//!    stream reset with H3_MESSAGE_ERROR) for a malformed request; body
//!    length against content-length and trailers the same.

#![no_main]

use haquic::h3::{validate_request, validate_response, validate_trailers};
use haquic_fuzz::*;
use libfuzzer_sys::fuzz_target;
use quiche::h3::{Header, NameValue};
use std::cell::RefCell;

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

fn to_h3(f: &Fields) -> Vec<Header> {
    f.iter().map(|(n, v)| Header::new(n, v)).collect()
}

fn from_h3(f: &[Header]) -> Fields {
    f.iter().map(|h| (h.name().to_vec(), h.value().to_vec())).collect()
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let flags = r.u8().unwrap_or(0);
    let n = r.u8().unwrap_or(0) as usize % 65;
    let fields = read_fields(&mut r, n);
    let body = if flags & 1 != 0 {
        let len = r.u8().unwrap_or(0) as usize;
        Some(r.bytes(len).to_vec())
    } else {
        None
    };
    let trailers = (flags & 2 != 0).then(|| read_fields(&mut r, 32));

    let expected = pure_checks(&fields, trailers.as_ref());
    end_to_end(&fields, body.as_deref(), trailers.as_ref(), expected);
});

/// Layer 1. Returns what the engine must hand over.
fn pure_checks(fields: &Fields, trailers: Option<&Fields>) -> Option<(Fields, Option<u64>)> {
    let _ = validate_response(&to_h3(fields));
    if let Some(t) = trailers {
        if validate_trailers(&to_h3(t)).is_ok() {
            assert!(t.iter().all(|(n, _)| n.first() != Some(&b':')));
        }
    }
    let req = validate_request(to_h3(fields)).ok()?;
    let out = from_h3(&req.fields);
    check_validated_request(&out);
    // Nothing lost, nothing invented: the pseudo-headers are the input's,
    // the regular fields the input's in order, cookies joined last.
    let pseudo_in: Vec<_> = fields.iter().filter(|(n, _)| n.first() == Some(&b':')).cloned().collect();
    let pseudo_out: Vec<_> = out.iter().filter(|(n, _)| n.first() == Some(&b':')).cloned().collect();
    let mut a = pseudo_in.clone();
    a.sort();
    let mut b = pseudo_out.clone();
    b.sort();
    assert_eq!(a, b, "pseudo-headers changed");
    let regular_in: Vec<_> = fields.iter().filter(|(n, _)| n.first() != Some(&b':') && n != b"cookie").cloned().collect();
    let regular_out: Vec<_> = out.iter().filter(|(n, _)| n.first() != Some(&b':') && n != b"cookie").cloned().collect();
    assert_eq!(regular_in, regular_out, "regular fields changed or reordered");
    let crumbs: Vec<&[u8]> = fields.iter().filter(|(n, _)| n == b"cookie").map(|(_, v)| &v[..]).collect();
    let joined = out.iter().find(|(n, _)| n == b"cookie").map(|(_, v)| v.clone());
    if crumbs.is_empty() {
        assert!(joined.is_none());
    } else {
        assert_eq!(joined.as_deref(), Some(&crumbs.join(&b"; "[..])[..]), "cookie crumbs joined wrongly");
    }
    Some((out, req.content_length))
}

struct Live {
    s: Session,
    baseline: usize,
    inputs: u32,
}

thread_local! {
    static LIVE: RefCell<Option<Live>> = const { RefCell::new(None) };
}

fn connect() -> Option<Live> {
    let _ = server_config();
    let baseline = live_objects();
    let mut s = Session::new(ServerOptions::default());
    s.client();
    for _ in 0..20 {
        s.pump();
        if s.client.as_ref().unwrap().conn.is_established() && s.server.conns.len() == 1 {
            break;
        }
    }
    s.settle(4);
    let ok = s.client.as_ref().unwrap().conn.is_established();
    assert!(ok, "no handshake between the client and the engine");
    Some(Live { s, baseline, inputs: 0 })
}

fn teardown(l: Live) {
    let baseline = l.baseline;
    l.s.finish();
    assert_eq!(live_objects(), baseline, "objects leaked by a connection's life");
}

fn end_to_end(fields: &Fields, body: Option<&[u8]>, trailers: Option<&Fields>, expected: Option<(Fields, Option<u64>)>) {
    // Stay clear of max_field_section_size (64 KiB): a larger section is an
    // HTTP/3 connection error, not a malformed message.
    if section_size(fields) > 60_000 || trailers.is_some_and(|t| section_size(t) > 60_000) {
        return;
    }
    LIVE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let dead = slot.as_ref().is_some_and(|l| {
            l.inputs >= 2000
                || l.s.client.as_ref().unwrap().conn.is_closed()
                || l.s.server.conns.iter().all(|&c| haquic::ffi::conn::haquic_conn_is_closed(c))
        });
        if dead {
            teardown(slot.take().unwrap());
        }
        if slot.is_none() {
            *slot = connect();
        }
        let l = slot.as_mut().unwrap();
        l.inputs += 1;
        let s = &mut l.s;
        let errors_before = s.server.stats().h3_message_errors;
        let mut sid = s.client.as_mut().unwrap().request(fields, body, trailers.map(|t| &t[..]));
        if sid.is_none() {
            // Out of stream credit: let the server's MAX_STREAMS arrive.
            s.settle(10);
            sid = s.client.as_mut().unwrap().request(fields, body, trailers.map(|t| &t[..]));
        }
        let Some(sid) = sid else {
            l.inputs = u32::MAX; // start again with a fresh connection
            return;
        };
        s.settle(12);
        let log = s.server.log.remove(&sid).unwrap_or_default();
        let errors = s.server.stats().h3_message_errors - errors_before;
        check_outcome(fields, body, trailers, expected, &log, errors);
        s.server.release_closed_streams();
    });
}

fn check_outcome(
    fields: &Fields,
    body: Option<&[u8]>,
    trailers: Option<&Fields>,
    expected: Option<(Fields, Option<u64>)>,
    log: &StreamLog,
    errors: u64,
) {
    let fin_on_headers = body.is_none() && trailers.is_none();
    let Some((want, cl)) = expected else {
        assert!(log.requests.is_empty(), "a malformed request was handed over: {fields:?} -> {:?}", log.requests);
        assert!(errors >= 1, "a malformed request was not counted as a message error");
        return;
    };
    if fin_on_headers && cl.is_some_and(|c| c != 0) {
        // A body-less request announcing a body is malformed.
        assert!(log.requests.is_empty(), "content-length {cl:?} without a body was handed over");
        assert!(errors >= 1);
        return;
    }
    assert_eq!(log.requests.len(), 1, "request {fields:?} was not handed over once (errors: {errors}, log: {log:?})");
    let (got, fin) = &log.requests[0];
    assert_eq!(got, &want, "the host got other headers than validation gives");
    assert_eq!(*fin, fin_on_headers, "fin flag");
    if fin_on_headers {
        return;
    }
    let sent = body.unwrap_or(&[]);
    let cl_bad = cl.is_some_and(|c| c != sent.len() as u64);
    let tr_bad = trailers.is_some_and(|t| validate_trailers(&to_h3(t)).is_err());
    let reset = log.resets.contains(&haquic::h3::H3_MESSAGE_ERROR) || log.recv_protocol_error;
    if cl_bad || tr_bad {
        assert!(reset, "a malformed body or trailer section was not refused: cl {cl:?}, body {}, log {log:?}", sent.len());
        assert!(errors >= 1);
        return;
    }
    assert!(!reset, "a well-formed request was reset: {log:?}");
    assert_eq!(log.body, sent, "body changed on the way");
    assert!(log.fin, "the body's end was not seen");
    match trailers {
        Some(t) => assert_eq!(log.trailers, vec![t.clone()], "trailers changed on the way"),
        None => assert!(log.trailers.is_empty()),
    }
}
