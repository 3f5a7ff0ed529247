//! Regression test for the quiche patch in `vendor/quiche`
//! (`HAQUIC-PATCH.md`): stream data in flight on a path the peer has left
//! (NAT rebinding) must be retransmitted on the new path.
//!
//! Plain quiche connections, in memory: the server sends a response, the
//! last datagrams of it are lost on the old path, and the client's next
//! packet arrives from a new port. Before the patch, the lost data was never
//! retransmitted (ACKs run loss detection on a path only when they newly
//! acknowledge packets sent on it) and the client never got the whole body.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

const BODY: usize = 200_000;

fn config(server: bool, dir: &std::path::Path) -> quiche::Config {
    let mut c = quiche::Config::new(quiche::PROTOCOL_VERSION).unwrap();
    if server {
        let (cert, key) = crate::engine::tls::tests_support::self_signed("rebind.test");
        let (cp, kp) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cp, cert).unwrap();
        std::fs::write(&kp, key).unwrap();
        c.load_cert_chain_from_pem_file(cp.to_str().unwrap()).unwrap();
        c.load_priv_key_from_pem_file(kp.to_str().unwrap()).unwrap();
    } else {
        c.verify_peer(false);
    }
    c.set_application_protos(&[b"hq-test"]).unwrap();
    c.set_initial_max_data(10_000_000);
    c.set_initial_max_stream_data_bidi_local(10_000_000);
    c.set_initial_max_stream_data_bidi_remote(10_000_000);
    c.set_initial_max_streams_bidi(8);
    c.set_max_idle_timeout(10_000);
    c
}

/// Every datagram `from` has to send now.
fn drain(c: &mut quiche::Connection) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1500];
    loop {
        match c.send(&mut buf) {
            Ok((n, _)) => out.push(buf[..n].to_vec()),
            Err(quiche::Error::Done) => return out,
            Err(e) => panic!("send: {e}"),
        }
    }
}

fn deliver(c: &mut quiche::Connection, dgrams: Vec<Vec<u8>>, from: SocketAddr, to: SocketAddr) {
    for mut d in dgrams {
        // a datagram a connection cannot use is dropped, as on a network
        let _ = c.recv(&mut d, quiche::RecvInfo { from, to });
    }
}

fn fire_timers(c: &mut quiche::Connection) {
    if c.timeout().is_some_and(|t| t.is_zero()) {
        c.on_timeout();
    }
}

#[test]
fn data_in_flight_on_the_old_path_is_retransmitted_after_a_rebinding() {
    let dir = std::env::temp_dir().join(format!("haquic-rebind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (mut scfg, mut ccfg) = (config(true, &dir), config(false, &dir));
    let server_addr: SocketAddr = "127.0.0.1:4433".parse().unwrap();
    let old: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let new: SocketAddr = "127.0.0.1:40001".parse().unwrap();
    let (cid_c, cid_s) = ([0xc1; 16], [0x5e; 16]);
    let mut client = quiche::connect(
        Some("rebind.test"),
        &quiche::ConnectionId::from_ref(&cid_c),
        old,
        server_addr,
        &mut ccfg,
    )
    .unwrap();
    let mut server =
        quiche::accept(&quiche::ConnectionId::from_ref(&cid_s), None, server_addr, old, &mut scfg).unwrap();

    // Handshake and request, over the old path.
    for _ in 0..20 {
        let to_s = drain(&mut client);
        deliver(&mut server, to_s, old, server_addr);
        let to_c = drain(&mut server);
        deliver(&mut client, to_c, server_addr, old);
        if client.is_established() && server.is_established() {
            break;
        }
    }
    assert!(client.is_established() && server.is_established(), "no handshake");
    client.stream_send(0, b"GET /\r\n", true).unwrap();
    let to_s = drain(&mut client);
    deliver(&mut server, to_s, old, server_addr);
    let mut req = [0u8; 64];
    assert!(server.stream_recv(0, &mut req).is_ok());

    // The response leaves; its last four datagrams are lost on the old path.
    let body = vec![0x42u8; BODY];
    let mut sent = 0;
    let mut to_c = Vec::new();
    while sent < BODY {
        match server.stream_send(0, &body[sent..], true) {
            Ok(n) => sent += n,
            Err(quiche::Error::Done) => {}
            Err(e) => panic!("stream_send: {e}"),
        }
        let batch = drain(&mut server);
        if batch.is_empty() {
            // congestion window full: let the client acknowledge what it got
            deliver(&mut client, std::mem::take(&mut to_c), server_addr, old);
            let acks = drain(&mut client);
            deliver(&mut server, acks, old, server_addr);
        }
        to_c.extend(batch);
    }
    assert!(to_c.len() > 4, "{} datagrams in flight", to_c.len());
    to_c.truncate(to_c.len() - 4);
    deliver(&mut client, to_c, server_addr, old);

    // The NAT rebinds: from now on the client is seen at `new`.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut got = 0;
    let mut buf = vec![0u8; 65536];
    let mut fin = false;
    while Instant::now() < deadline && !fin {
        while let Ok((n, f)) = client.stream_recv(0, &mut buf) {
            got += n;
            fin |= f;
        }
        let to_s = drain(&mut client);
        deliver(&mut server, to_s, new, server_addr);
        // the NAT maps the server's answers back to the client's own port
        let to_c = drain(&mut server);
        deliver(&mut client, to_c, server_addr, old);
        fire_timers(&mut client);
        fire_timers(&mut server);
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let paths: Vec<String> = server
        .path_stats()
        .map(|p| format!("{} active {} {:?} sent {} lost {}", p.peer_addr, p.active, p.validation_state, p.sent, p.lost))
        .collect();
    assert!(
        fin && got == BODY,
        "the client got {got} of {BODY} bytes (fin {fin}): data lost on the old path was not \
         retransmitted; server paths: {paths:?}"
    );
}
