//! A simulator: virtual workers with slots, memory and bandwidth on a virtual clock, driving a
//! [`Core`] to completion (like quinn's `Pair` or tako's `TestEnv`). Deterministic: the same
//! seed gives the same run.

mod graphs;
mod quality;
mod rng;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::Arc;

pub use graphs::*;
pub use quality::{QualityRow, format_quality, quality_policies, quality_shapes, quality_table};
pub use rng::SimRng;

use crate::collections::FxHashMap;
use crate::{
    ClientId, Config, Core, Input, Micros, Output, Priority, RunTask, TaskKey, TaskSpec, WorkerId,
};

/// A task of a simulated graph: its spec plus what running it costs.
#[derive(Clone, Debug)]
pub struct SimTask {
    /// What the client submits.
    pub spec: TaskSpec,
    /// Run time.
    pub duration: Micros,
    /// Output size.
    pub nbytes: u64,
    /// Whether every run of it fails.
    pub fails: bool,
}

/// A graph to submit, with the keys the client wants.
#[derive(Clone, Debug, Default)]
pub struct SimGraph {
    /// Tasks, in any order.
    pub tasks: Vec<SimTask>,
    /// Wanted keys.
    pub wants: Vec<TaskKey>,
}

/// A virtual worker's capacity.
#[derive(Clone, Copy, Debug)]
pub struct WorkerSpec {
    /// Execution slots.
    pub slots: u32,
    /// Memory limit in bytes.
    pub memory: u64,
    /// Bandwidth to fetch inputs, in bytes per microsecond.
    pub bandwidth: f64,
}

impl Default for WorkerSpec {
    fn default() -> Self {
        WorkerSpec {
            slots: 2,
            memory: 1 << 40,
            bandwidth: 100.0,
        }
    }
}

/// How the simulator behaves.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The core's configuration.
    pub core: Config,
    /// Initial workers.
    pub workers: Vec<WorkerSpec>,
    /// One-way message latency.
    pub latency: Micros,
    /// Random extra latency, up to this much.
    pub jitter: Micros,
    /// Seed of the simulator's randomness.
    pub seed: u64,
    /// Call [`Core::validate`] after every step (O(tasks) each: for tests).
    pub validate: bool,
    /// Send memory reports and transfer measurements to the core.
    pub reports: bool,
    /// Give up after this many events.
    pub max_events: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            core: Config::default(),
            workers: vec![WorkerSpec::default(); 4],
            latency: Micros(100),
            jitter: Micros(0),
            seed: 1,
            validate: true,
            reports: true,
            max_events: 10_000_000,
        }
    }
}

/// What happened in a run.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    /// Time of the last event.
    pub makespan: Micros,
    /// Bytes moved between workers.
    pub bytes_moved: u64,
    /// Task runs started.
    pub runs_started: u64,
    /// Task runs started on each worker, in the order the workers joined.
    pub runs_by_worker: Vec<u64>,
    /// `TaskDone` notices per (client, key).
    pub done: BTreeMap<(ClientId, TaskKey), u32>,
    /// `TaskErred` notices per (client, key), with the origin of the error.
    pub erred: BTreeMap<(ClientId, TaskKey), TaskKey>,
    /// Workers killed.
    pub kills: u32,
    /// Times a task started while another run of it was going on.
    pub concurrent_runs: u32,
    /// Wanted chunks released while no other copy existed.
    pub wanted_released: u32,
    /// Errors the core returned (rejected or stale inputs), by message.
    pub core_errors: Vec<String>,
    /// Events processed.
    pub events: u64,
    /// Most tasks in the core at once.
    pub peak_tasks: usize,
    /// Pause notices.
    pub pauses: u32,
    /// Peak memory of any worker.
    pub peak_worker_memory: u64,
}

/// Why a run stopped early.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// An invariant did not hold.
    #[error("invariant violated at {at}: {error}")]
    Invalid {
        /// When.
        at: Micros,
        /// What.
        error: crate::ValidationError,
    },
    /// Too many events (probably stuck in a loop).
    #[error("gave up after {0} events")]
    TooLong(u64),
}

