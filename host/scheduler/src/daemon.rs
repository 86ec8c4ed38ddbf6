//! The event loop's state: the scheduler core plus what the daemon keeps beside it (connections,
//! literal bytes, per-task limits, failure details), and the translation between wire messages
//! and the core's inputs and outputs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use taskhost_net::{Connection, Sender};
use taskhost_proto::fasthash::{FastMap as HashMap, FastSet as HashSet};
use taskhost_proto::{
    Arg, Blob, ClientEvent, ClientRequest, ClusterStatus, FailureKind, Graph, ModuleId,
    ResultLocation, RunArg, TaskCounts, TaskFailure, TaskKey, TaskLimits, WorkerCommand,
    WorkerReport, WorkerStatus,
};
use taskhost_scheduler_core::{
    self as core, ArgSpec, ClientId, Core, Input, LiteralHandle, Micros, Output, Phase,
    Restrictions, WorkerId,
};

use crate::literals::LiteralTable;
use crate::modules::ModuleStore;

/// Something a connection task tells the loop.
pub(crate) enum Event {
    /// A client finished its hello.
    ClientJoined {
        id: ClientId,
        tx: Sender<ClientEvent>,
        conn: Connection,
    },
    /// A client request that needs the core.
    Client {
        id: ClientId,
        request: ClientRequest,
    },
    /// A client's connection ended.
    ClientLeft { id: ClientId },
    /// A worker registered.
    WorkerJoined {
        id: WorkerId,
        tx: Sender<WorkerCommand>,
        conn: Connection,
        name: String,
        slots: u32,
        memory_limit: u64,
        peer_addr: SocketAddr,
    },
    /// A worker's reports, in the order received.
    Worker {
        id: WorkerId,
        reports: Vec<WorkerReport>,
    },
    /// A worker's connection ended.
    WorkerLeft { id: WorkerId, reason: String },
}

struct WorkerEntry {
    name: String,
    tx: Sender<WorkerCommand>,
    conn: Connection,
    peer_addr: SocketAddr,
    slots: u32,
    memory_limit: u64,
    memory_used: u64,
    last_seen: Instant,
    /// Tasks sent to it and not yet reported back.
    assigned: HashSet<TaskKey>,
}

struct ClientEntry {
    tx: Sender<ClientEvent>,
    conn: Connection,
    /// Keys it wants that were not delivered yet.
    pending: HashSet<TaskKey>,
}

/// Why a task failed, as the worker reported it.
struct FailureRecord {
    kind: FailureKind,
    function: Arc<str>,
}

/// The loop's state.
pub(crate) struct Daemon {
    core: Core,
    start: Instant,
    modules: Arc<ModuleStore>,
    heartbeat_timeout: Duration,
    workers: HashMap<WorkerId, WorkerEntry>,
    worker_names: HashMap<String, WorkerId>,
    clients: HashMap<ClientId, ClientEntry>,
    literals: LiteralTable,
    /// Limits of the tasks that set any.
    limits: HashMap<TaskKey, TaskLimits>,
    /// Function of each task sent to a worker and not finished, for failure reports.
    running: HashMap<TaskKey, Arc<str>>,
    failures: HashMap<TaskKey, FailureRecord>,
    /// Small results received in this batch, for the completion notices of this batch.
    inline: HashMap<TaskKey, Blob>,
    /// Chunks to release, batched per worker.
    releases: HashMap<WorkerId, Vec<TaskKey>>,
    /// When the releases held back must go out.
    releases_due: Option<Instant>,
    /// Workers given commands (`Run`s and the releases before them) in the current pass of
    /// [`Daemon::flush_outputs`], queued with `send_deferred` and sent at its end: one write
    /// (one system call, one wake-up of the worker) for all of a pass's commands to a worker.
    commands_queued: Vec<WorkerId>,
    /// Clients with events queued in this pass whose writers are not woken yet.
    clients_to_wake: Vec<ClientId>,
}

