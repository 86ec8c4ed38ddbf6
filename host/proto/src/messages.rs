//! The messages of taskhost's control streams and bulk transfers.
//!
//! Three conversations use them: a client with the scheduler ([`ClientRequest`] /
//! [`ClientEvent`]), a worker with the scheduler ([`WorkerReport`] / [`WorkerCommand`]), and
//! anyone with a bulk server (a worker serving chunks, the scheduler serving modules):
//! [`BulkRequest`] / [`BulkReply`]. All are postcard-encoded in length-prefixed frames
//! (see the codec).

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::{ModuleId, TaskKey};

/// Bytes that are encoded as one length-prefixed string, not element by element.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Blob(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl From<Vec<u8>> for Blob {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

/// Per-task resource limits, enforced by the worker's runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaskLimits {
    /// Wall-clock limit of one attempt, in milliseconds (the worker's default when `None`).
    pub timeout_ms: Option<u64>,
    /// Cap on the guest's linear memory, in bytes (the worker's default when `None`).
    pub memory_bytes: Option<u64>,
    /// Fuel (roughly, wasm instructions) one attempt may use; unlimited when `None`.
    pub fuel: Option<u64>,
}

/// One argument of a submitted task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arg {
    /// The output of another task.
    Task(TaskKey),
    /// A literal: an index into the submitting graph's `literals`.
    Literal(u32),
}

/// One task of a submitted graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// The task's key; the scheduler re-derives it from the other fields and rejects a mismatch.
    pub key: TaskKey,
    /// The module exporting the function.
    pub module: ModuleId,
    /// The function to call.
    pub function: String,
    /// The arguments, in order.
    pub args: Vec<Arg>,
    /// User priority: higher runs earlier among tasks of equal structural priority.
    pub priority: i32,
    /// How many times a task that fails with a guest error or trap is retried.
    pub retries: u8,
    /// Resource limits of each attempt.
    pub limits: TaskLimits,
    /// Names of the only workers this task may run on (any worker when empty).
    pub workers: Vec<String>,
    /// Free-form user annotations, kept with the task and shown in status.
    pub annotations: Vec<(String, String)>,
}

/// A graph of tasks submitted in one message.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Graph {
    /// Literal argument values, each stored once however many tasks use it.
    pub literals: Vec<Blob>,
    /// The tasks, each after the tasks it depends on or already known to the scheduler.
    pub tasks: Vec<TaskSpec>,
    /// The keys whose results the client wants (it holds a reference to each until released).
    pub wanted: Vec<TaskKey>,
}

/// Why a task did not produce a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FailureKind {
    /// The guest rejected its arguments.
    InvalidInput,
    /// The guest reported a failure.
    Failed,
    /// The module does not export the function.
    UnknownFunction,
    /// The guest trapped (a panic, an out-of-bounds access, `unreachable`...).
    Trap,
    /// The attempt ran past its wall-clock limit.
    DeadlineExceeded,
    /// The guest tried to grow its memory past its cap.
    MemoryLimitExceeded,
    /// The guest ran out of fuel.
    OutOfFuel,
    /// The module could not be obtained or is not a valid component.
    BadModule,
    /// The task was running on too many workers that died: it is suspected of killing them.
    Suspect,
    /// The client cancelled the task.
    Cancelled,
    /// A task this one depends on failed; the message is that task's.
    DependencyFailed,
    /// Something went wrong on the host side (I/O, an internal error).
    Internal,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureKind::InvalidInput => "invalid input",
            FailureKind::Failed => "failed",
            FailureKind::UnknownFunction => "unknown function",
            FailureKind::Trap => "trap",
            FailureKind::DeadlineExceeded => "deadline exceeded",
            FailureKind::MemoryLimitExceeded => "memory limit exceeded",
            FailureKind::OutOfFuel => "out of fuel",
            FailureKind::BadModule => "bad module",
            FailureKind::Suspect => "suspect",
            FailureKind::Cancelled => "cancelled",
            FailureKind::DependencyFailed => "dependency failed",
            FailureKind::Internal => "internal error",
        })
    }
}

/// A task failure as clients see it: what failed, where and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailure {
    /// The kind of failure.
    pub kind: FailureKind,
    /// The guest's or host's message.
    pub message: String,
    /// The task that failed first (for a dependent, the dependency that caused it).
    pub origin: TaskKey,
    /// The function of the task that failed first.
    pub function: String,
}

impl fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "task {} ({}) {}: {}",
            self.origin.short(),
            self.function,
            self.kind,
            self.message
        )
    }
}

/// Counts of tasks by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaskCounts {
    /// Waiting for dependencies.
    pub waiting: u64,
    /// Ready, held in the scheduler's queue.
    pub queued: u64,
    /// Assigned to a worker (queued there or running).
    pub processing: u64,
    /// Done, result held in some worker's memory or disk.
    pub memory: u64,
    /// Failed.
    pub erred: u64,
    /// Known but not wanted and not computed.
    pub released: u64,
}

