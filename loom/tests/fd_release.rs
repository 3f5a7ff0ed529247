//! Loom model of the two-phase fd release (DESIGN.md, invariant 4).
//!
//! Real code: `src/io/lease.rs` (`Lease`), which decides for the worker
//! whether a socket may still be read, whether a readiness notification is
//! for it, when to send FD_RELEASE, and whether the host's confirmation
//! completes its release. `Worker` below mirrors the `WorkerState` methods
//! of `src/engine/worker.rs` that call it (`fd_ready`, `fd_released`,
//! `release_conn_socket`, `read_conn_sockets`, the FD_REGISTER of a new
//! connection socket); that file needs quiche and cannot be compiled here.
//! Its state sits behind a mutex, as the real one does, and its events are
//! pulled by the host, as `haquic_worker_poll` does. `Kernel` is the fd
//! table: a closed fd number goes to the next socket opened. The host runs on
//! a thread of its own, which is more than the library allows (its calls
//! must come from the worker's thread, `Worker::check_owner`): every
//! interleaving of the two roles is covered.
//!
//! The scenario: the worker has lent socket A to the host. On the worker's
//! thread, A's connection closes (its socket is released), the worker reads
//! what is ready, and a new connection opens socket B, which gets A's fd
//! number as soon as A is closed. On the host's thread, concurrently, the
//! host pulls events, registers and deregisters fds, polls the fds it has
//! registered and reports them ready, confirms releases; and, once it has
//! confirmed A's, it replays a late readiness notification and a duplicate
//! confirmation for A. Checked in every interleaving:
//! - the host never polls an fd that is closed or names another socket
//!   than the one it registered (HAProxy 3.0.x's `fd_want_recv()` on a
//!   garbage fd), and the engine never reads one;
//! - a socket is closed exactly once, and only after the host's
//!   confirmation;
//! - a notification or confirmation for A once A is released is rejected,
//!   even when B has A's fd number, and B stays open.
//!
//! The `should_panic` tests run deliberately broken variants and expect loom
//! to catch each: closing the fd as soon as the host is asked to release it,
//! and naming sockets by fd number alone (no generation).

use haquic_loom::lease::Lease;
use loom::sync::{Arc, Mutex};
use loom::thread;
use std::collections::VecDeque;

/// fd numbers the model's kernel has.
const FDS: usize = 2;

/// The kernel's fd table: the socket (by generation) each fd number names.
struct Kernel {
    fds: [Option<u32>; FDS],
    next_generation: u32,
}

impl Kernel {
    /// socket(2): the lowest free fd number, and a new socket.
    fn socket(&mut self) -> (i32, u32) {
        let fd = self.fds.iter().position(Option::is_none).expect("out of fds");
        let generation = self.next_generation;
        self.next_generation += 1;
        self.fds[fd] = Some(generation);
        (fd as i32, generation)
    }

    fn close(&mut self, fd: i32, generation: u32) {
        assert_eq!(self.fds[fd as usize], Some(generation), "closing fd {fd}, which is not socket {generation}");
        self.fds[fd as usize] = None;
    }

