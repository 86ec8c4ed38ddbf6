//! Inputs from and about workers: joins, departures and deaths, results, failures, memory.

use std::sync::Arc;

use taskhost_proto::TaskKey;

use crate::collections::FxHashSet;
use crate::core::Core;
use crate::ids::{Micros, NO_WORKER, Wid, WorkerId};
use crate::io::{CoreError, Output, TaskFailure};
use crate::state::{TaskState, Worker};

impl Core {
    pub(crate) fn worker_joined(
        &mut self,
        worker: WorkerId,
        slots: u32,
        memory_limit: u64,
        address: Arc<str>,
        resources: Vec<(Arc<str>, u64)>,
    ) -> Result<(), CoreError> {
        if self.live_worker(worker).is_ok() {
            return Err(CoreError::DuplicateWorker(worker));
        }
        if slots == 0 {
            return Err(CoreError::NoSlots(worker));
        }
        let w = self.workers.len() as Wid;
        self.workers.push(Worker {
            id: worker,
            slots,
            memory_limit,
            address,
            resources,
            alive: true,
            paused: false,
            processing: Vec::new(),
            occupancy: 0,
            has_what: FxHashSet::default(),
            nbytes: 0,
            memory_used: 0,
            incoming_steals: 0,
        });
        self.worker_index.insert(worker, w);
        self.refresh_worker(w);
        self.retry_no_worker();
        Ok(())
    }

    /// Ready tasks that had no worker get another chance (a worker joined or resumed).
    fn retry_no_worker(&mut self) {
        let waiting: Vec<_> = self.no_worker.iter().copied().collect();
        for t in waiting {
            if matches!(self.tasks[t as usize].state, TaskState::NoWorker) {
                self.transition(t, TaskState::Released);
            }
        }
    }

    pub(crate) fn worker_left(&mut self, worker: WorkerId, died: bool) -> Result<(), CoreError> {
        let w = self.live_worker(worker)?;
        self.workers[w as usize].alive = false;
        self.refresh_worker(w);
        // Steals towards this worker are called off; the victim's answer decides.
        for i in 0..self.steals.len() {
            let t = self.steals[i];
            if let TaskState::Processing { steal_to, .. } = &mut self.tasks[t as usize].state
                && *steal_to == w
            {
                *steal_to = NO_WORKER;
                self.workers[w as usize].incoming_steals -= 1;
            }
        }
        self.steals.retain(|&t| {
            matches!(self.tasks[t as usize].state, TaskState::Processing { steal_to, .. } if steal_to != NO_WORKER)
        });
        // Its tasks are placed again, or marked suspect.
        let mut bound = self.workers[w as usize].processing.len();
        while let Some(&t) = self.workers[w as usize].processing.last() {
            if bound == 0 {
                self.violations
                    .push("worker processing list did not shrink".into());
                break;
            }
            bound -= 1;
            self.stats.runs_lost += 1;
            let task = &mut self.tasks[t as usize];
            if died {
                task.deaths = task.deaths.saturating_add(1);
            }
            if died && task.deaths >= self.cfg.allowed_failures {
                let error = Arc::new(TaskFailure::Suspect {
                    origin: task.key,
                    deaths: task.deaths,
                });
                self.transition(t, TaskState::Erred { error });
            } else {
                self.transition(t, TaskState::Released);
            }
        }
        // Chunks it alone held are lost (and recomputed if still needed).
        let held = std::mem::take(&mut self.workers[w as usize].has_what);
        self.workers[w as usize].nbytes = 0;
        for t in held {
            if let TaskState::Memory { holders, .. } = &mut self.tasks[t as usize].state
                && !holders.remove(w)
            {
                self.stats.chunks_lost += 1;
                self.transition(t, TaskState::Released);
            }
        }
        self.run_work();
        Ok(())
    }

