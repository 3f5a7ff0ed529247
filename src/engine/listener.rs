//! Listeners: a local UDP address that accepts connections, either with
//! sockets the engine owns (see `io`) or fed datagrams by the host.

use crate::engine::config::Config;
use crate::handle::Shared;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

/// Where a listener's datagrams come from and go to.
#[derive(Debug)]
pub enum Mode {
    /// The host passes datagrams in and takes outgoing ones out.
    HostFed,
    /// The engine owns one socket per worker (see `io`).
    Sockets(Vec<crate::io::UdpSocket>),
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
}

impl Listener {
    /// A listener.
    pub fn new(id: u32, local: SocketAddr, config: Shared<Config>, mode: Mode, conn_sockets: bool) -> Listener {
        Listener { id, local, config, mode, conn_sockets, closed: AtomicBool::new(false) }
    }

    /// Stops accepting new connections (existing ones continue).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Whether it stopped accepting.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The socket worker `w` reads and sends on, in socket mode.
    pub fn socket(&self, w: usize) -> Option<&crate::io::UdpSocket> {
        match &self.mode {
            Mode::Sockets(s) => s.get(w),
            Mode::HostFed => None,
        }
    }
}
