//! Where a socket the host polls stands in its two-phase release.
//!
//! Kept apart from the sockets themselves so that the loom model of the
//! release (`loom/tests/fd_release.rs`) runs this very file.

use std::os::fd::RawFd;

/// A socket the host polls, named by its fd and generation, and where it
/// stands in the two-phase release (DESIGN.md, invariant 4).
///
/// The engine first asks the host to stop polling it (FD_RELEASE) and from
/// then on never reads or writes it; it closes it only when the host confirms
/// with the same fd and generation. The fd number alone does not name a
/// socket: once closed, the kernel gives it to the next one, so a readiness
/// notification or a confirmation of another generation is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    fd: RawFd,
    generation: u32,
    releasing: bool,
}

impl Lease {
    /// A socket just handed to the host (FD_REGISTER).
    pub fn new(fd: RawFd, generation: u32) -> Lease {
        Lease { fd, generation, releasing: false }
    }

    /// Whether the engine may still read or write the socket: the host has
    /// not been asked to release it.
    pub fn in_use(&self) -> bool {
        !self.releasing
    }

    /// Whether a readiness notification for `fd` and `generation` is about
    /// this socket, still in use.
    pub fn is_ready_for(&self, fd: RawFd, generation: u32) -> bool {
        self.fd == fd && self.generation == generation && !self.releasing
    }

    /// Starts the release: the fd and generation of the FD_RELEASE to send
    /// the host, the first time only.
    pub fn release(&mut self) -> Option<(RawFd, u32)> {
        if self.releasing {
            return None;
        }
        self.releasing = true;
        Some((self.fd, self.generation))
    }

    /// Whether the host's confirmation for `fd` and `generation` completes
    /// this socket's release: only then may it be closed.
    pub fn is_released_by(&self, fd: RawFd, generation: u32) -> bool {
        self.fd == fd && self.generation == generation && self.releasing
    }
}
