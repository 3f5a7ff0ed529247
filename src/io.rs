//! UDP sockets the engine owns: one non-blocking socket per worker on the same
//! address with SO_REUSEPORT, so that each worker reads only its own socket
//! and the kernel spreads clients by 4-tuple. A datagram that lands on the
//! wrong worker is forwarded by connection ID (see `dispatch`).
//!
//! A socket the host polls is released in two phases; [`Lease`] holds where
//! it stands, for the workers and for the loom model of the release.
//!
//! This module and `ffi` are the only places with `unsafe`.

mod lease;

pub use lease::Lease;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

static GENERATION: AtomicU32 = AtomicU32::new(1);

/// `UDP_SEGMENT` and `UDP_GRO` from linux/udp.h (not in the libc crate for
/// glibc targets).
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;

/// Whether sends may use GSO; cleared the first time the kernel refuses it,
/// after which datagrams go one by one.
static GSO_ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns GSO off for this process (a kernel that refuses it, or a test of the
/// fallback).
pub fn disable_gso() {
    GSO_ENABLED.store(false, Ordering::Relaxed);
}

/// Whether GSO is in use.
pub fn gso_enabled() -> bool {
    GSO_ENABLED.load(Ordering::Relaxed)
}

/// A non-blocking UDP socket with a generation number, so that a readiness
/// notification for an fd number the kernel has since reused is detected.
#[derive(Debug)]
pub struct UdpSocket {
    sock: std::net::UdpSocket,
    /// Changes with every socket the engine creates.
    pub generation: u32,
    /// The peer a per-connection socket is connected to, remembered so that
    /// checking it before each send costs no getpeername() call.
    peer: Option<SocketAddr>,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

/// Sets an integer socket option.
fn set_int_opt(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: setsockopt(2) reads `size_of::<c_int>()` bytes from a valid
    // pointer; a bad fd or option is an error return, not undefined behaviour.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

impl UdpSocket {
    /// Binds a non-blocking socket with SO_REUSEADDR and SO_REUSEPORT.
    pub fn bind_reuseport(addr: SocketAddr) -> io::Result<UdpSocket> {
        Self::bind_opts(addr, true)
    }

    fn bind_opts(addr: SocketAddr, reuseport: bool) -> io::Result<UdpSocket> {
        let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
        // SAFETY: plain socket(2); the fd is owned by the UdpSocket below or
        // closed on error.
        let fd = cvt(unsafe { libc::socket(domain, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) })?;
        // SAFETY: `fd` is a fresh socket we own; from here the std type closes it.
        let sock = unsafe { std::net::UdpSocket::from_raw_fd(fd) };
        set_int_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
        if reuseport {
            set_int_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
        }
        if addr.is_ipv6() {
            set_int_opt(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
        }
        let (storage, len) = sockaddr_from(&addr);
        // SAFETY: `storage` holds a sockaddr of `len` bytes for this family.
        cvt(unsafe { libc::bind(fd, &storage as *const _ as *const libc::sockaddr, len) })?;
        // GRO: let the kernel hand us coalesced datagrams with their segment
        // size. A kernel without it simply delivers them one by one.
        let _ = set_int_opt(fd, libc::SOL_UDP, UDP_GRO, 1);
        Ok(UdpSocket { sock, generation: GENERATION.fetch_add(1, Ordering::Relaxed), peer: None })
    }

    /// Sends `buf` as datagrams of `seg` bytes (the last may be shorter) to
    /// `to`, or to the connected peer when `to` is None: one sendmsg with
    /// UDP_SEGMENT (GSO) when the kernel allows it, one send per datagram
    /// otherwise. Returns whether GSO carried it.
    pub fn send_segments(&self, buf: &[u8], seg: usize, to: Option<SocketAddr>) -> io::Result<bool> {
        if buf.len() > seg && seg > 0 && gso_enabled() {
            match self.sendmsg_gso(buf, seg, to) {
                Ok(()) => return Ok(true),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP)) => {
                    log::info!("UDP GSO refused by the kernel ({e}); sending datagrams one by one");
                    disable_gso();
                }
                Err(e) => return Err(e),
            }
        }
        for chunk in buf.chunks(seg.max(1)) {
            match to {
                Some(a) => self.sock.send_to(chunk, a)?,
                None => self.sock.send(chunk)?,
            };
        }
        Ok(false)
    }

    fn sendmsg_gso(&self, buf: &[u8], seg: usize, to: Option<SocketAddr>) -> io::Result<()> {
        let mut iov = libc::iovec { iov_base: buf.as_ptr() as *mut libc::c_void, iov_len: buf.len() };
        let (mut name, name_len) = match to {
            Some(a) => sockaddr_from(&a),
            // SAFETY: plain data; all-zero is valid and unused with len 0.
            None => (unsafe { std::mem::zeroed() }, 0),
        };
        // Room for one cmsg carrying a u16, 8-byte aligned.
        let mut control = [0u64; 4];
        // SAFETY: msghdr is plain data; every pointer set below outlives the
        // sendmsg call, and the control buffer is large and aligned enough
        // for CMSG_SPACE(2).
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = if name_len > 0 { &mut name as *mut _ as *mut libc::c_void } else { std::ptr::null_mut() };
            msg.msg_namelen = name_len;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = libc::CMSG_SPACE(2) as usize;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_UDP;
            (*cmsg).cmsg_type = UDP_SEGMENT;
            (*cmsg).cmsg_len = libc::CMSG_LEN(2) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut u16, seg as u16);
            cvt(libc::sendmsg(self.sock.as_raw_fd(), &msg, 0) as libc::c_int)?;
        }
        Ok(())
    }

    /// Receives one datagram, or a GRO batch of several: returns the bytes,
    /// the sender, and the segment size (the whole length when not
    /// coalesced). `WouldBlock` when there is nothing.
    pub fn recv_segments(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, usize)> {
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
        // SAFETY: plain data; all-zero is a valid value.
        let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut control = [0u64; 8];
        // SAFETY: the msghdr points at live local buffers of the sizes given;
        // cmsgs are read only within msg_controllen as the kernel set it.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = &mut name as *mut _ as *mut libc::c_void;
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = std::mem::size_of_val(&control);
            let n = libc::recvmsg(self.sock.as_raw_fd(), &mut msg, 0);
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = n as usize;
            let mut seg = n;
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == UDP_GRO {
                    let s = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::c_int);
                    if s > 0 {
                        seg = s as usize;
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
            let name_bytes = std::slice::from_raw_parts(&name as *const _ as *const u8, msg.msg_namelen as usize);
            let peer = sockaddr_to(name_bytes).unwrap_or_else(unspecified);
            Ok((n, peer, seg))
        }
    }

    /// A per-connection socket: bound to the listener's address (sharing its
    /// port through SO_REUSEADDR/SO_REUSEPORT) and connected to the peer, so
    /// the kernel delivers that peer's datagrams to it directly.
    pub fn bind_connected(local: SocketAddr, peer: SocketAddr) -> io::Result<UdpSocket> {
        // SO_REUSEADDR only: joining the listeners' SO_REUSEPORT group would
        // let the kernel's group selection hand other peers' datagrams to
        // this connected socket, and a reloading process's exit then loses
        // them (HAProxy's native per-connection sockets do the same).
        let mut s = Self::bind_opts(local, false)?;
        s.sock.connect(peer)?;
        s.peer = Some(peer);
        Ok(s)
    }

    /// Sends on a connected socket.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.sock.send(buf)
    }

    /// The connected peer, if any.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// The fd, for the host to poll.
    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// The socket as the host is about to poll it.
    pub fn lease(&self) -> Lease {
        Lease::new(self.fd(), self.generation)
    }

    /// Receives one datagram; `WouldBlock` when there is none.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.sock.recv_from(buf)
    }

    /// Sends one datagram.
    pub fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.sock.send_to(buf, to)
    }
}

