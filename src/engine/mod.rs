//! The engine layer: configuration, workers, listeners, lifecycle and
//! statistics.
//!
//! An [`EngineInner`] owns N workers (one per host thread), the dispatcher
//! that routes datagrams between them, and the listeners. It never touches a
//! socket itself (`io` does) and contains no unsafe code (`ffi` does the
//! casts). Operations on a connection or stream go through the owning
//! worker, which checks the calling thread first.

pub mod config;
pub mod event;
pub mod listener;
pub mod stats;
pub mod tls;
pub mod worker;

pub use config::{CcAlgorithm, Config, ConfigState, Limits};

use crate::cid::{Keys, MAX_WORKERS};
use crate::conn::{ConnShared, StreamShared};
use crate::dispatch::{Datagram, Dispatcher, DropReason, WakeFn};
use crate::error::{Error, Result, haquic_result};
use crate::handle::{Shared, Tracked, shared};
use event::Event;
use listener::{Listener, Mode};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use worker::{Ctx, OutDatagram, Worker, WorkerState};

/// Engine-wide options.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Number of workers (HAProxy's nbthread).
    pub workers: usize,
    /// Capacity of each worker's inbound dispatch queue.
    pub dispatch_queue_capacity: usize,
    /// Capacity of each worker's outbound queue (host-fed listeners).
    pub out_queue_capacity: usize,
    /// Connections one worker accepts before it drops new Initials.
    pub max_connections_per_worker: usize,
    /// Always answer a tokenless Initial with Retry.
    pub force_retry: bool,
    /// Half-open connections on a worker above which Retry starts (0: never).
    pub retry_threshold: usize,
    /// Stateless resets a worker sends per second at most.
    pub stateless_resets_per_second: u32,
    /// Directory for one qlog file per connection.
    pub qlog_dir: Option<std::path::PathBuf>,
}

impl Default for EngineOptions {
    fn default() -> EngineOptions {
        EngineOptions {
            workers: 1,
            dispatch_queue_capacity: 4096,
            out_queue_capacity: 8192,
            max_connections_per_worker: 100_000,
            force_retry: false,
            retry_threshold: 0,
            stateless_resets_per_second: 100,
            qlog_dir: None,
        }
    }
}

impl EngineOptions {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        let range = |name: &str, v: usize, lo: usize, hi: usize| {
            if v < lo || v > hi {
                Err(Error::new(haquic_result::HAQUIC_ERR_OUT_OF_RANGE, format!("{name} = {v} is out of range [{lo}, {hi}]")))
            } else {
                Ok(())
            }
        };
        range("workers", self.workers, 1, MAX_WORKERS)?;
        range("dispatch_queue_capacity", self.dispatch_queue_capacity, 16, 1 << 20)?;
        range("out_queue_capacity", self.out_queue_capacity, 16, 1 << 20)?;
        range("max_connections_per_worker", self.max_connections_per_worker, 1, 10_000_000)?;
        range("retry_threshold", self.retry_threshold, 0, 10_000_000)?;
        range("stateless_resets_per_second", self.stateless_resets_per_second as usize, 0, 1_000_000)?;
        if let Some(d) = &self.qlog_dir {
            if !d.is_dir() {
                return Err(Error::new(
                    haquic_result::HAQUIC_ERR_FILE_NOT_FOUND,
                    format!("qlog directory '{}' does not exist", d.display()),
                ));
            }
        }
        Ok(())
    }
}

/// The engine.
pub struct EngineInner {
    /// The engine-wide configuration (and the default for listeners).
    pub config: Shared<Config>,
    /// Options.
    pub opts: EngineOptions,
    /// Keys from the cluster secret.
    pub keys: Keys,
    /// The workers.
    pub workers: Vec<Worker>,
    /// Cross-worker routing.
    pub dispatcher: Dispatcher,
    /// Listeners, read when a worker polls its sockets.
    pub listeners: Mutex<Vec<Shared<Listener>>>,
    /// Set by a graceful shutdown.
    pub shutting_down: AtomicBool,
    /// Connection numbering.
    pub next_conn_id: AtomicU64,
    /// Changes when a listener is added, so workers adopt its sockets.
    pub listener_epoch: AtomicU64,
    next_listener_id: AtomicU32,
    weak: Weak<Tracked<EngineInner>>,
}

