//! The [`Core`] struct: state, the input dispatcher and the output/timer interface.

use std::collections::VecDeque;
use std::sync::Arc;

use taskhost_proto::TaskKey;

use crate::collections::{FxHashMap, FxHashSet, WorkerSet};
use crate::config::Config;
use crate::ids::{ClientId, Micros, Tid, Wid, WorkerId};
use crate::io::{CoreError, Input, Output, TaskFailure};
use crate::state::{Client, FnInfo, Kind, Task, TaskState, Worker};

/// Counters of what the core decided, for tests, benchmarks and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Tasks created by submissions.
    pub tasks_created: u64,
    /// Submitted tasks whose key already existed (reused, not recomputed).
    pub tasks_reused: u64,
    /// `RunTask` outputs.
    pub runs: u64,
    /// Tasks that reached memory.
    pub completed: u64,
    /// Tasks that erred (including propagated errors).
    pub erred: u64,
    /// Steal requests sent.
    pub steal_requests: u64,
    /// Steals confirmed by the victim.
    pub steals: u64,
    /// Chunks lost with their last holder.
    pub chunks_lost: u64,
    /// Task runs lost with their worker.
    pub runs_lost: u64,
    /// `RunTask`s sent before all of the task's inputs were computed (early dispatch).
    pub early_runs: u64,
    /// Tasks forgotten.
    pub forgotten: u64,
}

/// The public view of a task's state.
pub type Phase = Kind;

/// A deferred reaction, processed after the transition that caused it.
#[derive(Debug, Clone)]
pub(crate) enum Work {
    /// A released task: compute it if needed, forget it if not.
    Settle(Tid),
    /// A task may no longer be needed.
    CheckRelease(Tid),
    /// A task may be forgettable.
    CheckForget(Tid),
    /// A waiting task may be ready.
    Ready(Tid),
    /// A ready task lost an input: wait for it again.
    Recheck(Tid),
    /// A dependency erred.
    Propagate(Tid, Arc<TaskFailure>),
    /// A waiting task may be dispatched early.
    Early(Tid),
    /// A task's inputs are all in memory now: its waiting dependents may be dispatched early.
    EarlyDependents(Tid),
    /// An early-dispatched task's input will not be computed where its worker was told.
    Unassign(Tid),
}

/// The scheduler: a deterministic state machine. See the crate documentation for the contract.
pub struct Core {
    pub(crate) cfg: Config,
    pub(crate) now: Micros,
    pub(crate) tasks: Vec<Task>,
    pub(crate) free: Vec<Tid>,
    pub(crate) index: hashbrown::HashTable<Tid>,
    pub(crate) live_tasks: usize,
    pub(crate) fns: Vec<FnInfo>,
    pub(crate) fn_index: FxHashMap<taskhost_proto::ModuleId, FxHashMap<Box<str>, u32>>,
    pub(crate) workers: Vec<Worker>,
    pub(crate) worker_index: FxHashMap<WorkerId, Wid>,
    /// Alive and not paused.
    pub(crate) running: WorkerSet,
    /// Running with fewer tasks than slots.
    pub(crate) idle: WorkerSet,
    /// Running with fewer tasks than the root-task cap.
    pub(crate) underfull: WorkerSet,
    /// Alive with more tasks than slots, or paused with tasks.
    pub(crate) saturated: WorkerSet,
    pub(crate) clients: FxHashMap<ClientId, Client>,
    pub(crate) wanters: FxHashMap<Tid, Vec<ClientId>>,
    pub(crate) queue: crate::queue::RootQueue,
    pub(crate) queued: usize,
    /// Live tasks per phase (indexed by [`Kind`](crate::state::Kind) as `usize`; forgotten
    /// tasks are not counted): kept by [`Core::transition`], so that [`Core::counts`] does not
    /// scan the tasks.
    pub(crate) phases: [u64; 8],
    pub(crate) no_worker: FxHashSet<Tid>,
    pub(crate) steals: Vec<Tid>,
    pub(crate) outputs: VecDeque<Output>,
    pub(crate) work: Vec<Work>,
    pub(crate) submissions: u32,
    pub(crate) bandwidth: f64,
    pub(crate) next_balance: Option<Micros>,
    pub(crate) rng: u64,
    pub(crate) rr: usize,
    pub(crate) stats: Stats,
    pub(crate) violations: Vec<String>,
    pub(crate) scratch: Vec<Wid>,
    /// Reused set for deduplicating the inputs of wide tasks.
    pub(crate) scratch_set: FxHashSet<Tid>,
    /// The function interned last, to skip the lookup for runs of the same function.
    pub(crate) last_fn: Option<(taskhost_proto::ModuleId, Arc<str>, u32)>,
}

