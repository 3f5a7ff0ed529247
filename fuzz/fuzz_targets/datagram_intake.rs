//! Server datagram intake: datagrams go in through `haquic_listener_recv`
//! (the dispatcher routes them to the worker that owns their connection ID),
//! and the worker runs them through a connection, its HTTP/3 layer, and the
//! host application's events.
//!
//! The input is a small program (see `Op` below; fuzz/README.md). Raw
//! datagrams reach the accept path, version negotiation, Retry, stateless
//! resets and unknown IDs; a live quiche client does a real handshake whose
//! datagrams can be dropped, altered, duplicated or cut, whose 1-RTT
//! packets can be replaced by the input's own frames, and which can write
//! raw HTTP/3 on any stream. Seeds come from recorded real handshakes
//! (`make fuzz-corpus`).
//!
//! Checked for every input: no panic anywhere (libFuzzer aborts on one, even
//! one the library would catch), documented result codes from every call,
//! every REQUEST event a fixed point of the request validation, no
//! connection panicking inside its worker, and every object freed once the
//! host has released its references (`haquic_live_objects()` back where it
//! was).

#![no_main]

use haquic_fuzz::*;
use libfuzzer_sys::fuzz_target;

/// Operations, by the low 3 bits of their opcode byte.
const RAW: u8 = 0;
const PATCHED: u8 = 1;
const PUMP: u8 = 2;
const FAULT: u8 = 3;
const INJECT: u8 = 4;
const STREAM: u8 = 5;
const REQUEST: u8 = 6;
const CTRL: u8 = 7;

fuzz_target!(|data: &[u8]| {
    // The server configuration lives for the whole process.
    let _ = server_config();
    let before = live_objects();
    run(data);
    let after = live_objects();
    assert_eq!(after, before, "{} haquic objects leaked", after as isize - before as isize);
});

fn run(data: &[u8]) {
    let mut r = Reader::new(data);
    let flags = r.u8().unwrap_or(0);
    let mut s = Session::new(ServerOptions {
        two_workers: flags & 1 != 0,
        force_retry: flags & 2 != 0,
        small_queue: flags & 4 != 0,
    });
    let mut rebinds = 0u16;
    let mut ops = 0;
    while let Some(op) = r.u8() {
        ops += 1;
        if ops > 256 {
            break;
        }
        match op & 7 {
            RAW => {
                let len = r.u16() as usize;
                let d = r.bytes(len).to_vec();
                // The peer: the client's address, or another one.
                let from = if op & 0x80 != 0 { client_addr(1000 + (op as u16 >> 3)) } else { client_addr(0) };
                s.to_server(d, from, false);
                s.server.process();
            }
            PATCHED => {
                let len = r.u16() as usize;
                let mut d = r.bytes(len).to_vec();
                s.patch_dcid(&mut d);
                let from = s.client.as_ref().map_or(client_addr(0), |c| c.nat_addr);
                s.to_server(d, from, false);
                s.server.process();
            }
            PUMP => {
                s.client();
                let n = 1 + (op >> 3) as usize % 4;
                for _ in 0..n {
                    s.pump();
                }
            }
            FAULT => {
                let kind = r.u8().unwrap_or(0);
                let pos = r.u16();
                let xor = r.u8().unwrap_or(1).max(1);
                s.fault = Some(match kind % 4 {
                    0 => Fault::Drop,
                    1 => Fault::Flip { pos, xor },
                    2 => Fault::Truncate { pos },
                    _ => Fault::Duplicate,
                });
            }
            INJECT => {
                let len = r.u16() as usize;
                let frames = r.bytes(len).to_vec();
                s.client();
                if let Some(d) = s.forge_1rtt(&frames) {
                    let from = s.client.as_ref().unwrap().nat_addr;
                    s.to_server(d, from, true);
                    s.server.process();
                }
            }
            STREAM => {
                // Raw bytes on a client stream: bidi (request) or uni.
                let sel = r.u8().unwrap_or(0);
                let len = r.u16() as usize;
                let bytes = r.bytes(len).to_vec();
                let c = s.client();
                let sid = (sel as u64 >> 1) * 4 + if sel & 1 != 0 { 2 } else { 0 };
                let fin = op & 0x08 != 0;
                if c.conn.is_established() {
                    c.start_h3();
                    let _ = c.conn.stream_send(sid, &bytes, fin);
                }
            }
            REQUEST => {
                let len = r.u16() as usize;
                let mut fr = Reader::new(r.bytes(len));
                let n = fr.u8().unwrap_or(0) as usize % 65;
                let fields = read_fields(&mut fr, n);
                let body = fr.rest().to_vec();
                let c = s.client();
                if c.conn.is_established() {
                    let body = (op & 0x08 != 0).then_some(&body[..]);
                    let _ = c.request(&fields, body, None);
                }
            }
            CTRL => {
                let what = r.u8().unwrap_or(0);
                let arg = r.u8().unwrap_or(0) as u64;
                ctrl(&mut s, what, arg, &mut rebinds);
            }
            _ => unreachable!(),
        }
    }
    s.finish();
}

fn ctrl(s: &mut Session, what: u8, arg: u64, rebinds: &mut u16) {
    use haquic::ffi::conn::*;
    use haquic::ffi::engine::*;
    use haquic::error::haquic_result::*;
    let sid = (arg >> 1) * 4;
    match what % 10 {
        0 | 1 => {
            // RESET_STREAM or STOP_SENDING; on a stream the client has not
            // used yet, as its very first frame.
            let c = s.client();
            let how = if what % 10 == 0 { quiche::Shutdown::Write } else { quiche::Shutdown::Read };
            let _ = c.conn.stream_send(sid, b"", false);
            let _ = c.conn.stream_shutdown(sid, how, 0x10c);
        }
        2 => {
            let _ = s.client().conn.close(arg & 1 != 0, 0x100 + arg, b"bye");
        }
        3 => {
            // NAT rebinding: the client's datagrams now come from a new port.
            *rebinds += 1;
            let c = s.client();
            c.nat_addr = client_addr(*rebinds);
        }
        4 => {
            let r = haquic_engine_shutdown(s.server.engine);
            expect_code("haquic_engine_shutdown", r, &[HAQUIC_OK]);
        }
        5 => {
            let r = haquic_listener_shutdown(s.server.listener);
            expect_code("haquic_listener_shutdown", r, &[HAQUIC_OK]);
        }
        6 => {
            let r = haquic_listener_close(s.server.listener);
            expect_code("haquic_listener_close", r, &[HAQUIC_OK]);
        }
        7 | 8 => {
            // The host closes or gracefully shuts down a connection.
            if let Some(&c) = s.server.conns.get(arg as usize % s.server.conns.len().max(1)) {
                let r = if what % 10 == 7 {
                    haquic_conn_close(c, 0x100 + (arg & 0xf), b"host".as_ptr(), 4)
                } else {
                    haquic_conn_shutdown(c)
                };
                expect_code("haquic_conn_close/shutdown", r, &[HAQUIC_OK, HAQUIC_ERR_CLOSED, HAQUIC_ERR_PROTOCOL]);
            }
        }
        _ => {
            // The host resets a stream it holds, or stops it.
            if let Some(&st) = s.server.streams.get(arg as usize % s.server.streams.len().max(1)) {
                let r = if arg & 1 != 0 { haquic_stream_reset(st, 0x10c) } else { haquic_stream_stop_sending(st, 0x10c) };
                expect_code("haquic_stream_reset/stop_sending", r, &[HAQUIC_OK, HAQUIC_ERR_CLOSED]);
            }
        }
    }
}
