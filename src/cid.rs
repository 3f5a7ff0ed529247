//! Connection IDs, stateless-reset tokens, and Retry tokens.
//!
//! Every connection ID the engine issues carries the id of the worker that owns
//! the connection, so any thread can route a datagram by decoding its
//! destination ID, with no shared table. The layout follows QUIC-LB's
//! plaintext mode so that a server id fits later:
//!
//! ```text
//! byte 0      config rotation (3 bits, 0b001 here) | length - 1 (5 bits)
//! bytes 1-2   server id (QUIC-LB), 0 until a load balancer assigns one
//! byte 3      worker id
//! bytes 4-15  random nonce
//! ```
//!
//! A client-chosen Initial ID does not have this shape; it is hashed (with a
//! per-engine key) to a worker. The same keyed material authenticates Retry
//! tokens and derives stateless-reset tokens, both from the cluster secret, so
//! that every process of a reload agrees on them.

use boring::hash::hmac_sha256;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Length of the connection IDs the engine issues.
pub const CID_LEN: usize = 16;
/// Config-rotation bits in the first byte (QUIC-LB); 0b111 is reserved there
/// for "unroutable", so 0b001 marks ours.
const ROTATION: u8 = 0b001;
/// The largest worker count a CID can encode.
pub const MAX_WORKERS: usize = 256;

/// Keys derived from the cluster secret.
#[derive(Clone)]
pub struct Keys {
    reset_key: [u8; 32],
    token_key: [u8; 32],
    hash_key: [u8; 32],
    /// TLS session ticket key (48 bytes, BoringSSL's layout), the same for
    /// every worker so that a client resumes on whichever worker its new
    /// connection lands, and across reloads with a cluster secret.
    pub ticket_key: [u8; 48],
    server_id: u16,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").field("server_id", &self.server_id).finish_non_exhaustive()
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC-SHA256 cannot fail for in-memory inputs; a BoringSSL failure here
    // would be an allocation failure, which aborts anyway.
    hmac_sha256(key, data).expect("HMAC-SHA256")
}

impl Keys {
    /// Derives every key from `secret`. An empty secret means "random, this
    /// process only": tokens then do not survive a reload.
    pub fn derive(secret: &[u8]) -> Keys {
        let mut random = [0u8; 32];
        let secret: &[u8] = if secret.is_empty() {
            boring::rand::rand_bytes(&mut random).expect("random bytes");
            &random
        } else {
            secret
        };
        let mut ticket_key = [0u8; 48];
        ticket_key[..32].copy_from_slice(&hmac(secret, b"haquic session ticket key v1 a"));
        ticket_key[32..].copy_from_slice(&hmac(secret, b"haquic session ticket key v1 b")[..16]);
        Keys {
            reset_key: hmac(secret, b"haquic stateless reset v1"),
            token_key: hmac(secret, b"haquic address token v1"),
            hash_key: hmac(secret, b"haquic initial dcid hash v1"),
            ticket_key,
            server_id: 0,
        }
    }

    /// A fresh connection ID owned by `worker`.
    pub fn new_cid(&self, worker: usize) -> [u8; CID_LEN] {
        debug_assert!(worker < MAX_WORKERS);
        let mut cid = [0u8; CID_LEN];
        boring::rand::rand_bytes(&mut cid[4..]).expect("random bytes");
        cid[0] = (ROTATION << 5) | (CID_LEN as u8 - 1);
        cid[1..3].copy_from_slice(&self.server_id.to_be_bytes());
        cid[3] = worker as u8;
        cid
    }

    /// The worker that owns a datagram's destination ID, for `workers`
    /// workers. IDs of our shape give their worker; anything else (a client's
    /// Initial ID, garbage) is hashed to a stable worker.
    pub fn route(&self, dcid: &[u8], workers: usize) -> usize {
        if let Some(w) = decode_worker(dcid) {
            if w < workers {
                return w;
            }
        }
        let h = hmac(&self.hash_key, dcid);
        (u64::from_le_bytes(h[..8].try_into().unwrap()) % workers as u64) as usize
    }

    /// The stateless-reset token for a connection ID (RFC 9000 §10.3.2).
    pub fn reset_token(&self, cid: &[u8]) -> u128 {
        let h = hmac(&self.reset_key, cid);
        u128::from_be_bytes(h[..16].try_into().unwrap())
    }

    /// Mints a Retry token binding the client's address and original
    /// destination ID, valid for `lifetime`.
    pub fn mint_retry_token(&self, peer: &SocketAddr, odcid: &[u8], now: SystemTime) -> Vec<u8> {
        let ts = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let mut body = Vec::with_capacity(1 + 8 + 1 + odcid.len() + 16);
        body.push(b'R');
        body.extend_from_slice(&ts.to_be_bytes());
        body.push(odcid.len() as u8);
        body.extend_from_slice(odcid);
        let mac = self.token_mac(peer, &body);
        body.extend_from_slice(&mac[..16]);
        body
    }