/// How long releases may be held back to be sent together.
const RELEASE_DELAY: Duration = Duration::from_millis(2);

/// Releases held back above which they are sent at once.
const RELEASE_BATCH: usize = 4096;

impl Daemon {
    pub(crate) fn new(
        config: core::Config,
        modules: Arc<ModuleStore>,
        heartbeat_timeout: Duration,
    ) -> Self {
        Self {
            core: Core::new(config),
            start: Instant::now(),
            modules,
            heartbeat_timeout,
            workers: HashMap::default(),
            worker_names: HashMap::default(),
            clients: HashMap::default(),
            literals: LiteralTable::default(),
            limits: HashMap::default(),
            running: HashMap::default(),
            failures: HashMap::default(),
            inline: HashMap::default(),
            releases: HashMap::default(),
            releases_due: None,
            commands_queued: Vec::new(),
            clients_to_wake: Vec::new(),
        }
    }

    fn now(&self) -> Micros {
        Micros(self.start.elapsed().as_micros() as u64)
    }

    /// When the core next wants [`Daemon::handle_timeout`], or held-back releases are due, as
    /// an instant.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        let core = self
            .core
            .poll_timeout()
            .map(|at| self.start + Duration::from_micros(at.0));
        match (core, self.releases_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the core's timers (held-back releases go out with the next flush).
    pub(crate) fn handle_timeout(&mut self) {
        let now = self.now();
        if self.core.poll_timeout().is_some_and(|at| at <= now) {
            self.core.handle_timeout(now);
        }
    }

    fn feed(&mut self, input: Input) {
        let now = self.now();
        if let Err(err) = self.core.handle(now, input) {
            tracing::debug!(%err, "scheduler core ignored an input");
        }
    }

    /// Applies one event.
    pub(crate) fn handle(&mut self, event: Event) {
        match event {
            Event::ClientJoined { id, tx, conn } => {
                self.clients.insert(
                    id,
                    ClientEntry {
                        tx,
                        conn,
                        pending: HashSet::default(),
                    },
                );
            }
            Event::Client { id, request } => self.client_request(id, request),
            Event::ClientLeft { id } => {
                if self.clients.remove(&id).is_some() {
                    self.feed(Input::ClientLeft { client: id });
                }
            }
            Event::WorkerJoined {
                id,
                tx,
                conn,
                name,
                slots,
                memory_limit,
                peer_addr,
            } => {
                tracing::info!(worker = id.0, %name, slots, memory_limit, %peer_addr, "worker joined");
                if tx
                    .send_now(&WorkerCommand::Welcome { worker_id: id.0 })
                    .is_err()
                {
                    return;
                }
                self.worker_names.insert(name.clone(), id);
                self.workers.insert(
                    id,
                    WorkerEntry {
                        name,
                        tx,
                        conn,
                        peer_addr,
                        slots,
                        memory_limit,
                        memory_used: 0,
                        last_seen: Instant::now(),
                        assigned: HashSet::default(),
                    },
                );
                self.feed(Input::WorkerJoined {
                    worker: id,
                    slots,
                    memory_limit,
                    address: peer_addr.to_string().into(),
                    resources: Vec::new(),
                });
            }
            Event::Worker { id, reports } => {
                if let Some(worker) = self.workers.get_mut(&id) {
                    worker.last_seen = Instant::now();
                }
                for report in reports {
                    self.worker_report(id, report);
                }
            }
            Event::WorkerLeft { id, reason } => self.remove_worker(id, &reason),
        }
    }

    fn remove_worker(&mut self, id: WorkerId, reason: &str) {
        let Some(entry) = self.workers.remove(&id) else {
            return;
        };
        tracing::warn!(worker = id.0, name = %entry.name, %reason, "worker left");
        entry.conn.close(reason);
        if self.worker_names.get(&entry.name) == Some(&id) {
            self.worker_names.remove(&entry.name);
        }
        self.releases.remove(&id);
        self.feed(Input::WorkerLeft {
            worker: id,
            died: true,
        });
    }

    /// Declares dead the workers not heard from within the heartbeat timeout.
    pub(crate) fn check_heartbeats(&mut self) {
        let dead: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| w.last_seen.elapsed() > self.heartbeat_timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            let reason = format!("no heartbeat for {:?}", self.heartbeat_timeout);
            self.remove_worker(id, &reason);
        }
    }

