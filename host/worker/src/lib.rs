//! The taskhost worker daemon, as a library.
//!
//! A worker joins a cluster with a [`JoinTicket`], registers its execution slots, memory limit
//! and peer address with the scheduler, and then does what the scheduler tells it:
//!
//! - **Run** a task: fetch its module from the scheduler by hash if it lacks it (the bytes are
//!   re-hashed and validated before use), gather its inputs (literals, chunks from the local
//!   chunk store, or chunks fetched directly from the peer workers that hold them, in parallel
//!   and deduplicated), wait for a free slot, execute it on a blocking thread in a fresh sandbox,
//!   keep the output in the chunk store and report `Finished` (with the bytes inline when a
//!   client wants them and they are small) or `Failed` with the cause.
//! - **Release** chunks, **Cancel** tasks, give back not-yet-started tasks when the scheduler
//!   tries to **Steal** them, and stop on **Shutdown**.
//! - Serve its chunks to peers and clients over its own authenticated QUIC listener.
//! - Report the chunk store's memory use (every ~200 ms when it changed) and a heartbeat.
//!
//! Chunks live in memory until the store holds more than [`SPILL_FRACTION`] of the memory
//! limit; the least recently used ones are then spilled to `<data_dir>/chunks`.
//!
//! ```no_run
//! use taskhost_net::JoinTicket;
//! use taskhost_worker::{WorkerConfig, start};
//!
//! # async fn demo() -> Result<(), taskhost_worker::WorkerError> {
//! let ticket: JoinTicket = "taskhost://...".parse().expect("a join ticket");
//! let mut config = WorkerConfig::new(ticket, "/var/lib/taskhost-worker");
//! config.slots = 4;
//! let mut worker = start(config).await?;
//! println!("worker {} serves chunks on {}", worker.worker_id(), worker.peer_addr());
//! // Runs until the scheduler goes away or tells the worker to stop.
//! worker.wait().await?;
//! # Ok(()) }
//! ```

mod affinity;
mod config;
mod peers;
mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use affinity::{allowed_cpus, cpu_sets};
pub use config::{SPILL_FRACTION, WorkerConfig};
use taskhost_net::NetError;
pub use taskhost_net::{JoinTicket, TransportSettings};
pub use taskhost_runtime::Limits;
use tokio::sync::watch;

use crate::worker::{Inner, StopReason};

/// Largest result sent back inline with `Finished` when the scheduler asks for it.
pub const INLINE_LIMIT: usize = 64 * 1024;

/// Everything that can stop a worker or keep it from starting.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The task runtime could not be created (engine, data directory).
    #[error("cannot start the task runtime: {0}")]
    Runtime(#[from] taskhost_runtime::RuntimeError),
    /// The chunk store's directory could not be prepared.
    #[error("cannot open the chunk store: {0}")]
    ChunkStore(#[from] taskhost_chunk_store::ChunkStoreError),
    /// The peer listener could not be bound.
    #[error("cannot listen for peers on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The cause.
        source: NetError,
    },
    /// The scheduler could not be reached or refused the worker.
    #[error("cannot connect to the scheduler: {0}")]
    Connect(NetError),
    /// The scheduler did not accept the registration.
    #[error("registration with the scheduler failed: {0}")]
    Registration(String),
    /// The connection to the scheduler was lost after registering.
    #[error("lost the scheduler: {0}")]
    SchedulerLost(String),
    /// The scheduler told the worker to stop.
    #[error("the scheduler stopped this worker: {reason}")]
    Shutdown {
        /// The reason the scheduler gave.
        reason: String,
    },
    /// A local I/O or setup failure.
    #[error("{0}")]
    Internal(String),
}

/// Counters of what a worker has done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Tasks received with `Run`.
    pub tasks_received: u64,
    /// Tasks that finished and were reported `Finished`.
    pub tasks_finished: u64,
    /// Tasks reported `Failed`.
    pub tasks_failed: u64,
    /// Tasks sent back with `Reschedule` because an input could not be had.
    pub tasks_rescheduled: u64,
    /// Tasks dropped by `Cancel` or given back to `Steal`, never reported.
    pub tasks_dropped: u64,
    /// Tasks waiting for their module, inputs or a slot, or running, now.
    pub tasks_active: u64,
    /// Chunks held now (in memory or spilled).
    pub chunks: u64,
    /// Bytes of chunks held in memory now.
    pub memory_bytes: u64,
    /// Bytes of chunks spilled to disk now.
    pub spilled_bytes: u64,
    /// Chunks fetched from peers.
    pub chunks_fetched: u64,
    /// Bytes of chunks fetched from peers.
    pub bytes_fetched: u64,
    /// Chunks served to peers and clients.
    pub chunks_served: u64,
    /// Bytes of chunks served to peers and clients.
    pub bytes_served: u64,
    /// Modules fetched from the scheduler (and stored after verification).
    pub modules_fetched: u64,
    /// Connections opened to peer workers.
    pub peer_connections: u64,
}

