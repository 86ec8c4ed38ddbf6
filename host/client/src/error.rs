//! The client's error type.

use std::path::PathBuf;

use taskhost_net::NetError;
use taskhost_proto::{FailureKind, ModuleId, TaskFailure, TaskKey};

/// Everything that can go wrong in the client.
///
/// ```
/// use taskhost_client::Error;
/// fn explain(e: &Error) -> String {
///     match e.task_failure() {
///         Some(f) => format!("{} failed in {}: {}", f.origin.short(), f.function, f.message),
///         None => e.to_string(),
///     }
/// }
/// # let _ = explain;
/// ```
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Connecting to the scheduler (or to a worker holding a result) failed.
    #[error("network error: {0}")]
    Net(#[from] NetError),
    /// The connection to the scheduler is gone; every pending operation fails with this.
    #[error("connection to the scheduler lost: {0}")]
    ConnectionLost(String),
    /// No join ticket was given: `TASKHOST_TICKET` is unset and no ticket file was found.
    #[error(
        "no join ticket: set TASKHOST_TICKET (a ticket or the path of a ticket file), or TASKHOST_DATA_DIR to the scheduler's data directory"
    )]
    NoTicket,
    /// A task (or a task it depends on) failed. `key` is the task that was asked for; the
    /// failure names the task that failed first, its function, the kind and the message.
    #[error("task {} failed: {failure}", key.short())]
    Task {
        /// The key whose result was asked for.
        key: TaskKey,
        /// What failed first, and why.
        failure: TaskFailure,
    },
    /// The scheduler refused a module.
    #[error("module {} rejected: {reason}", id.short())]
    ModuleRejected {
        /// The module.
        id: ModuleId,
        /// The scheduler's reason.
        reason: String,
    },
    /// The scheduler refused a submitted graph.
    #[error("graph rejected by the scheduler: {reason}")]
    SubmitRejected {
        /// The scheduler's reason.
        reason: String,
    },
    /// A call names a function its module does not export (known when the module was described).
    #[error("module {} exports no function {function:?} (it exports: {})", module.short(), available.join(", "))]
    UnknownFunction {
        /// The module.
        module: ModuleId,
        /// The function asked for.
        function: String,
        /// The functions it exports.
        available: Vec<String>,
    },
    /// A literal argument could not be encoded with postcard.
    #[error("cannot encode an argument of {function}: {source}")]
    Encode {
        /// The function called.
        function: String,
        /// The encoder's error.
        source: postcard::Error,
    },
    /// A result could not be decoded into the requested type.
    #[error("cannot decode the result of task {} as {type_name}: {message}", key.short())]
    Decode {
        /// The task.
        key: TaskKey,
        /// The requested type.
        type_name: &'static str,
        /// The decoder's message.
        message: String,
    },
    /// A result held on workers could not be fetched from any of them.
    #[error("cannot fetch the result of task {} from its holders: {reason}", key.short())]
    Fetch {
        /// The task.
        key: TaskKey,
        /// What went wrong with each holder.
        reason: String,
    },
    /// A single literal or task is larger than one message may be.
    #[error("{what} is too large to send: {size} bytes (limit {limit})")]
    TooLarge {
        /// What was too large.
        what: String,
        /// Its encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The module could not be described (listing its functions) locally.
    #[error("cannot describe module {}: {message}", id.short())]
    Describe {
        /// The module.
        id: ModuleId,
        /// Why.
        message: String,
    },
    /// Starting or stopping an embedded local cluster failed.
    #[error("local cluster: {0}")]
    LocalCluster(String),
    /// An argument or option is invalid.
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl Error {
    /// The task failure behind this error, if it is one.
    ///
    /// ```
    /// # use taskhost_client::Error;
    /// let e = Error::ConnectionLost("closed".into());
    /// assert!(e.task_failure().is_none());
    /// ```
    pub fn task_failure(&self) -> Option<&TaskFailure> {
        match self {
            Error::Task { failure, .. } => Some(failure),
            _ => None,
        }
    }

    /// The kind of task failure, if this is one.
    ///
    /// ```
    /// # use taskhost_client::Error;
    /// assert_eq!(Error::NoTicket.failure_kind(), None);
    /// ```
    pub fn failure_kind(&self) -> Option<FailureKind> {
        self.task_failure().map(|f| f.kind)
    }
}

/// The client's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
