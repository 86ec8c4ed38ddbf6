//! What can go wrong when storing, loading or running a task module.

use std::fmt;
use std::time::Duration;

use taskhost_proto::ModuleId;

/// An error a task function returned through the contract's `task-error`, without trapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskError {
    /// The arguments were of the wrong number or could not be decoded; the text says which.
    InvalidInput(String),
    /// The function ran and reported a failure; the text is its message.
    Failed(String),
    /// The module exports no task function of this name. [`crate::Runtime::execute`] reports
    /// this case as [`RuntimeError::UnknownFunction`].
    UnknownFunction(String),
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::InvalidInput(message) => write!(f, "invalid input: {message}"),
            TaskError::Failed(message) => write!(f, "failed: {message}"),
            TaskError::UnknownFunction(name) => write!(f, "unknown function {name:?}"),
        }
    }
}

impl std::error::Error for TaskError {}

/// Everything that can go wrong in the runtime. Each variant names one cause; none of them is
/// ever caused by a host panic: a misbehaving guest only ends its own task.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No module with this id is in the module store.
    #[error("unknown module {0}")]
    UnknownModule(ModuleId),
    /// Module bytes offered under an id do not hash to that id.
    #[error("module bytes hash to {actual}, not to the expected id {expected}")]
    HashMismatch {
        /// The id the bytes were offered under.
        expected: ModuleId,
        /// The blake3 hash of the bytes.
        actual: ModuleId,
    },
    /// The bytes are not a valid WebAssembly component, or the component cannot be run here
    /// (for example it imports interfaces the sandbox does not provide). The text is the
    /// validator's or linker's message.
    #[error("invalid component: {0}")]
    InvalidComponent(String),
    /// The module exports no task function of this name.
    #[error("module {} exports no task function {function:?}", module.short())]
    UnknownFunction {
        /// The module that was called.
        module: ModuleId,
        /// The name that was asked for.
        function: String,
    },
    /// The task function returned an error (invalid input or a failure it reported).
    #[error("task error: {0}")]
    Guest(TaskError),
    /// The guest trapped (a panic, an `unreachable`, a stack overflow, an out-of-bounds
    /// access...). The message includes the tail of the guest's stderr when it wrote any,
    /// which is where a Rust guest's panic message goes.
    #[error("task trapped: {message}")]
    Trap {
        /// What happened, and the end of the guest's stderr.
        message: String,
    },
    /// The task ran longer than its wall-clock deadline and was interrupted.
    #[error("task exceeded its deadline of {0:?}")]
    DeadlineExceeded(Duration),
    /// The task was cancelled through its [`crate::CancelToken`] before it finished.
    #[error("task cancelled")]
    Cancelled,
    /// The task tried to grow its linear memory beyond its cap and could not continue.
    #[error("task exceeded its memory limit of {limit} bytes")]
    MemoryLimitExceeded {
        /// The task's memory cap in bytes.
        limit: u64,
    },
    /// The task consumed all the fuel it was given.
    #[error("task ran out of fuel ({fuel} units)")]
    OutOfFuel {
        /// The fuel the task was given.
        fuel: u64,
    },
    /// The limits asked for cannot be honoured by this runtime's configuration.
    #[error("invalid limits: {0}")]
    InvalidLimits(String),
    /// Every instance slot of the runtime's pool is in use; retry when a task finishes.
    #[error("too many concurrent instances: {0}")]
    PoolExhausted(String),
    /// A file system operation on the runtime's data directory failed.
    #[error("{context}: {source}")]
    Io {
        /// What the runtime was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An error of the runtime itself, not caused by the guest (a bug or a broken setup).
    #[error("internal runtime error: {0}")]
    Internal(String),
}

impl RuntimeError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        RuntimeError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Formats a wasmtime error with its whole chain of causes on one line.
pub(crate) fn chain_text(error: &wasmtime::Error) -> String {
    let mut text = String::new();
    for (i, cause) in error.chain().enumerate() {
        if i > 0 {
            text.push_str(": ");
        }
        text.push_str(&cause.to_string());
    }
    text
}
