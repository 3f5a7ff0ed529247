//! Listeners: a local UDP address that accepts connections, either with
//! sockets the engine owns (see `io`) or fed datagrams by the host.

use crate::engine::config::Config;
use crate::handle::Shared;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// One worker's socket of a listener. The socket itself waits here until the
/// worker adopts it on its thread; from then on only that thread touches it,
/// and it is closed only after the host confirms it stopped polling it.
#[derive(Debug)]
pub struct SocketSlot {
    /// The fd, for queries from any thread.
    pub fd: i32,
    /// Its generation.
    pub generation: u32,
    pending: Mutex<Option<crate::io::UdpSocket>>,
    released: AtomicBool,
}

impl SocketSlot {
    /// A slot holding `sock` until its worker adopts it.
    pub fn new(sock: crate::io::UdpSocket) -> SocketSlot {
        SocketSlot { fd: sock.fd(), generation: sock.generation, pending: Mutex::new(Some(sock)), released: AtomicBool::new(false) }
    }

    /// The worker takes the socket (once).
    pub fn adopt(&self) -> Option<crate::io::UdpSocket> {
        self.pending.lock().ok().and_then(|mut p| p.take())
    }

    /// The host was asked to stop polling it (it is being or has been closed).
    pub fn is_released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }

    /// Marks the release request.
    pub fn mark_released(&self) {
        self.released.store(true, Ordering::Release)
    }
}

/// Where a listener's datagrams come from and go to.
#[derive(Debug)]
pub enum Mode {
    /// The host passes datagrams in and takes outgoing ones out.
    HostFed,
    /// The engine owns one socket per worker (see `io`).
    Sockets(Vec<SocketSlot>),
}

/// A listener.
#[derive(Debug)]
pub struct Listener {
    /// Engine-unique number.
    pub id: u32,
    /// The bound (or declared) local address.
    pub local: SocketAddr,
    /// The configuration connections accepted here use.
    pub config: Shared<Config>,
    /// How datagrams move.
    pub mode: Mode,
    /// Give each accepted connection its own connected socket.
    pub conn_sockets: bool,
    closed: AtomicBool,
    shutting_down: AtomicBool,
    /// The connection-level counters of the connections accepted here
    /// (handshakes, accepted, closed, requests, refusals, message errors);
    /// the datagram counters stay per worker.
    pub counters: crate::engine::stats::Counters,
}

impl Listener {
    /// A listener.
    pub fn new(id: u32, local: SocketAddr, config: Shared<Config>, mode: Mode, conn_sockets: bool) -> Listener {
        Listener {
            id,
            local,
            config,
            mode,
            conn_sockets,
            closed: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            counters: Default::default(),
        }
    }

    /// Stops accepting new connections (existing ones continue).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Whether it stopped accepting.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Graceful shutdown of this listener alone: it stops accepting, its
    /// connections get GOAWAY and finish their streams, and once none is
    /// left its sockets are released to the host.
    pub fn shutdown(&self) {
        self.close();
        self.shutting_down.store(true, Ordering::Release);
    }

    /// Whether a graceful shutdown was asked for.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Worker `w`'s socket slot, in socket mode.
    pub fn slot(&self, w: usize) -> Option<&SocketSlot> {
        match &self.mode {
            Mode::Sockets(s) => s.get(w),
            Mode::HostFed => None,
        }
    }
}