/// One worker as `taskhost status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// The worker's name (its host name and port unless set).
    pub name: String,
    /// The address other workers fetch its chunks from.
    pub peer_addr: SocketAddr,
    /// Execution slots.
    pub slots: u32,
    /// Tasks assigned to it now.
    pub tasks: u64,
    /// Chunks it holds.
    pub chunks: u64,
    /// Bytes of chunks it holds in memory.
    pub memory_used: u64,
    /// Its memory limit in bytes.
    pub memory_limit: u64,
    /// Whether it is paused because its memory is nearly full.
    pub paused: bool,
}

/// The cluster as `taskhost status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// Every connected worker.
    pub workers: Vec<WorkerStatus>,
    /// Tasks by state.
    pub tasks: TaskCounts,
    /// Modules the scheduler stores.
    pub modules: u64,
}

/// Where a task result can be had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResultLocation {
    /// The bytes themselves (small results travel with the notice).
    Inline(Blob),
    /// Held by these workers: fetch it from one of them with [`BulkRequest::Chunk`].
    Workers {
        /// Size in bytes.
        size: u64,
        /// Peer addresses of the workers that hold it.
        holders: Vec<SocketAddr>,
    },
}

/// From a client to the scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Asks which of these modules the scheduler lacks; answered by [`ClientEvent::MissingModules`].
    QueryModules(Vec<ModuleId>),
    /// Uploads a module; answered by [`ClientEvent::ModuleStored`] or [`ClientEvent::ModuleRejected`].
    UploadModule {
        /// The id the bytes must hash to.
        id: ModuleId,
        /// The component's bytes.
        bytes: Blob,
    },
    /// Submits a graph; results and failures of its wanted keys arrive as events.
    Submit(Graph),
    /// Drops the client's references to these keys' results.
    Release(Vec<TaskKey>),
    /// Cancels these keys (and whatever only they needed).
    Cancel(Vec<TaskKey>),
    /// Asks for the cluster's status; answered by [`ClientEvent::Status`].
    Status,
}

/// From the scheduler to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientEvent {
    /// The modules among those queried that the scheduler lacks.
    MissingModules(Vec<ModuleId>),
    /// A module was stored.
    ModuleStored(ModuleId),
    /// A module was refused.
    ModuleRejected {
        /// The module.
        id: ModuleId,
        /// Why.
        reason: String,
    },
    /// A submitted graph was refused as a whole (bad key, unknown module, cycle...).
    SubmitRejected {
        /// Why.
        reason: String,
        /// The keys the refused message wanted ([`Graph::wanted`]): a client that did not
        /// ask for a status right after it (its barrier) learns which submission this was.
        keys: Vec<TaskKey>,
    },
    /// A wanted key's result is ready.
    TaskDone {
        /// The key.
        key: TaskKey,
        /// Where its result is.
        result: ResultLocation,
    },
    /// A wanted key failed.
    TaskFailed {
        /// The key.
        key: TaskKey,
        /// Why.
        failure: TaskFailure,
    },
    /// Progress of the client's work.
    Progress(TaskCounts),
    /// The cluster's status.
    Status(ClusterStatus),
}

/// An input of a task to run, as the scheduler tells a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunArg {
    /// A literal value.
    Literal(Blob),
    /// Another task's output.
    Chunk {
        /// Its key.
        key: TaskKey,
        /// Its size in bytes.
        size: u64,
        /// Workers that hold it (empty when the receiving worker holds it itself). For a
        /// `pending` chunk: the worker computing it (empty: the receiving worker).
        holders: Vec<SocketAddr>,
        /// Not computed yet (the task was dispatched early): wait until it is computed, here
        /// or by `holders` (fetching it with [`BulkRequest::ChunkWhenComputed`]), rather than
        /// treating its absence as a loss.
        pending: bool,
    },
}

/// A task for a worker to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTask {
    /// The task.
    pub key: TaskKey,
    /// Its module (fetched from the scheduler by id if the worker lacks it).
    pub module: ModuleId,
    /// The function.
    pub function: String,
    /// The arguments.
    pub args: Vec<RunArg>,
    /// Limits of this attempt.
    pub limits: TaskLimits,
    /// Whether a client wants the result: a small result then travels back inline.
    pub send_result: bool,
    /// Where the task stands in the scheduler's order: a worker with several tasks ready runs
    /// the smallest first.
    pub priority: RunPriority,
}

/// The scheduler's order of a task, sent with [`RunTask`]: smaller runs first. Compares the
/// user priority (higher first), then the submission generation (earlier graphs first), then
/// the static order within its graph.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RunPriority {
    /// User priority (higher runs first).
    pub user: i32,
    /// Submission counter of the graph that created the task.
    pub generation: u32,
    /// Position in the graph's static order.
    pub order: u32,
}