impl Core {
    /// A core with no tasks, workers or clients.
    pub fn new(cfg: Config) -> Self {
        let rng = match cfg.placement {
            crate::config::Placement::Random { seed } => seed | 1,
            _ => 0x9e37_79b9_7f4a_7c15,
        };
        Core {
            bandwidth: cfg.default_bandwidth,
            cfg,
            now: Micros::ZERO,
            tasks: Vec::new(),
            free: Vec::new(),
            index: hashbrown::HashTable::new(),
            live_tasks: 0,
            fns: Vec::new(),
            fn_index: FxHashMap::default(),
            workers: Vec::new(),
            worker_index: FxHashMap::default(),
            running: WorkerSet::default(),
            idle: WorkerSet::default(),
            underfull: WorkerSet::default(),
            saturated: WorkerSet::default(),
            clients: FxHashMap::default(),
            wanters: FxHashMap::default(),
            queue: crate::queue::RootQueue::default(),
            queued: 0,
            phases: [0; 8],
            no_worker: FxHashSet::default(),
            steals: Vec::new(),
            outputs: VecDeque::new(),
            work: Vec::new(),
            submissions: 0,
            next_balance: None,
            rng,
            rr: 0,
            stats: Stats::default(),
            violations: Vec::new(),
            scratch: Vec::new(),
            scratch_set: FxHashSet::default(),
            last_fn: None,
        }
    }

    /// Feeds one input. On error nothing changed (the input was rejected or ignored, with the
    /// reason); the daemon logs it and goes on.
    pub fn handle(&mut self, now: Micros, input: Input) -> Result<(), CoreError> {
        self.now = self.now.max(now);
        let batch = matches!(input, Input::SubmitGraph { .. } | Input::Want { .. });
        if batch {
            self.queue.begin_batch();
        }
        let result = match input {
            Input::SubmitGraph {
                client,
                tasks,
                wants,
            } => self.submit(client, tasks, wants),
            Input::Want { client, keys } => self.want(client, keys),
            Input::Release { client, keys } => self.release(client, &keys, false),
            Input::Cancel { client, keys } => self.release(client, &keys, true),
            Input::ClientLeft { client } => self.client_left(client),
            Input::WorkerJoined {
                worker,
                slots,
                memory_limit,
                address,
                resources,
            } => self.worker_joined(worker, slots, memory_limit, address, resources),
            Input::WorkerLeft { worker, died } => self.worker_left(worker, died),
            Input::TaskFinished {
                worker,
                key,
                nbytes,
                duration,
            } => self.task_finished(worker, key, nbytes, duration),
            Input::TaskErred {
                worker,
                key,
                message,
            } => self.task_erred(worker, key, message),
            Input::Reschedule { worker, key } => self.reschedule(worker, key),
            Input::ChunkLost { worker, key } => self.chunk_lost(worker, key),
            Input::StealAnswer {
                worker,
                key,
                stolen,
            } => self.steal_answer(worker, key, stolen),
            Input::WorkerMemory { worker, used } => self.worker_memory(worker, used),
            Input::TransferMeasured { bytes, duration } => {
                if bytes > 0 && duration.0 > 0 {
                    let sample = bytes as f64 / duration.0 as f64;
                    let a = self.cfg.ewma_alpha;
                    self.bandwidth = self.bandwidth * (1.0 - a) + sample * a;
                }
                Ok(())
            }
        };
        self.run_work();
        if batch {
            self.queue.end_batch();
        }
        self.fill_queue_and_react();
        self.schedule_balance();
        result
    }

    /// Tells the core that time passed; runs due timers (work stealing).
    pub fn handle_timeout(&mut self, now: Micros) {
        self.now = self.now.max(now);
        if self.next_balance.is_some_and(|t| t <= self.now) {
            self.next_balance = None;
            self.balance();
            self.run_work();
            self.fill_queue_and_react();
        }
        self.schedule_balance();
    }

