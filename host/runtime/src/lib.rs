//! The sandboxed, content-addressed WebAssembly task runtime of taskhost.
//!
//! - [`ModuleStore`]: component bytes on disk under their blake3 hash ([`ModuleId`]).
//! - [`Runtime`]: one shared wasmtime `Engine` (pooling allocator, copy-on-write memory
//!   images, epoch interruption), compiled artifacts cached on disk by module and engine
//!   settings, and [`Runtime::execute`], which runs one task in a fresh sandbox with
//!   [`Limits`] on wall-clock time, memory and fuel.
//!
//! Guests get nothing from the host but captured stdout/stderr and the contract's `host`
//! log: no files, no network, no environment, no arguments.

mod bindings;
mod cancel;
mod error;
mod runtime;
mod sandbox;
mod store;

pub use cancel::CancelToken;
pub use error::{RuntimeError, TaskError};
pub use runtime::{FunctionInfo, Limits, Runtime, RuntimeConfig, RuntimeStats};
pub use store::{ModuleStore, validate_component};
pub use taskhost_proto::ModuleId;
