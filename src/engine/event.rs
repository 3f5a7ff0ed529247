//! Events the host pulls from a worker.

use crate::conn::{ConnShared, StreamShared};
use crate::h3::Field;
use crate::handle::Shared;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// The handshake completed.
    Established,
    /// A new request (server role): its validated header list; `fin` when no
    /// body follows.
    Request {
        /// Header fields, pseudo-headers first, cookie crumbs joined.
        fields: Vec<Field>,
        /// No body follows.
        fin: bool,
    },
    /// A response head (client role).
    Response {
        /// Header fields, `:status` first.
        fields: Vec<Field>,
        /// No body follows.
        fin: bool,
    },
    /// A trailer section; the stream's incoming side is complete.
    Trailers(Vec<Field>),
    /// Body bytes are waiting to be read.
    Readable,
    /// A stream that could not take all its data can take more.
    Writable,
    /// The peer finished its side of the stream.
    Finished,
    /// The peer reset the stream (RESET_STREAM) with this code, or the engine
    /// reset it for a protocol violation.
    Reset(u64),
    /// The peer asked us to stop sending (STOP_SENDING) with this code.
    StopSending(u64),
    /// The peer sent GOAWAY with this id.
    GoawayReceived(u64),
    /// A socket for the host to poll for reading, with its generation.
    FdRegister {
        /// The fd.
        fd: i32,
        /// Its generation: readiness notifications must carry it.
        generation: u32,
    },
    /// Stop polling this socket, then confirm with
    /// `haquic_worker_fd_released`; only then is it closed.
    FdRelease {
        /// The fd.
        fd: i32,
        /// Its generation.
        generation: u32,
    },
    /// The connection closed.
    Closed {
        /// An application (HTTP/3) error rather than a transport one.
        app: bool,
        /// The error code.
        code: u64,
        /// The reason phrase.
        reason: Vec<u8>,
    },
}

/// An event, with the objects it concerns.
#[derive(Debug, Clone)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The connection (None for a listener socket's fd events).
    pub conn: Option<Shared<ConnShared>>,
    /// The stream, for stream events.
    pub stream: Option<Shared<StreamShared>>,
}