/// A running worker. Dropping the handle stops the worker, like [`WorkerHandle::shutdown`]
/// without waiting.
#[derive(Debug)]
pub struct WorkerHandle {
    shared: Arc<Inner>,
    peer_addr: SocketAddr,
    worker_id: u64,
    stop: watch::Sender<bool>,
    outcome: watch::Receiver<Option<StopReason>>,
}

impl WorkerHandle {
    /// The address other workers and clients fetch this worker's chunks from (as registered
    /// with the scheduler).
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// The id the scheduler gave this worker in its `Welcome`.
    pub fn worker_id(&self) -> u64 {
        self.worker_id
    }

    /// What the worker has done so far, and what it holds now.
    pub fn stats(&self) -> WorkerStats {
        self.shared.stats()
    }

    /// Stops the worker: closes the connection to the scheduler and the peer listener, and
    /// waits (a few seconds at most) until the peers were told. Tasks still running on blocking
    /// threads finish in the background and are not reported.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.stopped()).await;
        self.shared.close_endpoints().await;
    }

    /// Waits until the worker stops on its own, and says why: [`WorkerError::SchedulerLost`]
    /// when the connection to the scheduler closed or failed (a dead scheduler is noticed at
    /// once when it closes the connection, else after the transport's idle timeout),
    /// [`WorkerError::Shutdown`] when the scheduler told it to stop. Cancel-safe; may be called
    /// again after it returned.
    pub async fn wait(&mut self) -> Result<(), WorkerError> {
        match self.stopped().await {
            StopReason::Local => Ok(()),
            StopReason::SchedulerLost(reason) => Err(WorkerError::SchedulerLost(reason)),
            StopReason::Shutdown(reason) => Err(WorkerError::Shutdown { reason }),
        }
    }

    async fn stopped(&mut self) -> StopReason {
        loop {
            if let Some(reason) = self.outcome.borrow_and_update().clone() {
                return reason;
            }
            if self.outcome.changed().await.is_err() {
                // The worker's loop is gone without saying why: it can only have been stopped.
                return self.outcome.borrow().clone().unwrap_or(StopReason::Local);
            }
        }
    }
}

/// Starts a worker: opens its runtime and chunk store under `config.data_dir`, binds the peer
/// listener, connects to the scheduler named by the ticket, registers, and returns once the
/// scheduler's `Welcome` arrived.
///
/// The worker's networking runs on a thread of its own with a single-threaded tokio runtime,
/// and its tasks on one executor thread per slot: a command, its task and its report then pass
/// between few threads, with no hops between the threads of a shared runtime. Call from within
/// a tokio runtime (any flavour).
pub async fn start(config: WorkerConfig) -> Result<WorkerHandle, WorkerError> {
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let idle = Arc::new(taskhost_net::IdleSignal::default());
    let hook = idle.clone();
    taskhost_net::spawn_runtime_thread_with_idle_hook(
        "taskhost-worker",
        move || hook.notify(),
        move |runtime| {
            // Before any other thread of the worker starts: they inherit the set.
            if !config.cpus.is_empty()
                && let Err(e) = affinity::pin_current_thread(&config.cpus)
            {
                tracing::warn!(cpus = ?config.cpus, "cannot keep the worker on its CPUs: {e}");
            }
            let runtime = match runtime {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_tx.send(Err(WorkerError::Internal(format!(
                        "cannot start the worker's async runtime: {e}"
                    ))));
                    return;
                }
            };
            runtime.block_on(async move {
                match worker::start(config, idle).await {
                    Ok((handle, commands)) => {
                        // If nobody takes the handle, dropping it stops the worker.
                        let _ = ready_tx.send(Ok(handle));
                        let _ = commands.await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        },
    )
    .map_err(|e| WorkerError::Internal(format!("cannot start the worker's thread: {e}")))?;
    ready_rx.await.unwrap_or_else(|_| {
        Err(WorkerError::Internal(
            "the worker's thread stopped during start-up".into(),
        ))
    })
}
