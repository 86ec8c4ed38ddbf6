//! Literal argument bytes, stored once however many tasks use them and freed when the last
//! task using them is forgotten.

use taskhost_proto::Blob;
use taskhost_proto::fasthash::FastMap as HashMap;
use taskhost_scheduler_core::LiteralHandle;

struct Literal {
    bytes: Blob,
    hash: [u8; 32],
    refs: u32,
}

/// Literal bytes by handle (what the core passes around) and by content hash (deduplication).
#[derive(Default)]
pub(crate) struct LiteralTable {
    by_hash: HashMap<[u8; 32], u64>,
    entries: HashMap<u64, Literal>,
    next: u64,
}

impl LiteralTable {
    /// The handle of these bytes, storing them if new (with no references yet).
    pub(crate) fn intern(&mut self, hash: [u8; 32], bytes: &Blob) -> LiteralHandle {
        if let Some(&handle) = self.by_hash.get(&hash) {
            return LiteralHandle(handle);
        }
        self.next += 1;
        let handle = self.next;
        self.by_hash.insert(hash, handle);
        self.entries.insert(
            handle,
            Literal {
                bytes: bytes.clone(),
                hash,
                refs: 0,
            },
        );
        LiteralHandle(handle)
    }

    /// Counts one more task using the literal.
    pub(crate) fn acquire(&mut self, handle: LiteralHandle) {
        if let Some(entry) = self.entries.get_mut(&handle.0) {
            entry.refs += 1;
        }
    }

    /// Counts one task fewer; frees the bytes when none is left.
    pub(crate) fn release(&mut self, handle: LiteralHandle) {
        if let Some(entry) = self.entries.get_mut(&handle.0) {
            entry.refs = entry.refs.saturating_sub(1);
            if entry.refs == 0 {
                self.drop_entry(handle);
            }
        }
    }

    /// Frees the literal if no task uses it (after a submission whose tasks all existed).
    pub(crate) fn drop_if_unused(&mut self, handle: LiteralHandle) {
        if self
            .entries
            .get(&handle.0)
            .is_some_and(|entry| entry.refs == 0)
        {
            self.drop_entry(handle);
        }
    }

    fn drop_entry(&mut self, handle: LiteralHandle) {
        if let Some(entry) = self.entries.remove(&handle.0) {
            self.by_hash.remove(&entry.hash);
        }
    }

    /// The literal's bytes.
    pub(crate) fn get(&self, handle: LiteralHandle) -> Option<&Blob> {
        self.entries.get(&handle.0).map(|entry| &entry.bytes)
    }

    /// How many literals are stored.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_shared_and_freed_with_their_last_user() {
        let mut table = LiteralTable::default();
        let blob = Blob(vec![1, 2, 3]);
        let hash = *blake3::hash(&blob.0).as_bytes();
        let a = table.intern(hash, &blob);
        assert_eq!(table.intern(hash, &blob), a);
        table.acquire(a);
        table.acquire(a);
        table.release(a);
        assert_eq!(table.get(a), Some(&blob));
        table.release(a);
        assert_eq!(table.get(a), None);
        assert_eq!(table.len(), 0);
        let b = table.intern(hash, &blob);
        table.drop_if_unused(b);
        assert_eq!(table.len(), 0);
    }
}
