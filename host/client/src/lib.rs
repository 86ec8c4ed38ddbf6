//! The taskhost client: build graphs of WebAssembly task calls with typed handles, run them on
//! a cluster (or on an embedded local one), and get typed results back.
//!
//! - [`Client`] connects to a scheduler with a join ticket ([`Client::connect`],
//!   [`Client::connect_env`]).
//! - [`Client::module`] registers a component by its hash (uploading it only if the scheduler
//!   lacks it) and lists its functions.
//! - [`Graph::call`] adds a lazy call and returns a [`Handle<T>`]; arguments are plain values
//!   (postcard-encoded once), handles of other calls, [`Future`]s, or [`Raw`] bytes.
//! - [`Client::compute`] / [`Client::compute_all`] return typed values; [`Client::submit`]
//!   returns [`Future`]s for [`Client::gather`], [`Client::wait`], [`as_completed`] and
//!   [`Client::cancel`]. Dropping the last clone of a future releases its result on the
//!   workers, as Dask's reference counting does.
//! - [`Client::progress`] streams task counts; [`Client::progress_bar`] draws them.
//!
//! ```no_run
//! use taskhost_client::{Client, Graph};
//!
//! # async fn demo(wasm: Vec<u8>) -> taskhost_client::Result<()> {
//! let client = Client::connect_env().await?;
//! let m = client.module(wasm).await?;
//! let g = Graph::new();
//! let x = g.call::<f64>(&m, "add", (1.0f64, 2.0f64))?;
//! let y = g.call::<f64>(&m, "add", (&x, 3.0))?;
//! assert_eq!(client.compute(&y).await?, 6.0);
//! # Ok(()) }
//! ```

mod client;
mod describe;
mod error;
mod future;
mod graph;
mod local;
mod module;
mod progress;

pub use client::{Client, ClientOptions, ticket_from_env};
pub use error::{Error, Result};
pub use future::{Future, FutureStatus, as_completed};
pub use graph::{ArgSink, Args, CallOptions, Graph, Handle, IntoArg, IntoArgs, Raw, TaskOutput};
pub use local::{LocalCluster, LocalClusterBuilder, WorkerStats};
pub use module::{FunctionInfo, Module};
pub use progress::ProgressGuard;

pub use bytes::Bytes;
pub use taskhost_net::JoinTicket;
pub use taskhost_proto::{
    ClusterStatus, FailureKind, ModuleId, TaskCounts, TaskFailure, TaskKey, WorkerStatus,
};
