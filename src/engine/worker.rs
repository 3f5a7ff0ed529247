//! A worker: the connections one host thread owns, its inbound queue, its
//! timers and its events.
//!
//! Only the owner thread may drive a worker or act on its connections. The
//! owner is the first thread that drives it (or acts on one of its
//! connections); any other thread gets `HAQUIC_ERR_WRONG_THREAD`. The state
//! sits behind a mutex that only the owner ever takes, so it is never
//! contended; it exists so that a misbehaving host gets an error, not a data
//! race.

use super::EngineInner;
use super::event::{Event, EventKind};
use super::listener::{Listener, Mode};
use super::stats::Counters;
use crate::cid::{CID_LEN, decode_worker};
use crate::conn::Conn;
use crate::dispatch::{Datagram, dcid_of};
use crate::error::{Error, Result, haquic_result};
use crate::fasthash::{FastMap, FastSet};
use crate::handle::{Shared, Tracked};
use crate::io::Lease;
use std::any::Any;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

static NEXT_THREAD_TOKEN: AtomicU64 = AtomicU64::new(1);
thread_local! {
    static THREAD_TOKEN: u64 = NEXT_THREAD_TOKEN.fetch_add(1, Ordering::Relaxed);
}

fn thread_token() -> u64 {
    THREAD_TOKEN.with(|t| *t)
}

/// A datagram waiting for the host to send it (host-fed listeners).
#[derive(Debug)]
pub struct OutDatagram {
    /// The listener it leaves from.
    pub listener: u32,
    /// The payload.
    pub data: Vec<u8>,
    /// Destination.
    pub to: SocketAddr,
    /// Source.
    pub from: SocketAddr,
}

/// A datagram being handled on its owner, borrowed from a receive buffer or a
/// queued `Datagram`: no copy on the fast path.
pub struct DgramRef<'a> {
    listener: &'a Shared<Listener>,
    data: &'a mut [u8],
    peer: SocketAddr,
    local: SocketAddr,
}

/// A datagram held until its pacing time.
struct Paced {
    at: Instant,
    seq: u64,
    listener: Shared<Listener>,
    conn_fd: Option<i32>,
    data: Vec<u8>,
    to: SocketAddr,
    from: SocketAddr,
}

impl PartialEq for Paced {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Paced {}
impl PartialOrd for Paced {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Paced {
    // Reversed: BinaryHeap is a max-heap and the earliest must come first.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// Packets of one connection, same size, same path, sent together with GSO.
/// quiche writes them one after the other into the worker's send buffer, so
/// a batch is the first `len` bytes of it: no copy between packet and send.
struct Batch {
    len: usize,
    seg: usize,
    count: usize,
    to: SocketAddr,
    from: SocketAddr,
    /// A shorter packet ended the batch (GSO allows it only last).
    sealed: bool,
}

/// How long a connection that handed the host new requests waits for the
/// answer before it sends the ACK alone.
const ACK_HOLD: Duration = Duration::from_millis(1);

/// Datagrams one GSO send carries at most (the kernel allows 64). Measured
/// with `make bench-engine` on loopback: 64-datagram bursts overflow a
/// pycurl receiver's socket buffer and single-connection throughput fell from
/// 224 to 38 MB/s; 16 and 32 both gave about 400 MB/s.
const MAX_GSO_SEGMENTS: usize = 16;

/// Datagrams a worker holds for pacing, at most.
const MAX_PACED: usize = 16_384;
/// Packets one connection may build in one flush (about 5.6 MB at 1,350
/// bytes): a bound on a pass, far above any congestion window.
const MAX_PACKETS_PER_FLUSH: usize = 4096;
/// Pacing granularity: a datagram due within this is sent at once (hosts
/// wake up on millisecond timers).
const PACING_GRANULARITY: Duration = Duration::from_millis(1);

/// A listener's socket owned by this worker.
struct ListenerSock {
    sock: crate::io::UdpSocket,
    listener: Shared<Listener>,
    /// Where it stands in the two-phase release: once the host was asked to
    /// stop polling it, it is never read or written again.
    lease: Lease,
    /// The host reports this socket's readiness (it called
    /// `haquic_worker_fd_ready` for it once): it is then read only when
    /// reported readable. A host that never does gets it read on every
    /// pass, as it polls the fd and calls `haquic_worker_process`.
    notified: bool,
    /// Reported readable and not yet read to EAGAIN.
    ready: bool,
}

/// A per-connection socket and where it is in its life.
struct ConnSock {
    sock: crate::io::UdpSocket,
    listener: Shared<Listener>,
    /// Its bound address, read once.
    local: SocketAddr,
    /// The host reported it readable.
    ready: bool,
    /// Where it stands in the two-phase release: once the host was asked to
    /// stop polling it, it is never read or written again.
    lease: Lease,
}

/// The owner thread's state.
pub struct WorkerState {
    /// Boxed: a flush takes a connection out of the map and puts it back,
    /// and quiche's connection is large.
    conns: FastMap<u64, Box<Conn>>,
    by_cid: FastMap<Vec<u8>, u64>,
    events: VecDeque<Event>,
    dirty: FastSet<u64>,
    out: VecDeque<OutDatagram>,
    server_cfgs: HashMap<u32, quiche::Config>,
    client_cfg: Option<quiche::Config>,
    reset_window: (Instant, u32),
    half_open: usize,
    buf: Vec<u8>,
    rbuf: Vec<u8>,
    /// Per-connection sockets of this worker, by fd.
    conn_socks: FastMap<i32, ConnSock>,
    /// The per-connection sockets marked ready, so that a pass visits those
    /// and not every connection's.
    ready_socks: Vec<i32>,
    /// Every connection's next deadline (its `timeout_at`), ordered: finding
    /// the next timer or the expired ones costs nothing per idle connection.
    timers: BTreeSet<(Instant, u64)>,
    /// This worker's listener sockets, by listener id, adopted on its thread.
    lsocks: HashMap<u32, ListenerSock>,
    /// The listener epoch last adopted.
    listener_epoch: u64,
    /// Datagrams waiting for their pacing time.
    paced: std::collections::BinaryHeap<Paced>,
    paced_seq: u64,
    /// Storage the C layer keeps for the event it last returned.
    pub poll_slot: Option<Box<dyn Any + Send>>,
}

/// One worker.
pub struct Worker {
    /// Its index.
    pub id: usize,
    owner: AtomicU64,
    state: Mutex<WorkerState>,
    /// Its counters.
    pub counters: Counters,
}

const SEND_BUF: usize = 65_535;
const MAX_DATAGRAMS_PER_PROCESS: usize = 4096;

impl Worker {
    /// A worker with no connections.
    pub fn new(id: usize) -> Worker {
        Worker {
            id,
            owner: AtomicU64::new(0),
            state: Mutex::new(WorkerState {
                conns: FastMap::default(),
                by_cid: FastMap::default(),
                events: VecDeque::new(),
                dirty: FastSet::default(),
                out: VecDeque::new(),
                server_cfgs: HashMap::new(),
                client_cfg: None,
                reset_window: (Instant::now(), 0),
                half_open: 0,
                buf: vec![0; SEND_BUF],
                rbuf: vec![0; SEND_BUF],
                conn_socks: FastMap::default(),
                ready_socks: Vec::new(),
                timers: BTreeSet::new(),
                lsocks: HashMap::new(),
                listener_epoch: u64::MAX,
                paced: std::collections::BinaryHeap::new(),
                paced_seq: 0,
                poll_slot: None,
            }),
            counters: Counters::default(),
        }
    }

