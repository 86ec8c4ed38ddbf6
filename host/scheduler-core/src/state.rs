//! The core's records: tasks with their state enum, workers, clients and functions.

use std::sync::Arc;

use taskhost_proto::{ModuleId, TaskKey};

use crate::collections::{FxHashSet, Holders};
use crate::ids::{LiteralHandle, Tid, Wid, WorkerId};
use crate::io::TaskFailure;
use crate::spec::{Annotations, Priority, Restrictions};

/// The state of a task, carrying the data that only exists in that state.
#[derive(Debug, Clone)]
pub(crate) enum TaskState {
    /// Not computed and not scheduled; the lineage is kept because someone may need it.
    Released,
    /// Needed, waiting for `waiting_on` argument occurrences to reach memory.
    Waiting { waiting_on: u32 },
    /// A ready root task held in the scheduler's queue until a worker has room.
    Queued,
    /// Ready, but no live worker may run it now (restrictions, or all paused).
    NoWorker,
    /// Assigned to a worker (queued there or running).
    Processing {
        worker: Wid,
        /// Position in the worker's `processing` list.
        pos: u32,
        /// Estimated duration counted in the worker's occupancy.
        est: u32,
        /// A steal to this worker awaits the victim's answer (or `NO_WORKER`).
        steal_to: Wid,
        /// Argument occurrences not in memory yet. Non-zero for a task dispatched early: its
        /// worker starts it as soon as those inputs are computed (locally or by the peers
        /// named in the `RunTask`), without another round trip through the scheduler.
        pending: u32,
    },
    /// The output chunk is held by one or more workers.
    Memory { nbytes: u64, holders: Holders },
    /// Failed; dependents fail with the same cause.
    Erred { error: Arc<TaskFailure> },
    /// The slot is free.
    Forgotten,
}

/// The phase of a task: its state without the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Not computed and not scheduled (lineage kept).
    Released,
    /// Needed; waiting for inputs.
    Waiting,
    /// A ready root task held in the scheduler until a worker has room.
    Queued,
    /// Ready, but no live worker may run it now.
    NoWorker,
    /// Assigned to a worker.
    Processing,
    /// Its output chunk is held by workers.
    Memory,
    /// Failed.
    Erred,
    /// Unknown to the core.
    Forgotten,
}

impl TaskState {
    pub(crate) fn kind(&self) -> Kind {
        match self {
            TaskState::Released => Kind::Released,
            TaskState::Waiting { .. } => Kind::Waiting,
            TaskState::Queued => Kind::Queued,
            TaskState::NoWorker => Kind::NoWorker,
            TaskState::Processing { .. } => Kind::Processing,
            TaskState::Memory { .. } => Kind::Memory,
            TaskState::Erred { .. } => Kind::Erred,
            TaskState::Forgotten => Kind::Forgotten,
        }
    }
}

impl Kind {
    /// Whether a task in this state still needs its inputs (and counts as a waiter on them).
    /// Whether a task in this phase still needs its inputs.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Kind::Waiting | Kind::Queued | Kind::NoWorker | Kind::Processing
        )
    }
}

/// One argument, resolved to the core's ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arg {
    Dep(Tid),
    Lit(LiteralHandle),
}

/// A reference to a task that may have been forgotten since (checked by generation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TaskRef {
    pub(crate) tid: Tid,
    pub(crate) generation: u32,
}

/// Rarely used task data, boxed so that plain tasks stay small.
#[derive(Debug, Clone, Default)]
pub(crate) struct Extra {
    pub(crate) restrictions: Restrictions,
    pub(crate) annotations: Option<Arc<Annotations>>,
}

/// One task slot.
#[derive(Debug, Clone)]
pub(crate) struct Task {
    pub(crate) key: TaskKey,
    pub(crate) generation: u32,
    pub(crate) func: u32,
    pub(crate) state: TaskState,
    pub(crate) priority: Priority,
    pub(crate) args: Box<[Arg]>,
    /// Tasks having this one as an argument (one entry per occurrence; stale entries skipped).
    pub(crate) dependents: Vec<TaskRef>,
    /// Live entries in `dependents`.
    pub(crate) live_dependents: u32,
    /// Dependents in an active state (each occurrence counted).
    pub(crate) waiters: u32,
    /// Number of clients that want this key.
    pub(crate) wanted: u32,
    /// Workers that died while it was processing there.
    pub(crate) deaths: u8,
    /// Retries left after a failure.
    pub(crate) retries_left: u8,
    pub(crate) extra: Option<Box<Extra>>,
}

