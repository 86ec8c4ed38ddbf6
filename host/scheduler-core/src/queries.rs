//! Read-only summaries of the core's state for status displays and progress reports.
//!
//! `counts` scans the task arena (O(tasks)): call it a few times a second at most, never per
//! decision.

use crate::core::Core;
use crate::ids::WorkerId;
use crate::state::Kind;

/// How many tasks are in each phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhaseCounts {
    /// Not computed and not scheduled.
    pub released: u64,
    /// Waiting for inputs.
    pub waiting: u64,
    /// Ready, held in the scheduler (queued roots, or no worker may run them now).
    pub queued: u64,
    /// Assigned to a worker.
    pub processing: u64,
    /// Output held by workers.
    pub memory: u64,
    /// Failed.
    pub erred: u64,
}

impl Core {
    /// Counts the tracked tasks by phase. O(1): the counts are kept as tasks change phase.
    pub fn counts(&self) -> PhaseCounts {
        let n = |kind: Kind| self.phases[kind as usize];
        PhaseCounts {
            released: n(Kind::Released),
            waiting: n(Kind::Waiting),
            queued: n(Kind::Queued) + n(Kind::NoWorker),
            processing: n(Kind::Processing),
            memory: n(Kind::Memory),
            erred: n(Kind::Erred),
        }
    }

    /// How many chunks a live worker holds (0 for an unknown worker). O(1).
    pub fn worker_chunks(&self, worker: WorkerId) -> u64 {
        match self.live_worker(worker) {
            Ok(w) => self.workers[w as usize].has_what.len() as u64,
            Err(_) => 0,
        }
    }
}