    fn client_request(&mut self, id: ClientId, request: ClientRequest) {
        match request {
            ClientRequest::Submit(graph) => {
                tracing::trace!(target: "taskhost::timeline", tasks = graph.tasks.len(), "submit received");
                let r = self.submit(id, graph);
                tracing::trace!(target: "taskhost::timeline", "submit admitted");
                if let Err((reason, keys)) = r {
                    tracing::info!(client = id.0, %reason, "submission rejected");
                    self.send_client(id, ClientEvent::SubmitRejected { reason, keys });
                }
            }
            ClientRequest::Release(keys) => {
                if let Some(client) = self.clients.get_mut(&id) {
                    for key in &keys {
                        client.pending.remove(key);
                    }
                }
                self.feed(Input::Release { client: id, keys });
            }
            ClientRequest::Cancel(keys) => self.feed(Input::Cancel { client: id, keys }),
            ClientRequest::Status => {
                let status = self.status();
                self.send_client(id, ClientEvent::Status(status));
            }
            // Module requests are answered by the connection task itself.
            ClientRequest::QueryModules(_) | ClientRequest::UploadModule { .. } => {}
        }
    }

    /// Checks a graph (keys, modules, literals, restrictions) and hands it to the core; a
    /// refused graph's reason comes back with the keys it wanted.
    fn submit(&mut self, client: ClientId, graph: Graph) -> Result<(), (String, Vec<TaskKey>)> {
        let Graph {
            literals,
            tasks,
            wanted,
        } = graph;
        if let Err(reason) = self.admit(client, literals, tasks, &wanted) {
            return Err((reason, wanted));
        }
        if let Some(entry) = self.clients.get_mut(&client) {
            entry.pending.extend(wanted);
        }
        Ok(())
    }

