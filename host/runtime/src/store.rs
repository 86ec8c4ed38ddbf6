//! The content-addressed module store: component bytes on disk under their blake3 hash.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use taskhost_proto::ModuleId;

use crate::error::RuntimeError;

/// Component bytes stored on disk at `<dir>/modules/<hex id>`, where the id is the blake3 hash
/// of the bytes. Writes are atomic (a temporary file renamed into place), so readers never see
/// a partial module, and several processes may share one directory.
#[derive(Debug)]
pub struct ModuleStore {
    dir: PathBuf,
}

/// Distinguishes the temporary files of concurrent writers in one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl ModuleStore {
    /// Opens (creating if needed) the module store under `data_dir`.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<Self, RuntimeError> {
        let dir = data_dir.as_ref().join("modules");
        fs::create_dir_all(&dir)
            .map_err(|e| RuntimeError::io(format!("creating {}", dir.display()), e))?;
        Ok(Self { dir })
    }

    /// The directory holding the modules.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the module `id` is (or would be) stored.
    pub fn path(&self, id: &ModuleId) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// Validates `bytes` as a WebAssembly component and stores them; returns their id.
    /// Storing bytes that are already present is cheap and returns the same id.
    pub fn put(&self, bytes: &[u8]) -> Result<ModuleId, RuntimeError> {
        let id = ModuleId::of(bytes);
        self.store_checked(id, bytes)?;
        Ok(id)
    }

    /// Stores `bytes` received under the id `id`, rejecting them with
    /// [`RuntimeError::HashMismatch`] unless they hash to `id`, and validating them.
    pub fn put_with_id(&self, id: &ModuleId, bytes: &[u8]) -> Result<(), RuntimeError> {
        let actual = ModuleId::of(bytes);
        if actual != *id {
            return Err(RuntimeError::HashMismatch {
                expected: *id,
                actual,
            });
        }
        self.store_checked(actual, bytes)
    }

    fn store_checked(&self, id: ModuleId, bytes: &[u8]) -> Result<(), RuntimeError> {
        if self.contains(&id) {
            return Ok(());
        }
        validate_component(bytes)?;
        let path = self.path(&id);
        write_atomically(&path, bytes)?;
        tracing::debug!(module = %id.short(), bytes = bytes.len(), "stored module");
        Ok(())
    }

    /// Whether the module `id` is stored.
    pub fn contains(&self, id: &ModuleId) -> bool {
        self.path(id).is_file()
    }

    /// Reads the module `id`, re-hashing the bytes so that a corrupted file is reported as
    /// [`RuntimeError::HashMismatch`] rather than run.
    pub fn get(&self, id: &ModuleId) -> Result<Vec<u8>, RuntimeError> {
        let path = self.path(id);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RuntimeError::UnknownModule(*id));
            }
            Err(e) => return Err(RuntimeError::io(format!("reading {}", path.display()), e)),
        };
        let actual = ModuleId::of(&bytes);
        if actual != *id {
            return Err(RuntimeError::HashMismatch {
                expected: *id,
                actual,
            });
        }
        Ok(bytes)
    }

    /// The ids of every stored module, sorted.
    pub fn list(&self) -> Result<Vec<ModuleId>, RuntimeError> {
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| RuntimeError::io(format!("listing {}", self.dir.display()), e))?;
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry
                .map_err(|e| RuntimeError::io(format!("listing {}", self.dir.display()), e))?;
            // Temporary files and anything else that is not a module id are skipped.
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<ModuleId>().ok())
            {
                ids.push(id);
            }
        }
        ids.sort();
        Ok(ids)
    }
}

/// Checks that `bytes` are a valid WebAssembly component (not a core module).
pub fn validate_component(bytes: &[u8]) -> Result<(), RuntimeError> {
    if !wasmparser::Parser::is_component(bytes) {
        let what = if wasmparser::Parser::is_core_wasm(bytes) {
            "this is a core WebAssembly module, not a component (build for wasm32-wasip2 or wrap it with `wasm-tools component new`)"
        } else {
            "not a WebAssembly binary (bad magic number or version)"
        };
        return Err(RuntimeError::InvalidComponent(what.to_owned()));
    }
    let mut validator =
        wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::default());
    validator
        .validate_all(bytes)
        .map_err(|e| RuntimeError::InvalidComponent(e.to_string()))?;
    Ok(())
}

/// Writes `bytes` to a temporary file next to `path`, syncs it, and renames it into place.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), RuntimeError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temp = dir.join(format!(
        ".tmp-{name}-{}-{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&temp);
        return Err(RuntimeError::io(format!("writing {}", path.display()), e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_modules_and_garbage_are_rejected_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModuleStore::open(dir.path()).unwrap();
        let core = b"\0asm\x01\0\0\0";
        match store.put(core) {
            Err(RuntimeError::InvalidComponent(message)) => {
                assert!(message.contains("core WebAssembly module"), "{message}")
            }
            other => panic!("unexpected {other:?}"),
        }
        match store.put(b"hello") {
            Err(RuntimeError::InvalidComponent(message)) => {
                assert!(message.contains("not a WebAssembly binary"), "{message}")
            }
            other => panic!("unexpected {other:?}"),
        }
        // A component header followed by a truncated section.
        let broken = b"\0asm\x0d\0\x01\0\x01\x05";
        match store.put(broken) {
            Err(RuntimeError::InvalidComponent(message)) => assert!(!message.is_empty()),
            other => panic!("unexpected {other:?}"),
        }
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn an_empty_component_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModuleStore::open(dir.path()).unwrap();
        let empty = b"\0asm\x0d\0\x01\0";
        let id = store.put(empty).unwrap();
        assert_eq!(id, ModuleId::of(empty));
        assert!(store.contains(&id));
        assert_eq!(store.get(&id).unwrap(), empty);
        assert_eq!(store.list().unwrap(), vec![id]);
        let other = ModuleId::of(b"other");
        assert!(matches!(store.get(&other), Err(RuntimeError::UnknownModule(i)) if i == other));
        match store.put_with_id(&other, empty) {
            Err(RuntimeError::HashMismatch { expected, actual }) => {
                assert_eq!(expected, other);
                assert_eq!(actual, id);
            }
            r => panic!("unexpected {r:?}"),
        }
        // A corrupted file is detected on read.
        fs::write(store.path(&id), b"tampered").unwrap();
        assert!(matches!(
            store.get(&id),
            Err(RuntimeError::HashMismatch { .. })
        ));
    }
}