    /// Binds the worker to the calling thread if it has no owner yet, and
    /// checks that the caller is the owner.
    pub fn check_owner(&self) -> Result<()> {
        let me = thread_token();
        match self.owner.compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Ok(()),
            Err(owner) if owner == me => Ok(()),
            Err(_) => {
                self.counters.inc(&self.counters.wrong_thread_calls);
                Err(Error::new(
                    haquic_result::HAQUIC_ERR_WRONG_THREAD,
                    format!("worker {} belongs to another thread", self.id),
                ))
            }
        }
    }

    /// Locks the state after checking the owner.
    pub fn lock(&self) -> Result<MutexGuard<'_, WorkerState>> {
        self.check_owner()?;
        self.state.lock().map_err(|_| {
            Error::new(haquic_result::HAQUIC_ERR_PANIC, format!("worker {} is unusable after an internal panic", self.id))
        })
    }
}

impl WorkerState {
    /// Runs `f` on a connection of this worker; `HAQUIC_ERR_CLOSED` if it is
    /// gone. Marks it for flushing.
    pub fn with_conn<T>(&mut self, id: u64, counters: &Counters, f: impl FnOnce(&mut Conn, &Counters) -> Result<T>) -> Result<T> {
        let Some(c) = self.conns.get_mut(&id) else {
            counters.inc(&counters.stale_handle_calls);
            return Err(Error::new(haquic_result::HAQUIC_ERR_CLOSED, "the connection is closed"));
        };
        let r = f(c, counters);
        c.host_acted = true;
        if matches!(&r, Err(e) if e.code == haquic_result::HAQUIC_ERR_CLOSED) {
            counters.inc(&counters.stale_handle_calls);
        }
        self.dirty.insert(id);
        r
    }

    /// Sets connection `id`'s next deadline from quiche's timer and its
    /// own, keeping `timers` in step.
    fn retime(&mut self, id: u64, conn: &mut Conn, now: Instant) {
        let next = [conn.q.timeout().map(|d| now + d), conn.own_deadline()].into_iter().flatten().min();
        if next != conn.timeout_at {
            if let Some(t) = conn.timeout_at {
                self.timers.remove(&(t, id));
            }
            if let Some(t) = next {
                self.timers.insert((t, id));
            }
            conn.timeout_at = next;
        }
    }

    /// Releases what connection `id`, leaving the worker, holds here: its
    /// socket, its half-open slot, its connection IDs (register_cid keeps
    /// every one in `scids`), its deadline and a pending flush.
    fn release_conn(&mut self, id: u64, conn: &mut Conn) {
        if let Some(fd) = conn.sock_fd.take() {
            self.release_conn_socket(fd, Some(conn.shared.clone()));
        }
        if std::mem::take(&mut conn.half_open) {
            self.half_open = self.half_open.saturating_sub(1);
        }
        for cid in &conn.scids {
            self.by_cid.remove(cid);
        }
        if let Some(t) = conn.timeout_at.take() {
            self.timers.remove(&(t, id));
        }
        self.dirty.remove(&id);
    }

    /// The next event, if any.
    pub fn next_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next datagram for the host to send, if any.
    pub fn next_datagram(&mut self) -> Option<OutDatagram> {
        self.out.pop_front()
    }

    /// Puts a datagram back at the head (the host's buffer was too small).
    pub fn unpop_datagram(&mut self, d: OutDatagram) {
        self.out.push_front(d);
    }

    /// Work is left for another pass right away.
    pub fn has_pending_work(&self) -> bool {
        // A socket still marked ready was left at the per-pass cap.
        !self.dirty.is_empty()
            || self.lsocks.values().any(|ls| ls.notified && ls.ready && ls.lease.in_use())
            || !self.ready_socks.is_empty()
    }

    /// Connections owned.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Time until the earliest connection timer or paced datagram, if any.
    pub fn next_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.dirty.is_empty() {
            return Some(Duration::ZERO);
        }
        let conn = self.timers.first().map(|(t, _)| *t);
        let paced = self.paced.peek().map(|p| p.at);
        conn.into_iter().chain(paced).min().map(|t| t.saturating_duration_since(now))
    }