    /// Checks a Retry token from `peer`; returns the original destination ID
    /// it carries when the MAC matches and it is younger than `lifetime`.
    pub fn validate_retry_token(
        &self,
        peer: &SocketAddr,
        token: &[u8],
        now: SystemTime,
        lifetime: Duration,
    ) -> Option<Vec<u8>> {
        if token.len() < 1 + 8 + 1 + 16 || token[0] != b'R' {
            return None;
        }
        let odcid_len = token[9] as usize;
        if odcid_len > 20 || token.len() != 10 + odcid_len + 16 {
            return None;
        }
        let (body, mac) = token.split_at(10 + odcid_len);
        let expect = self.token_mac(peer, body);
        if !boring::memcmp::eq(&expect[..16], mac) {
            return None;
        }
        let ts = u64::from_be_bytes(body[1..9].try_into().unwrap());
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        if now.saturating_sub(ts) > lifetime.as_secs() || ts > now + 5 {
            return None;
        }
        Some(body[10..].to_vec())
    }

    fn token_mac(&self, peer: &SocketAddr, body: &[u8]) -> [u8; 32] {
        let mut data = Vec::with_capacity(body.len() + 18);
        match peer {
            SocketAddr::V4(a) => data.extend_from_slice(&a.ip().octets()),
            SocketAddr::V6(a) => data.extend_from_slice(&a.ip().octets()),
        }
        data.extend_from_slice(&peer.port().to_be_bytes());
        data.extend_from_slice(body);
        hmac(&self.token_key, &data)
    }
}

/// The worker encoded in one of our connection IDs, if it is one.
pub fn decode_worker(dcid: &[u8]) -> Option<usize> {
    if dcid.len() == CID_LEN && dcid[0] == (ROTATION << 5) | (CID_LEN as u8 - 1) {
        Some(dcid[3] as usize)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_ids_route_to_their_worker() {
        let k = Keys::derive(b"secret");
        for w in 0..8 {
            let cid = k.new_cid(w);
            assert_eq!(decode_worker(&cid), Some(w));
            assert_eq!(k.route(&cid, 8), w);
        }
        // Foreign IDs hash stably, within range.
        let foreign = [7u8; 8];
        let w = k.route(&foreign, 4);
        assert!(w < 4);
        assert_eq!(k.route(&foreign, 4), w);
        // An ID naming a worker beyond the engine's count is hashed, not trusted.
        let mut cid = k.new_cid(200);
        cid[3] = 200;
        assert!(k.route(&cid, 4) < 4);
    }

    #[test]
    fn reset_tokens_depend_on_secret_and_cid() {
        let a = Keys::derive(b"one");
        let b = Keys::derive(b"one");
        let c = Keys::derive(b"two");
        assert_eq!(a.reset_token(b"cid"), b.reset_token(b"cid"));
        assert_ne!(a.reset_token(b"cid"), c.reset_token(b"cid"));
        assert_ne!(a.reset_token(b"cid"), a.reset_token(b"cie"));
    }

    #[test]
    fn retry_tokens_survive_a_reload_and_reject_tampering() {
        let now = SystemTime::now();
        let peer: SocketAddr = "127.0.0.1:4433".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:4434".parse().unwrap();
        let old = Keys::derive(b"cluster");
        let new = Keys::derive(b"cluster");
        let t = old.mint_retry_token(&peer, b"odcid-1234", now);
        let life = Duration::from_secs(10);
        assert_eq!(new.validate_retry_token(&peer, &t, now, life).as_deref(), Some(&b"odcid-1234"[..]));
        assert_eq!(new.validate_retry_token(&other, &t, now, life), None);
        let mut bad = t.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(new.validate_retry_token(&peer, &bad, now, life), None);
        assert_eq!(new.validate_retry_token(&peer, &t, now + Duration::from_secs(60), life), None);
        assert_eq!(Keys::derive(b"x").validate_retry_token(&peer, &t, now, life), None);
        assert_eq!(new.validate_retry_token(&peer, &t[..5], now, life), None);
    }

    #[test]
    fn ticket_key_is_shared_by_secret_and_random_without_one() {
        assert_eq!(Keys::derive(b"cluster").ticket_key, Keys::derive(b"cluster").ticket_key);
        assert_ne!(Keys::derive(b"cluster").ticket_key, Keys::derive(b"other").ticket_key);
        assert_ne!(Keys::derive(b"").ticket_key, Keys::derive(b"").ticket_key);
    }

}
