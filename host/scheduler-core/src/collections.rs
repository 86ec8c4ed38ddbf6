//! Small collections with O(1) operations used for the core's indexes.

use std::hash::{BuildHasherDefault, Hasher};

use crate::ids::Wid;

/// A fast hasher for small integer keys and for keys that are already hashes.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(buf));
        }
    }

    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.hash = (self.hash.rotate_left(5) ^ i).wrapping_mul(SEED);
    }

    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

/// Builds [`FxHasher`]s.
pub(crate) type FxBuild = BuildHasherDefault<FxHasher>;
/// A hash map with [`FxHasher`].
pub(crate) type FxHashMap<K, V> = hashbrown::HashMap<K, V, FxBuild>;
/// A hash set with [`FxHasher`].
pub(crate) type FxHashSet<K> = hashbrown::HashSet<K, FxBuild>;

/// A set of worker slots with O(1) insert, remove and membership, iterable in insertion order
/// modulo swap-removes.
#[derive(Default, Debug, Clone)]
pub(crate) struct WorkerSet {
    members: Vec<Wid>,
    pos: Vec<u32>,
}

const ABSENT: u32 = u32::MAX;

impl WorkerSet {
    pub(crate) fn contains(&self, w: Wid) -> bool {
        self.pos.get(w as usize).is_some_and(|&p| p != ABSENT)
    }

    pub(crate) fn insert(&mut self, w: Wid) {
        if self.contains(w) {
            return;
        }
        let i = w as usize;
        if self.pos.len() <= i {
            self.pos.resize(i + 1, ABSENT);
        }
        self.pos[i] = self.members.len() as u32;
        self.members.push(w);
    }

    pub(crate) fn remove(&mut self, w: Wid) {
        if !self.contains(w) {
            return;
        }
        let p = self.pos[w as usize] as usize;
        self.members.swap_remove(p);
        if let Some(&moved) = self.members.get(p) {
            self.pos[moved as usize] = p as u32;
        }
        self.pos[w as usize] = ABSENT;
    }

    pub(crate) fn set(&mut self, w: Wid, present: bool) {
        if present {
            self.insert(w)
        } else {
            self.remove(w)
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub(crate) fn members(&self) -> &[Wid] {
        &self.members
    }
}

/// The workers holding one chunk: almost always one, so the first is stored inline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holders {
    first: Wid,
    /// Boxed so that the common single-holder case stays at 16 bytes.
    #[allow(clippy::box_collection)]
    rest: Option<Box<Vec<Wid>>>,
}

impl Holders {
    pub(crate) fn one(w: Wid) -> Self {
        Holders {
            first: w,
            rest: None,
        }
    }

    pub(crate) fn contains(&self, w: Wid) -> bool {
        self.first == w || self.rest.as_ref().is_some_and(|r| r.contains(&w))
    }

    pub(crate) fn add(&mut self, w: Wid) -> bool {
        if self.contains(w) {
            return false;
        }
        self.rest.get_or_insert_default().push(w);
        true
    }

    /// Removes `w`; returns false when `w` was the last holder (then nothing is removed).
    pub(crate) fn remove(&mut self, w: Wid) -> bool {
        let rest = self.rest.as_mut();
        let removed = if self.first == w {
            match rest.and_then(|r| r.pop()) {
                Some(next) => {
                    self.first = next;
                    true
                }
                None => return false,
            }
        } else {
            if let Some(r) = rest
                && let Some(p) = r.iter().position(|&x| x == w)
            {
                r.swap_remove(p);
            }
            true
        };
        if self.rest.as_ref().is_some_and(|r| r.is_empty()) {
            self.rest = None;
        }
        removed
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = Wid> + '_ {
        std::iter::once(self.first).chain(self.rest.iter().flat_map(|r| r.iter().copied()))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        1 + self.rest.as_ref().map_or(0, |r| r.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_set_keeps_positions() {
        let mut s = WorkerSet::default();
        for w in [3, 1, 7] {
            s.insert(w);
        }
        s.remove(3);
        assert!(!s.contains(3));
        assert!(s.contains(7) && s.contains(1));
        assert_eq!(s.len(), 2);
        s.remove(7);
        s.remove(7);
        assert_eq!(s.members(), &[1]);
    }

    #[test]
    fn holders_never_become_empty() {
        let mut h = Holders::one(1);
        assert!(h.add(2));
        assert!(!h.add(2));
        assert!(h.remove(1));
        assert_eq!(h.iter().collect::<Vec<_>>(), vec![2]);
        assert!(!h.remove(2));
        assert_eq!(h.len(), 1);
    }
}