    fn admit(
        &mut self,
        client: ClientId,
        literals: Vec<Blob>,
        tasks: Vec<taskhost_proto::TaskSpec>,
        wanted: &[TaskKey],
    ) -> Result<(), String> {
        let hashes: Vec<[u8; 32]> = literals
            .iter()
            .map(|l| *blake3::hash(&l.0).as_bytes())
            .collect();
        let mut checked_modules: HashSet<ModuleId> = HashSet::default();
        let mut specs = Vec::with_capacity(tasks.len());
        let mut new_tasks: Vec<(TaskKey, Vec<LiteralHandle>, Option<TaskLimits>)> = Vec::new();
        let mut seen: HashSet<TaskKey> = HashSet::default();
        let handles: Vec<LiteralHandle> = hashes
            .iter()
            .zip(&literals)
            .map(|(hash, bytes)| self.literals.intern(*hash, bytes))
            .collect();
        let cleanup = |table: &mut LiteralTable| {
            for handle in &handles {
                table.drop_if_unused(*handle);
            }
        };
        for task in tasks {
            if !checked_modules.contains(&task.module) {
                if !self.modules.contains(&task.module) {
                    cleanup(&mut self.literals);
                    return Err(format!(
                        "task {} uses module {} that was never uploaded",
                        task.key.short(),
                        task.module
                    ));
                }
                checked_modules.insert(task.module);
            }
            let mut builder = TaskKey::builder(&task.module, &task.function);
            let mut args = Vec::with_capacity(task.args.len());
            let mut task_literals = Vec::new();
            for arg in &task.args {
                match *arg {
                    Arg::Task(key) => {
                        builder.task_arg(&key);
                        args.push(ArgSpec::Task(key));
                    }
                    Arg::Literal(index) => {
                        let Some(hash) = hashes.get(index as usize) else {
                            cleanup(&mut self.literals);
                            return Err(format!(
                                "task {} names literal {index} of a graph with {} literals",
                                task.key.short(),
                                hashes.len()
                            ));
                        };
                        builder.literal_arg_hashed(&literals[index as usize].0, hash);
                        args.push(ArgSpec::Literal(handles[index as usize]));
                        task_literals.push(handles[index as usize]);
                    }
                }
            }
            let derived = builder.finish();
            if derived != task.key {
                cleanup(&mut self.literals);
                return Err(format!(
                    "task key {} does not match its content ({}({} args) derives {})",
                    task.key,
                    task.function,
                    task.args.len(),
                    derived
                ));
            }
            let mut restrictions = Restrictions::default();
            for name in &task.workers {
                match self.worker_names.get(name) {
                    Some(id) => restrictions.workers.push(*id),
                    None => {
                        cleanup(&mut self.literals);
                        return Err(format!(
                            "task {} is restricted to worker {name:?}, which is not connected",
                            task.key.short()
                        ));
                    }
                }
            }
            let is_new = self.core.phase(&task.key).is_none() && seen.insert(task.key);
            if is_new {
                let limits = (task.limits != TaskLimits::default()).then_some(task.limits);
                new_tasks.push((task.key, task_literals, limits));
            }
            let annotations = (!task.annotations.is_empty())
                .then(|| Arc::new(task.annotations.into_iter().collect::<core::Annotations>()));
            specs.push(core::TaskSpec {
                key: task.key,
                module: task.module,
                function: task.function.into(),
                args,
                priority: task.priority,
                restrictions,
                retries: task.retries,
                annotations,
            });
        }
        let now = self.now();
        let result = self.core.handle(
            now,
            Input::SubmitGraph {
                client,
                tasks: specs,
                wants: wanted.to_vec(),
            },
        );
        if let Err(err) = result {
            cleanup(&mut self.literals);
            return Err(err.to_string());
        }
        for (key, literals, limits) in new_tasks {
            for handle in literals {
                self.literals.acquire(handle);
            }
            if let Some(limits) = limits {
                self.limits.insert(key, limits);
            }
        }
        cleanup(&mut self.literals);
        Ok(())
    }