impl std::fmt::Debug for EngineInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineInner").field("workers", &self.workers.len()).finish_non_exhaustive()
    }
}

/// Creates an engine from a checked configuration.
pub fn new_engine(config: Shared<Config>, opts: EngineOptions, wake: WakeFn) -> Result<Shared<EngineInner>> {
    opts.validate()?;
    let secret = config.snapshot()?.cluster_secret;
    let keys = Keys::derive(&secret);
    Ok(Arc::new_cyclic(|weak| {
        Tracked::new(EngineInner {
            dispatcher: Dispatcher::new(opts.workers, opts.dispatch_queue_capacity, keys.clone(), wake),
            workers: (0..opts.workers).map(Worker::new).collect(),
            config,
            keys,
            opts,
            listeners: Mutex::new(Vec::new()),
            shutting_down: AtomicBool::new(false),
            next_conn_id: AtomicU64::new(1),
            listener_epoch: AtomicU64::new(0),
            next_listener_id: AtomicU32::new(1),
            weak: weak.clone(),
        })
    }))
}

impl EngineInner {
    /// The worker `w`, or an error naming the range.
    pub fn worker(&self, w: usize) -> Result<&Worker> {
        self.workers.get(w).ok_or_else(|| {
            Error::new(
                haquic_result::HAQUIC_ERR_OUT_OF_RANGE,
                format!("worker {w} does not exist (the engine has {})", self.workers.len()),
            )
        })
    }

    fn ctx<'a>(&'a self, w: &'a Worker) -> Ctx<'a> {
        Ctx { engine: self, engine_weak: self.weak.clone(), worker: w }
    }

    /// Adds a listener. `config` None uses the engine's.
    pub fn add_listener(
        &self,
        local: SocketAddr,
        config: Option<Shared<Config>>,
        host_fed: bool,
        conn_sockets: bool,
    ) -> Result<Shared<Listener>> {
        if host_fed && conn_sockets {
            return Err(Error::new(
                haquic_result::HAQUIC_ERR_INVALID_ARGUMENT,
                "per-connection sockets need engine-owned sockets, not a host-fed listener",
            ));
        }
        let config = config.unwrap_or_else(|| self.config.clone());
        config.check()?;
        let id = self.next_listener_id.fetch_add(1, Ordering::Relaxed);
        let (mode, local) = if host_fed {
            (Mode::HostFed, local)
        } else {
            let first = crate::io::UdpSocket::bind_reuseport(local)
                .map_err(|e| Error::new(haquic_result::HAQUIC_ERR_IO, format!("bind {local}: {e}")))?;
            let bound = first.local_addr().unwrap_or(local);
            let mut socks = vec![first];
            for _ in 1..self.workers.len() {
                socks.push(
                    crate::io::UdpSocket::bind_reuseport(bound)
                        .map_err(|e| Error::new(haquic_result::HAQUIC_ERR_IO, format!("bind {bound}: {e}")))?,
                );
            }
            (Mode::Sockets(socks.into_iter().map(listener::SocketSlot::new).collect()), bound)
        };
        let l = shared(Listener::new(id, local, config, mode, conn_sockets));
        self.listeners.lock().unwrap().push(l.clone());
        self.listener_epoch.fetch_add(1, Ordering::Release);
        Ok(l)
    }

    /// Hands a datagram received on `listener` to its owner (any thread).
    pub fn feed(&self, listener: &Shared<Listener>, data: &[u8], peer: SocketAddr) -> Result<usize> {
        let d = Datagram { listener: listener.clone(), data: data.to_vec(), peer, local: listener.local };
        self.dispatcher.dispatch(d).map_err(|r| {
            let (code, why) = match r {
                DropReason::QueueFull => (haquic_result::HAQUIC_ERR_QUEUE_FULL, "the owner's dispatch queue is full"),
                DropReason::Unparsable => (haquic_result::HAQUIC_ERR_PROTOCOL, "no destination connection ID"),
            };
            Error::new(code, format!("datagram dropped: {why}"))
        })
    }

    /// Drives worker `w` (owner thread only).
    pub fn process(&self, w: usize) -> Result<()> {
        let worker = self.worker(w)?;
        let mut st = worker.lock()?;
        self.ctx(worker).process(&mut st);
        let more = st.has_pending_work();
        drop(st);
        if more {
            // Outside the state lock: no callback runs while it is borrowed.
            self.dispatcher.wake(w);
        }
        Ok(())
    }