    /// A readiness notification from the host. A stale one (unknown fd, old
    /// generation, or a socket being released) is ignored and counted.
    pub fn fd_ready(&mut self, fd: i32, generation: u32, counters: &Counters) -> Result<()> {
        if let Some(cs) = self.conn_socks.get_mut(&fd) {
            if cs.lease.is_ready_for(fd, generation) {
                if !cs.ready {
                    cs.ready = true;
                    self.ready_socks.push(fd);
                }
                return Ok(());
            }
        } else if let Some(ls) = self.lsocks.values_mut().find(|ls| ls.lease.is_ready_for(fd, generation)) {
            ls.notified = true;
            ls.ready = true;
            return Ok(());
        }
        counters.inc(&counters.stale_fd_notifications);
        Err(Error::new(haquic_result::HAQUIC_ERR_CLOSED, format!("fd {fd} generation {generation} is not live")))
    }

    /// The host confirmed it no longer polls `fd`: close it now.
    pub fn fd_released(&mut self, fd: i32, generation: u32, counters: &Counters) -> Result<()> {
        let listener = self
            .lsocks
            .iter()
            .find(|(_, ls)| ls.lease.is_released_by(fd, generation))
            .map(|(id, _)| *id);
        if let Some(id) = listener {
            self.lsocks.remove(&id);
            counters.inc(&counters.fds_released);
            return Ok(());
        }
        match self.conn_socks.get(&fd) {
            Some(cs) if cs.lease.is_released_by(fd, generation) => {
                self.conn_socks.remove(&fd);
                counters.inc(&counters.fds_released);
                Ok(())
            }
            _ => {
                counters.inc(&counters.stale_fd_notifications);
                Err(Error::new(
                    haquic_result::HAQUIC_ERR_INVALID_STATE,
                    format!("fd {fd} generation {generation} was not being released"),
                ))
            }
        }
    }

    /// Asks the host to stop polling a connection's socket; from now on the
    /// engine never touches it, and closes it only once the host confirms.
    fn release_conn_socket(&mut self, fd: i32, conn: Option<Shared<crate::conn::ConnShared>>) {
        if let Some(cs) = self.conn_socks.get_mut(&fd) {
            if let Some((fd, generation)) = cs.lease.release() {
                cs.ready = false;
                self.events.push_back(Event { kind: EventKind::FdRelease { fd, generation }, conn, stream: None });
            }
        }
    }

    fn register_cid(&mut self, cid: Vec<u8>, conn: u64) {
        self.by_cid.insert(cid.clone(), conn);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.scids.push(cid);
        }
    }
}

/// Everything a worker needs from the engine while it processes.
pub struct Ctx<'a> {
    /// The engine.
    pub engine: &'a EngineInner,
    /// The engine, weakly, for new connections' handles.
    pub engine_weak: Weak<Tracked<EngineInner>>,
    /// The worker.
    pub worker: &'a Worker,
}