    /// The next decision or notice, oldest first.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Core::handle_timeout`] should be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Micros> {
        self.next_balance
    }

    /// The virtual time of the latest input.
    pub fn now(&self) -> Micros {
        self.now
    }

    /// Decision counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Tasks the core currently tracks (not forgotten).
    pub fn num_tasks(&self) -> usize {
        self.live_tasks
    }

    /// The state of a task, if the core knows it.
    pub fn phase(&self, key: &TaskKey) -> Option<Phase> {
        self.lookup(key)
            .map(|t| self.tasks[t as usize].state.kind())
    }

    /// Workers holding a key's chunk (empty unless in memory).
    pub fn holders(&self, key: &TaskKey) -> Vec<WorkerId> {
        match self.lookup(key).map(|t| &self.tasks[t as usize].state) {
            Some(TaskState::Memory { holders, .. }) => holders
                .iter()
                .map(|w| self.workers[w as usize].id)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The address a live worker declared when it joined.
    pub fn worker_address(&self, worker: WorkerId) -> Option<Arc<str>> {
        self.live_worker(worker)
            .ok()
            .map(|w| self.workers[w as usize].address.clone())
    }

    /// Whether a live worker is paused.
    pub fn is_paused(&self, worker: WorkerId) -> Option<bool> {
        self.live_worker(worker)
            .ok()
            .map(|w| self.workers[w as usize].paused)
    }

    /// The measured duration estimate of a function, in microseconds.
    pub fn duration_estimate(
        &self,
        module: &taskhost_proto::ModuleId,
        function: &str,
    ) -> Option<f64> {
        let f = *self.fn_index.get(module)?.get(function)?;
        self.fns[f as usize].duration
    }

    /// The measured output size estimate of a function, in bytes.
    pub fn output_size_estimate(
        &self,
        module: &taskhost_proto::ModuleId,
        function: &str,
    ) -> Option<f64> {
        let f = *self.fn_index.get(module)?.get(function)?;
        self.fns[f as usize].nbytes
    }

    /// The current bandwidth estimate, in bytes per microsecond.
    pub fn bandwidth_estimate(&self) -> f64 {
        self.bandwidth
    }

    /// Whether nothing is assigned, queued or waiting (every needed task is done or erred).
    pub fn is_quiet(&self) -> bool {
        self.queued == 0
            && self.workers.iter().all(|w| w.processing.is_empty())
            && self.tasks.iter().all(|t| {
                !matches!(
                    t.state.kind(),
                    Kind::Waiting | Kind::Queued | Kind::Processing
                )
            })
    }

    pub(crate) fn hash_key(key: &TaskKey) -> u64 {
        // Keys are already uniform hashes: fold two words instead of hashing 32 bytes.
        let b = &key.0;
        let lo = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        let hi = u64::from_le_bytes([b[24], b[25], b[26], b[27], b[28], b[29], b[30], b[31]]);
        (lo ^ hi.rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    pub(crate) fn lookup(&self, key: &TaskKey) -> Option<Tid> {
        let tasks = &self.tasks;
        self.index
            .find(Self::hash_key(key), |&t| tasks[t as usize].key == *key)
            .copied()
    }

    pub(crate) fn live_worker(&self, worker: WorkerId) -> Result<Wid, CoreError> {
        match self.worker_index.get(&worker) {
            Some(&w) if self.workers[w as usize].alive => Ok(w),
            _ => Err(CoreError::UnknownWorker(worker)),
        }
    }

    pub(crate) fn task_of(&self, key: &TaskKey) -> Result<Tid, CoreError> {
        self.lookup(key).ok_or(CoreError::UnknownKey(*key))
    }

    /// Hands queued root tasks to workers, then processes the reactions that follows (early
    /// dispatch of their dependents).
    fn fill_queue_and_react(&mut self) {
        self.fill_queue();
        if !self.work.is_empty() {
            self.run_work();
            // Reactions never queue root tasks, but a second pass costs nothing if they did.
            self.fill_queue();
            self.run_work();
        }
    }

    /// Processes deferred reactions until none is left.
    pub(crate) fn run_work(&mut self) {
        while let Some(w) = self.work.pop() {
            match w {
                Work::Settle(t) => self.settle(t),
                Work::CheckRelease(t) => self.check_release(t),
                Work::CheckForget(t) => self.check_forget(t),
                Work::Ready(t) => {
                    if matches!(
                        self.tasks[t as usize].state,
                        TaskState::Waiting { waiting_on: 0 }
                    ) {
                        self.make_ready(t);
                    }
                }
                Work::Recheck(t) => {
                    if self.tasks[t as usize].state.kind() == Kind::NoWorker {
                        self.transition(t, TaskState::Released);
                    }
                }
                Work::Early(t) => self.try_early(t),
                Work::EarlyDependents(t) => self.check_early_dependents(t),
                Work::Unassign(t) => self.unassign(t),
                Work::Propagate(t, error) => {
                    let task = &self.tasks[t as usize];
                    if task.state.kind().is_active() {
                        if let TaskState::Processing { worker, .. } = task.state {
                            let key = task.key;
                            self.emit_cancel(worker, key);
                        }
                        self.transition(t, TaskState::Erred { error });
                    }
                }
            }
        }
    }

    pub(crate) fn emit_cancel(&mut self, w: Wid, key: TaskKey) {
        let worker = &self.workers[w as usize];
        if worker.alive {
            self.outputs.push_back(Output::CancelTask {
                worker: worker.id,
                key,
            });
        }
    }

    /// A small deterministic generator (xorshift64*) for the random baseline.
    pub(crate) fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}