#[derive(Debug)]
enum Event {
    ToCore(Input),
    ToWorker(usize, Output),
    Finish {
        worker: usize,
        key: TaskKey,
        attempt: u64,
    },
    /// The inputs a worker fetched for a task are there.
    Fetched(usize, (Priority, u64, TaskKey)),
    Kill(usize),
    Join(WorkerSpec),
    Submit(ClientId, Vec<TaskSpec>, Vec<TaskKey>),
    Release(ClientId, Vec<TaskKey>, bool),
}

#[derive(Debug)]
struct SimWorker {
    id: WorkerId,
    spec: WorkerSpec,
    alive: bool,
    free_slots: u32,
    chunks: FxHashMap<TaskKey, u64>,
    memory: u64,
    queue: BTreeSet<(Priority, u64, TaskKey)>,
    /// Early-dispatched tasks whose pending inputs are not computed yet.
    waiting: BTreeSet<(Priority, u64, TaskKey)>,
    /// Tasks whose inputs held elsewhere are on their way.
    fetching: BTreeSet<(Priority, u64, TaskKey)>,
    /// When the worker's incoming link is free: fetched bytes arrive one chunk after another.
    link_free: Micros,
    runs: FxHashMap<TaskKey, Box<RunTask>>,
    running: FxHashMap<TaskKey, u64>,
}

/// The cost of running one task in the simulation.
#[derive(Clone, Copy, Debug)]
struct Cost {
    duration: Micros,
    nbytes: u64,
    fails: bool,
}

/// The simulator.
pub struct Sim {
    /// The core under test.
    pub core: Core,
    cfg: SimConfig,
    now: Micros,
    seq: u64,
    events: BinaryHeap<Reverse<(Micros, u64)>>,
    payloads: FxHashMap<u64, Event>,
    workers: Vec<SimWorker>,
    by_id: FxHashMap<WorkerId, usize>,
    costs: FxHashMap<TaskKey, Cost>,
    /// Wanted keys per client, with whether delivery is pending.
    wants: FxHashMap<(ClientId, TaskKey), bool>,
    /// How many clients want each key.
    wanted_keys: FxHashMap<TaskKey, u32>,
    running_anywhere: FxHashMap<TaskKey, u32>,
    /// Last delivery time per (worker, towards the worker?) link.
    links: FxHashMap<(usize, bool), Micros>,
    next_worker: u64,
    attempts: u64,
    rng: SimRng,
    /// The report so far.
    pub report: SimReport,
}

impl Sim {
    /// A simulator with the configured workers joining at time zero.
    pub fn new(cfg: SimConfig) -> Self {
        let mut sim = Sim {
            core: Core::new(cfg.core.clone()),
            now: Micros::ZERO,
            seq: 0,
            events: BinaryHeap::new(),
            payloads: FxHashMap::default(),
            workers: Vec::new(),
            by_id: FxHashMap::default(),
            costs: FxHashMap::default(),
            wants: FxHashMap::default(),
            wanted_keys: FxHashMap::default(),
            running_anywhere: FxHashMap::default(),
            links: FxHashMap::default(),
            next_worker: 1,
            attempts: 0,
            rng: SimRng::new(cfg.seed),
            report: SimReport::default(),
            cfg,
        };
        for spec in sim.cfg.workers.clone() {
            sim.join_at(Micros::ZERO, spec);
        }
        sim
    }

    fn push(&mut self, at: Micros, e: Event) {
        self.seq += 1;
        self.events.push(Reverse((at, self.seq)));
        self.payloads.insert(self.seq, e);
    }

    fn delay(&mut self) -> Micros {
        let j = self.rng.below(self.cfg.jitter.0 + 1);
        Micros(self.cfg.latency.0 + j)
    }

    /// Submits a graph for `client` at time `at`.
    pub fn submit_at(&mut self, at: Micros, client: ClientId, graph: &SimGraph) {
        for t in &graph.tasks {
            self.costs.insert(
                t.spec.key,
                Cost {
                    duration: t.duration,
                    nbytes: t.nbytes,
                    fails: t.fails,
                },
            );
        }
        let specs = graph.tasks.iter().map(|t| t.spec.clone()).collect();
        self.push(at, Event::Submit(client, specs, graph.wants.clone()));
    }

