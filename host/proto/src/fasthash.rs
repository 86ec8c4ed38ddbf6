//! A fast, non-cryptographic hasher for maps keyed by ids.
//!
//! Task keys and module ids are blake3 hashes of content, so their bytes are already uniformly
//! distributed and need no SipHash (the standard library's default, built to resist chosen
//! keys) to spread them: folding their words with a multiply is enough and several times
//! cheaper. The scheduler and workers look tasks up several times per task.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A multiply-and-rotate hasher (the scheme of rustc's FxHasher).
#[derive(Debug, Default, Clone, Copy)]
pub struct FastHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// Builds [`FastHasher`]s.
pub type FastBuildHasher = BuildHasherDefault<FastHasher>;
/// A `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, FastBuildHasher>;
/// A `HashSet` with [`FastHasher`].
pub type FastSet<K> = HashSet<K, FastBuildHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TaskKey;

    #[test]
    fn maps_of_task_keys_work_and_spread() {
        let mut map: FastMap<TaskKey, usize> = FastMap::default();
        for i in 0..1000u32 {
            let key = TaskKey(*blake3::hash(&i.to_le_bytes()).as_bytes());
            map.insert(key, i as usize);
        }
        assert_eq!(map.len(), 1000);
        let key = TaskKey(*blake3::hash(&7u32.to_le_bytes()).as_bytes());
        assert_eq!(map.get(&key), Some(&7));
        // Different byte strings of the same length hash differently.
        let hash = |b: &[u8]| {
            let mut h = FastHasher::default();
            h.write(b);
            h.finish()
        };
        assert_ne!(hash(b"abcdefgh1"), hash(b"abcdefgh2"));
        assert_ne!(hash(&[0; 32]), hash(&[1; 32]));
    }
}