    /// Someone uses `fd` believing it is socket `generation`.
    fn check(&self, who: &str, fd: i32, generation: u32) {
        let now = self.fds[fd as usize];
        assert_eq!(now, Some(generation), "{who} uses fd {fd} as socket {generation}, but fd {fd} is {now:?}");
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Event {
    Register(i32, u32),
    Release(i32, u32),
}

/// How the worker treats a socket it releases.
#[derive(Clone, Copy)]
enum Protocol {
    /// `Lease`'s: closes on the host's confirmation of that fd and
    /// generation.
    TwoPhase,
    /// Closes the fd as soon as it asks the host to release it (and takes
    /// the confirmation that follows as a formality).
    CloseOnRequest,
    /// Names a socket by its fd number: a notification or confirmation
    /// matches whatever socket has that number now.
    FdOnly,
}

struct Sock {
    lease: Lease,
    fd: i32,
    generation: u32,
    ready: bool,
}

/// The part of `WorkerState` the release involves.
struct Worker {
    socks: Vec<Sock>,
    events: VecDeque<Event>,
    /// Calls refused (`stale_fd_notifications`).
    stale: u32,
    protocol: Protocol,
    /// `CloseOnRequest`: closed, confirmation still to come.
    closed_early: Vec<(i32, u32)>,
}

impl Worker {
    /// A new connection socket, lent to the host (FD_REGISTER).
    fn open(&mut self, kernel: &Mutex<Kernel>) -> (i32, u32) {
        let (fd, generation) = kernel.lock().unwrap().socket();
        self.socks.push(Sock { lease: Lease::new(fd, generation), fd, generation, ready: false });
        self.events.push_back(Event::Register(fd, generation));
        (fd, generation)
    }

    /// `release_conn_socket`.
    fn release(&mut self, fd: i32, kernel: &Mutex<Kernel>) {
        let Some(i) = self.socks.iter().position(|s| s.fd == fd) else { return };
        let s = &mut self.socks[i];
        if let Some((fd, generation)) = s.lease.release() {
            s.ready = false;
            self.events.push_back(Event::Release(fd, generation));
            if let Protocol::CloseOnRequest = self.protocol {
                kernel.lock().unwrap().close(fd, generation);
                self.socks.remove(i);
                self.closed_early.push((fd, generation));
            }
        }
    }

    /// `fd_ready`.
    fn fd_ready(&mut self, fd: i32, generation: u32) -> Result<(), ()> {
        let protocol = self.protocol;
        let found = self.socks.iter_mut().find(|s| match protocol {
            Protocol::FdOnly => s.fd == fd && s.lease.in_use(),
            _ => s.lease.is_ready_for(fd, generation),
        });
        match found {
            Some(s) => {
                s.ready = true;
                Ok(())
            }
            None => {
                self.stale += 1;
                Err(())
            }
        }
    }

    /// `fd_released`: the socket leaves the worker, which closes it.
    fn fd_released(&mut self, fd: i32, generation: u32, kernel: &Mutex<Kernel>) -> Result<(), ()> {
        if let Some(i) = self.closed_early.iter().position(|c| *c == (fd, generation)) {
            self.closed_early.remove(i);
            return Ok(());
        }
        let protocol = self.protocol;
        let found = self.socks.iter().position(|s| match protocol {
            Protocol::FdOnly => s.fd == fd && !s.lease.in_use(),
            _ => s.lease.is_released_by(fd, generation),
        });
        match found {
            Some(i) => {
                let s = self.socks.remove(i);
                kernel.lock().unwrap().close(s.fd, s.generation);
                Ok(())
            }
            None => {
                self.stale += 1;
                Err(())
            }
        }
    }

    /// `read_conn_sockets`: reads what is ready and still in use.
    fn read(&mut self, kernel: &Mutex<Kernel>) {
        for s in self.socks.iter_mut().filter(|s| s.ready && s.lease.in_use()) {
            kernel.lock().unwrap().check("the engine", s.fd, s.generation);
            s.ready = false;
        }
    }
}

struct World {
    worker: Mutex<Worker>,
    kernel: Mutex<Kernel>,
}

/// The host: the fds it polls, and releases it has yet to confirm.
#[derive(Default)]
struct Host {
    polled: Vec<(i32, u32)>,
    to_confirm: Vec<(i32, u32)>,
    confirmed: Vec<(i32, u32)>,
}

impl Host {
    /// Pulls the events (`haquic_worker_poll`) and acts on them: registers,
    /// or deregisters and remembers to confirm.
    fn poll_events(&mut self, w: &World) {
        loop {
            let Some(ev) = w.worker.lock().unwrap().events.pop_front() else { return };
            match ev {
                Event::Register(fd, generation) => self.polled.push((fd, generation)),
                Event::Release(fd, generation) => {
                    self.polled.retain(|p| *p != (fd, generation));
                    self.to_confirm.push((fd, generation));
                }
            }
        }
    }

    /// Polls its fds and reports each ready (`haquic_worker_fd_ready`). The
    /// worker may refuse one it is releasing: the host has not pulled the
    /// FD_RELEASE yet.
    fn poll_fds(&self, w: &World) {
        for &(fd, generation) in &self.polled {
            w.kernel.lock().unwrap().check("the host", fd, generation);
            let _ = w.worker.lock().unwrap().fd_ready(fd, generation);
        }
    }

    /// Confirms the releases (`haquic_worker_fd_released`).
    fn confirm(&mut self, w: &World) {
        for (fd, generation) in std::mem::take(&mut self.to_confirm) {
            let r = w.worker.lock().unwrap().fd_released(fd, generation, &w.kernel);
            assert_eq!(r, Ok(()), "the confirmation of fd {fd} socket {generation}");
            self.confirmed.push((fd, generation));
        }
    }

    /// A late readiness notification and a duplicate confirmation for a
    /// socket already released: both must be refused.
    fn replay_stale(&self, w: &World) {
        for &(fd, generation) in &self.confirmed {
            let mut worker = w.worker.lock().unwrap();
            assert_eq!(worker.fd_ready(fd, generation), Err(()), "a late notification for fd {fd} socket {generation}");
            assert_eq!(
                worker.fd_released(fd, generation, &w.kernel),
                Err(()),
                "a duplicate confirmation for fd {fd} socket {generation}"
            );
        }
    }

    fn round(&mut self, w: &World) {
        self.poll_events(w);
        self.poll_fds(w);
        self.confirm(w);
        self.replay_stale(w);
    }
}

fn two_phase_release(protocol: Protocol) {
    loom::model(move || {
        let w = Arc::new(World {
            worker: Mutex::new(Worker {
                socks: Vec::new(),
                events: VecDeque::new(),
                stale: 0,
                protocol,
                closed_early: Vec::new(),
            }),
            kernel: Mutex::new(Kernel { fds: [None; FDS], next_generation: 1 }),
        });
        // Socket A, lent to the host.
        let (a_fd, a_gen) = w.worker.lock().unwrap().open(&w.kernel);
        let mut host = Host::default();
        host.poll_events(&w);

        let worker = {
            let w = w.clone();
            thread::spawn(move || {
                w.worker.lock().unwrap().release(a_fd, &w.kernel);
                w.worker.lock().unwrap().read(&w.kernel);
                let b = w.worker.lock().unwrap().open(&w.kernel);
                w.worker.lock().unwrap().read(&w.kernel);
                b
            })
        };
        let host = {
            let w = w.clone();
            thread::spawn(move || {
                host.round(&w);
                host.round(&w);
                host
            })
        };
        let b = worker.join().unwrap();
        let mut host = host.join().unwrap();
        // The host's later rounds, once the worker is idle.
        host.round(&w);
        host.round(&w);

        assert_eq!(host.confirmed, [(a_fd, a_gen)], "releases confirmed");
        assert_eq!(host.polled, [b], "fds polled at the end");
        assert!(w.worker.lock().unwrap().stale >= 2, "the stale calls were counted");
        let kernel = w.kernel.lock().unwrap();
        kernel.check("B's connection", b.0, b.1);
        assert!(kernel.fds.iter().filter(|f| f.is_some()).count() == 1, "open fds: {:?}", kernel.fds);
    });
}

#[test]
fn fds_are_closed_once_and_only_after_the_host_let_go() {
    two_phase_release(Protocol::TwoPhase);
}

#[test]
#[should_panic(expected = "the host uses fd 0 as socket 1")]
fn closing_on_request_pulls_the_fd_from_under_the_host() {
    two_phase_release(Protocol::CloseOnRequest);
}

#[test]
#[should_panic(expected = "for fd 0 socket 1")]
fn naming_sockets_by_fd_number_accepts_stale_calls() {
    two_phase_release(Protocol::FdOnly);
}