impl Task {
    pub(crate) fn deps(&self) -> impl Iterator<Item = Tid> + '_ {
        self.args.iter().filter_map(|a| match a {
            Arg::Dep(d) => Some(*d),
            Arg::Lit(_) => None,
        })
    }

    pub(crate) fn is_root(&self) -> bool {
        !self.args.iter().any(|a| matches!(a, Arg::Dep(_)))
    }

    pub(crate) fn restrictions(&self) -> Option<&Restrictions> {
        self.extra
            .as_ref()
            .map(|e| &e.restrictions)
            .filter(|r| !r.is_empty())
    }

    pub(crate) fn needed(&self) -> bool {
        self.wanted > 0 || self.waiters > 0
    }
}

/// A function's measurements.
#[derive(Debug, Clone)]
pub(crate) struct FnInfo {
    pub(crate) module: ModuleId,
    pub(crate) name: Arc<str>,
    /// EWMA of run time in microseconds (None until measured).
    pub(crate) duration: Option<f64>,
    /// EWMA of output size in bytes.
    pub(crate) nbytes: Option<f64>,
}

/// One worker slot.
#[derive(Debug, Clone)]
pub(crate) struct Worker {
    pub(crate) id: WorkerId,
    pub(crate) slots: u32,
    pub(crate) memory_limit: u64,
    pub(crate) address: Arc<str>,
    pub(crate) resources: Vec<(Arc<str>, u64)>,
    pub(crate) alive: bool,
    pub(crate) paused: bool,
    /// Tasks assigned to it, in no order.
    pub(crate) processing: Vec<Tid>,
    /// Sum of the estimated durations of `processing`, in microseconds.
    pub(crate) occupancy: u64,
    /// Chunks it holds.
    pub(crate) has_what: FxHashSet<Tid>,
    /// Sum of the sizes of `has_what`.
    pub(crate) nbytes: u64,
    /// Last reported memory use.
    pub(crate) memory_used: u64,
    /// Steals to this worker awaiting the victim's answer.
    pub(crate) incoming_steals: u32,
}

/// Most root tasks per slot a worker holds to cover its backlog of short tasks.
pub(crate) const MAX_ROOT_BACKLOG_TASKS: usize = 64;

impl Worker {
    /// How many tasks it takes before root tasks are held back: `ceil(slots * factor)`.
    pub(crate) fn root_cap(&self, factor: f64) -> usize {
        ((f64::from(self.slots) * factor).ceil() as usize).max(1)
    }

    /// Whether it takes more ready root tasks: while it holds fewer than
    /// [`root_cap`](Self::root_cap), or less than `backlog` of estimated work per slot (short
    /// tasks, whose round trip to the scheduler would otherwise leave the slot idle between
    /// them), up to [`MAX_ROOT_BACKLOG_TASKS`] per slot.
    pub(crate) fn wants_roots(&self, factor: f64, backlog: crate::Micros) -> bool {
        let held = self.processing.len() + self.incoming_steals as usize;
        let slots = self.slots as usize;
        held < self.root_cap(factor)
            || (self.occupancy < backlog.0.saturating_mul(u64::from(self.slots))
                && held < MAX_ROOT_BACKLOG_TASKS * slots)
    }

    pub(crate) fn satisfies(&self, r: &Restrictions) -> bool {
        (r.workers.is_empty() || r.workers.contains(&self.id))
            && r.resources
                .iter()
                .all(|(name, amount)| self.resources.iter().any(|(n, a)| n == name && a >= amount))
    }
}

/// A client and what it wants.
#[derive(Debug, Clone, Default)]
pub(crate) struct Client {
    /// Wanted tasks, with whether the current result was delivered.
    pub(crate) wants: crate::collections::FxHashMap<Tid, bool>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn records_stay_small() {
        let task = std::mem::size_of::<super::Task>();
        let state = std::mem::size_of::<super::TaskState>();
        assert!(task <= 160, "Task is {task} bytes");
        assert!(state <= 32, "TaskState is {state} bytes");
    }
}
