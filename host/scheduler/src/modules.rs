//! The scheduler's content-addressed module store: component bytes uploaded by clients, kept on
//! disk under their blake3 hash and served to workers that lack them.
//!
//! The scheduler does not compile modules (it has no wasm runtime); it only checks that bytes
//! hash to the id they are offered under. Workers validate components when they load them.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use parking_lot::RwLock;
use taskhost_proto::ModuleId;

/// Largest module the scheduler accepts.
pub const MAX_MODULE_BYTES: usize = 64 * 1024 * 1024;

/// Why a module was not stored or cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ModuleStoreError {
    /// The bytes do not hash to the id they were offered under.
    #[error("module bytes hash to {actual}, not to the id {expected} they were offered under")]
    HashMismatch {
        /// The id offered.
        expected: ModuleId,
        /// The hash of the bytes.
        actual: ModuleId,
    },
    /// The module is larger than [`MAX_MODULE_BYTES`].
    #[error("module of {size} bytes exceeds the limit of {MAX_MODULE_BYTES} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
    },
    /// Disk I/O failed.
    #[error("module store I/O on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// Modules on disk at `<data-dir>/modules/<hex id>`, with an in-memory cache of their bytes.
#[derive(Debug)]
pub struct ModuleStore {
    dir: PathBuf,
    cache: RwLock<HashMap<ModuleId, Bytes>>,
    /// The ids stored on disk: listed once at open, then added to by [`ModuleStore::put`], so
    /// that [`ModuleStore::count`] (in every status reply, and clients ask for one after each
    /// submission) reads no directory.
    stored: RwLock<HashSet<ModuleId>>,
}

impl ModuleStore {
    /// Opens (creating if needed) the store in `data_dir/modules`.
    pub fn open(data_dir: &Path) -> Result<Self, ModuleStoreError> {
        let dir = data_dir.join("modules");
        std::fs::create_dir_all(&dir).map_err(|source| ModuleStoreError::Io {
            path: dir.clone(),
            source,
        })?;
        let stored = std::fs::read_dir(&dir)
            .map_err(|source| ModuleStoreError::Io {
                path: dir.clone(),
                source,
            })?
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<ModuleId>().ok())
            .collect();
        Ok(Self {
            dir,
            cache: RwLock::new(HashMap::new()),
            stored: RwLock::new(stored),
        })
    }

    fn path(&self, id: &ModuleId) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// Whether the module is stored.
    pub fn contains(&self, id: &ModuleId) -> bool {
        self.cache.read().contains_key(id) || self.path(id).is_file()
    }

    /// Stores `bytes` under `id` after checking that they hash to it.
    pub fn put(&self, id: &ModuleId, bytes: Bytes) -> Result<(), ModuleStoreError> {
        if bytes.len() > MAX_MODULE_BYTES {
            return Err(ModuleStoreError::TooLarge { size: bytes.len() });
        }
        let actual = ModuleId::of(&bytes);
        if actual != *id {
            return Err(ModuleStoreError::HashMismatch {
                expected: *id,
                actual,
            });
        }
        if !self.path(id).is_file() {
            let path = self.path(id);
            let tmp = self.dir.join(format!(".{id}.{}.tmp", std::process::id()));
            let io_error = |source| ModuleStoreError::Io {
                path: path.clone(),
                source,
            };
            std::fs::write(&tmp, &bytes).map_err(io_error)?;
            std::fs::rename(&tmp, &path).map_err(io_error)?;
        }
        self.stored.write().insert(*id);
        self.cache.write().insert(*id, bytes);
        Ok(())
    }

    /// The module's bytes, if stored (re-checked against the id when read from disk).
    pub fn get(&self, id: &ModuleId) -> Result<Option<Bytes>, ModuleStoreError> {
        if let Some(bytes) = self.cache.read().get(id) {
            return Ok(Some(bytes.clone()));
        }
        let path = self.path(id);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => Bytes::from(bytes),
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(ModuleStoreError::Io { path, source }),
        };
        let actual = ModuleId::of(&bytes);
        if actual != *id {
            return Err(ModuleStoreError::HashMismatch {
                expected: *id,
                actual,
            });
        }
        self.cache.write().insert(*id, bytes.clone());
        Ok(Some(bytes))
    }

    /// How many modules are stored (those found at open and those stored since).
    pub fn count(&self) -> u64 {
        self.stored.read().len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_by_hash_and_rejects_mismatches() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModuleStore::open(dir.path()).unwrap();
        let bytes = Bytes::from_static(b"component bytes");
        let id = ModuleId::of(&bytes);
        assert!(!store.contains(&id));
        let wrong = ModuleId::of(b"other");
        assert!(matches!(
            store.put(&wrong, bytes.clone()),
            Err(ModuleStoreError::HashMismatch { .. })
        ));
        store.put(&id, bytes.clone()).unwrap();
        assert!(store.contains(&id));
        assert_eq!(store.count(), 1);
        // A new store on the same directory reads it back from disk.
        let again = ModuleStore::open(dir.path()).unwrap();
        assert_eq!(again.count(), 1);
        assert_eq!(again.get(&id).unwrap(), Some(bytes.clone()));
        assert_eq!(again.get(&wrong).unwrap(), None);
        // Storing it again counts it once.
        again.put(&id, bytes).unwrap();
        assert_eq!(again.count(), 1);
    }

    #[test]
    fn a_corrupted_file_on_disk_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModuleStore::open(dir.path()).unwrap();
        let bytes = Bytes::from_static(b"component bytes");
        let id = ModuleId::of(&bytes);
        store.put(&id, bytes).unwrap();
        std::fs::write(dir.path().join("modules").join(id.to_string()), b"tampered").unwrap();
        let again = ModuleStore::open(dir.path()).unwrap();
        assert!(matches!(
            again.get(&id),
            Err(ModuleStoreError::HashMismatch { .. })
        ));
    }
}
