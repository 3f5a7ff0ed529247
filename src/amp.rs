//! The server's anti-amplification limit (RFC 9000 §8.1), kept by haquic on
//! top of quiche's own: until a client's address is validated, a server
//! sends at most three times the bytes it has received from it.
//!
//! quiche 0.30 keeps that budget too, but it pads a datagram that carries an
//! Initial packet to 1200 bytes *after* charging the packets, not the
//! padding, to the budget. A server that answers the first half of a
//! two-datagram ClientHello (post-quantum key shares make ClientHellos that
//! large) with a padded ACK therefore gets about 1150 bytes it should not
//! have. The interop matrix saw it on the wire: 8332 bytes sent for 2400
//! received (`amplificationlimit`, libcurl with ngtcp2 and OpenSSL 3.6).
//!
//! [`AmpLimit`] counts what actually crosses the wire and the engine hands
//! quiche a send buffer no larger than what is left, so that quiche's padding
//! is bounded by it as well. The address counts as validated once quiche has
//! processed a client Handshake packet (every packet of a datagram that
//! carried one was accepted: a forged or damaged Handshake packet does not
//! count), once the handshake is complete, or from the start when the
//! connection was accepted with a Retry token.

/// The factor of RFC 9000 §8.1.
const FACTOR: usize = 3;

/// One server connection's budget before address validation.
#[derive(Debug, Clone)]
pub struct AmpLimit {
    recv: usize,
    sent: usize,
    validated: bool,
}

impl AmpLimit {
    /// No limit: a client connection, or a server that validated the
    /// address with a Retry token.
    pub fn validated() -> Self {
        AmpLimit { recv: 0, sent: 0, validated: true }
    }

    /// A server connection whose client address is not validated yet.
    pub fn server() -> Self {
        AmpLimit { recv: 0, sent: 0, validated: false }
    }

    /// The address is validated: no limit applies any more.
    pub fn is_validated(&self) -> bool {
        self.validated
    }

    /// A datagram of `len` bytes reached the connection. `validates`: it
    /// carried a Handshake packet and quiche accepted all its packets.
    pub fn on_recv(&mut self, len: usize, validates: bool) {
        self.recv = self.recv.saturating_add(len);
        if validates {
            self.validated = true;
        }
    }

    /// A datagram of `len` bytes left for the peer.
    pub fn on_sent(&mut self, len: usize) {
        self.sent = self.sent.saturating_add(len);
    }

    /// The handshake completed: the address was validated on the way.
    pub fn on_established(&mut self) {
        self.validated = true;
    }

    /// How many bytes may still be sent (None: no limit any more).
    pub fn budget(&self) -> Option<usize> {
        if self.validated {
            return None;
        }
        Some(self.recv.saturating_mul(FACTOR).saturating_sub(self.sent))
    }
}

/// What an incoming datagram holds, read from the unprotected fields of its
/// long headers before quiche decrypts it in place: how many QUIC packets
/// (coalesced packets walked by their Length field; a short-header packet
/// ends the datagram) and whether one of them is a QUIC v1 Handshake packet.
/// A datagram that cannot be walked reports what was read up to that point.
pub fn scan_datagram(data: &[u8]) -> (usize, bool) {
    let mut i = 0;
    let mut packets = 0;
    let mut handshake = false;
    while i < data.len() {
        let first = data[i];
        if first & 0x80 == 0 {
            return (packets + 1, handshake);
        }
        let Some(rest) = long_header_len(&data[i..]) else {
            return (packets + 1, handshake);
        };
        packets += 1;
        let version = u32::from_be_bytes([data[i + 1], data[i + 2], data[i + 3], data[i + 4]]);
        if version == 1 && (first >> 4) & 0x3 == 2 {
            handshake = true;
        }
        i += rest;
    }
    (packets, handshake)
}

