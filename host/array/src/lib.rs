//! Chunked arrays in the style of dask.array, computed by sandboxed WebAssembly kernels.
//!
//! An [`Array`] is a shape, a grid of blocks (its chunks), a dtype, and for each block the
//! handle of the task that computes it. Operations add tasks to a graph lazily: elementwise
//! arithmetic with NumPy broadcasting and operator overloading, transpose, reductions as trees
//! of combine tasks, blocked matrix products, slicing. [`Array::compute`] runs the graph on a
//! taskhost cluster and assembles an `ndarray`. Every task is a call of the kernels module
//! (`examples/guests/kernels`), whose component is embedded in this crate ([`KERNELS_WASM`]);
//! `docs/arrays.md` describes its chunk format.
//!
//! ```no_run
//! use taskhost_array::ArrayContext;
//! use taskhost_client::LocalCluster;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = LocalCluster::builder().workers(2).client().await?;
//! let da = ArrayContext::new(&client).await?;
//! let x = da.random(&[2000, 2000], &[500, 500], 42);
//! let y = (&x + &x.t() - &x.mean_axis(0)).sum();
//! println!("{}", y.compute_scalar().await?);
//! # Ok(()) }
//! ```

mod array;
pub mod chunk;
mod error;
mod fuse;
mod ops;

pub use array::{
    Array, ArrayConfig, ArrayContext, BinaryOp, DEFAULT_FAN_IN, MATMUL_TASK_BYTES,
    MAX_MATMUL_GROUP, Reduction, UnaryOp, normalize_chunks,
};
pub use chunk::DType;
pub use error::ArrayError;

/// The kernels component (`examples/guests/kernels`), built from source and embedded, so that
/// users need nothing else.
pub const KERNELS_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/taskhost_kernels.wasm"));
