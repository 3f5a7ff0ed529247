//! Routing a datagram to the worker that owns its connection ID.
//!
//! Any thread may hand a datagram in. Its destination ID is decoded (our IDs
//! carry their worker; other IDs are hashed, see `cid`), and the datagram is
//! pushed onto that worker's bounded lock-free queue, after which the worker is
//! woken through the host's callback. A full queue drops the datagram and
//! counts it: the sender never blocks, and no lookup reads a connection's
//! fields, so a connection closing concurrently cannot be touched from here.
//! The queue and its wake-up protocol are [`inbox::Inbox`], which the loom
//! model of the hand-off runs.

pub mod inbox;

use crate::cid::{CID_LEN, Keys};
use crate::engine::listener::Listener;
use crate::handle::Shared;
use inbox::Inbox;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// A received datagram on its way to its owner.
pub struct Datagram {
    /// The listener it arrived on.
    pub listener: Shared<Listener>,
    /// The UDP payload.
    pub data: Vec<u8>,
    /// Who sent it.
    pub peer: SocketAddr,
    /// Where it was received.
    pub local: SocketAddr,
}

/// The host's "wake worker N" callback.
pub type WakeFn = Box<dyn Fn(usize) + Send + Sync>;

/// Per-worker queues and the routing key.
pub struct Dispatcher {
    inboxes: Vec<Inbox<Datagram>>,
    keys: Keys,
    wake: WakeFn,
    /// Datagrams dropped because their owner's queue was full, per worker.
    pub overflows: Vec<AtomicU64>,
    /// Datagrams dropped because no destination ID could be read.
    pub unparsable: AtomicU64,
}

/// Reads the destination connection ID of a QUIC packet without trusting
/// anything past what it needs.
pub fn dcid_of(pkt: &[u8]) -> Option<&[u8]> {
    let b0 = *pkt.first()?;
    if b0 & 0x80 != 0 {
        let len = *pkt.get(5)? as usize;
        if len > 20 {
            return None;
        }
        pkt.get(6..6 + len)
    } else {
        pkt.get(1..1 + CID_LEN)
    }
}

impl Dispatcher {
    /// Queues of `capacity` datagrams for each of `workers` workers.
    pub fn new(workers: usize, capacity: usize, keys: Keys, wake: WakeFn) -> Dispatcher {
        Dispatcher {
            inboxes: (0..workers).map(|_| Inbox::new(capacity)).collect(),
            keys,
            wake,
            overflows: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            unparsable: AtomicU64::new(0),
        }
    }

    /// The number of workers.
    pub fn workers(&self) -> usize {
        self.inboxes.len()
    }

    /// The worker that owns the datagram's destination ID.
    pub fn route(&self, pkt: &[u8]) -> Option<usize> {
        dcid_of(pkt).map(|dcid| self.keys.route(dcid, self.inboxes.len()))
    }

    /// Routes and queues a datagram, then wakes its owner. Returns the owner,
    /// or `Err` when the datagram was dropped (and counted).
    pub fn dispatch(&self, dgram: Datagram) -> Result<usize, DropReason> {
        let Some(worker) = self.route(&dgram.data) else {
            self.unparsable.fetch_add(1, Ordering::Relaxed);
            return Err(DropReason::Unparsable);
        };
        self.push(worker, dgram)?;
        Ok(worker)
    }

    /// Queues a datagram for `worker` and wakes it.
    pub fn push(&self, worker: usize, dgram: Datagram) -> Result<(), DropReason> {
        if self.inboxes[worker].push(dgram, || (self.wake)(worker)).is_err() {
            self.overflows[worker].fetch_add(1, Ordering::Relaxed);
            return Err(DropReason::QueueFull);
        }
        Ok(())
    }

    /// Takes the next queued datagram of `worker`.
    pub fn pop(&self, worker: usize) -> Option<Datagram> {
        self.inboxes[worker].pop()
    }

    /// Datagrams waiting for `worker`.
    pub fn pending(&self, worker: usize) -> usize {
        self.inboxes[worker].len()
    }

    /// Wakes `worker` through the host's callback, unless a wake-up is
    /// already pending: every wake-up sent after the worker last started
    /// processing guarantees one more pass, so one is enough.
    pub fn wake(&self, worker: usize) {
        self.inboxes[worker].wake(|| (self.wake)(worker))
    }

    /// Called by the worker as it starts processing, before it pops.
    pub fn clear_wake(&self, worker: usize) {
        self.inboxes[worker].clear_wake()
    }
}

/// Why a datagram was dropped before reaching its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// No destination connection ID could be read.
    Unparsable,
    /// The owner's queue was full.
    QueueFull,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dcid_parsing_is_bounded() {
        assert_eq!(dcid_of(&[]), None);
        assert_eq!(dcid_of(&[0xc0, 0, 0, 0, 1, 21]), None);
        assert_eq!(dcid_of(&[0xc0, 0, 0, 0, 1, 4, 1, 2]), None);
        assert_eq!(dcid_of(&[0xc0, 0, 0, 0, 1, 2, 9, 8, 7]), Some(&[9u8, 8][..]));
        let mut short = vec![0x40];
        short.extend(0..CID_LEN as u8);
        assert_eq!(dcid_of(&short).unwrap().len(), CID_LEN);
        assert_eq!(dcid_of(&short[..5]), None);
    }
}