    /// `client` releases (or cancels) `keys` at time `at`.
    pub fn release_at(&mut self, at: Micros, client: ClientId, keys: Vec<TaskKey>, cancel: bool) {
        self.push(at, Event::Release(client, keys, cancel));
    }

    /// Keys `client` wants now (delivered or not).
    pub fn wanted_by(&self, client: ClientId) -> Vec<TaskKey> {
        let mut v: Vec<_> = self
            .wants
            .keys()
            .filter(|(c, _)| *c == client)
            .map(|(_, k)| *k)
            .collect();
        v.sort();
        v
    }

    /// Kills the `index`-th worker (in join order) at time `at`.
    pub fn kill_at(&mut self, at: Micros, index: usize) {
        self.push(at, Event::Kill(index));
    }

    /// A new worker joins at time `at`.
    pub fn join_at(&mut self, at: Micros, spec: WorkerSpec) {
        self.push(at, Event::Join(spec));
    }

    /// Workers that joined so far (alive or not).
    pub fn workers_joined(&self) -> usize {
        self.workers.len()
    }

    /// Runs until nothing is left to do. Validates the core after every step when configured.
    pub fn drive(&mut self) -> Result<&SimReport, SimError> {
        loop {
            self.route_outputs();
            if self.cfg.validate {
                self.core.validate().map_err(|error| SimError::Invalid {
                    at: self.now,
                    error,
                })?;
            }
            self.report.peak_tasks = self.report.peak_tasks.max(self.core.num_tasks());
            let next_event = self.events.peek().map(|Reverse((t, _))| *t);
            let timer = self.core.poll_timeout();
            let (at, is_timer) = match (next_event, timer) {
                (None, None) => break,
                (Some(e), Some(t)) if t < e => (t, true),
                (Some(e), _) => (e, false),
                (None, Some(t)) => (t, true),
            };
            self.report.events += 1;
            if self.report.events > self.cfg.max_events {
                return Err(SimError::TooLong(self.report.events));
            }
            self.now = self.now.max(at);
            if is_timer {
                self.core.handle_timeout(self.now);
                continue;
            }
            let Some(Reverse((_, seq))) = self.events.pop() else {
                break;
            };
            let Some(event) = self.payloads.remove(&seq) else {
                continue;
            };
            self.report.makespan = self.now;
            self.process(event);
        }
        Ok(&self.report)
    }

    /// Delivery time on a link: latency with jitter, but never before an earlier message on
    /// the same link (control streams are FIFO).
    fn link_time(&mut self, link: (usize, bool)) -> Micros {
        let d = self.delay();
        let at = self.now.plus(d);
        let last = self.links.entry(link).or_insert(Micros::ZERO);
        *last = (*last).max(at);
        *last
    }

    fn send_to_core(&mut self, input: Input) {
        let from = match &input {
            Input::WorkerLeft { worker, .. }
            | Input::TaskFinished { worker, .. }
            | Input::TaskErred { worker, .. }
            | Input::Reschedule { worker, .. }
            | Input::StealAnswer { worker, .. }
            | Input::WorkerMemory { worker, .. } => self.by_id.get(worker).copied(),
            _ => None,
        };
        let at = match from {
            Some(i) => self.link_time((i, false)),
            None => {
                let d = self.delay();
                self.now.plus(d)
            }
        };
        self.push(at, Event::ToCore(input));
    }

