//! Chunked arrays in the style of dask.array, computed by sandboxed WebAssembly kernels.

pub mod chunk;
mod error;

pub use chunk::DType;
pub use error::ArrayError;

/// The kernels component (`examples/guests/kernels`), built from source and embedded, so that
/// users need nothing else.
pub const KERNELS_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/taskhost_kernels.wasm"));