/// The length of the long-header packet at the start of `p` (header and
/// payload), or None when it is truncated, has no Length field (Retry,
/// version negotiation) or is not QUIC v1.
fn long_header_len(p: &[u8]) -> Option<usize> {
    if p.len() < 7 {
        return None;
    }
    let version = u32::from_be_bytes([p[1], p[2], p[3], p[4]]);
    if version != 1 {
        return None;
    }
    let ty = (p[0] >> 4) & 0x3;
    if ty == 3 {
        return None; // Retry
    }
    let mut i = 5;
    let dcid_len = *p.get(i)? as usize;
    i += 1 + dcid_len;
    let scid_len = *p.get(i)? as usize;
    i += 1 + scid_len;
    if ty == 0 {
        let (token_len, n) = varint(p.get(i..)?)?;
        i = i.checked_add(n)?.checked_add(usize::try_from(token_len).ok()?)?;
    }
    let (len, n) = varint(p.get(i..)?)?;
    let end = i.checked_add(n)?.checked_add(usize::try_from(len).ok()?)?;
    (end <= p.len()).then_some(end)
}

/// A QUIC variable-length integer (RFC 9000 §16): its value and its size.
fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let first = *b.first()?;
    let n = 1usize << (first >> 6);
    let bytes = b.get(..n)?;
    let mut v = u64::from(first & 0x3f);
    for &x in &bytes[1..] {
        v = (v << 8) | u64::from(x);
    }
    Some((v, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A QUIC v1 long-header packet of `ty` (0 Initial, 1 0-RTT, 2
    /// Handshake) with a payload of `payload` bytes.
    fn long(ty: u8, payload: usize) -> Vec<u8> {
        let mut p = vec![0xc0 | (ty << 4), 0, 0, 0, 1, 8];
        p.extend_from_slice(&[0xaa; 8]);
        p.push(8);
        p.extend_from_slice(&[0xbb; 8]);
        if ty == 0 {
            p.push(0); // no token
        }
        // a two-byte varint length
        p.push(0x40 | (payload >> 8) as u8);
        p.push(payload as u8);
        p.extend(std::iter::repeat_n(0x55, payload));
        p
    }

    #[test]
    fn budget_is_three_times_received_until_validated() {
        let mut a = AmpLimit::server();
        assert_eq!(a.budget(), Some(0));
        a.on_recv(1200, false);
        assert_eq!(a.budget(), Some(3600));
        a.on_sent(1200); // a padded ACK counts in full
        assert_eq!(a.budget(), Some(2400));
        a.on_recv(1200, false);
        assert_eq!(a.budget(), Some(6000));
        a.on_sent(7000); // over by a caller's mistake: saturates at 0
        assert_eq!(a.budget(), Some(0));
        a.on_recv(60, true);
        assert_eq!(a.budget(), None);
        assert!(a.is_validated());
    }

    #[test]
    fn established_or_retry_means_no_limit() {
        let mut a = AmpLimit::server();
        a.on_established();
        assert_eq!(a.budget(), None);
        assert_eq!(AmpLimit::validated().budget(), None);
    }

    #[test]
    fn scan_counts_coalesced_packets_and_finds_handshake() {
        assert_eq!(scan_datagram(&long(0, 1100)), (1, false));
        let mut d = long(0, 300);
        d.extend(long(2, 200));
        assert_eq!(scan_datagram(&d), (2, true));
        // Initial + Handshake + a short-header packet
        d.extend_from_slice(&[0x40, 1, 2, 3, 4, 5]);
        assert_eq!(scan_datagram(&d), (3, true));
        // 0-RTT is not Handshake
        assert_eq!(scan_datagram(&long(1, 50)), (1, false));
        // short header alone
        assert_eq!(scan_datagram(&[0x41, 9, 9, 9]), (1, false));
    }

    #[test]
    fn scan_stops_on_truncated_or_foreign_packets() {
        // a Handshake packet whose Length runs past the datagram is not
        // reported: it cannot have been processed
        let mut d = long(2, 200);
        d.truncate(100);
        assert_eq!(scan_datagram(&d), (1, false));
        // QUIC v2 (not what quiche speaks) is not taken for v1 Handshake
        let mut v2 = long(2, 20);
        v2[1..5].copy_from_slice(&0x6b33_43cfu32.to_be_bytes());
        assert_eq!(scan_datagram(&v2), (1, false));
        assert_eq!(scan_datagram(&[]), (0, false));
        assert_eq!(scan_datagram(&[0xc0, 0, 0]), (1, false));
    }
}
