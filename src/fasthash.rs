//! A fast, non-cryptographic hasher for the engine's internal maps.
//!
//! Every map it serves is keyed by something haquic itself allocates or
//! bounds: connection numbers, file descriptors, listener numbers, the
//! connection IDs haquic issued, and stream IDs below the stream limit haquic
//! advertised. A peer can look keys up but cannot choose what is inserted,
//! so the collision flooding that SipHash (std's default) protects against
//! cannot be mounted, and its cost (about 2 % of the instructions per
//! request in callgrind) buys nothing here. The mixing is FxHash's: one
//! rotate, xor and multiply per 8 bytes.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// FxHash-style hasher.
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(n as u64);
    }

    #[inline]
    fn write_i32(&mut self, n: i32) {
        self.add(n as u32 as u64);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A HashMap with [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;
/// A HashSet with [`FastHasher`].
pub type FastSet<K> = HashSet<K, BuildHasherDefault<FastHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_sequential_and_byte_keys() {
        // Stream IDs step by 4; connection IDs are bytes: both must land in
        // many distinct buckets of a small table.
        let buckets = |hashes: Vec<u64>| hashes.iter().map(|h| h >> 57).collect::<HashSet<_>>().len();
        let ids: Vec<u64> = (0..256u64)
            .map(|i| {
                let mut h = FastHasher::default();
                h.write_u64(i * 4);
                h.finish()
            })
            .collect();
        assert!(buckets(ids) > 64, "top bits of stream-id hashes barely vary");
        let cids: Vec<u64> = (0..256u32)
            .map(|i| {
                let mut h = FastHasher::default();
                let mut cid = [7u8; 20];
                cid[..4].copy_from_slice(&i.to_be_bytes());
                h.write(&cid);
                h.finish()
            })
            .collect();
        assert!(buckets(cids) > 64, "top bits of connection-id hashes barely vary");
        let mut m: FastMap<Vec<u8>, u32> = FastMap::default();
        m.insert(b"abc".to_vec(), 1);
        assert_eq!(m.get(&b"abc"[..]), Some(&1));
        assert_eq!(m.get(&b"abd"[..]), None);
    }
}