    fn process(&mut self, event: Event) {
        match event {
            Event::ToCore(input) => {
                if let Err(e) = self.core.handle(self.now, input) {
                    self.report.core_errors.push(e.to_string());
                }
            }
            Event::Submit(client, tasks, wants) => {
                for k in &wants {
                    if !self.wants.contains_key(&(client, *k)) {
                        self.wants.insert((client, *k), true);
                        *self.wanted_keys.entry(*k).or_default() += 1;
                        // Deliveries are counted per want.
                        self.report.done.remove(&(client, *k));
                        self.report.erred.remove(&(client, *k));
                    }
                }
                if let Err(e) = self.core.handle(
                    self.now,
                    Input::SubmitGraph {
                        client,
                        tasks,
                        wants,
                    },
                ) {
                    self.report.core_errors.push(e.to_string());
                }
            }
            Event::Release(client, keys, cancel) => {
                for k in &keys {
                    if self.wants.remove(&(client, *k)).is_some()
                        && let Some(n) = self.wanted_keys.get_mut(k)
                    {
                        *n -= 1;
                        if *n == 0 {
                            self.wanted_keys.remove(k);
                        }
                    }
                }
                let input = if cancel {
                    Input::Cancel { client, keys }
                } else {
                    Input::Release { client, keys }
                };
                if let Err(e) = self.core.handle(self.now, input) {
                    self.report.core_errors.push(e.to_string());
                }
            }
            Event::Join(spec) => {
                let id = WorkerId(self.next_worker);
                self.next_worker += 1;
                self.by_id.insert(id, self.workers.len());
                self.workers.push(SimWorker {
                    id,
                    spec,
                    alive: true,
                    free_slots: spec.slots,
                    chunks: FxHashMap::default(),
                    memory: 0,
                    queue: BTreeSet::new(),
                    waiting: BTreeSet::new(),
                    fetching: BTreeSet::new(),
                    link_free: Micros(0),
                    runs: FxHashMap::default(),
                    running: FxHashMap::default(),
                });
                let input = Input::WorkerJoined {
                    worker: id,
                    slots: spec.slots,
                    memory_limit: spec.memory,
                    address: Arc::from(format!("sim://{}", id.0)),
                    resources: vec![],
                };
                if let Err(e) = self.core.handle(self.now, input) {
                    self.report.core_errors.push(e.to_string());
                }
            }
            Event::Kill(i) => {
                let Some(w) = self.workers.get_mut(i) else {
                    return;
                };
                if !w.alive {
                    return;
                }
                w.alive = false;
                self.report.kills += 1;
                let running: Vec<TaskKey> = w.running.keys().copied().collect();
                w.running.clear();
                w.queue.clear();
                w.waiting.clear();
                w.fetching.clear();
                w.runs.clear();
                w.chunks.clear();
                w.memory = 0;
                let id = w.id;
                for k in running {
                    self.stop_running(k);
                }
                // The daemon notices the death after a while.
                self.send_to_core(Input::WorkerLeft {
                    worker: id,
                    died: true,
                });
            }
            Event::ToWorker(i, out) => self.worker_message(i, out),
            Event::Fetched(i, entry) => {
                if self.workers[i].alive && self.workers[i].fetching.remove(&entry) {
                    self.workers[i].queue.insert(entry);
                    self.try_start(i);
                }
            }
            Event::Finish {
                worker,
                key,
                attempt,
            } => self.finish(worker, key, attempt),
        }
    }