impl Ord for RunPriority {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .user
            .cmp(&self.user)
            .then(self.generation.cmp(&other.generation))
            .then(self.order.cmp(&other.order))
    }
}

impl PartialOrd for RunPriority {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// From the scheduler to a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerCommand {
    /// The worker is registered under this id.
    Welcome {
        /// The worker's id in this scheduler.
        worker_id: u64,
    },
    /// Run a task.
    Run(RunTask),
    /// Drop these chunks: nobody needs them any more.
    Release(Vec<TaskKey>),
    /// Stop a task: cancelled, or it was moved elsewhere.
    Cancel(TaskKey),
    /// Give back a task that has not started, for another worker; answered by
    /// [`WorkerReport::StealAnswer`].
    Steal(TaskKey),
    /// The scheduler is shutting down or drops the worker.
    Shutdown {
        /// Why.
        reason: String,
    },
}

/// From a worker to the scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerReport {
    /// First message after the hello.
    Register {
        /// The worker's name.
        name: String,
        /// Execution slots.
        slots: u32,
        /// Memory limit for chunks, in bytes.
        memory_limit: u64,
        /// The address its peer server listens on.
        peer_addr: SocketAddr,
    },
    /// A task finished.
    Finished {
        /// The task.
        key: TaskKey,
        /// Output size in bytes.
        size: u64,
        /// Time the task ran, in microseconds.
        duration_us: u64,
        /// The output, when the scheduler asked for it and it is small.
        inline: Option<Blob>,
    },
    /// A task failed.
    Failed {
        /// The task.
        key: TaskKey,
        /// Kind of failure.
        kind: FailureKind,
        /// The guest's or host's message.
        message: String,
    },
    /// A task could not run here (an input could not be fetched): schedule it again.
    Reschedule {
        /// The task.
        key: TaskKey,
        /// The inputs that could not be fetched.
        missing: Vec<TaskKey>,
    },
    /// Answer to [`WorkerCommand::Steal`].
    StealAnswer {
        /// The task.
        key: TaskKey,
        /// `true` if the task was given back (it will not run here).
        released: bool,
    },
    /// Memory use of the chunk store.
    Memory {
        /// Bytes of chunks in memory.
        in_memory: u64,
        /// Bytes of chunks spilled to disk.
        spilled: u64,
    },
    /// A chunk the worker held is gone (lost from disk, or dropped).
    ChunkLost(TaskKey),
    /// Still alive.
    Heartbeat,
}

/// Request on a bulk stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BulkRequest {
    /// A task's output, from a worker.
    Chunk(TaskKey),
    /// A module's bytes, from the scheduler.
    Module(ModuleId),
    /// A task's output that the worker is computing or about to compute: answered once it
    /// is computed, or "not found" once that attempt ends without it (or the worker has not
    /// heard of the task for a while).
    ChunkWhenComputed(TaskKey),
}

/// Header of the answer on a bulk stream; `Found` is followed by exactly `len` raw bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BulkReply {
    /// The bytes follow.
    Found {
        /// Their length.
        len: u64,
    },
    /// The server does not have it.
    NotFound,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample_graph() -> Graph {
        let module = ModuleId::of(b"module");
        let a = TaskKey::builder(&module, "inc")
            .literal_arg(b"\x02")
            .finish();
        Graph {
            literals: vec![Blob(vec![2])],
            tasks: vec![TaskSpec {
                key: a,
                module,
                function: "inc".into(),
                args: vec![Arg::Literal(0)],
                priority: 0,
                retries: 1,
                limits: TaskLimits {
                    timeout_ms: Some(1000),
                    memory_bytes: None,
                    fuel: None,
                },
                workers: vec![],
                annotations: vec![("stage".into(), "load".into())],
            }],
            wanted: vec![a],
        }
    }

    #[test]
    fn messages_round_trip_through_postcard() {
        let request = ClientRequest::Submit(sample_graph());
        let bytes = postcard::to_allocvec(&request).unwrap();
        assert_eq!(
            postcard::from_bytes::<ClientRequest>(&bytes).unwrap(),
            request
        );
    }

    #[test]
    fn blobs_encode_as_one_byte_string() {
        let blob = Blob(vec![7u8; 1000]);
        let bytes = postcard::to_allocvec(&blob).unwrap();
        assert_eq!(bytes.len(), 1000 + 2, "a varint length then the raw bytes");
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = postcard::from_bytes::<ClientRequest>(&bytes);
            let _ = postcard::from_bytes::<ClientEvent>(&bytes);
            let _ = postcard::from_bytes::<WorkerCommand>(&bytes);
            let _ = postcard::from_bytes::<WorkerReport>(&bytes);
            let _ = postcard::from_bytes::<BulkRequest>(&bytes);
        }
    }
}
