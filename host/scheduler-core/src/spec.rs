//! What a client submits: task specifications, arguments, restrictions and priorities.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use taskhost_proto::{ModuleId, TaskKey};

use crate::ids::{LiteralHandle, WorkerId};

/// One argument of a task call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgSpec {
    /// The output of another task.
    Task(TaskKey),
    /// Literal bytes the daemon keeps; the core only passes the handle along.
    Literal(LiteralHandle),
}

/// Where a task may run. Empty restrictions allow every worker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restrictions {
    /// When not empty, only these workers may run the task.
    pub workers: Vec<WorkerId>,
    /// Resources a worker must declare (at least this amount of each) to run the task.
    /// Resources are matched, not consumed.
    pub resources: Vec<(Arc<str>, u64)>,
}

impl Restrictions {
    /// Whether no restriction is set.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty() && self.resources.is_empty()
    }
}

/// User annotations: opaque key/value pairs carried with the task to the worker.
pub type Annotations = BTreeMap<String, String>;

/// A task as submitted: everything a worker needs to run it, plus scheduling hints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskSpec {
    /// The content-derived key (see [`TaskKey::builder`]).
    pub key: TaskKey,
    /// The module exporting the function.
    pub module: ModuleId,
    /// The exported function's name.
    pub function: Arc<str>,
    /// The arguments, in call order.
    pub args: Vec<ArgSpec>,
    /// User priority: higher runs earlier. Default 0.
    pub priority: i32,
    /// Where the task may run.
    pub restrictions: Restrictions,
    /// How many times a failed run is retried before the task errs. Default 0.
    pub retries: u8,
    /// Opaque annotations, passed to the worker with every run.
    pub annotations: Option<Arc<Annotations>>,
}

impl TaskSpec {
    /// A task with default priority, no restrictions, no retries and no annotations.
    pub fn new(key: TaskKey, module: ModuleId, function: Arc<str>, args: Vec<ArgSpec>) -> Self {
        TaskSpec {
            key,
            module,
            function,
            args,
            priority: 0,
            restrictions: Restrictions::default(),
            retries: 0,
            annotations: None,
        }
    }

    /// A spec whose key is derived from module, function and arguments; literal handles are
    /// hashed by their numeric value (callers with real bytes derive keys from the bytes).
    pub fn derived(module: ModuleId, function: &str, args: Vec<ArgSpec>) -> Self {
        let mut b = TaskKey::builder(&module, function);
        for a in &args {
            match a {
                ArgSpec::Task(k) => b.task_arg(k),
                ArgSpec::Literal(h) => b.literal_arg(&h.0.to_le_bytes()),
            };
        }
        TaskSpec::new(b.finish(), module, function.into(), args)
    }
}

/// The order in which ready tasks run: smaller runs first. Compares user priority (higher
/// first), then submission generation (earlier graphs first), then the static order computed at
/// submission (depth-first, critical path first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Priority {
    /// User priority (higher runs first).
    pub user: i32,
    /// Submission counter of the graph that created the task.
    pub generation: u32,
    /// Position in the graph's static order.
    pub order: u32,
}

impl Ord for Priority {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .user
            .cmp(&self.user)
            .then(self.generation.cmp(&other.generation))
            .then(self.order.cmp(&other.order))
    }
}

impl PartialOrd for Priority {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_priority_beats_generation_and_order() {
        let a = Priority {
            user: 1,
            generation: 9,
            order: 9,
        };
        let b = Priority {
            user: 0,
            generation: 0,
            order: 0,
        };
        assert!(a < b);
        let c = Priority {
            user: 0,
            generation: 0,
            order: 1,
        };
        assert!(b < c);
    }
}