/// 0.0.0.0:0, for a socket whose address cannot be read.
pub fn unspecified() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

/// A `sockaddr_storage` for an address, and its length.
pub fn sockaddr_from(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Reads a `sockaddr_in`/`sockaddr_in6` from raw bytes, checking family and
/// length.
pub fn sockaddr_to(bytes: &[u8]) -> Option<SocketAddr> {
    if bytes.len() < 2 {
        return None;
    }
    let family = u16::from_ne_bytes([bytes[0], bytes[1]]) as libc::c_int;
    if family == libc::AF_INET && bytes.len() >= std::mem::size_of::<libc::sockaddr_in>() {
        // SAFETY: length checked; read_unaligned copes with any alignment.
        let sin: libc::sockaddr_in = unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const libc::sockaddr_in) };
        let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
        Some(SocketAddr::new(ip.into(), u16::from_be(sin.sin_port)))
    } else if family == libc::AF_INET6 && bytes.len() >= std::mem::size_of::<libc::sockaddr_in6>() {
        // SAFETY: as above.
        let s: libc::sockaddr_in6 = unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const libc::sockaddr_in6) };
        let ip = std::net::Ipv6Addr::from(s.sin6_addr.s6_addr);
        Some(SocketAddr::V6(std::net::SocketAddrV6::new(ip, u16::from_be(s.sin6_port), s.sin6_flowinfo, s.sin6_scope_id)))
    } else {
        None
    }
}

/// The raw bytes of a sockaddr for `addr`.
pub fn sockaddr_bytes(addr: &SocketAddr) -> Vec<u8> {
    let (storage, len) = sockaddr_from(addr);
    // SAFETY: `storage` is initialised for at least `len` bytes.
    unsafe { std::slice::from_raw_parts(&storage as *const _ as *const u8, len as usize) }.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_roundtrip() {
        for a in ["127.0.0.1:4433", "[::1]:443", "[fe80::1%2]:80"] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(sockaddr_to(&sockaddr_bytes(&a)), Some(a));
        }
        assert_eq!(sockaddr_to(&[0u8; 3]), None);
    }

    #[test]
    fn gso_send_and_gro_receive_roundtrip() {
        let a = UdpSocket::bind_reuseport("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = UdpSocket::bind_reuseport("127.0.0.1:0".parse().unwrap()).unwrap();
        let to = b.local_addr().unwrap();
        let data: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        a.send_segments(&data, 1200, Some(to)).unwrap();
        // Three datagrams of 1200, 1200 and 600 bytes, whether they arrive
        // coalesced (GRO) or one by one.
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65535];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while got.len() < data.len() && std::time::Instant::now() < deadline {
            match b.recv_segments(&mut buf) {
                Ok((n, from, seg)) => {
                    assert_eq!(from, a.local_addr().unwrap());
                    assert!(seg == 1200 || seg == 600 || seg == n, "segment size {seg} for {n} bytes");
                    got.extend_from_slice(&buf[..n]);
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        }
        assert_eq!(got, data);
    }

    #[test]
    fn reuseport_sockets_share_an_address() {
        let a = UdpSocket::bind_reuseport("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = a.local_addr().unwrap();
        let b = UdpSocket::bind_reuseport(addr).unwrap();
        assert_eq!(b.local_addr().unwrap(), addr);
        assert_ne!(a.generation, b.generation);
    }
}