    fn worker_report(&mut self, id: WorkerId, report: WorkerReport) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        match report {
            WorkerReport::Register { .. } => {
                tracing::warn!(worker = id.0, "worker registered twice; ignored");
            }
            WorkerReport::Finished {
                key,
                size,
                duration_us,
                inline,
            } => {
                tracing::trace!(target: "taskhost::timeline", worker = id.0, key = %key.short(), "finished");
                worker.assigned.remove(&key);
                self.running.remove(&key);
                if let Some(bytes) = inline {
                    self.inline.insert(key, bytes);
                }
                self.feed(Input::TaskFinished {
                    worker: id,
                    key,
                    nbytes: size,
                    duration: Micros(duration_us),
                });
            }
            WorkerReport::Failed { key, kind, message } => {
                worker.assigned.remove(&key);
                let function = self.running.remove(&key).unwrap_or_else(|| "?".into());
                self.failures.insert(key, FailureRecord { kind, function });
                self.feed(Input::TaskErred {
                    worker: id,
                    key,
                    message,
                });
            }
            WorkerReport::Reschedule { key, missing } => {
                worker.assigned.remove(&key);
                tracing::info!(worker = id.0, key = %key.short(), missing = missing.len(), "task rescheduled: inputs unavailable");
                self.feed(Input::Reschedule { worker: id, key });
            }
            WorkerReport::StealAnswer { key, released } => {
                if released {
                    worker.assigned.remove(&key);
                }
                self.feed(Input::StealAnswer {
                    worker: id,
                    key,
                    stolen: released,
                });
            }
            WorkerReport::Memory {
                in_memory,
                spilled: _,
            } => {
                worker.memory_used = in_memory;
                self.feed(Input::WorkerMemory {
                    worker: id,
                    used: in_memory,
                });
            }
            WorkerReport::ChunkLost(key) => {
                tracing::debug!(worker = id.0, key = %key.short(), "worker lacks a chunk");
                self.feed(Input::ChunkLost { worker: id, key });
            }
            WorkerReport::Heartbeat => {}
        }
    }

    /// Turns every pending output of the core into messages.
    pub(crate) fn flush_outputs(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::RunTask(run) => {
                    tracing::trace!(target: "taskhost::timeline", worker = run.worker.0, key = %run.key.short(), "dispatch");
                    self.flush_releases_to(run.worker);
                    self.run_task(*run);
                }
                Output::ReleaseChunk { worker, key } => {
                    self.releases.entry(worker).or_default().push(key);
                }
                Output::CancelTask { worker, key } => {
                    self.flush_releases_to(worker);
                    if let Some(entry) = self.workers.get_mut(&worker) {
                        entry.assigned.remove(&key);
                        let _ = entry.tx.send_now(&WorkerCommand::Cancel(key));
                    }
                }
                Output::StealRequest { worker, key } => {
                    self.flush_releases_to(worker);
                    if let Some(entry) = self.workers.get(&worker) {
                        let _ = entry.tx.send_now(&WorkerCommand::Steal(key));
                    }
                }
                Output::TaskDone {
                    client,
                    key,
                    nbytes,
                    holders,
                } => {
                    let result = match self.inline.get(&key) {
                        Some(bytes) => ResultLocation::Inline(bytes.clone()),
                        None => ResultLocation::Workers {
                            size: nbytes,
                            holders: holders
                                .iter()
                                .filter_map(|w| self.workers.get(w).map(|e| e.peer_addr))
                                .collect(),
                        },
                    };
                    if let Some(entry) = self.clients.get_mut(&client) {
                        entry.pending.remove(&key);
                    }
                    self.send_client(client, ClientEvent::TaskDone { key, result });
                }
                Output::TaskErred { client, key, error } => {
                    let failure = self.describe_failure(&error);
                    if let Some(entry) = self.clients.get_mut(&client) {
                        entry.pending.remove(&key);
                    }
                    self.send_client(client, ClientEvent::TaskFailed { key, failure });
                }
                Output::TaskCancelled { client, key } => {
                    if let Some(entry) = self.clients.get_mut(&client) {
                        entry.pending.remove(&key);
                    }
                    let failure = TaskFailure {
                        kind: FailureKind::Cancelled,
                        message: "cancelled by the client".into(),
                        origin: key,
                        function: String::new(),
                    };
                    self.send_client(client, ClientEvent::TaskFailed { key, failure });
                }
                Output::WorkerPaused { worker, paused } => {
                    tracing::info!(worker = worker.0, paused, "worker memory pause changed");
                }
                Output::TaskForgotten { key, literals } => {
                    for handle in literals {
                        self.literals.release(handle);
                    }
                    self.limits.remove(&key);
                    self.failures.remove(&key);
                    self.running.remove(&key);
                }
            }
        }
        for worker in self.commands_queued.drain(..) {
            if let Some(entry) = self.workers.get(&worker) {
                entry.tx.send_queued();
            }
        }
        self.wake_clients();
        self.flush_releases();
        self.inline.clear();
    }

    /// Sends the releases held back, if they are due or many. Releases free memory but nothing
    /// waits for them, so they are held for up to [`RELEASE_DELAY`] and sent in one message,
    /// rather than costing a packet (and a wake-up of the worker) per client request that
    /// drops a result; a command to the worker sends them first in any case.
    fn flush_releases(&mut self) {
        if self.releases.is_empty() {
            self.releases_due = None;
            return;
        }
        let now = Instant::now();
        let due = *self.releases_due.get_or_insert(now + RELEASE_DELAY) <= now;
        let pending: usize = self.releases.values().map(Vec::len).sum();
        if !due && pending < RELEASE_BATCH {
            return;
        }
        for (worker, keys) in self.releases.drain() {
            if let Some(entry) = self.workers.get(&worker) {
                let _ = entry.tx.send_now(&WorkerCommand::Release(keys));
            }
        }
        self.releases_due = None;
    }

    /// Sends the releases gathered for `worker` so far. Releases are batched per flush, but a
    /// release must reach the worker before any later command: the core may release a chunk
    /// and then ask the same worker to compute it again (a client dropped a result and
    /// resubmitted it), and a late release would delete the new chunk.
    ///
    /// They are queued, not written: the command that follows either writes them with itself
    /// or is queued too and written at the end of the pass.
    fn flush_releases_to(&mut self, worker: WorkerId) {
        if let Some(keys) = self.releases.remove(&worker)
            && let Some(entry) = self.workers.get(&worker)
            && entry
                .tx
                .send_deferred(&WorkerCommand::Release(keys))
                .is_ok()
            && !self.commands_queued.contains(&worker)
        {
            self.commands_queued.push(worker);
        }
    }

    fn run_task(&mut self, run: core::RunTask) {
        let Some(target) = self.workers.get(&run.worker) else {
            tracing::warn!(
                worker = run.worker.0,
                "core placed a task on an unknown worker"
            );
            return;
        };
        let mut args = Vec::with_capacity(run.args.len());
        for arg in &run.args {
            match arg {
                ArgSpec::Literal(handle) => match self.literals.get(*handle) {
                    Some(bytes) => args.push(RunArg::Literal(bytes.clone())),
                    None => {
                        tracing::error!(key = %run.key.short(), "literal of a live task is missing");
                        args.push(RunArg::Literal(Blob::default()));
                    }
                },
                ArgSpec::Task(key) => {
                    let location = run.inputs.iter().find(|input| input.key == *key);
                    let (size, holders, pending) = match location {
                        Some(input) => (
                            input.nbytes,
                            input
                                .holders
                                .iter()
                                .filter(|w| **w != run.worker)
                                .filter_map(|w| self.workers.get(w).map(|e| e.peer_addr))
                                .collect(),
                            input.pending,
                        ),
                        None => (0, Vec::new(), false),
                    };
                    args.push(RunArg::Chunk {
                        key: *key,
                        size,
                        holders,
                        pending,
                    });
                }
            }
        }
        let limits = self.limits.get(&run.key).copied().unwrap_or_default();
        let send_result = self
            .clients
            .values()
            .any(|client| client.pending.contains(&run.key));
        let command = WorkerCommand::Run(taskhost_proto::RunTask {
            key: run.key,
            module: run.module,
            function: run.function.to_string(),
            args,
            limits,
            send_result,
            priority: taskhost_proto::RunPriority {
                user: run.priority.user,
                generation: run.priority.generation,
                order: run.priority.order,
            },
        });
        if target.tx.send_deferred(&command).is_ok() {
            if !self.commands_queued.contains(&run.worker) {
                self.commands_queued.push(run.worker);
            }
            self.running.insert(run.key, run.function.clone());
            if let Some(entry) = self.workers.get_mut(&run.worker) {
                entry.assigned.insert(run.key);
            }
        }
    }

    fn describe_failure(&self, error: &core::TaskFailure) -> TaskFailure {
        let origin = error.origin();
        let function = |key: &TaskKey| {
            self.failures
                .get(key)
                .map(|r| r.function.to_string())
                .or_else(|| self.running.get(key).map(|f| f.to_string()))
                .unwrap_or_default()
        };
        match error {
            core::TaskFailure::Failed { message, .. } => TaskFailure {
                kind: self
                    .failures
                    .get(&origin)
                    .map(|r| r.kind)
                    .unwrap_or(FailureKind::Failed),
                message: message.clone(),
                origin,
                function: function(&origin),
            },
            core::TaskFailure::Suspect { deaths, .. } => TaskFailure {
                kind: FailureKind::Suspect,
                message: format!("{deaths} workers died while running it"),
                origin,
                function: function(&origin),
            },
        }
    }

    /// Queues an event for a client; it goes out at the end of the pass
    /// ([`Daemon::flush_outputs`]), after the pass's commands to workers.
    fn send_client(&mut self, id: ClientId, event: ClientEvent) {
        let Some(client) = self.clients.get(&id) else {
            return;
        };
        match client.tx.send_deferred(&event) {
            Ok(()) => {
                if !self.clients_to_wake.contains(&id) {
                    self.clients_to_wake.push(id);
                }
            }
            Err(err) => tracing::debug!(client = id.0, %err, "client gone"),
        }
    }

    /// Wakes the writers of the clients [`Daemon::send_client`] queued events for. Called after
    /// the commands to workers are queued: the writer tasks of this single-threaded runtime run
    /// in the order they are woken, so a task's `Run` leaves before the client's reply to the
    /// same request (a `submit`'s status barrier): a client woken first could preempt the
    /// scheduler before the `Run` left (~20 us in a `perf sched` trace on a busy CPU).
    fn wake_clients(&mut self) {
        for id in self.clients_to_wake.drain(..) {
            if let Some(client) = self.clients.get(&id) {
                client.tx.wake();
            }
        }
    }

    /// Sends each client with undelivered results the cluster's task counts.
    pub(crate) fn send_progress(&mut self) {
        if self
            .clients
            .values()
            .all(|client| client.pending.is_empty())
        {
            return;
        }
        let counts = self.counts();
        for client in self
            .clients
            .values()
            .filter(|client| !client.pending.is_empty())
        {
            let _ = client.tx.send_now(&ClientEvent::Progress(counts));
        }
    }

    fn counts(&self) -> TaskCounts {
        let c = self.core.counts();
        TaskCounts {
            waiting: c.waiting,
            queued: c.queued,
            processing: c.processing,
            memory: c.memory,
            erred: c.erred,
            released: c.released,
        }
    }

    fn status(&self) -> ClusterStatus {
        let mut workers: Vec<WorkerStatus> = self
            .workers
            .iter()
            .map(|(id, w)| WorkerStatus {
                name: w.name.clone(),
                peer_addr: w.peer_addr,
                slots: w.slots,
                tasks: w.assigned.len() as u64,
                chunks: self.core.worker_chunks(*id),
                memory_used: w.memory_used,
                memory_limit: w.memory_limit,
                paused: self.core.is_paused(*id).unwrap_or(false),
            })
            .collect();
        workers.sort_by(|a, b| a.name.cmp(&b.name));
        ClusterStatus {
            workers,
            tasks: self.counts(),
            modules: self.modules.count(),
        }
    }

    /// Tells every worker and client that the scheduler stops.
    pub(crate) fn shutdown(&mut self, reason: &str) {
        for worker in self.workers.values() {
            let _ = worker.tx.send_now(&WorkerCommand::Shutdown {
                reason: reason.to_owned(),
            });
        }
    }

    /// Closes every connection (after [`Daemon::shutdown`] had a moment to be delivered), so
    /// clients and workers see the scheduler go at once.
    pub(crate) fn close_connections(&mut self, reason: &str) {
        for worker in self.workers.values() {
            worker.conn.close(reason);
        }
        for client in self.clients.values() {
            client.conn.close(reason);
        }
    }

    /// Whether a task is known to the core (for tests and status).
    #[allow(dead_code)]
    pub(crate) fn phase(&self, key: &TaskKey) -> Option<Phase> {
        self.core.phase(key)
    }
}