    /// `worker` lacks the chunk of `key`: it stops being a holder, and a chunk with no holder
    /// left is lost (computed again when still needed, as when its holder dies).
    pub(crate) fn chunk_lost(&mut self, worker: WorkerId, key: TaskKey) -> Result<(), CoreError> {
        let w = self.live_worker(worker)?;
        let Some(t) = self.lookup(&key) else {
            return Ok(());
        };
        let TaskState::Memory { nbytes, holders } = &mut self.tasks[t as usize].state else {
            return Ok(());
        };
        if !holders.contains(w) {
            return Ok(());
        }
        let nbytes = *nbytes;
        if holders.remove(w) {
            let wk = &mut self.workers[w as usize];
            if wk.has_what.remove(&t) {
                wk.nbytes -= nbytes;
            }
        } else {
            self.stats.chunks_lost += 1;
            self.transition(t, TaskState::Released);
        }
        Ok(())
    }

    pub(crate) fn task_finished(
        &mut self,
        worker: WorkerId,
        key: TaskKey,
        nbytes: u64,
        duration: Micros,
    ) -> Result<(), CoreError> {
        let w = self.live_worker(worker)?;
        let t = self.task_of(&key)?;
        let a = self.cfg.ewma_alpha;
        let f = &mut self.fns[self.tasks[t as usize].func as usize];
        let d = duration.0 as f64;
        f.duration = Some(f.duration.map_or(d, |old| old * (1.0 - a) + d * a));
        f.nbytes = Some(
            f.nbytes
                .map_or(nbytes as f64, |old| old * (1.0 - a) + nbytes as f64 * a),
        );
        let task = &self.tasks[t as usize];
        match task.state {
            TaskState::Processing { worker: on, .. } => {
                if on != w {
                    // An earlier attempt finished first: keep its result, stop the other.
                    self.emit_cancel(on, key);
                }
                self.transition(t, Self::memory_on(nbytes, w));
                Ok(())
            }
            TaskState::Memory { .. } => {
                self.add_holder(t, w);
                Ok(())
            }
            TaskState::Waiting { .. } | TaskState::NoWorker | TaskState::Queued => {
                self.transition(t, Self::memory_on(nbytes, w));
                Ok(())
            }
            TaskState::Released | TaskState::Erred { .. } | TaskState::Forgotten => {
                self.outputs.push_back(Output::ReleaseChunk { worker, key });
                Err(CoreError::Stale {
                    worker,
                    key,
                    reason: "result no longer wanted",
                })
            }
        }
    }

    /// Checks that `t` is processing on `w`.
    fn processing_on(&self, worker: WorkerId, key: TaskKey) -> Result<u32, CoreError> {
        let w = self.live_worker(worker)?;
        let t = self.task_of(&key)?;
        match self.tasks[t as usize].state {
            TaskState::Processing { worker: on, .. } if on == w => Ok(t),
            _ => Err(CoreError::Stale {
                worker,
                key,
                reason: "task is not processing on this worker",
            }),
        }
    }

    pub(crate) fn task_erred(
        &mut self,
        worker: WorkerId,
        key: TaskKey,
        message: String,
    ) -> Result<(), CoreError> {
        let t = self.processing_on(worker, key)?;
        let task = &mut self.tasks[t as usize];
        if task.retries_left > 0 {
            task.retries_left -= 1;
            self.transition(t, TaskState::Released);
        } else {
            let error = Arc::new(TaskFailure::Failed {
                origin: key,
                message,
            });
            self.transition(t, TaskState::Erred { error });
        }
        Ok(())
    }

    pub(crate) fn reschedule(&mut self, worker: WorkerId, key: TaskKey) -> Result<(), CoreError> {
        let t = self.processing_on(worker, key)?;
        self.transition(t, TaskState::Released);
        Ok(())
    }

    pub(crate) fn worker_memory(&mut self, worker: WorkerId, used: u64) -> Result<(), CoreError> {
        let w = self.live_worker(worker)?;
        let wk = &mut self.workers[w as usize];
        wk.memory_used = used;
        let limit = wk.memory_limit as f64;
        if limit <= 0.0 {
            return Ok(());
        }
        let frac = used as f64 / limit;
        if !wk.paused && frac >= self.cfg.pause_fraction {
            wk.paused = true;
            self.outputs.push_back(Output::WorkerPaused {
                worker,
                paused: true,
            });
            self.refresh_worker(w);
        } else if wk.paused && frac < self.cfg.resume_fraction {
            wk.paused = false;
            self.outputs.push_back(Output::WorkerPaused {
                worker,
                paused: false,
            });
            self.refresh_worker(w);
            self.retry_no_worker();
        }
        Ok(())
    }
}
