//! The core's inputs, outputs and errors.

use std::sync::Arc;

use taskhost_proto::{ModuleId, TaskKey};

use crate::ids::{ClientId, LiteralHandle, Micros, WorkerId};
use crate::spec::{Annotations, ArgSpec, Priority, TaskSpec};

/// Something that happened outside the core. Feed with [`crate::Core::handle`].
#[derive(Clone, Debug)]
pub enum Input {
    /// A client submits tasks (any order; dependencies may be earlier tasks of any client) and
    /// says which keys it wants delivered. The graph is accepted or rejected as a whole (missing
    /// dependency, cycle, unknown wanted key).
    SubmitGraph {
        /// Submitting client.
        client: ClientId,
        /// New tasks; tasks whose key already exists are reused.
        tasks: Vec<TaskSpec>,
        /// Keys (submitted now or earlier) whose results the client wants.
        wants: Vec<TaskKey>,
    },
    /// A client wants results of keys that already exist.
    Want {
        /// The client.
        client: ClientId,
        /// Existing keys.
        keys: Vec<TaskKey>,
    },
    /// A client no longer wants these keys; unneeded work stops and chunks are released.
    Release {
        /// The client.
        client: ClientId,
        /// Keys it wanted.
        keys: Vec<TaskKey>,
    },
    /// Like [`Input::Release`], and the client is told [`Output::TaskCancelled`] for each key
    /// that was not yet delivered.
    Cancel {
        /// The client.
        client: ClientId,
        /// Keys it wanted.
        keys: Vec<TaskKey>,
    },
    /// A client disconnected: all its wants are released.
    ClientLeft {
        /// The client.
        client: ClientId,
    },
    /// A worker joined.
    WorkerJoined {
        /// Its id (must not be in use by a live worker).
        worker: WorkerId,
        /// Execution slots.
        slots: u32,
        /// Memory limit in bytes.
        memory_limit: u64,
        /// Where peers fetch chunks from.
        address: Arc<str>,
        /// Declared resources, for restricted tasks.
        resources: Vec<(Arc<str>, u64)>,
    },
    /// A worker left or was declared dead.
    WorkerLeft {
        /// The worker.
        worker: WorkerId,
        /// True when it died (its running tasks become suspect); false for an orderly leave.
        died: bool,
    },
    /// A task finished on a worker, which now holds its output chunk.
    TaskFinished {
        /// The worker.
        worker: WorkerId,
        /// The task.
        key: TaskKey,
        /// Output size in bytes.
        nbytes: u64,
        /// Run time.
        duration: Micros,
    },
    /// A task failed on a worker.
    TaskErred {
        /// The worker.
        worker: WorkerId,
        /// The task.
        key: TaskKey,
        /// What went wrong, as reported.
        message: String,
    },
    /// The worker cannot run the task now (for example an input could not be fetched); the
    /// core places it again.
    Reschedule {
        /// The worker.
        worker: WorkerId,
        /// The task.
        key: TaskKey,
    },
    /// The worker does not hold a chunk the core believes it holds (it could not read it back,
    /// or a task or peer asked for it and it was not there). The worker stops counting as a
    /// holder; a chunk with no holder left is computed again if anything still needs it.
    /// Reports about chunks the worker is not known to hold are ignored.
    ChunkLost {
        /// The worker.
        worker: WorkerId,
        /// The task whose output chunk is gone.
        key: TaskKey,
    },
    /// The worker answered an [`Output::StealRequest`].
    StealAnswer {
        /// The worker that was asked (the victim).
        worker: WorkerId,
        /// The task.
        key: TaskKey,
        /// True if the worker dropped the task without running it.
        stolen: bool,
    },
    /// A worker reports its memory use.
    WorkerMemory {
        /// The worker.
        worker: WorkerId,
        /// Bytes in use.
        used: u64,
    },
    /// A transfer between workers was measured (for the bandwidth estimate).
    TransferMeasured {
        /// Bytes moved.
        bytes: u64,
        /// Time taken.
        duration: Micros,
    },
}

/// Where one input of a task can be fetched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputLocation {
    /// The input task.
    pub key: TaskKey,
    /// Its size.
    pub nbytes: u64,
    /// Workers holding it; for a `pending` input, the worker computing it.
    pub holders: Vec<WorkerId>,
    /// Not computed yet (the task was dispatched early): wait for it to be computed, locally
    /// or by `holders`, instead of treating its absence as a loss.
    pub pending: bool,
}

