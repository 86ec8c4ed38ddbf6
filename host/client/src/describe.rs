//! Lists a module's functions by instantiating it locally (once per module and machine: the
//! compiled artifact is cached on disk).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use taskhost_proto::ModuleId;
use taskhost_runtime::{Runtime, RuntimeConfig};

use crate::error::{Error, Result};
use crate::module::FunctionInfo;

/// Where the client keeps modules it described and their compiled artifacts:
/// `TASKHOST_CACHE_DIR`, else `$XDG_CACHE_HOME/taskhost/client`, else
/// `$HOME/.cache/taskhost/client`, else the system's temporary directory.
fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TASKHOST_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("taskhost").join("client");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home)
            .join(".cache")
            .join("taskhost")
            .join("client");
    }
    std::env::temp_dir().join("taskhost-client")
}

/// The process's runtime for describing modules, or why there is none.
fn runtime() -> &'static std::result::Result<Arc<Runtime>, String> {
    static RUNTIME: OnceLock<std::result::Result<Arc<Runtime>, String>> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let mut config = RuntimeConfig::new(cache_dir());
        // Describing runs one small instance at a time.
        config.max_instances = 2;
        config.max_memory = 256 << 20;
        Runtime::new(config)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    })
}

/// The functions module `id` (whose bytes are `bytes`) exports; `None` if no local runtime
/// could be set up (the module is then used without checks).
pub(crate) async fn describe(id: ModuleId, bytes: &[u8]) -> Result<Option<Vec<FunctionInfo>>> {
    let bytes = bytes.to_vec();
    let outcome = tokio::task::spawn_blocking(move || {
        let runtime = match runtime() {
            Ok(r) => r.clone(),
            Err(e) => return Ok(Err(e.clone())),
        };
        runtime
            .put_with_id(&id, &bytes)
            .and_then(|()| runtime.describe(&id))
            .map(Ok)
    })
    .await
    .map_err(|e| Error::Describe {
        id,
        message: e.to_string(),
    })?;
    match outcome {
        Ok(Ok(functions)) => Ok(Some(
            functions
                .into_iter()
                .map(|f| FunctionInfo {
                    name: f.name,
                    doc: f.doc,
                    signature: f.signature,
                })
                .collect(),
        )),
        Ok(Err(no_runtime)) => {
            tracing::warn!(reason = %no_runtime, "cannot describe modules locally; calls are not checked");
            Ok(None)
        }
        Err(e) => Err(Error::Describe {
            id,
            message: e.to_string(),
        }),
    }
}
