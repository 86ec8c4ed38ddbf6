//! A worker's store of chunks (task outputs), keyed by [`TaskKey`].
//!
//! Chunks live in memory as [`Bytes`] (cheap to share with transfers and tasks). When the bytes
//! held in memory exceed the spill threshold, the least recently used chunks are written to the
//! store's directory and dropped from memory; reading a spilled chunk brings it back from disk.
//! The store does no locking of its own: the worker wraps it in a mutex.
//!
//! ```
//! # fn main() -> Result<(), taskhost_chunk_store::ChunkStoreError> {
//! use bytes::Bytes;
//! use taskhost_chunk_store::ChunkStore;
//! use taskhost_proto::{ModuleId, TaskKey};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let mut store = ChunkStore::open(dir.path(), 1024)?;
//! let key = TaskKey::builder(&ModuleId::of(b"m"), "f").finish();
//! store.put(key, Bytes::from(vec![1u8; 4000]))?; // over the threshold: spilled at once
//! assert_eq!(store.stats().spilled_bytes, 4000);
//! assert_eq!(store.get(&key)?.unwrap().len(), 4000);
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use taskhost_proto::TaskKey;

/// What can go wrong in a chunk store.
#[derive(Debug, thiserror::Error)]
pub enum ChunkStoreError {
    /// The spill directory could not be created or cleaned.
    #[error("cannot prepare the chunk spill directory {path}: {source}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A chunk could not be written to disk.
    #[error("cannot spill chunk {key:?} to {path}: {source}")]
    Spill {
        /// The chunk.
        key: TaskKey,
        /// Its file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A spilled chunk could not be read back.
    #[error("cannot read spilled chunk {key:?} from {path}: {source}")]
    Unspill {
        /// The chunk.
        key: TaskKey,
        /// Its file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// Sizes held by a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChunkStats {
    /// Number of chunks held (in memory or on disk).
    pub chunks: u64,
    /// Bytes of chunks in memory.
    pub memory_bytes: u64,
    /// Bytes of chunks on disk.
    pub spilled_bytes: u64,
    /// Chunks written to disk so far.
    pub spills: u64,
}

enum Place {
    Memory(Bytes),
    Disk,
}

struct Entry {
    place: Place,
    len: u64,
    /// Position in the recency order (larger is more recent).
    tick: u64,
}

/// Chunks in memory, the least recently used spilled to disk above a threshold.
pub struct ChunkStore {
    dir: PathBuf,
    spill_threshold: u64,
    entries: HashMap<TaskKey, Entry>,
    /// In-memory chunks by recency, oldest first.
    recency: BTreeMap<u64, TaskKey>,
    next_tick: u64,
    stats: ChunkStats,
}

impl ChunkStore {
    /// Opens a store spilling into `dir` (created if missing; chunk files left there by an
    /// earlier process are removed, since nobody knows them any more) once more than
    /// `spill_threshold` bytes are in memory.
    pub fn open(dir: &Path, spill_threshold: u64) -> Result<Self, ChunkStoreError> {
        let directory_error = |source| ChunkStoreError::Directory {
            path: dir.to_owned(),
            source,
        };
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(directory_error)?;
        }
        std::fs::create_dir_all(dir).map_err(directory_error)?;
        Ok(Self {
            dir: dir.to_owned(),
            spill_threshold,
            entries: HashMap::new(),
            recency: BTreeMap::new(),
            next_tick: 0,
            stats: ChunkStats::default(),
        })
    }

    /// Sizes held now.
    pub fn stats(&self) -> ChunkStats {
        self.stats
    }

    /// Whether the store holds `key`.
    pub fn contains(&self, key: &TaskKey) -> bool {
        self.entries.contains_key(key)
    }

    /// Whether chunk `key` is held in memory: [`ChunkStore::get`] of it does no I/O.
    pub fn is_resident(&self, key: &TaskKey) -> bool {
        self.entries
            .get(key)
            .is_some_and(|entry| matches!(entry.place, Place::Memory(_)))
    }

    /// Whether [`ChunkStore::put`] of `len` more bytes stays under the spill threshold (does
    /// no I/O).
    pub fn fits_in_memory(&self, len: u64) -> bool {
        self.stats.memory_bytes.saturating_add(len) <= self.spill_threshold
    }

    /// The size of chunk `key`, if held.
    pub fn len_of(&self, key: &TaskKey) -> Option<u64> {
        self.entries.get(key).map(|entry| entry.len)
    }

    /// Stores `bytes` under `key` (replacing any earlier chunk of that key), then spills the
    /// least recently used chunks while memory is above the threshold.
    pub fn put(&mut self, key: TaskKey, bytes: Bytes) -> Result<(), ChunkStoreError> {
        self.remove(&key);
        let len = bytes.len() as u64;
        let tick = self.touch_tick();
        self.entries.insert(
            key,
            Entry {
                place: Place::Memory(bytes),
                len,
                tick,
            },
        );
        self.recency.insert(tick, key);
        self.stats.chunks += 1;
        self.stats.memory_bytes += len;
        self.spill_over_threshold()
    }

    /// The bytes of chunk `key`, reading them back from disk if spilled (they stay on disk
    /// until removed, so a read does not push other chunks out).
    pub fn get(&mut self, key: &TaskKey) -> Result<Option<Bytes>, ChunkStoreError> {
        let tick = self.touch_tick();
        let Some(entry) = self.entries.get_mut(key) else {
            return Ok(None);
        };
        match &entry.place {
            Place::Memory(bytes) => {
                let bytes = bytes.clone();
                self.recency.remove(&entry.tick);
                entry.tick = tick;
                self.recency.insert(tick, *key);
                Ok(Some(bytes))
            }
            Place::Disk => {
                let path = self.dir.join(key.to_string());
                std::fs::read(&path)
                    .map(|bytes| Some(Bytes::from(bytes)))
                    .map_err(|source| ChunkStoreError::Unspill {
                        key: *key,
                        path,
                        source,
                    })
            }
        }
    }

    /// Drops chunk `key` from memory or disk; returns whether it was held.
    pub fn remove(&mut self, key: &TaskKey) -> bool {
        let Some(entry) = self.entries.remove(key) else {
            return false;
        };
        self.stats.chunks -= 1;
        match entry.place {
            Place::Memory(_) => {
                self.recency.remove(&entry.tick);
                self.stats.memory_bytes -= entry.len;
            }
            Place::Disk => {
                self.stats.spilled_bytes -= entry.len;
                let path = self.dir.join(key.to_string());
                if let Err(err) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), %err, "cannot remove a spilled chunk");
                }
            }
        }
        true
    }

    /// Every key held.
    pub fn keys(&self) -> impl Iterator<Item = &TaskKey> {
        self.entries.keys()
    }

    fn touch_tick(&mut self) -> u64 {
        self.next_tick += 1;
        self.next_tick
    }

    fn spill_over_threshold(&mut self) -> Result<(), ChunkStoreError> {
        while self.stats.memory_bytes > self.spill_threshold {
            let Some((&tick, &key)) = self.recency.iter().next() else {
                break;
            };
            let path = self.dir.join(key.to_string());
            let entry = self
                .entries
                .get_mut(&key)
                .expect("recency only names held chunks");
            let Place::Memory(bytes) = &entry.place else {
                unreachable!("recency only names chunks in memory");
            };
            std::fs::write(&path, bytes).map_err(|source| ChunkStoreError::Spill {
                key,
                path,
                source,
            })?;
            tracing::debug!(?key, len = entry.len, "spilled chunk to disk");
            entry.place = Place::Disk;
            self.recency.remove(&tick);
            self.stats.memory_bytes -= entry.len;
            self.stats.spilled_bytes += entry.len;
            self.stats.spills += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskhost_proto::ModuleId;

    fn key(n: u32) -> TaskKey {
        TaskKey::builder(&ModuleId::of(b"m"), "f")
            .literal_arg(&n.to_le_bytes())
            .finish()
    }

    #[test]
    fn least_recently_used_chunks_spill_first_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ChunkStore::open(&dir.path().join("chunks"), 250).unwrap();
        for n in 0..3 {
            store.put(key(n), Bytes::from(vec![n as u8; 100])).unwrap();
        }
        // 300 bytes > 250: chunk 0, the oldest, went to disk.
        assert_eq!(
            store.stats(),
            ChunkStats {
                chunks: 3,
                memory_bytes: 200,
                spilled_bytes: 100,
                spills: 1
            }
        );
        assert!(dir.path().join("chunks").join(key(0).to_string()).exists());
        // Touch 1, add 3: now 2 is the oldest in memory.
        store.get(&key(1)).unwrap();
        store.put(key(3), Bytes::from(vec![3u8; 100])).unwrap();
        assert!(dir.path().join("chunks").join(key(2).to_string()).exists());
        assert!(!dir.path().join("chunks").join(key(1).to_string()).exists());
        for n in 0..4 {
            assert_eq!(store.get(&key(n)).unwrap().unwrap(), vec![n as u8; 100]);
        }
        assert!(store.remove(&key(0)));
        assert!(!dir.path().join("chunks").join(key(0).to_string()).exists());
        assert!(!store.remove(&key(0)));
        assert_eq!(store.stats().chunks, 3);
        assert_eq!(store.get(&key(0)).unwrap(), None);
    }

    #[test]
    fn a_vanished_spill_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ChunkStore::open(dir.path(), 0).unwrap();
        store.put(key(1), Bytes::from_static(b"abc")).unwrap();
        std::fs::remove_file(dir.path().join(key(1).to_string())).unwrap();
        assert!(matches!(
            store.get(&key(1)),
            Err(ChunkStoreError::Unspill { .. })
        ));
    }

    #[test]
    fn replacing_a_chunk_keeps_the_accounting_right() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ChunkStore::open(dir.path(), 1000).unwrap();
        store.put(key(1), Bytes::from(vec![0; 10])).unwrap();
        store.put(key(1), Bytes::from(vec![0; 20])).unwrap();
        assert_eq!(
            store.stats(),
            ChunkStats {
                chunks: 1,
                memory_bytes: 20,
                spilled_bytes: 0,
                spills: 0
            }
        );
    }
}
