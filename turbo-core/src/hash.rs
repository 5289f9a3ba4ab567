//! A fast hasher for node ids: they are sequential integers, so SipHash's
//! protection against crafted keys buys nothing on this hot path.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use crate::node::NodeId;

/// Multiplicative hashing of one `u64` (Fibonacci hashing).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct NodeHasher(u64);

impl Hasher for NodeHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0 ^ value).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 ^= self.0 >> 29;
    }
}

/// Builds [`NodeHasher`]s.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct NodeHashBuilder;

impl BuildHasher for NodeHashBuilder {
    type Hasher = NodeHasher;

    fn build_hasher(&self) -> NodeHasher {
        NodeHasher::default()
    }
}

/// A map keyed by node id.
pub(crate) type NodeMap<V> = HashMap<NodeId, V, NodeHashBuilder>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_spread_over_buckets() {
        let builder = NodeHashBuilder;
        let low_bits: std::collections::HashSet<u64> =
            (0..1024u64).map(|i| builder.hash_one(i) & 1023).collect();
        // Sequential keys must not collapse onto a few buckets.
        assert!(
            low_bits.len() > 600,
            "only {} distinct buckets",
            low_bits.len()
        );
    }
}