/// A task to run on a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunTask {
    /// The worker.
    pub worker: WorkerId,
    /// The task.
    pub key: TaskKey,
    /// Module to call.
    pub module: ModuleId,
    /// Function to call.
    pub function: Arc<str>,
    /// Arguments in call order.
    pub args: Vec<ArgSpec>,
    /// Where each task argument lives (one entry per distinct input).
    pub inputs: Vec<InputLocation>,
    /// Run order among the worker's tasks (smaller first).
    pub priority: Priority,
    /// User annotations.
    pub annotations: Option<Arc<Annotations>>,
}

/// Why a task erred.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TaskFailure {
    /// The task itself failed.
    #[error("task {origin:?} failed: {message}")]
    Failed {
        /// The task that failed first.
        origin: TaskKey,
        /// The worker's message.
        message: String,
    },
    /// Workers died while running it too many times.
    #[error("task {origin:?} is suspect: {deaths} workers died while running it")]
    Suspect {
        /// The suspect task.
        origin: TaskKey,
        /// How many workers died.
        deaths: u8,
    },
}

impl TaskFailure {
    /// The task where the failure started.
    pub fn origin(&self) -> TaskKey {
        match self {
            TaskFailure::Failed { origin, .. } | TaskFailure::Suspect { origin, .. } => *origin,
        }
    }
}

/// A decision or notice for the outside world. Pull with [`crate::Core::poll_output`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Run a task on a worker.
    RunTask(Box<RunTask>),
    /// The worker may drop its copy of this chunk.
    ReleaseChunk {
        /// The worker.
        worker: WorkerId,
        /// The chunk's task.
        key: TaskKey,
    },
    /// Stop (or do not start) this task on this worker; its result is no longer wanted there.
    CancelTask {
        /// The worker.
        worker: WorkerId,
        /// The task.
        key: TaskKey,
    },
    /// Ask the worker to give up a task it has not started; answer with [`Input::StealAnswer`].
    StealRequest {
        /// The victim.
        worker: WorkerId,
        /// The task.
        key: TaskKey,
    },
    /// A wanted key is in memory.
    TaskDone {
        /// The client that wants it.
        client: ClientId,
        /// The key.
        key: TaskKey,
        /// Size of the result.
        nbytes: u64,
        /// Workers holding it.
        holders: Vec<WorkerId>,
    },
    /// A wanted key erred (possibly because a dependency erred: see the origin).
    TaskErred {
        /// The client that wants it.
        client: ClientId,
        /// The key.
        key: TaskKey,
        /// The original cause.
        error: Arc<TaskFailure>,
    },
    /// Acknowledges [`Input::Cancel`] for a key that was not yet delivered.
    TaskCancelled {
        /// The client.
        client: ClientId,
        /// The key.
        key: TaskKey,
    },
    /// A worker was paused (no new tasks) or resumed.
    WorkerPaused {
        /// The worker.
        worker: WorkerId,
        /// True when paused, false when resumed.
        paused: bool,
    },
    /// The core forgot a task: the daemon may free its literal payloads.
    TaskForgotten {
        /// The key.
        key: TaskKey,
        /// The literal arguments it held (one entry per occurrence), for reference counting.
        literals: Vec<LiteralHandle>,
    },
}

/// Why an input was rejected or ignored. The core's state is unchanged by a rejected input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// The worker is unknown or dead.
    #[error("unknown or dead worker {0:?}")]
    UnknownWorker(WorkerId),
    /// A live worker with this id already exists.
    #[error("worker {0:?} already joined")]
    DuplicateWorker(WorkerId),
    /// The worker declared zero slots.
    #[error("worker {0:?} declared zero slots")]
    NoSlots(WorkerId),
    /// The client is unknown.
    #[error("unknown client {0:?}")]
    UnknownClient(ClientId),
    /// The key is unknown (never submitted, or forgotten).
    #[error("unknown task {0:?}")]
    UnknownKey(TaskKey),
    /// A submitted task depends on a key that is neither in the graph nor known.
    #[error("task {task:?} depends on unknown task {missing:?}")]
    MissingDependency {
        /// The task.
        task: TaskKey,
        /// The unknown dependency.
        missing: TaskKey,
    },
    /// The submitted graph has a cycle.
    #[error("the submitted graph has a cycle through {0:?}")]
    Cycle(TaskKey),
    /// A stale message: the task is not (or no longer) assigned to that worker. Ignored.
    #[error("stale message from {worker:?} about {key:?}: {reason}")]
    Stale {
        /// The worker.
        worker: WorkerId,
        /// The task.
        key: TaskKey,
        /// Why it is stale.
        reason: &'static str,
    },
}