    /// Milliseconds until worker `w` needs `process` again for its timers;
    /// None when it has none. 0 when datagrams are queued.
    pub fn next_timeout(&self, w: usize) -> Result<Option<Duration>> {
        let worker = self.worker(w)?;
        if self.dispatcher.pending(w) > 0 {
            return Ok(Some(Duration::ZERO));
        }
        let st = worker.lock()?;
        Ok(st.next_timeout(Instant::now()))
    }

    /// Runs `f` with worker `w`'s state (owner thread only).
    pub fn with_worker<T>(&self, w: usize, f: impl FnOnce(&mut WorkerState, &Ctx<'_>) -> Result<T>) -> Result<T> {
        let worker = self.worker(w)?;
        let mut st = worker.lock()?;
        let ctx = self.ctx(worker);
        f(&mut st, &ctx)
    }

    /// The next event of worker `w`.
    pub fn poll(&self, w: usize) -> Result<Option<Event>> {
        self.with_worker(w, |st, _| Ok(st.next_event()))
    }

    /// The next outgoing datagram of worker `w` (host-fed listeners).
    pub fn pop_datagram(&self, w: usize) -> Result<Option<OutDatagram>> {
        self.with_worker(w, |st, _| Ok(st.next_datagram()))
    }

    /// Acts on a connection through its owner; wakes the owner afterwards so
    /// that the change is sent.
    pub fn with_conn<T>(
        &self,
        conn: &ConnShared,
        f: impl FnOnce(&mut crate::conn::Conn, &stats::Counters) -> Result<T>,
    ) -> Result<T> {
        let worker = self.worker(conn.worker)?;
        let r = {
            let mut st = worker.lock()?;
            st.with_conn(conn.id, &worker.counters, f)
        };
        // The callback runs with no engine state borrowed.
        self.dispatcher.wake(conn.worker);
        r
    }

    /// Acts on a stream through its connection's owner.
    pub fn with_stream<T>(
        &self,
        stream: &StreamShared,
        f: impl FnOnce(&mut crate::conn::Conn, &stats::Counters) -> Result<T>,
    ) -> Result<T> {
        self.with_conn(&stream.conn, f)
    }

    /// Client role: connects from worker `w` through `listener`.
    pub fn connect(
        &self,
        w: usize,
        listener: Shared<Listener>,
        peer: SocketAddr,
        sni: Option<&str>,
        session: Option<&[u8]>,
    ) -> Result<Shared<ConnShared>> {
        self.with_worker(w, |st, ctx| ctx.connect(st, listener, peer, sni, session))
    }

    /// Starts a graceful shutdown of every connection: GOAWAY, in-flight
    /// streams finish, then close. Listeners stop accepting.
    pub fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        for w in 0..self.workers.len() {
            self.dispatcher.wake(w);
        }
    }

    /// The host says `fd` (generation `generation`) of worker `w` is readable.
    pub fn fd_ready(&self, w: usize, fd: i32, generation: u32) -> Result<()> {
        let worker = self.worker(w)?;
        let mut st = worker.lock()?;
        st.fd_ready(fd, generation, &worker.counters)
    }

    /// The host stopped polling `fd` after an FD_RELEASE event: close it.
    pub fn fd_released(&self, w: usize, fd: i32, generation: u32) -> Result<()> {
        let worker = self.worker(w)?;
        let mut st = worker.lock()?;
        st.fd_released(fd, generation, &worker.counters)
    }

    /// Counters summed over workers, plus dispatcher drops.
    pub fn stats(&self) -> stats::Snapshot {
        let mut total = stats::Snapshot::default();
        for (i, w) in self.workers.iter().enumerate() {
            let mut s = w.counters.snapshot();
            s.drop_queue_full += self.dispatcher.overflows[i].load(Ordering::Relaxed);
            total.add(&s);
        }
        total.drop_unparsable += self.dispatcher.unparsable.load(Ordering::Relaxed);
        total
    }

    /// Counters of one worker.
    pub fn worker_stats(&self, w: usize) -> Result<stats::Snapshot> {
        let worker = self.worker(w)?;
        let mut s = worker.counters.snapshot();
        s.drop_queue_full += self.dispatcher.overflows[w].load(Ordering::Relaxed);
        Ok(s)
    }
}
