//! Counters: one set per worker, summed for the engine. Every drop, refusal
//! and misuse the contract turns into "an error code and a counter" lands
//! here.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[doc = $doc:expr])* $name:ident ),* $(,)?) => {
        /// Atomic counters of one worker.
        #[derive(Debug, Default)]
        pub struct Counters {
            $( $(#[doc = $doc])* pub $name: AtomicU64, )*
        }

        /// A plain copy of the counters.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct Snapshot {
            $( $(#[doc = $doc])* pub $name: u64, )*
        }

        impl Counters {
            /// Reads every counter.
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $( $name: self.$name.load(Ordering::Relaxed), )* }
            }
        }

        impl Snapshot {
            /// Adds another snapshot into this one.
            pub fn add(&mut self, o: &Snapshot) {
                $( self.$name += o.$name; )*
            }
        }
    };
}

counters! {
    /// Completed handshakes.
    handshakes,
    /// Connections accepted (server) or started (client).
    conns_accepted,
    /// Connections closed.
    conns_closed,
    /// Datagrams received and handed to a connection.
    packets_in,
    /// Datagrams sent.
    packets_out,
    /// Bytes received in datagrams.
    bytes_in,
    /// Bytes sent in datagrams.
    bytes_out,
    /// Packets declared lost, summed over closed connections.
    lost,
    /// Packets retransmitted, summed over closed connections.
    retransmitted,
    /// Requests received.
    requests,
    /// Requests refused with H3_REQUEST_REJECTED (after GOAWAY).
    requests_rejected,
    /// Streams reset with H3_MESSAGE_ERROR (malformed messages).
    h3_message_errors,
    /// HTTP/3 connection errors.
    h3_conn_errors,
    /// Streams whose first frame was STOP_SENDING or RESET_STREAM.
    streams_aborted_before_headers,
    /// Datagrams dropped: owner's dispatch queue full.
    drop_queue_full,
    /// Datagrams dropped: no destination ID could be read.
    drop_unparsable,
    /// Datagrams dropped: unknown connection ID, not an Initial.
    drop_unknown_cid,
    /// Datagrams dropped: invalid Retry token.
    drop_bad_token,
    /// Datagrams dropped: the host's outgoing queue was full.
    drop_out_queue_full,
    /// Datagrams dropped: too many connections on the worker.
    drop_conn_limit,
    /// Datagrams dropped: the listener is closed or the engine is stopping.
    drop_not_accepting,
    /// Datagrams quiche rejected.
    drop_invalid,
    /// Stateless resets sent.
    resets_sent,
    /// Stateless resets not sent because of the rate limit.
    resets_rate_limited,
    /// Retry packets sent.
    retries_sent,
    /// Version negotiation packets sent.
    version_negotiations,
    /// Completed path migrations.
    migrations,
    /// Readiness notifications for an fd generation that is gone.
    stale_fd_notifications,
    /// Calls on a handle whose object is closed.
    stale_handle_calls,
    /// Calls from a thread that does not own the object.
    wrong_thread_calls,
    /// Send errors from the socket layer.
    send_errors,
    /// Per-connection sockets opened.
    conn_sockets_opened,
    /// Per-connection sockets that could not be opened (the listener socket
    /// is used instead).
    conn_socket_fallbacks,
    /// Sockets closed after the host confirmed their release.
    fds_released,
    /// Sends that carried several datagrams with GSO (UDP_SEGMENT).
    gso_sends,
    /// Receives that returned several coalesced datagrams (UDP_GRO).
    gro_batches,
    /// Connections that accepted 0-RTT data.
    zero_rtt_accepted,
    /// Connections dropped after a panic inside quiche or haquic while the
    /// worker drove them; the worker and its other connections carry on.
    conn_panics,
    /// Datagrams held back by pacing until quiche's send time (at least
    /// 1 ms ahead), then sent one by one.
    packets_paced,
    /// Flushes held back so that the host's answer carries the ACK of the
    /// request just handed to it.
    sends_held,
}

impl Counters {
    /// Adds one.
    pub fn inc(&self, c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    pub fn add(&self, c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}