    fn stop_running(&mut self, key: TaskKey) {
        if let Some(n) = self.running_anywhere.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.running_anywhere.remove(&key);
            }
        }
    }

    fn route_outputs(&mut self) {
        while let Some(out) = self.core.poll_output() {
            let target = match &out {
                Output::RunTask(r) => Some(r.worker),
                Output::ReleaseChunk { worker, key } => {
                    // Releasing the last copy of a key a client still wants is a bug.
                    if self.wanted_keys.contains_key(key)
                        && self.core.phase(key) != Some(crate::Phase::Memory)
                    {
                        self.report.wanted_released += 1;
                    }
                    Some(*worker)
                }
                Output::CancelTask { worker, .. } | Output::StealRequest { worker, .. } => {
                    Some(*worker)
                }
                Output::TaskDone { client, key, .. } => {
                    *self.report.done.entry((*client, *key)).or_default() += 1;
                    if let Some(p) = self.wants.get_mut(&(*client, *key)) {
                        *p = false;
                    }
                    None
                }
                Output::TaskErred { client, key, error } => {
                    self.report.erred.insert((*client, *key), error.origin());
                    if let Some(p) = self.wants.get_mut(&(*client, *key)) {
                        *p = false;
                    }
                    None
                }
                Output::TaskCancelled { .. } | Output::TaskForgotten { .. } => None,
                Output::WorkerPaused { paused, .. } => {
                    self.report.pauses += u32::from(*paused);
                    None
                }
            };
            if let Some(id) = target
                && let Some(&i) = self.by_id.get(&id)
            {
                let at = self.link_time((i, true));
                self.push(at, Event::ToWorker(i, out));
            }
        }
    }

    fn worker_message(&mut self, i: usize, out: Output) {
        if !self.workers[i].alive {
            return;
        }
        match out {
            Output::RunTask(run) => {
                let w = &mut self.workers[i];
                if w.runs.contains_key(&run.key) || w.running.contains_key(&run.key) {
                    return;
                }
                self.attempts += 1;
                let entry = (run.priority, self.attempts, run.key);
                self.workers[i].runs.insert(run.key, run);
                self.advance(i, entry);
                self.try_start(i);
            }
            Output::ReleaseChunk { key, .. } => {
                let w = &mut self.workers[i];
                if let Some(b) = w.chunks.remove(&key) {
                    w.memory -= b;
                    self.report_memory(i);
                }
            }
            Output::CancelTask { key, .. } => {
                let w = &mut self.workers[i];
                if w.runs.remove(&key).is_some() {
                    w.queue.retain(|(_, _, k)| *k != key);
                    w.waiting.retain(|(_, _, k)| *k != key);
                    w.fetching.retain(|(_, _, k)| *k != key);
                }
                if w.running.remove(&key).is_some() {
                    w.free_slots += 1;
                    self.stop_running(key);
                }
                self.try_start(i);
            }
            Output::StealRequest { worker, key } => {
                let w = &mut self.workers[i];
                let stolen = w.runs.remove(&key).is_some();
                if stolen {
                    w.queue.retain(|(_, _, k)| *k != key);
                    w.waiting.retain(|(_, _, k)| *k != key);
                    w.fetching.retain(|(_, _, k)| *k != key);
                }
                self.send_to_core(Input::StealAnswer {
                    worker,
                    key,
                    stolen,
                });
            }
            _ => {}
        }
    }

    /// Whether a live worker holds chunk `key`.
    fn computed(&self, key: &TaskKey) -> bool {
        self.workers
            .iter()
            .any(|w| w.alive && w.chunks.contains_key(key))
    }

    /// Whether `run` (dispatched early) waits for an input that is not computed yet.
    fn awaits_pending(&self, run: &RunTask) -> bool {
        run.inputs
            .iter()
            .any(|input| input.pending && !self.computed(&input.key))
    }

    /// Moves a task that arrived on worker `i` (or waited there) on, as the worker does: it
    /// waits while an input is not computed yet (dispatched early); then the inputs held
    /// elsewhere are fetched, all at once (a request and its answer, or only the answer for a
    /// pending input, whose request went out when the task came), and it is queued when
    /// the last of them is there. Fetches take no slot.
    fn advance(&mut self, i: usize, entry: (Priority, u64, TaskKey)) {
        let Some(run) = self.workers[i].runs.get(&entry.2) else {
            self.workers[i].waiting.remove(&entry);
            return;
        };
        if self.awaits_pending(run) {
            self.workers[i].waiting.insert(entry);
            return;
        }
        // Requests go out at once; the answers' bytes share the worker's incoming link.
        let mut arrival = self.now;
        let mut link_free = self.workers[i].link_free.max(self.now);
        let mut bytes = 0;
        for input in &run.inputs {
            if self.workers[i].chunks.contains_key(&input.key) {
                continue;
            }
            let src = self
                .workers
                .iter()
                .find(|o| o.alive && o.chunks.contains_key(&input.key));
            if let Some(o) = src {
                let b = o.chunks[&input.key];
                bytes += b;
                let trips = if input.pending { 1 } else { 2 };
                let answered = self.now.plus(Micros(trips * self.cfg.latency.0));
                let bandwidth = o.spec.bandwidth.min(self.workers[i].spec.bandwidth);
                link_free = link_free
                    .max(answered)
                    .plus(Micros((b as f64 / bandwidth) as u64));
                arrival = arrival.max(link_free);
            }
        }
        let w = &mut self.workers[i];
        w.waiting.remove(&entry);
        if bytes == 0 {
            w.queue.insert(entry);
            return;
        }
        w.link_free = link_free;
        w.fetching.insert(entry);
        self.report.bytes_moved += bytes;
        let d = Micros(arrival.0.saturating_sub(self.now.0).max(1));
        if self.cfg.reports {
            self.send_to_core(Input::TransferMeasured { bytes, duration: d });
        }
        let at = self.now.plus(d);
        self.push(at, Event::Fetched(i, entry));
    }

    /// Moves on the early-dispatched tasks whose pending inputs now exist, on every worker.
    fn wake_waiting(&mut self) {
        for i in 0..self.workers.len() {
            if !self.workers[i].alive || self.workers[i].waiting.is_empty() {
                continue;
            }
            let waiting: Vec<_> = self.workers[i].waiting.iter().copied().collect();
            for entry in waiting {
                self.advance(i, entry);
            }
            self.try_start(i);
        }
    }

    fn try_start(&mut self, i: usize) {
        while self.workers[i].free_slots > 0 {
            let Some(first) = self.workers[i].queue.pop_first() else {
                break;
            };
            let key = first.2;
            let Some(run) = self.workers[i].runs.remove(&key) else {
                continue;
            };
            // The inputs were fetched before the task was queued; a task whose only copy of
            // an input was lost meanwhile goes back.
            let missing = run.inputs.iter().any(|input| {
                !self
                    .workers
                    .iter()
                    .any(|o| o.alive && o.chunks.contains_key(&input.key))
                    && !self.workers[i].chunks.contains_key(&input.key)
            });
            if missing {
                self.send_to_core(Input::Reschedule {
                    worker: run.worker,
                    key,
                });
                continue;
            }
            let cost = self.costs.get(&key).copied().unwrap_or(Cost {
                duration: Micros(1),
                nbytes: 8,
                fails: false,
            });
            self.report.runs_started += 1;
            if self.report.runs_by_worker.len() <= i {
                self.report.runs_by_worker.resize(i + 1, 0);
            }
            self.report.runs_by_worker[i] += 1;
            let n = self.running_anywhere.entry(key).or_default();
            *n += 1;
            if *n > 1 {
                self.report.concurrent_runs += 1;
            }
            self.attempts += 1;
            let attempt = self.attempts;
            let w = &mut self.workers[i];
            w.free_slots -= 1;
            w.running.insert(key, attempt);
            let end = self.now.plus(cost.duration);
            self.push(
                end,
                Event::Finish {
                    worker: i,
                    key,
                    attempt,
                },
            );
        }
    }

    fn finish(&mut self, i: usize, key: TaskKey, attempt: u64) {
        let w = &mut self.workers[i];
        if !w.alive || w.running.get(&key) != Some(&attempt) {
            return;
        }
        w.running.remove(&key);
        w.free_slots += 1;
        self.stop_running(key);
        let cost = self.costs.get(&key).copied().unwrap_or(Cost {
            duration: Micros(1),
            nbytes: 8,
            fails: false,
        });
        let worker = self.workers[i].id;
        if cost.fails {
            self.send_to_core(Input::TaskErred {
                worker,
                key,
                message: "simulated failure".into(),
            });
        } else {
            let w = &mut self.workers[i];
            if w.chunks.insert(key, cost.nbytes).is_none() {
                w.memory += cost.nbytes;
            }
            self.report.peak_worker_memory = self.report.peak_worker_memory.max(w.memory);
            self.send_to_core(Input::TaskFinished {
                worker,
                key,
                nbytes: cost.nbytes,
                duration: cost.duration,
            });
            self.report_memory(i);
        }
        self.try_start(i);
        self.wake_waiting();
    }

    fn report_memory(&mut self, i: usize) {
        if self.cfg.reports {
            let w = &self.workers[i];
            let input = Input::WorkerMemory {
                worker: w.id,
                used: w.memory,
            };
            self.send_to_core(input);
        }
    }

    /// Clients' wanted keys that got neither a result nor an error.
    pub fn undelivered(&self) -> Vec<(ClientId, TaskKey)> {
        let mut v: Vec<_> = self
            .wants
            .iter()
            .filter(|(_, pending)| **pending)
            .map(|(w, _)| *w)
            .collect();
        v.sort();
        v
    }

    /// The memory currently used by each live worker.
    pub fn worker_memory(&self) -> Vec<u64> {
        self.workers
            .iter()
            .filter(|w| w.alive)
            .map(|w| w.memory)
            .collect()
    }
}