impl Ctx<'_> {
    fn counters(&self) -> &Counters {
        &self.worker.counters
    }

    /// Sends a batch of same-size packets with one GSO send (or one by one
    /// where the kernel refuses GSO), through the connection's own socket
    /// when it is connected to the destination.
    fn emit_batch(&self, st: &mut WorkerState, listener: &Listener, conn_fd: Option<i32>, data: &[u8], b: &Batch) {
        if b.count == 1 {
            return self.emit_via(st, listener, conn_fd, data, b.to, b.from);
        }
        let c = self.counters();
        let own = conn_fd.and_then(|fd| st.conn_socks.get(&fd)).filter(|cs| cs.lease.in_use() && cs.sock.peer_addr() == Some(b.to));
        let lsock = st.lsocks.get(&listener.id).filter(|ls| ls.lease.in_use());
        let r = match (own, lsock) {
            (Some(cs), _) => cs.sock.send_segments(data, b.seg, None),
            (None, Some(ls)) => ls.sock.send_segments(data, b.seg, Some(b.to)),
            (None, None) => return,
        };
        match r {
            Ok(gso) => {
                if gso {
                    c.inc(&c.gso_sends);
                }
                c.add(&c.packets_out, b.count as u64);
                c.add(&c.bytes_out, data.len() as u64);
            }
            Err(_) => c.inc(&c.send_errors),
        }
    }

    /// Sends (socket mode) or queues (host-fed) one datagram; through the
    /// connection's own socket when it has one connected to `to`.
    fn emit(&self, st: &mut WorkerState, listener: &Listener, data: &[u8], to: SocketAddr, from: SocketAddr) {
        self.emit_via(st, listener, None, data, to, from)
    }

    fn emit_via(
        &self,
        st: &mut WorkerState,
        listener: &Listener,
        conn_fd: Option<i32>,
        data: &[u8],
        to: SocketAddr,
        from: SocketAddr,
    ) {
        let c = self.counters();
        if let Some(cs) = conn_fd.and_then(|fd| st.conn_socks.get(&fd)) {
            if cs.lease.in_use() && cs.sock.peer_addr() == Some(to) {
                match cs.sock.send(data) {
                    Ok(_) => {
                        c.inc(&c.packets_out);
                        c.add(&c.bytes_out, data.len() as u64);
                    }
                    Err(_) => c.inc(&c.send_errors),
                }
                return;
            }
        }
        match &listener.mode {
            Mode::Sockets(_) => {
                let Some(ls) = st.lsocks.get(&listener.id).filter(|ls| ls.lease.in_use()) else { return };
                match ls.sock.send_to(data, to) {
                    Ok(_) => {
                        c.inc(&c.packets_out);
                        c.add(&c.bytes_out, data.len() as u64);
                    }
                    Err(_) => c.inc(&c.send_errors),
                }
            }
            Mode::HostFed => {
                if st.out.len() >= self.engine.opts.out_queue_capacity {
                    c.inc(&c.drop_out_queue_full);
                    return;
                }
                c.inc(&c.packets_out);
                c.add(&c.bytes_out, data.len() as u64);
                st.out.push_back(OutDatagram { listener: listener.id, data: data.to_vec(), to, from });
            }
        }
    }

    /// Drives the worker: queued datagrams, owned sockets, timers, flushes.
    pub fn process(&self, st: &mut WorkerState) {
        let w = self.worker.id;
        self.engine.dispatcher.clear_wake(w);
        for _ in 0..MAX_DATAGRAMS_PER_PROCESS {
            let Some(mut d) = self.engine.dispatcher.pop(w) else { break };
            let r = DgramRef { listener: &d.listener, data: &mut d.data, peer: d.peer, local: d.local };
            self.handle_datagram(st, r);
        }
        self.adopt_listener_sockets(st);
        self.read_sockets(st);
        self.read_conn_sockets(st);
        let now = Instant::now();
        while st.paced.peek().is_some_and(|p| p.at <= now + PACING_GRANULARITY) {
            let p = st.paced.pop().unwrap();
            self.emit_via(st, &p.listener, p.conn_fd, &p.data, p.to, p.from);
        }
        let expired: Vec<u64> = st.timers.range(..=(now, u64::MAX)).map(|(_, id)| *id).collect();
        for id in expired {
            let Some(c) = st.conns.get_mut(&id) else { continue };
            if guarded(|| c.q.on_timeout()).is_ok() {
                st.dirty.insert(id);
            } else if let Some(conn) = st.conns.remove(&id) {
                self.drop_panicked(st, id, conn);
            }
        }
        self.tend_listeners(st);
        if self.engine.shutting_down.load(Ordering::Acquire) {
            let ids: Vec<u64> = st.conns.keys().copied().collect();
            for id in ids {
                if let Some(c) = st.conns.get_mut(&id) {
                    let _ = c.shutdown();
                }
                st.dirty.insert(id);
            }
        }
        self.flush(st);
    }

    /// Reads the per-connection sockets the host reported readable.
    fn read_conn_sockets(&self, st: &mut WorkerState) {
        if st.ready_socks.is_empty() {
            return;
        }
        let ready = std::mem::take(&mut st.ready_socks);
        let mut buf = std::mem::take(&mut st.rbuf);
        for &fd in &ready {
            let mut drained = false;
            for _ in 0..MAX_DATAGRAMS_PER_PROCESS {
                // Gone, released, or a reused fd number not reported ready.
                let Some(cs) = st.conn_socks.get_mut(&fd).filter(|cs| cs.ready && cs.lease.in_use()) else {
                    drained = true;
                    break;
                };
                let (n, peer, seg) = match cs.sock.recv_segments(&mut buf) {
                    Ok(v) => v,
                    Err(_) => {
                        cs.ready = false;
                        drained = true;
                        break;
                    }
                };
                let (l, local) = (cs.listener.clone(), cs.local);
                self.route_segments(st, &l, &mut buf[..n], seg, peer, local);
            }
            if !drained {
                // Left at the per-pass cap: read on in the next pass.
                st.ready_socks.push(fd);
            }
        }
        st.rbuf = buf;
    }

    /// What one receive returned: a datagram, or a GRO batch of datagrams of
    /// `seg` bytes each (the last may be shorter).
    fn route_segments(&self, st: &mut WorkerState, l: &Shared<Listener>, data: &mut [u8], seg: usize, peer: SocketAddr, local: SocketAddr) {
        if seg > 0 && data.len() > seg {
            self.counters().inc(&self.counters().gro_batches);
        }
        for chunk in data.chunks_mut(seg.max(1)) {
            self.route_local(st, l, chunk, peer, local);
        }
    }

    /// A datagram read on this worker: handled here if it owns the ID (in
    /// place, no copy), queued for its owner otherwise.
    fn route_local(&self, st: &mut WorkerState, l: &Shared<Listener>, data: &mut [u8], peer: SocketAddr, local: SocketAddr) {
        match self.engine.dispatcher.route(data) {
            Some(owner) if owner == self.worker.id => {
                self.handle_datagram(st, DgramRef { listener: l, data, peer, local })
            }
            Some(owner) => {
                let d = Datagram { listener: l.clone(), data: data.to_vec(), peer, local };
                let _ = self.engine.dispatcher.push(owner, d);
            }
            None => self.counters().inc(&self.counters().drop_unparsable),
        }
    }

    /// Takes this worker's sockets of listeners added since the last look,
    /// and hands each to the host (FD_REGISTER).
    fn adopt_listener_sockets(&self, st: &mut WorkerState) {
        let epoch = self.engine.listener_epoch.load(Ordering::Acquire);
        if epoch == st.listener_epoch {
            return;
        }
        st.listener_epoch = epoch;
        let listeners: Vec<Shared<Listener>> = self.engine.listeners.lock().unwrap().clone();
        for l in listeners {
            let Some(sock) = l.slot(self.worker.id).and_then(|slot| slot.adopt()) else { continue };
            let (fd, generation) = (sock.fd(), sock.generation);
            st.events.push_back(Event { kind: EventKind::FdRegister { fd, generation }, conn: None, stream: None });
            let lease = sock.lease();
            st.lsocks.insert(l.id, ListenerSock { sock, listener: l, lease, notified: false, ready: false });
        }
    }

    /// Listener shutdowns: GOAWAY to their connections; and once a closed
    /// listener has no connection left on this worker that uses its socket,
    /// the socket is released to the host in two phases.
    fn tend_listeners(&self, st: &mut WorkerState) {
        let closing: Vec<(u32, bool)> = st
            .lsocks
            .iter()
            .filter(|(_, ls)| ls.lease.in_use() && ls.listener.is_closed())
            .map(|(id, ls)| (*id, ls.listener.is_shutting_down()))
            .collect();
        for (lid, graceful) in closing {
            // Only connections that send and receive through the listener's
            // socket hold it open: those with a connection socket of their
            // own keep draining after it is gone, so that a reloaded
            // HAProxy's new process gets every new connection at once.
            let mut open = 0;
            for (id, c) in st.conns.iter_mut() {
                if c.listener.id == lid {
                    if c.sock_fd.is_none() {
                        open += 1;
                    }
                    if graceful {
                        let _ = c.shutdown();
                        st.dirty.insert(*id);
                    }
                }
            }
            if open == 0 {
                let ls = st.lsocks.get_mut(&lid).unwrap();
                if let Some((fd, generation)) = ls.lease.release() {
                    if let Some(slot) = ls.listener.slot(self.worker.id) {
                        slot.mark_released();
                    }
                    st.events.push_back(Event { kind: EventKind::FdRelease { fd, generation }, conn: None, stream: None });
                }
            }
        }
    }

    fn read_sockets(&self, st: &mut WorkerState) {
        // Sockets the host reported readable, or whose readiness it never
        // reports; the others would only answer EAGAIN, a system call per
        // pass for nothing.
        let ids: Vec<u32> =
            st.lsocks.iter().filter(|(_, ls)| ls.lease.in_use() && (ls.ready || !ls.notified)).map(|(id, _)| *id).collect();
        if ids.is_empty() {
            return;
        }
        let mut buf = std::mem::take(&mut st.rbuf);
        for lid in ids {
            for _ in 0..MAX_DATAGRAMS_PER_PROCESS {
                let Some(ls) = st.lsocks.get_mut(&lid) else { break };
                let (n, peer, seg) = match ls.sock.recv_segments(&mut buf) {
                    Ok(v) => v,
                    Err(_) => {
                        ls.ready = false;
                        break;
                    }
                };
                let (l, local) = (ls.listener.clone(), ls.listener.local);
                self.route_segments(st, &l, &mut buf[..n], seg, peer, local);
            }
        }
        st.rbuf = buf;
    }

    /// One datagram for this worker.
    pub fn handle_datagram(&self, st: &mut WorkerState, mut d: DgramRef<'_>) {
        let c = self.counters();
        let Some(dcid) = dcid_of(&d.data).map(|x| x.to_vec()) else {
            c.inc(&c.drop_unparsable);
            return;
        };
        if let Some(&id) = st.by_cid.get(&dcid) {
            self.recv_into(st, id, &mut d);
            return;
        }
        if d.data[0] & 0x80 == 0 {
            self.maybe_stateless_reset(st, &d, &dcid);
            return;
        }
        self.accept(st, d, dcid);
    }

    fn recv_into(&self, st: &mut WorkerState, id: u64, d: &mut DgramRef<'_>) {
        let c = self.counters();
        let Some(conn) = st.conns.get_mut(&id) else { return };
        let info = quiche::RecvInfo { from: d.peer, to: d.local };
        let len = d.data.len();
        // Before the address is validated: what the datagram holds, read
        // before quiche decrypts it in place, and quiche's packet count.
        let amp_probe = (!conn.amp.is_validated()).then(|| (crate::amp::scan_datagram(d.data), conn.q.stats().recv));
        let Ok(r) = guarded(|| conn.q.recv(d.data, info)) else {
            if let Some(conn) = st.conns.remove(&id) {
                self.drop_panicked(st, id, conn);
            }
            return;
        };
        if let Some(((packets, handshake), before)) = amp_probe {
            let accepted = conn.q.stats().recv.saturating_sub(before);
            conn.amp.on_recv(len, handshake && accepted == packets);
            if conn.q.is_established() {
                conn.amp.on_established();
            }
        }
        match r {
            Ok(_) => {
                c.inc(&c.packets_in);
                c.add(&c.bytes_in, len as u64);
            }
            Err(quiche::Error::Done) => {}
            Err(e) => {
                log::debug!("{} recv: {e}", conn.shared.trace_id);
                c.inc(&c.drop_invalid);
            }
        }
        st.dirty.insert(id);
    }

    fn maybe_stateless_reset(&self, st: &mut WorkerState, d: &DgramRef<'_>, dcid: &[u8]) {
        let c = self.counters();
        c.inc(&c.drop_unknown_cid);
        // Only for IDs we could have issued, and only when the reset can be
        // shorter than the packet that triggered it (RFC 9000 §10.3.3), so
        // two endpoints can never loop.
        if decode_worker(dcid).is_none() || d.data.len() < 22 {
            return;
        }
        let now = Instant::now();
        if now.duration_since(st.reset_window.0) >= Duration::from_secs(1) {
            st.reset_window = (now, 0);
        }
        if st.reset_window.1 >= self.engine.opts.stateless_resets_per_second {
            c.inc(&c.resets_rate_limited);
            return;
        }
        st.reset_window.1 += 1;
        let len = (d.data.len() - 1).min(43);
        let mut pkt = vec![0u8; len];
        boring::rand::rand_bytes(&mut pkt).expect("random bytes");
        pkt[0] = 0x40 | (pkt[0] & 0x3f);
        let token = self.engine.keys.reset_token(dcid).to_be_bytes();
        pkt[len - 16..].copy_from_slice(&token);
        c.inc(&c.resets_sent);
        let l = d.listener.clone();
        self.emit(st, &l, &pkt, d.peer, d.local);
    }

    fn accept(&self, st: &mut WorkerState, mut d: DgramRef<'_>, dcid: Vec<u8>) {
        let c = self.counters();
        let hdr = match quiche::Header::from_slice(d.data, CID_LEN) {
            Ok(h) => h,
            Err(_) => {
                c.inc(&c.drop_unparsable);
                return;
            }
        };
        if !quiche::version_is_supported(hdr.version) {
            c.inc(&c.version_negotiations);
            let mut out = [0u8; 256];
            if let Ok(n) = quiche::negotiate_version(&hdr.scid, &hdr.dcid, &mut out) {
                let l = d.listener.clone();
                self.emit(st, &l, &out[..n], d.peer, d.local);
            }
            return;
        }
        if hdr.ty != quiche::Type::Initial {
            c.inc(&c.drop_unknown_cid);
            return;
        }
        // A listener shutting down gracefully still takes the Initials that
        // reached its socket before the socket is released (a reloading
        // HAProxy's new process has the port by then): the connection is
        // served its first requests and gets GOAWAY, instead of the client
        // waiting a retransmission timeout to reach the new process.
        let graceful = d.listener.is_shutting_down() && !self.engine.shutting_down.load(Ordering::Acquire);
        if (d.listener.is_closed() && !graceful) || self.engine.shutting_down.load(Ordering::Acquire) {
            c.inc(&c.drop_not_accepting);
            return;
        }
        if st.conns.len() >= self.engine.opts.max_connections_per_worker {
            c.inc(&c.drop_conn_limit);
            return;
        }
        // Retry: forced, or when too many handshakes are in progress.
        let opts = &self.engine.opts;
        let want_retry = opts.force_retry || (opts.retry_threshold > 0 && st.half_open >= opts.retry_threshold);
        let token = hdr.token.clone().unwrap_or_default();
        let mut odcid = None;
        if !token.is_empty() {
            match self.engine.keys.validate_retry_token(&d.peer, &token, SystemTime::now(), Duration::from_secs(30)) {
                Some(o) => odcid = Some(o),
                None if want_retry => {
                    c.inc(&c.drop_bad_token);
                    return;
                }
                None => {} // a NEW_TOKEN-style token we do not issue: ignore it
            }
        }
        if want_retry && odcid.is_none() {
            let new_scid = self.engine.keys.new_cid(self.worker.id);
            let token = self.engine.keys.mint_retry_token(&d.peer, &hdr.dcid, SystemTime::now());
            let mut out = [0u8; 512];
            let new_scid = quiche::ConnectionId::from_ref(&new_scid);
            if let Ok(n) = quiche::retry(&hdr.scid, &hdr.dcid, &new_scid, &token, hdr.version, &mut out) {
                c.inc(&c.retries_sent);
                let l = d.listener.clone();
                self.emit(st, &l, &out[..n], d.peer, d.local);
            }
            return;
        }
        let listener = d.listener.clone();
        let scid_bytes = match &odcid {
            // After a Retry the client already uses the ID we chose, which
            // carries this worker.
            Some(_) if decode_worker(&dcid) == Some(self.worker.id) => dcid.clone(),
            _ => self.engine.keys.new_cid(self.worker.id).to_vec(),
        };
        let reset = self.engine.keys.reset_token(&scid_bytes);
        let cfg = match self.server_config(st, &listener) {
            Ok(cfg) => cfg,
            Err(e) => {
                log::warn!("listener {}: {}", listener.id, e.reason);
                c.inc(&c.drop_invalid);
                return;
            }
        };
        cfg.set_stateless_reset_token(Some(reset));
        let scid = quiche::ConnectionId::from_ref(&scid_bytes);
        let odcid_ref = odcid.as_ref().map(|o| quiche::ConnectionId::from_ref(o));
        let q = match quiche::accept(&scid, odcid_ref.as_ref(), d.local, d.peer, cfg) {
            Ok(q) => q,
            Err(e) => {
                log::debug!("accept failed: {e}");
                c.inc(&c.drop_invalid);
                return;
            }
        };
        let id = self.engine.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let (limits, pacing) = listener.config.limits_and_pacing();
        let mut conn = Conn::new(id, self.worker.id, q, listener, self.engine_weak.clone(), limits.max_field_section_size);
        conn.pacing = pacing;
        // A Retry token validated the address; otherwise the 3x budget holds.
        if odcid.is_none() {
            conn.amp = crate::amp::AmpLimit::server();
        }
        if let Some(dir) = self.engine.opts.qlog_dir.as_ref() {
            attach_qlog(&mut conn, dir);
        }
        c.inc(&c.conns_accepted);
        conn.listener.counters.inc(&conn.listener.counters.conns_accepted);
        st.half_open += 1;
        if listener_conn_sockets(&conn.listener) {
            match crate::io::UdpSocket::bind_connected(conn.listener.local, d.peer) {
                Ok(sock) => {
                    let (fd, generation) = (sock.fd(), sock.generation);
                    c.inc(&c.conn_sockets_opened);
                    // Datagrams read on the connection's socket are reported
                    // at the address its path was created with (the
                    // listener's, possibly a wildcard), or quiche would see
                    // a new path and the connection would "migrate" away
                    // from its own socket. Its real address is what
                    // haquic_conn_local_address reports.
                    let local = d.local;
                    if let Ok(real) = sock.local_addr() {
                        conn.shared.info.lock().unwrap().local = Some(real);
                    }
                    let listener = conn.listener.clone();
                    let lease = sock.lease();
                    st.conn_socks.insert(fd, ConnSock { sock, listener, local, ready: false, lease });
                    conn.sock_fd = Some(fd);
                    st.events.push_back(Event {
                        kind: EventKind::FdRegister { fd, generation },
                        conn: Some(conn.shared.clone()),
                        stream: None,
                    });
                }
                Err(e) => {
                    log::debug!("{} per-connection socket: {e}; using the listener's", conn.shared.trace_id);
                    c.inc(&c.conn_socket_fallbacks);
                }
            }
        }
        st.conns.insert(id, Box::new(conn));
        st.register_cid(scid_bytes.clone(), id);
        if dcid != scid_bytes {
            // The client's Initial ID routes here too until it switches.
            st.register_cid(dcid, id);
        }
        self.recv_into(st, id, &mut d);
    }

    fn server_config<'s>(&self, st: &'s mut WorkerState, l: &Listener) -> Result<&'s mut quiche::Config> {
        if !st.server_cfgs.contains_key(&l.id) {
            let mut cfg = l.config.to_quiche()?;
            // One ticket key for every worker: otherwise a session is
            // resumable (and 0-RTT possible) only on the worker that issued
            // it, about 1/N of the time.
            cfg.set_ticket_key(&self.engine.keys.ticket_key).map_err(|e| {
                crate::error::Error::new(crate::error::haquic_result::HAQUIC_ERR_TLS, format!("session ticket key: {e}"))
            })?;
            st.server_cfgs.insert(l.id, cfg);
        }
        Ok(st.server_cfgs.get_mut(&l.id).unwrap())
    }

    /// Client role: opens a connection from `listener` to `peer`.
    pub fn connect(
        &self,
        st: &mut WorkerState,
        listener: Shared<Listener>,
        peer: SocketAddr,
        server_name: Option<&str>,
        session: Option<&[u8]>,
    ) -> Result<Shared<crate::conn::ConnShared>> {
        if st.client_cfg.is_none() {
            st.client_cfg = Some(self.engine.config.to_quiche_client()?);
        }
        let scid_bytes = self.engine.keys.new_cid(self.worker.id);
        let scid = quiche::ConnectionId::from_ref(&scid_bytes);
        self.adopt_listener_sockets(st);
        let local = match st.lsocks.get(&listener.id) {
            Some(ls) => ls.sock.local_addr().unwrap_or(listener.local),
            None => listener.local,
        };
        let cfg = st.client_cfg.as_mut().unwrap();
        cfg.set_stateless_reset_token(Some(self.engine.keys.reset_token(&scid_bytes)));
        let mut q = quiche::connect(server_name, &scid, local, peer, cfg)
            .map_err(|e| Error::new(haquic_result::HAQUIC_ERR_PROTOCOL, format!("connect: {e}")))?;
        if let Some(sess) = session {
            q.set_session(sess).map_err(|e| {
                Error::new(haquic_result::HAQUIC_ERR_INVALID_ARGUMENT, format!("TLS session rejected: {e}"))
            })?;
        }
        let id = self.engine.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let (limits, pacing) = self.engine.config.limits_and_pacing();
        let mut conn = Conn::new(id, self.worker.id, q, listener, self.engine_weak.clone(), limits.max_field_section_size);
        conn.pacing = pacing;
        if let Some(dir) = self.engine.opts.qlog_dir.as_ref() {
            attach_qlog(&mut conn, dir);
        }
        let shared = conn.shared.clone();
        self.counters().inc(&self.counters().conns_accepted);
        conn.listener.counters.inc(&conn.listener.counters.conns_accepted);
        st.conns.insert(id, Box::new(conn));
        st.register_cid(scid_bytes.to_vec(), id);
        st.dirty.insert(id);
        self.flush(st);
        if session.is_some() {
            // The ClientHello has left, so early data is possible now: this
            // pass sets up HTTP/3 and requests can go out as 0-RTT.
            st.dirty.insert(id);
            self.flush(st);
        }
        Ok(shared)
    }

    /// Processes and sends for every connection touched since the last flush;
    /// retires closed connections.
    pub fn flush(&self, st: &mut WorkerState) {
        let dirty: Vec<u64> = st.dirty.drain().collect();
        let now = Instant::now();
        let mut out = std::mem::take(&mut st.buf);
        for id in dirty {
            let Some(mut conn) = st.conns.remove(&id) else { continue };
            match guarded(|| self.flush_conn(st, id, &mut conn, &mut out, now)) {
                Ok(true) => {
                    st.conns.insert(id, conn);
                }
                Ok(false) => {}
                Err(()) => self.drop_panicked(st, id, conn),
            }
        }
        st.buf = out;
    }

    /// Runs one connection's events, new IDs and sends. False once it has
    /// closed (it is then gone from the worker).
    fn flush_conn(&self, st: &mut WorkerState, id: u64, conn: &mut Conn, out: &mut [u8], now: Instant) -> bool {
        #[cfg(feature = "test-hooks")]
        if std::mem::take(&mut conn.panic_next_flush) {
            panic!("{}: panic injected by haquic_test_conn_panic", conn.shared.trace_id);
        }
        let was_half_open = conn.half_open;
        let events_before = st.events.len();
        if conn.process(&mut st.events, &self.worker.counters) {
            // Events left over: another pass, soon (the engine wakes the
            // host once the state is no longer borrowed).
            st.dirty.insert(id);
        }
        if was_half_open && !conn.half_open {
            st.half_open = st.half_open.saturating_sub(1);
        }
        if self.hold_for_answer(conn, st.events.len() > events_before, now) {
            // The host answers first; its answer, or the deadline, sends.
            st.retime(id, conn, now);
            return true;
        }
        // New connection IDs for the peer to migrate to, bounded by its
        // active_connection_id_limit (quiche tracks it).
        if conn.q.is_established() {
            // Retired IDs first: the room they leave is issued again in the
            // same pass instead of the next one.
            while let Some(retired) = conn.q.retired_scid_next() {
                st.by_cid.remove(retired.as_ref());
                conn.scids.retain(|c| c.as_slice() != retired.as_ref());
            }
            while conn.q.scids_left() > 0 && conn.scids.len() < 4 {
                let cid = self.engine.keys.new_cid(self.worker.id);
                let token = self.engine.keys.reset_token(&cid);
                if conn.q.new_scid(&quiche::ConnectionId::from_ref(&cid), token, false).is_err() {
                    break;
                }
                st.by_cid.insert(cid.to_vec(), id);
                conn.scids.push(cid.to_vec());
            }
        }
        // Engine-owned sockets: consecutive packets of the same size to
        // the same destination leave in one GSO send.
        let gso = matches!(conn.listener.mode, Mode::Sockets(_));
        // Room one more packet needs in the send buffer.
        let room = conn.q.max_send_udp_payload_size().max(1200);
        let mut batch: Option<Batch> = None;
        let mut built = 0usize;
        loop {
            // One connection cannot hold the worker: past the cap, the rest
            // waits for the next pass (congestion control ends a flush long
            // before this; a quiche that builds packets without end, as 0.30
            // did for a close before confirmation, no longer hangs the
            // worker).
            if built >= MAX_PACKETS_PER_FLUSH {
                log::warn!("{} flush: {built} packets in one pass, the rest waits", conn.shared.trace_id);
                st.dirty.insert(id);
                break;
            }
            built += 1;
            let off = match batch.as_ref() {
                Some(b) if b.sealed || b.count >= MAX_GSO_SEGMENTS || out.len() - b.len < room => {
                    self.emit_batch(st, &conn.listener, conn.sock_fd, &out[..b.len], b);
                    batch = None;
                    0
                }
                Some(b) => b.len,
                None => 0,
            };
            // Before address validation quiche gets no more room than the
            // amplification budget has left, padding included (src/amp.rs).
            let end = match conn.amp.budget() {
                Some(0) => break,
                Some(b) => out.len().min(off + b),
                None => out.len(),
            };
            let (n, info) = match conn.q.send(&mut out[off..end]) {
                Ok(v) => v,
                Err(quiche::Error::Done) => break,
                Err(e) => {
                    log::debug!("{} send: {e}", conn.shared.trace_id);
                    let _ = conn.q.close(false, 0x1, b"send failed");
                    break;
                }
            };
            conn.amp.on_sent(n);
            let pkt = off..off + n;
            // Pacing: hold the datagram until quiche's send time.
            if conn.pacing && info.at > Instant::now() + PACING_GRANULARITY && st.paced.len() < MAX_PACED {
                st.paced_seq += 1;
                self.worker.counters.inc(&self.worker.counters.packets_paced);
                let seq = st.paced_seq;
                let (l, data) = (conn.listener.clone(), out[pkt].to_vec());
                st.paced.push(Paced { at: info.at, seq, listener: l, conn_fd: conn.sock_fd, data, to: info.to, from: info.from });
                continue;
            }
            if !gso {
                self.emit_via(st, &conn.listener, conn.sock_fd, &out[pkt], info.to, info.from);
                continue;
            }
            match batch.as_mut() {
                Some(b) if b.to == info.to && b.from == info.from && n <= b.seg => {
                    b.len += n;
                    b.count += 1;
                    b.sealed = n < b.seg;
                }
                Some(b) => {
                    // Another path, or a larger packet: the batch leaves and
                    // this packet starts the next one.
                    self.emit_batch(st, &conn.listener, conn.sock_fd, &out[..b.len], b);
                    out.copy_within(pkt, 0);
                    batch = Some(Batch { len: n, seg: n, count: 1, to: info.to, from: info.from, sealed: false });
                }
                None => batch = Some(Batch { len: n, seg: n, count: 1, to: info.to, from: info.from, sealed: false }),
            }
        }
        if let Some(b) = batch.take() {
            self.emit_batch(st, &conn.listener, conn.sock_fd, &out[..b.len], &b);
        }
        conn.after_send();
        if conn.migrated {
            // The peer's address changed: the connected socket points at
            // the old one. Release it; the listener socket carries on.
            conn.migrated = false;
            if let Some(fd) = conn.sock_fd.take() {
                st.release_conn_socket(fd, Some(conn.shared.clone()));
            }
        }
        if conn.q.is_closed() {
            st.release_conn(id, conn);
            conn.mark_closed();
            let s = conn.q.stats();
            let c = &self.worker.counters;
            c.add(&c.lost, s.lost as u64);
            c.add(&c.retransmitted, s.retrans as u64);
            c.inc(&c.conns_closed);
            conn.listener.counters.inc(&conn.listener.counters.conns_closed);
            st.events.push_back(conn.closed_event());
            return false;
        }
        st.retime(id, conn, now);
        conn.refresh_info();
        true
    }

    /// Whether to hold this pass's packets back: a connection that has just
    /// handed the host new events (a request, mostly) would otherwise send
    /// an ACK-only packet now and the answer in a second packet a moment
    /// later. Held at most ACK_HOLD (well within the 25 ms max_ack_delay
    /// peers assume), and only once established; anything the host does on
    /// the connection ends the hold.
    fn hold_for_answer(&self, conn: &mut Conn, new_events: bool, now: Instant) -> bool {
        let acted = std::mem::take(&mut conn.host_acted);
        let hold = match conn.ack_hold_until {
            _ if acted || !conn.shared.is_server || !conn.q.is_established() => false,
            _ if conn.q.is_closed() || conn.q.is_draining() => false,
            _ if conn.q.local_error().is_some() || conn.q.peer_error().is_some() => false,
            Some(until) => now < until,
            None => new_events,
        };
        if hold {
            conn.ack_hold_until.get_or_insert(now + ACK_HOLD);
            self.worker.counters.inc(&self.worker.counters.sends_held);
        } else {
            conn.ack_hold_until = None;
        }
        hold
    }

    /// A connection whose processing panicked (in quiche or here): its state
    /// can no longer be trusted, so it is dropped without another packet.
    /// Its IDs, socket and half-open slot are released, the host gets a
    /// Closed event (code 0x1, INTERNAL_ERROR) and `conn_panics` counts it.
    fn drop_panicked(&self, st: &mut WorkerState, id: u64, mut conn: Box<Conn>) {
        let c = &self.worker.counters;
        log::error!("{} dropped after an internal panic", conn.shared.trace_id);
        c.inc(&c.conn_panics);
        c.inc(&c.conns_closed);
        conn.listener.counters.inc(&conn.listener.counters.conns_closed);
        st.release_conn(id, &mut conn);
        if let Ok(ev) = guarded(|| {
            conn.mark_closed_internal_error();
            conn.closed_event()
        }) {
            st.events.push_back(ev);
        }
    }
}

/// Runs `f`, turning a panic into `Err(())`. The panic message has already
/// been printed by the panic hook.
fn guarded<T>(f: impl FnOnce() -> T) -> std::result::Result<T, ()> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|_| ())
}


fn listener_conn_sockets(l: &Listener) -> bool {
    l.conn_sockets && matches!(l.mode, Mode::Sockets(_))
}

fn attach_qlog(conn: &mut Conn, dir: &std::path::Path) {
    let path = dir.join(format!("{}-{}.sqlog", conn.shared.trace_id, conn.shared.id));
    match std::fs::File::create(&path) {
        Ok(f) => conn.q.set_qlog(
            Box::new(std::io::BufWriter::new(f)),
            "haquic".into(),
            format!("haquic connection {}", conn.shared.id),
        ),
        Err(e) => log::warn!("qlog {}: {e}", path.display()),
    }
}
