//! The worker's state, its command loop and the life of a task.

use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use taskhost_chunk_store::ChunkStore;
use taskhost_net::{
    Connection, Credentials, Endpoint, IdleSignal, Listener, ListenerConfig, Receiver, Sender,
};
use taskhost_proto::fasthash::FastMap as HashMap;
use taskhost_proto::{
    Blob, FailureKind, ModuleId, Role, RunArg, RunPriority, RunTask, TaskKey, TaskLimits,
    WorkerCommand, WorkerReport,
};
use taskhost_runtime::{CancelToken, Limits, Runtime, RuntimeConfig, RuntimeError, TaskError};
use tokio::sync::{oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};

use crate::config::{host_name, local_ip_towards};
use crate::peers::{ChunkSource, Fetch, PeerSlot, spawn_peer_server};
use crate::{INLINE_LIMIT, WorkerConfig, WorkerError, WorkerHandle, WorkerStats};

/// How long the scheduler has to answer `Register` with `Welcome`.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the chunk store's memory use is checked (and reported if it changed).
const MEMORY_REPORT_PERIOD: Duration = Duration::from_millis(200);

/// A task that ran for less than this is "short": an executor that goes on with more of the
/// same function holds its report back to send several at once.
const SHORT_TASK: Duration = Duration::from_micros(200);

/// A ready task of a function whose last run here took less than this may run on the network
/// thread itself when a slot is free, instead of waking an executor thread: one thread hand-off
/// (a wake-up of an idle CPU, 20-40 us on a VM) less per task, and its report and the chunk
/// answers it lets go leave without another. Longer tasks go to the executor threads, so that
/// the network thread keeps serving peers and the scheduler meanwhile (docs/worker.md).
const INLINE_TASK: Duration = Duration::from_micros(150);

/// How long a task run on the network thread may take before it is interrupted and handed to
/// the executor threads (see [`Inner::run_job`]).
const INLINE_OVERRUN: Duration = Duration::from_millis(10);

/// Most reports an executor holds back.
const MAX_DEFERRED_REPORTS: usize = 64;

/// How long the network thread keeps polling (instead of sleeping) for the report of a lone task
/// it handed to a free executor, when the last run of the same function was short.
const REPORT_POLL: Duration = Duration::from_micros(200);

/// How often a wait for a task attempt to end looks again without being woken.
const WATCH_RECHECK: Duration = Duration::from_secs(1);

/// How long closing the endpoints may wait for peers to acknowledge.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Why the worker stopped.
#[derive(Debug, Clone)]
pub(crate) enum StopReason {
    /// Stopped through its handle.
    Local,
    /// The connection to the scheduler closed or failed.
    SchedulerLost(String),
    /// The scheduler sent `Shutdown`.
    Shutdown(String),
}

#[derive(Default)]
pub(crate) struct Counters {
    pub tasks_received: AtomicU64,
    pub tasks_finished: AtomicU64,
    pub tasks_failed: AtomicU64,
    pub tasks_rescheduled: AtomicU64,
    pub tasks_dropped: AtomicU64,
    pub chunks_fetched: AtomicU64,
    pub bytes_fetched: AtomicU64,
    pub chunks_served: AtomicU64,
    pub bytes_served: AtomicU64,
    pub modules_fetched: AtomicU64,
    pub peer_connections: AtomicU64,
}

/// A task the worker was told to run and has not reported yet.
struct TaskEntry {
    /// Distinguishes this attempt from a later `Run` of the same key.
    run: u64,
    state: TaskState,
}

enum TaskState {
    /// Waiting for its module or inputs: can be dropped (cancelled, stolen) at once.
    Pending(AbortHandle),
    /// Ready, in the executors' queue: can be dropped at once (an executor skips an entry
    /// that is gone or belongs to another attempt).
    Queued,
    /// Dispatched early; everything at hand but outputs of tasks running or queued on this
    /// worker (`waiting` of them). The executor that stores the last of them queues the job
    /// itself, with no hop through the network thread. Can be dropped at once.
    Parked { job: Box<Job>, waiting: u32 },
    /// On an executor thread; cancelling the token interrupts the guest at once (epoch
    /// interruption) and its result, if any, is discarded.
    Running { cancel: CancelToken },
}

/// A ready task waiting for an executor thread.
struct Job {
    task: RunTask,
    inputs: Vec<Input>,
    lease: ReplicaLease,
    run: u64,
}

/// The ready tasks, taken in order by one executor thread per slot.
#[derive(Default)]
struct ExecQueue {
    state: Mutex<ExecState>,
    ready: Condvar,
}

#[derive(Default)]
struct ExecState {
    /// The network thread holds a free executor's slot (counted out of `free`) to run ready
    /// short tasks itself (see [`INLINE_TASK`]).
    inline_pending: bool,
    /// Ready tasks, the scheduler's smallest priority first, then in arrival order.
    jobs: BinaryHeap<Queued>,
    /// Arrival counter (ties of priority run in arrival order).
    arrivals: u64,
    stopped: bool,
    /// Executors not running a task (waiting for one, or reporting the last).
    free: usize,
    /// The functions run last (at most [`RECENT_FUNCTIONS`], the latest first) and how long
    /// their runs take (see [`LastRun::took`]).
    recent: Vec<LastRun>,
}

/// How many functions' last durations the executors' queue remembers.
const RECENT_FUNCTIONS: usize = 8;

impl ExecState {
    /// How long the last run of `task`'s function took, if it ran lately.
    fn last_took(&self, task: &RunTask) -> Option<Duration> {
        self.recent
            .iter()
            .find(|r| r.module == task.module && r.function == task.function)
            .map(|r| r.took)
    }

    /// Queues a ready job, in arrival order among equals (`awaited`: see [`Queued::awaited`]).
    fn push(&mut self, job: Job, awaited: bool) {
        let arrival = self.arrivals;
        self.arrivals += 1;
        self.jobs.push(Queued {
            awaited,
            fetched: !job.lease.keys.is_empty(),
            priority: job.task.priority,
            arrival,
            job,
        });
    }

    /// Whether `task` may run on the network thread: its function's last run here was
    /// shorter than [`INLINE_TASK`].
    fn runs_inline(&self, task: &RunTask) -> bool {
        self.last_took(task).is_some_and(|t| t < INLINE_TASK)
    }

    /// Remembers how long a run of `module`'s `function` took.
    fn remember(&mut self, module: ModuleId, function: &str, took: Duration) {
        match self
            .recent
            .iter()
            .position(|r| r.module == module && r.function == function)
        {
            Some(i) => {
                let mut entry = self.recent.remove(i);
                entry.took = if took <= entry.took {
                    took
                } else {
                    entry.took + (took - entry.took) / SLOWER_RUN_WEIGHT
                };
                self.recent.insert(0, entry);
            }
            None => {
                self.recent.truncate(RECENT_FUNCTIONS - 1);
                self.recent.insert(
                    0,
                    LastRun {
                        module,
                        function: function.to_owned(),
                        took,
                    },
                );
            }
        }
    }
}

/// How one function's runs go on this worker.
struct LastRun {
    module: ModuleId,
    function: String,
    /// How long a run takes: the last run if it was the fastest lately, otherwise moved
    /// towards a slower run by [`SLOWER_RUN_WEIGHT`]. A run the thread was taken from for a
    /// while (by another thread on its CPU) then does not send the function's next tasks to
    /// the executors ([`INLINE_TASK`]), while one of many times the length does at once.
    took: Duration,
}

/// A run slower than a function's estimate moves the estimate by this fraction of the difference.
const SLOWER_RUN_WEIGHT: u32 = 8;

/// A job in the heap, ordered so that the heap's greatest is the one to run next.
struct Queued {
    /// A peer is waiting for the task's output: it runs before the other ready tasks, whatever
    /// their priorities. Its output is then on the path between two workers (a stencil's
    /// border column, say), where every microsecond it waits here the peer waits too, while
    /// the tasks behind it only need what is here already.
    awaited: bool,
    /// An input was fetched from a peer: the task likely sits on a path between workers, its
    /// output wanted back there (a stencil's border column takes its neighbour's column and
    /// feeds it in turn), and runs before the others that no peer waits for yet. Run first,
    /// its output crosses while this worker runs the others.
    fetched: bool,
    priority: RunPriority,
    arrival: u64,
    job: Job,
}

impl Queued {
    fn rank(&self) -> (bool, bool, RunPriority, u64) {
        (!self.awaited, !self.fetched, self.priority, self.arrival)
    }
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.rank() == other.rank()
    }
}

impl Eq for Queued {}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Reversed: the max-heap pops the smallest priority and the earliest arrival.
        other.rank().cmp(&self.rank())
    }
}

/// A peer's wait for a task's output, noted by [`Inner::peer_waits_for`] until dropped.
pub(crate) struct PeerWait<'a> {
    inner: &'a Inner,
    key: TaskKey,
}

impl Drop for PeerWait<'_> {
    fn drop(&mut self) {
        let mut awaited = self.inner.awaited_by_peers.lock();
        if let Some(n) = awaited.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                awaited.remove(&self.key);
            }
        }
    }
}

/// One input of a task, as gathered before it takes a slot.
#[derive(Clone)]
enum Input {
    /// The bytes themselves (a literal, or a chunk fetched from a peer).
    Bytes(Bytes),
    /// A chunk of the local store, read on the task's thread.
    Local(TaskKey),
}

/// What became of a task.
enum Outcome {
    Done {
        size: u64,
        duration_us: u64,
        inline: Option<Blob>,
    },
    Failed {
        kind: FailureKind,
        message: String,
    },
    /// These inputs could not be had.
    Missing(Vec<TaskKey>),
}

/// Everything the worker's tasks share.
pub(crate) struct Inner {
    pub runtime: Arc<Runtime>,
    pub store: Mutex<ChunkStore>,
    pub reports: Sender<WorkerReport>,
    /// The connection to the scheduler (modules are fetched on it).
    pub scheduler: Connection,
    /// The endpoint of outgoing connections (to the scheduler and to peers).
    pub endpoint: Endpoint,
    /// The endpoint of the peer listener.
    pub peer_endpoint: Endpoint,
    pub peer_credentials: Credentials,
    pub peer_addr: SocketAddr,
    pub memory_limit: u64,
    default_limits: Limits,
    queue: ExecQueue,
    tasks: Mutex<HashMap<TaskKey, TaskEntry>>,
    next_run: AtomicU64,
    pub peers: Mutex<HashMap<SocketAddr, PeerSlot>>,
    pub chunk_fetches: Mutex<HashMap<TaskKey, Fetch<Bytes>>>,
    /// Chunks fetched from peers (replicas the scheduler does not know about), with how many
    /// of this worker's tasks still need each; a replica is dropped when none does.
    replicas: Mutex<HashMap<TaskKey, u32>>,
    pub module_fetches: Mutex<HashMap<ModuleId, Fetch<()>>>,
    /// Who waits for a task attempt here to end (its output computed, or not): local tasks
    /// dispatched early and peers asking for a chunk being computed. Woken whenever a task
    /// entry is added or removed.
    watchers: Mutex<HashMap<TaskKey, Vec<oneshot::Sender<()>>>>,
    /// Tasks whose output a peer is waiting for (`ChunkWhenComputed` requests being served),
    /// with how many requests: they run before other ready tasks (see [`Queued::awaited`]).
    awaited_by_peers: Mutex<HashMap<TaskKey, u32>>,
    /// Parked tasks (and their attempts) by the local task output they wait for.
    local_dependents: Mutex<HashMap<TaskKey, Vec<(TaskKey, u64)>>>,
    pub counters: Counters,
    /// Tasks the executors finished (their reports queued, the writer woken if due).
    concluded: AtomicU64,
    /// Set by [`Inner::spawn_task`] when a free executor takes a task that is likely short:
    /// `concluded` at that moment, plus one. The command loop then polls for its report.
    report_due: AtomicU64,
    /// Set once the worker stops: nothing more is reported.
    stopped: AtomicBool,
    /// Wakes the network thread's inline runner (see [`INLINE_TASK`]).
    inline: tokio::sync::Notify,
    /// Tells the inline runner when the network thread has nothing else to do.
    idle: Arc<IdleSignal>,
}

thread_local! {
    /// The worker (its [`Inner`]'s address) whose network thread this thread is, if any.
    static NETWORK_THREAD_OF: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The outcome of one job run by [`Inner::run_job`].
struct Ran {
    module: ModuleId,
    function: String,
    took: Duration,
    /// Whether a report was queued.
    reported: bool,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("peer_addr", &self.peer_addr)
            .field("scheduler", &self.scheduler.remote_address())
            .finish_non_exhaustive()
    }
}

/// Starts the worker on the current runtime; also returns its command loop, which ends once
/// the worker stopped and closed its endpoints.
pub(crate) async fn start(
    config: WorkerConfig,
    idle: Arc<IdleSignal>,
) -> Result<(WorkerHandle, JoinHandle<()>), WorkerError> {
    if config.slots == 0 {
        return Err(WorkerError::Internal(
            "a worker needs at least one slot".into(),
        ));
    }
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        WorkerError::Internal(format!(
            "cannot create the data directory {}: {e}",
            config.data_dir.display()
        ))
    })?;

    let mut runtime_config = RuntimeConfig::new(&config.data_dir);
    // One instance per slot, plus a margin for a cancelled task that is still winding down.
    runtime_config.max_instances = config.slots.saturating_mul(2).saturating_add(2);
    let runtime = tokio::task::spawn_blocking(move || Runtime::new(runtime_config))
        .await
        .map_err(|e| WorkerError::Internal(format!("runtime start-up failed: {e}")))??;
    let store = ChunkStore::open(&config.data_dir.join("chunks"), config.spill_threshold())?;

    // The peer server first, so that its address can be registered.
    let mut listener_config =
        ListenerConfig::peer(config.ticket.token.clone()).map_err(|e| WorkerError::Listen {
            addr: config.listen,
            source: e,
        })?;
    listener_config.transport = config.transport.clone();
    let listener = Listener::bind(config.listen, listener_config)
        .await
        .map_err(|e| WorkerError::Listen {
            addr: config.listen,
            source: e,
        })?;
    let port = listener
        .local_addr()
        .map_err(|e| WorkerError::Listen {
            addr: config.listen,
            source: e,
        })?
        .port();

    let endpoint = Endpoint::client(config.transport.clone()).map_err(WorkerError::Connect)?;
    let established = endpoint
        .connect_ticket(&config.ticket, Role::Worker)
        .await
        .map_err(WorkerError::Connect)?;
    let scheduler = established.connection;
    let scheduler_addr = scheduler.remote_address();
    let host = config
        .advertise_host
        .or_else(|| (!config.listen.ip().is_unspecified()).then(|| config.listen.ip()))
        .or_else(|| local_ip_towards(scheduler_addr))
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let peer_addr = SocketAddr::new(host, port);
    let name = config
        .name
        .clone()
        .unwrap_or_else(|| format!("{}:{port}", host_name()));

    let (reports, mut commands) = established.control.split::<WorkerReport, WorkerCommand>();
    let worker_id = match register(&reports, &mut commands, &name, &config, peer_addr).await {
        Ok(id) => id,
        Err(e) => {
            scheduler.close("registration failed");
            return Err(e);
        }
    };
    tracing::info!(
        worker_id,
        %name,
        %peer_addr,
        scheduler = %scheduler_addr,
        slots = config.slots,
        memory_limit = config.memory_limit,
        "registered with the scheduler"
    );

    let inner = Arc::new(Inner {
        runtime: Arc::new(runtime),
        store: Mutex::new(store),
        reports,
        scheduler,
        endpoint,
        peer_endpoint: listener.endpoint().clone(),
        peer_credentials: Credentials::peer(config.ticket.token.clone()),
        peer_addr,
        memory_limit: config.memory_limit,
        default_limits: config.default_limits,
        queue: ExecQueue::default(),
        tasks: Mutex::new(HashMap::default()),
        next_run: AtomicU64::new(0),
        peers: Mutex::new(HashMap::default()),
        chunk_fetches: Mutex::new(HashMap::default()),
        replicas: Mutex::new(HashMap::default()),
        watchers: Mutex::new(HashMap::default()),
        awaited_by_peers: Mutex::new(HashMap::default()),
        local_dependents: Mutex::new(HashMap::default()),
        module_fetches: Mutex::new(HashMap::default()),
        counters: Counters::default(),
        concluded: AtomicU64::new(0),
        report_due: AtomicU64::new(0),
        stopped: AtomicBool::new(false),
        inline: tokio::sync::Notify::new(),
        idle,
    });

    for slot in 0..config.slots {
        let inner = inner.clone();
        std::thread::Builder::new()
            .name(format!("taskhost-exec-{slot}"))
            .spawn(move || inner.executor())
            .map_err(|e| WorkerError::Internal(format!("cannot start an executor thread: {e}")))?;
    }
    NETWORK_THREAD_OF.with(|t| t.set(Arc::as_ptr(&inner) as usize));
    let heartbeat = config.heartbeat;
    let reporter = inner.clone();
    std::thread::Builder::new()
        .name("taskhost-beat".into())
        .spawn(move || report_memory(reporter, heartbeat))
        .map_err(|e| WorkerError::Internal(format!("cannot start the heartbeat thread: {e}")))?;
    let background = vec![
        spawn_peer_server(inner.clone(), listener),
        tokio::spawn(inline_runner(inner.clone())),
    ];
    let (stop_tx, stop_rx) = watch::channel(false);
    let (outcome_tx, outcome_rx) = watch::channel(None);
    let commands = tokio::spawn(command_loop(
        inner.clone(),
        commands,
        stop_rx,
        outcome_tx,
        background,
    ));
    let handle = WorkerHandle {
        shared: inner,
        peer_addr,
        worker_id,
        stop: stop_tx,
        outcome: outcome_rx,
    };
    Ok((handle, commands))
}

/// Sends `Register` and waits for `Welcome`.
async fn register(
    reports: &Sender<WorkerReport>,
    commands: &mut Receiver<WorkerCommand>,
    name: &str,
    config: &WorkerConfig,
    peer_addr: SocketAddr,
) -> Result<u64, WorkerError> {
    let registration = WorkerReport::Register {
        name: name.to_owned(),
        slots: config.slots,
        memory_limit: config.memory_limit,
        peer_addr,
    };
    reports
        .send(&registration)
        .await
        .map_err(|e| WorkerError::Registration(e.to_string()))?;
    match tokio::time::timeout(REGISTER_TIMEOUT, commands.recv()).await {
        Ok(Ok(Some(WorkerCommand::Welcome { worker_id }))) => Ok(worker_id),
        Ok(Ok(Some(WorkerCommand::Shutdown { reason }))) => Err(WorkerError::Registration(
            format!("the scheduler refused the worker: {reason}"),
        )),
        Ok(Ok(Some(other))) => Err(WorkerError::Registration(format!(
            "expected a Welcome from the scheduler, got {other:?}"
        ))),
        Ok(Ok(None)) => Err(WorkerError::Registration(
            "the scheduler closed the connection before welcoming the worker".into(),
        )),
        Ok(Err(e)) => Err(WorkerError::Registration(e.to_string())),
        Err(_) => Err(WorkerError::Registration(format!(
            "no Welcome from the scheduler within {REGISTER_TIMEOUT:?}"
        ))),
    }
}

/// Receives the scheduler's commands until the connection ends, the scheduler says stop, or the
/// handle does.
async fn command_loop(
    inner: Arc<Inner>,
    mut commands: Receiver<WorkerCommand>,
    mut stop: watch::Receiver<bool>,
    outcome: watch::Sender<Option<StopReason>>,
    background: Vec<JoinHandle<()>>,
) {
    let scheduler_addr = inner.scheduler.remote_address();
    let mut batch = Vec::new();
    // A report to poll for: (`concluded` before it, until when).
    let mut report_due: Option<(u64, Instant)> = None;
    let reason = 'outer: loop {
        batch.clear();
        tokio::select! {
            () = poll_for_report(&inner, report_due), if report_due.is_some() => {
                report_due = None;
            }
            received = commands.recv_many(&mut batch, 1024) => match received {
                Ok(0) => {
                    let why = inner
                        .scheduler
                        .close_reason()
                        .map_or_else(|| "it closed the control stream".to_owned(), |e| e.to_string());
                    break StopReason::SchedulerLost(format!(
                        "the connection to the scheduler at {scheduler_addr} ended: {why}"
                    ));
                }
                Ok(_) => {
                    let runs = batch.iter().filter(|c| matches!(c, WorkerCommand::Run(_))).count();
                    for command in batch.drain(..) {
                        if let Some(reason) = inner.handle(command) {
                            break 'outer reason;
                        }
                    }
                    // Poll for the report of a lone task only: when tasks come in batches (or
                    // keep the worker busy), reports are batched too and this would only cost
                    // CPU (measured: ~4 polls and ~2-3 us of CPU per task in a 100k-task run).
                    let due = inner.report_due.swap(0, Ordering::Relaxed);
                    if due > 0 && runs == 1 && inner.tasks.lock().len() == 1 {
                        tracing::trace!("polling for the report of a lone task");
                        report_due = Some((due - 1, Instant::now() + REPORT_POLL));
                    }
                }
                Err(e) => {
                    // The connection's close reason says more than the stream's error.
                    let why = inner.scheduler.close_reason().map_or_else(|| e.to_string(), |c| c.to_string());
                    break StopReason::SchedulerLost(format!(
                        "the connection to the scheduler at {scheduler_addr} failed: {why}"
                    ));
                }
            },
            _ = stop.changed() => break StopReason::Local,
        }
    };
    inner.stopped.store(true, Ordering::SeqCst);
    for task in &background {
        task.abort();
    }
    match &reason {
        StopReason::Local => tracing::info!("worker shutting down"),
        StopReason::SchedulerLost(why) => tracing::error!("{why}; the worker stops"),
        StopReason::Shutdown(why) => tracing::info!("the scheduler stops this worker: {why}"),
    }
    inner.scheduler.close("worker stopped");
    // Abandon the tasks that have not started; running ones finish unreported.
    for (_, entry) in inner.tasks.lock().drain() {
        if let TaskState::Pending(abort) = entry.state {
            abort.abort();
        }
    }
    let abandoned = {
        let mut queue = inner.queue.state.lock();
        queue.stopped = true;
        std::mem::take(&mut queue.jobs)
    };
    inner.queue.ready.notify_all();
    drop(abandoned);
    let _ = outcome.send(Some(reason));
    inner.close_endpoints().await;
}

/// Runs ready short tasks on the network thread when a slot is free (see [`INLINE_TASK`]),
/// woken by [`Inner::enqueue`]. Before each task it waits until the thread has nothing else to
/// do ([`IdleSignal`]): answers to peers waiting for the last output, commands, and requests
/// that came in meanwhile, each through all of its hops from task to task. Otherwise a chain of
/// tasks run here would hold up what the chain's previous output unblocks elsewhere, and a
/// peer's request would advance by one hop per task run (measured: 180 us from a `Run`'s
/// arrival to its chunk request reaching the busy worker that computes the input).
async fn inline_runner(inner: Arc<Inner>) {
    loop {
        inner.inline.notified().await;
        // Reports queued and not yet sent, as an executor holds them (see `Inner::executor`).
        let mut deferred = 0usize;
        loop {
            inner.idle.wait().await;
            let job = {
                let mut queue = inner.queue.state.lock();
                if queue.stopped {
                    return;
                }
                let next = queue
                    .jobs
                    .peek()
                    .is_some_and(|q| queue.runs_inline(&q.job.task));
                match queue.jobs.pop() {
                    Some(queued) if next => queued.job,
                    other => {
                        // Nothing short to run: the slot goes back to the executors, which
                        // take what is left.
                        if let Some(queued) = other {
                            queue.jobs.push(queued);
                        }
                        queue.inline_pending = false;
                        queue.free += 1;
                        let wake = !queue.jobs.is_empty();
                        drop(queue);
                        if wake {
                            inner.queue.ready.notify_one();
                        }
                        break;
                    }
                }
            };
            let ran = inner.run_job(job, true, true);
            let more = {
                let mut queue = inner.queue.state.lock();
                if let Some(ran) = &ran {
                    queue.remember(ran.module, &ran.function, ran.took);
                }
                !queue.jobs.is_empty()
            };
            if ran.as_ref().is_some_and(|r| r.reported) {
                deferred += 1;
            }
            let short = ran.as_ref().is_some_and(|r| r.took < SHORT_TASK);
            if deferred > 0 && (!more || !short || deferred >= MAX_DEFERRED_REPORTS) {
                deferred = 0;
                inner.reports.wake();
            }
            inner.concluded.fetch_add(1, Ordering::Release);
        }
        if deferred > 0 {
            inner.reports.wake();
        }
    }
}

/// Keeps the network thread awake until an executor concludes a task after `concluded` was
/// `before` (its report is then queued and its writer woken), or until `until`: a task handed
/// to a free executor that is likely short, whose report then goes out without the network
/// thread sleeping and being woken again (a context switch, and an idle CPU woken, on each
/// side of the hand-off). Each round yields to the runtime, which polls its sockets first, so
/// networking goes on meanwhile; the command loop polls this beside its commands.
async fn poll_for_report(inner: &Inner, due: Option<(u64, Instant)>) {
    let Some((before, until)) = due else { return };
    while inner.concluded.load(Ordering::Acquire) == before && Instant::now() < until {
        tokio::task::yield_now().await;
    }
}

/// Sends the chunk store's memory use when it changed and a heartbeat every `heartbeat`, from
/// a thread of its own (so that a task running on the network thread cannot hold heartbeats
/// up), until the worker stops.
fn report_memory(inner: Arc<Inner>, heartbeat: Duration) {
    let period = MEMORY_REPORT_PERIOD
        .min(heartbeat)
        .max(Duration::from_millis(10));
    let mut last = None;
    let mut last_beat = Instant::now();
    loop {
        std::thread::sleep(period);
        if inner.stopped.load(Ordering::Relaxed) {
            return;
        }
        let stats = inner.store.lock().stats();
        let now = (stats.memory_bytes, stats.spilled_bytes);
        if last != Some(now) {
            last = Some(now);
            inner.report(WorkerReport::Memory {
                in_memory: now.0,
                spilled: now.1,
            });
        }
        if last_beat.elapsed() >= heartbeat {
            last_beat = Instant::now();
            inner.report(WorkerReport::Heartbeat);
        }
    }
}

impl Inner {
    /// Queues a report for the scheduler (unless the worker stopped).
    pub(crate) fn report(&self, report: WorkerReport) {
        if self.stopped.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = self.reports.send_now(&report) {
            tracing::debug!(error = %e, "cannot report to the scheduler");
        }
    }

    /// Queues a report without waking the writer; `true` if it was queued.
    fn report_deferred(&self, report: WorkerReport) -> bool {
        if self.stopped.load(Ordering::Relaxed) {
            return false;
        }
        match self.reports.send_deferred(&report) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "cannot report to the scheduler");
                false
            }
        }
    }

    /// Counters and current sizes.
    pub(crate) fn stats(&self) -> WorkerStats {
        let c = &self.counters;
        let store = self.store.lock().stats();
        WorkerStats {
            tasks_received: c.tasks_received.load(Ordering::Relaxed),
            tasks_finished: c.tasks_finished.load(Ordering::Relaxed),
            tasks_failed: c.tasks_failed.load(Ordering::Relaxed),
            tasks_rescheduled: c.tasks_rescheduled.load(Ordering::Relaxed),
            tasks_dropped: c.tasks_dropped.load(Ordering::Relaxed),
            tasks_active: self.tasks.lock().len() as u64,
            chunks: store.chunks,
            memory_bytes: store.memory_bytes,
            spilled_bytes: store.spilled_bytes,
            chunks_fetched: c.chunks_fetched.load(Ordering::Relaxed),
            bytes_fetched: c.bytes_fetched.load(Ordering::Relaxed),
            chunks_served: c.chunks_served.load(Ordering::Relaxed),
            bytes_served: c.bytes_served.load(Ordering::Relaxed),
            modules_fetched: c.modules_fetched.load(Ordering::Relaxed),
            peer_connections: c.peer_connections.load(Ordering::Relaxed),
        }
    }

    /// Closes the connection to the scheduler and both endpoints, waiting a little for the
    /// peers to be told.
    pub(crate) async fn close_endpoints(&self) {
        self.scheduler.close("worker stopped");
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            tokio::join!(self.peer_endpoint.shutdown(), self.endpoint.shutdown());
        })
        .await;
    }

    /// A chunk could not be read back: forget it and tell the scheduler.
    pub(crate) fn chunk_lost(&self, key: TaskKey, why: &str) {
        tracing::warn!(key = %key.short(), error = why, "chunk lost");
        self.store.lock().remove(&key);
        self.report(WorkerReport::ChunkLost(key));
    }

    /// Handles one command; returns why to stop if the worker must stop.
    fn handle(self: &Arc<Self>, command: WorkerCommand) -> Option<StopReason> {
        match command {
            WorkerCommand::Welcome { worker_id } => {
                tracing::warn!(worker_id, "ignoring a second Welcome");
            }
            WorkerCommand::Run(task) => self.spawn_task(task),
            WorkerCommand::Release(keys) => {
                let mut store = self.store.lock();
                for key in &keys {
                    store.remove(key);
                }
            }
            WorkerCommand::Cancel(key) => self.cancel(key),
            WorkerCommand::Steal(key) => {
                let released = self.steal(key);
                self.report(WorkerReport::StealAnswer { key, released });
            }
            WorkerCommand::Shutdown { reason } => return Some(StopReason::Shutdown(reason)),
        }
        None
    }

    fn spawn_task(self: &Arc<Self>, task: RunTask) {
        tracing::trace!(target: "taskhost::timeline", w = self.peer_addr.port(), key = %task.key.short(), "run");
        self.counters.tasks_received.fetch_add(1, Ordering::Relaxed);
        let key = task.key;
        let mut tasks = self.tasks.lock();
        match tasks.get(&key).map(|e| &e.state) {
            Some(TaskState::Pending(_) | TaskState::Queued | TaskState::Parked { .. }) => {
                tracing::warn!(key = %key.short(), "ignoring a Run of a task already here");
                return;
            }
            Some(TaskState::Running { cancel }) if !cancel.is_cancelled() => {
                tracing::warn!(key = %key.short(), "ignoring a Run of a task already here");
                return;
            }
            // A cancelled attempt still winding down: this attempt replaces it.
            Some(TaskState::Running { .. }) | None => {}
        }
        let run = self.next_run.fetch_add(1, Ordering::Relaxed);
        // Fast path: module loaded and inputs at hand: straight to the executors' queue,
        // without an async task in between.
        if self.is_ready(&task) {
            tasks.insert(
                key,
                TaskEntry {
                    run,
                    state: TaskState::Queued,
                },
            );
            drop(tasks);
            self.wake_watchers(key);
            let quick = self.enqueue(self.local_job(task, run));
            if let Some(concluded) = quick {
                self.report_due.store(concluded + 1, Ordering::Relaxed);
            }
            return;
        }
        // Only outputs of tasks here missing: park it for the executors.
        if let Some(waiting_for) = self.computed_here_only(&tasks, &task) {
            let mut dependents = self.local_dependents.lock();
            for input in &waiting_for {
                dependents.entry(*input).or_default().push((key, run));
            }
            drop(dependents);
            let job = Box::new(self.local_job(task, run));
            let waiting = waiting_for.len() as u32;
            tracing::trace!(key = %key.short(), waiting, "parked until local inputs exist");
            tasks.insert(
                key,
                TaskEntry {
                    run,
                    state: TaskState::Parked { job, waiting },
                },
            );
            drop(tasks);
            self.wake_watchers(key);
            return;
        }
        // The entry is inserted before the task can look for it: it needs this lock first.
        let handle = tokio::spawn(self.clone().run_task(task, run));
        tasks.insert(
            key,
            TaskEntry {
                run,
                state: TaskState::Pending(handle.abort_handle()),
            },
        );
        drop(tasks);
        self.wake_watchers(key);
    }

    /// Wakes whoever waits for the attempt of `key` to start or end.
    /// Notes that a peer waits for `key`'s output, and moves the task ahead of the other
    /// ready tasks if it is queued; dropping the returned guard (when the answer is sent, or
    /// the request is dropped with its connection) undoes the note.
    pub(crate) fn peer_waits_for(&self, key: TaskKey) -> PeerWait<'_> {
        let guard = PeerWait { inner: self, key };
        *self.awaited_by_peers.lock().entry(key).or_insert(0) += 1;
        let mut queue = self.queue.state.lock();
        if !queue
            .jobs
            .iter()
            .any(|q| q.job.task.key == key && !q.awaited)
        {
            return guard;
        }
        let mut jobs = std::mem::take(&mut queue.jobs).into_vec();
        for q in &mut jobs {
            if q.job.task.key == key {
                q.awaited = true;
            }
        }
        queue.jobs = BinaryHeap::from(jobs);
        guard
    }

    fn wake_watchers(&self, key: TaskKey) {
        let mut watchers = self.watchers.lock();
        if watchers.is_empty() {
            return;
        }
        if let Some(waiting) = watchers.remove(&key) {
            drop(watchers);
            for tx in waiting {
                let _ = tx.send(());
            }
        }
    }

    /// Waits until this worker holds chunk `key` or no attempt here will compute it; `true`
    /// if the store holds it. While an attempt of the task is here (waiting for inputs,
    /// queued or running), waits for it to end, however long; a task this worker has not
    /// heard of is waited for `grace` at most (its `Run` may still be on its way).
    pub(crate) async fn await_computed(&self, key: TaskKey, grace: Duration) -> bool {
        let started = Instant::now();
        loop {
            let (rx, known) = {
                let tasks = self.tasks.lock();
                if self.store.lock().contains(&key) {
                    return true;
                }
                let known = tasks.contains_key(&key);
                if !known && started.elapsed() >= grace {
                    return false;
                }
                let (tx, rx) = oneshot::channel();
                self.watchers.lock().entry(key).or_default().push(tx);
                (rx, known)
            };
            // A known attempt wakes us when it ends; look again now and then all the same.
            let wait = if known {
                WATCH_RECHECK
            } else {
                grace.saturating_sub(started.elapsed())
            };
            if tokio::time::timeout(wait, rx).await.is_err() {
                let mut watchers = self.watchers.lock();
                if let Some(waiting) = watchers.get_mut(&key) {
                    waiting.retain(|tx| !tx.is_closed());
                    if waiting.is_empty() {
                        watchers.remove(&key);
                    }
                }
            }
        }
    }

    /// The job of a task whose chunk inputs are (or will be, before it runs) in the local
    /// store, with a lease on the replicas among them.
    fn local_job(self: &Arc<Self>, mut task: RunTask, run: u64) -> Job {
        let mut lease = ReplicaLease::new(self.clone());
        let inputs = task
            .args
            .drain(..)
            .map(|arg| match arg {
                RunArg::Literal(blob) => Input::Bytes(Bytes::from(blob.0)),
                RunArg::Chunk { key, .. } => {
                    lease.take_if_replica(key);
                    Input::Local(key)
                }
            })
            .collect();
        Job {
            task,
            inputs,
            lease,
            run,
        }
    }

    /// If `task`'s module is loaded and each input is a literal, a local chunk or the output of
    /// a task this worker is about to run or running (dispatched early), the distinct keys of
    /// the latter (at least one). The caller holds the task lock.
    fn computed_here_only(
        &self,
        tasks: &HashMap<TaskKey, TaskEntry>,
        task: &RunTask,
    ) -> Option<Vec<TaskKey>> {
        if !self.runtime.is_prepared(&task.module) {
            return None;
        }
        let store = self.store.lock();
        let mut waiting_for: Vec<TaskKey> = Vec::new();
        for arg in &task.args {
            match arg {
                RunArg::Literal(_) => {}
                RunArg::Chunk { key, .. } if store.contains(key) => {}
                RunArg::Chunk {
                    key,
                    pending: true,
                    holders,
                    ..
                } if holders.is_empty()
                    && tasks.get(key).is_some_and(|e| {
                        matches!(e.state, TaskState::Queued | TaskState::Running { .. })
                    }) =>
                {
                    if !waiting_for.contains(key) {
                        waiting_for.push(*key);
                    }
                }
                RunArg::Chunk { .. } => return None,
            }
        }
        (!waiting_for.is_empty()).then_some(waiting_for)
    }

    /// After the attempt of `key` ended (its output stored if `computed`): queues the parked
    /// tasks that waited only for it, or gives back those that cannot have it. Returns
    /// whether it queued any.
    fn release_parked(&self, key: TaskKey, computed: bool) -> bool {
        let Some(dependents) = self.local_dependents.lock().remove(&key) else {
            return false;
        };
        let mut ready = Vec::new();
        let mut orphans = Vec::new();
        {
            let mut tasks = self.tasks.lock();
            for (dependent, run) in dependents {
                let Some(entry) = tasks.get_mut(&dependent) else {
                    continue;
                };
                if entry.run != run {
                    continue;
                }
                let TaskState::Parked { waiting, .. } = &mut entry.state else {
                    continue;
                };
                if computed {
                    *waiting -= 1;
                    if *waiting > 0 {
                        continue;
                    }
                }
                let TaskState::Parked { job, .. } =
                    std::mem::replace(&mut entry.state, TaskState::Queued)
                else {
                    unreachable!("matched above");
                };
                if computed {
                    ready.push(job);
                } else {
                    orphans.push((dependent, run));
                }
            }
        }
        let queued = !ready.is_empty();
        for job in ready {
            self.enqueue(*job);
        }
        for (dependent, run) in orphans {
            self.conclude(dependent, run, Outcome::Missing(vec![key]));
        }
        queued
    }

    /// Whether `task` can start at once: its module is loaded and its inputs are literals or
    /// local chunks.
    fn is_ready(&self, task: &RunTask) -> bool {
        self.runtime.is_prepared(&task.module)
            && task.args.iter().all(|arg| match arg {
                RunArg::Literal(_) => true,
                RunArg::Chunk { key, .. } => self.store.lock().contains(key),
            })
    }

    /// Hands a ready task to the executor threads.
    ///
    /// Returns, if a free executor takes it at once and the last run of its function was
    /// short, [`Inner::concluded`] before it starts (see [`Inner::report_due`]).
    fn enqueue(&self, job: Job) -> Option<u64> {
        let awaited = self.awaited_by_peers.lock().contains_key(&job.task.key);
        let mut queue = self.queue.state.lock();
        if queue.stopped {
            return None;
        }
        let on_network_thread =
            NETWORK_THREAD_OF.with(|t| t.get()) == std::ptr::from_ref(self) as usize;
        if on_network_thread
            && !queue.inline_pending
            && queue.free > 0
            && queue.jobs.is_empty()
            && queue.runs_inline(&job.task)
        {
            // The network thread runs it on a free executor's slot once it has read what is
            // waiting; no executor is woken.
            queue.free -= 1;
            queue.inline_pending = true;
            tracing::trace!(key = %job.task.key.short(), "running on the network thread");
            queue.push(job, awaited);
            drop(queue);
            self.inline.notify_one();
            return None;
        }
        let likely_quick = queue.free > 0
            && queue.jobs.is_empty()
            && queue.last_took(&job.task).is_some_and(|t| t < SHORT_TASK);
        let concluded = likely_quick.then(|| self.concluded.load(Ordering::Acquire));
        queue.push(job, awaited);
        // An executor whose slot the network thread holds is not woken for nothing.
        let idle = queue.free > 0;
        drop(queue);
        if idle {
            self.queue.ready.notify_one();
        }
        concluded
    }

    /// Runs one job on this thread and concludes it (with `deferred`, its report is queued
    /// without waking the writer). None if the attempt was dropped before it started.
    ///
    /// On the network thread (`inline`), the task may run for [`INLINE_OVERRUN`] at most: one
    /// that runs longer (its function's last run was short, this one is not) is interrupted
    /// and queued again for the executor threads, which run it from the start (tasks have no
    /// effects outside their result), so that the network thread does not stay away from
    /// peers and the scheduler.
    fn run_job(&self, job: Job, deferred: bool, inline: bool) -> Option<Ran> {
        let Job {
            task,
            inputs,
            lease,
            run,
        } = job;
        let cancel = self.start_executing(task.key, run)?;
        let mut limits = self.limits_for(&task.limits);
        let overrun = (inline && limits.timeout > INLINE_OVERRUN).then(|| {
            limits.timeout = INLINE_OVERRUN;
            inputs.clone()
        });
        let started = Instant::now();
        tracing::trace!(target: "taskhost::timeline", w = self.peer_addr.port(), key = %task.key.short(), inline, "start");
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.execute(&task, inputs, &limits, &cancel)
        }))
        .unwrap_or_else(|_| Outcome::Failed {
            kind: FailureKind::Internal,
            message: "the worker panicked while running the task".into(),
        });
        let took = started.elapsed();
        if let Some(inputs) = overrun
            && matches!(
                outcome,
                Outcome::Failed {
                    kind: FailureKind::DeadlineExceeded,
                    ..
                }
            )
        {
            tracing::debug!(key = %task.key.short(), "a task run on the network thread overran: the executors take it");
            let (module, function) = (task.module, task.function.clone());
            self.requeue(Job {
                task,
                inputs,
                lease,
                run,
            });
            return Some(Ran {
                module,
                function,
                took,
                reported: false,
            });
        }
        drop(lease);
        tracing::trace!(target: "taskhost::timeline", w = self.peer_addr.port(), key = %task.key.short(), "end");
        let reported = self.conclude_with(task.key, run, outcome, deferred);
        Some(Ran {
            module: task.module,
            function: task.function,
            took,
            reported,
        })
    }

    /// Puts back in the queue a job whose run on the network thread was interrupted (see
    /// [`Inner::run_job`]); the caller gives its slot back to the executors.
    fn requeue(&self, job: Job) {
        {
            let mut tasks = self.tasks.lock();
            match tasks.get_mut(&job.task.key) {
                Some(entry)
                    if entry.run == job.run && matches!(entry.state, TaskState::Running { .. }) =>
                {
                    entry.state = TaskState::Queued;
                }
                // Dropped meanwhile.
                _ => return,
            }
        }
        let awaited = self.awaited_by_peers.lock().contains_key(&job.task.key);
        self.queue.state.lock().push(job, awaited);
    }

    /// Gives back the slot of a job that ran (`ran`, None if it was dropped), remembering how
    /// long its function took; returns whether more tasks are ready.
    fn free_slot(&self, ran: Option<&Ran>) -> bool {
        let mut queue = self.queue.state.lock();
        queue.free += 1;
        if let Some(ran) = ran {
            queue.remember(ran.module, &ran.function, ran.took);
        }
        !queue.jobs.is_empty()
    }

    /// One executor thread (one per slot): runs ready tasks one after the other, and reports
    /// their outcomes. Reports of short tasks followed by more of the same are sent in batches
    /// (one wake-up of the writer, one stream write for several), but never held back while
    /// the executor waits or starts a task that may take long.
    fn executor(self: Arc<Self>) {
        self.queue.state.lock().free += 1;
        // Reports queued and not yet sent.
        let mut deferred = 0usize;
        // The module and function of the last task and whether it was short.
        let mut last: Option<(ModuleId, String)> = None;
        let mut last_short = false;
        loop {
            let job = {
                let mut queue = self.queue.state.lock();
                loop {
                    if queue.stopped {
                        return;
                    }
                    // No slot free: the network thread runs a task on this one's.
                    if queue.free > 0
                        && let Some(queued) = queue.jobs.pop()
                    {
                        queue.free -= 1;
                        break queued.job;
                    }
                    if deferred > 0 {
                        deferred = 0;
                        self.reports.wake();
                    }
                    self.queue.ready.wait(&mut queue);
                }
            };
            let same = last
                .as_ref()
                .is_some_and(|(m, f)| *m == job.task.module && *f == job.task.function);
            if deferred > 0 && !(same && last_short) {
                deferred = 0;
                self.reports.wake();
            }
            let ran = self.run_job(job, true, false);
            let more = self.free_slot(ran.as_ref());
            let Some(ran) = ran else {
                continue;
            };
            last_short = ran.took < SHORT_TASK;
            if !same {
                last = Some((ran.module, ran.function));
            }
            if ran.reported {
                deferred += 1;
            }
            if deferred > 0 && (!more || !last_short || deferred >= MAX_DEFERRED_REPORTS) {
                deferred = 0;
                self.reports.wake();
            }
            self.concluded.fetch_add(1, Ordering::Release);
        }
    }

    fn cancel(&self, key: TaskKey) {
        let mut tasks = self.tasks.lock();
        match tasks.get_mut(&key).map(|e| &mut e.state) {
            Some(TaskState::Pending(abort)) => {
                abort.abort();
                tasks.remove(&key);
                drop(tasks);
                self.dropped(key);
                tracing::debug!(key = %key.short(), "cancelled a waiting task");
            }
            Some(TaskState::Queued | TaskState::Parked { .. }) => {
                tasks.remove(&key);
                drop(tasks);
                self.dropped(key);
                tracing::debug!(key = %key.short(), "cancelled a queued task");
            }
            Some(TaskState::Running { cancel }) => {
                // The guest is interrupted at its next epoch check (at once); the executor
                // then discards the outcome and takes the next task.
                cancel.cancel();
                tracing::debug!(key = %key.short(), "cancelled a running task");
            }
            None => {}
        }
    }

    /// After an attempt that had not started was dropped (its entry removed): wakes whoever
    /// waited for it and gives back the parked tasks that needed its output.
    fn dropped(&self, key: TaskKey) {
        self.wake_watchers(key);
        self.release_parked(key, false);
        self.counters.tasks_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Gives back a task that has not started; `true` if it will not run here (including a
    /// task this worker does not know).
    fn steal(&self, key: TaskKey) -> bool {
        let mut tasks = self.tasks.lock();
        match tasks.get(&key).map(|e| &e.state) {
            Some(TaskState::Pending(abort)) => {
                abort.abort();
                tasks.remove(&key);
                drop(tasks);
                self.dropped(key);
                true
            }
            Some(TaskState::Queued | TaskState::Parked { .. }) => {
                tasks.remove(&key);
                drop(tasks);
                self.dropped(key);
                true
            }
            Some(TaskState::Running { .. }) => false,
            None => true,
        }
    }

    /// The life of one task attempt that was not ready at once: module, inputs, then the
    /// executors' queue.
    async fn run_task(self: Arc<Self>, mut task: RunTask, run: u64) {
        let key = task.key;
        if let Err(message) = self.ensure_module(task.module).await {
            let kind = FailureKind::BadModule;
            self.conclude(key, run, Outcome::Failed { kind, message });
            return;
        }
        let (inputs, lease) = match self.gather(std::mem::take(&mut task.args)).await {
            Ok(gathered) => gathered,
            Err(missing) => {
                self.conclude(key, run, Outcome::Missing(missing));
                return;
            }
        };
        if !self.start_queued(key, run) {
            return;
        }
        self.enqueue(Job {
            task,
            inputs,
            lease,
            run,
        });
    }

    /// Collects the inputs: literals, local chunks, and chunks fetched from peers (all fetches
    /// in parallel), with a lease on the replicas among them. Returns the keys that could not
    /// be had.
    async fn gather(
        self: &Arc<Self>,
        args: Vec<RunArg>,
    ) -> Result<(Vec<Input>, ReplicaLease), Vec<TaskKey>> {
        let mut inputs = Vec::with_capacity(args.len());
        let mut fetches = Vec::new();
        let mut computed_here = Vec::new();
        let mut lease = ReplicaLease::new(self.clone());
        for arg in args {
            match arg {
                RunArg::Literal(blob) => inputs.push(Some(Input::Bytes(Bytes::from(blob.0)))),
                RunArg::Chunk {
                    key,
                    pending: true,
                    holders,
                    ..
                } if holders.is_empty() => {
                    // Being computed here (dispatched early): wait for it below.
                    computed_here.push((inputs.len(), key));
                    inputs.push(None);
                }
                RunArg::Chunk {
                    key,
                    size,
                    holders,
                    pending,
                } => {
                    // Lock order: replicas, then fetches and the store (in chunk_source).
                    let mut replicas = self.replicas.lock();
                    match self.chunk_source(key, size, &holders, pending) {
                        ChunkSource::Local => {
                            if let Some(users) = replicas.get_mut(&key) {
                                *users += 1;
                                lease.keys.push(key);
                            }
                            inputs.push(Some(Input::Local(key)));
                        }
                        ChunkSource::Fetching(fetch) => {
                            *replicas.entry(key).or_insert(0) += 1;
                            lease.keys.push(key);
                            fetches.push((inputs.len(), key, pending, fetch));
                            inputs.push(None);
                        }
                    }
                }
            }
        }
        let mut missing = Vec::new();
        for (index, key) in computed_here {
            if self.await_computed(key, Duration::ZERO).await {
                lease.take_if_replica(key);
                inputs[index] = Some(Input::Local(key));
            } else {
                tracing::debug!(key = %key.short(), "a pending input was not computed here");
                missing.push(key);
            }
        }
        if !fetches.is_empty() {
            let results =
                futures::future::join_all(fetches.iter().map(|(_, _, _, fetch)| fetch.clone()))
                    .await;
            for ((index, key, pending, _), result) in fetches.into_iter().zip(results) {
                match result {
                    Ok(bytes) => {
                        tracing::trace!(target: "taskhost::timeline", w = self.peer_addr.port(), key = %key.short(), "fetched");
                        inputs[index] = Some(Input::Bytes(bytes))
                    }
                    Err(e) => {
                        tracing::warn!(key = %key.short(), error = %e, "input unavailable");
                        // The scheduler may count this worker itself as the holder (the only
                        // case where the report matters: it ignores it otherwise). Not so for
                        // a chunk that was still to be computed.
                        if !pending {
                            self.report(WorkerReport::ChunkLost(key));
                        }
                        missing.push(key);
                    }
                }
            }
        }
        if missing.is_empty() {
            Ok((inputs.into_iter().flatten().collect(), lease))
        } else {
            Err(missing)
        }
    }

    /// Moves a waiting attempt to queued, unless it was dropped meanwhile.
    fn start_queued(&self, key: TaskKey, run: u64) -> bool {
        let mut tasks = self.tasks.lock();
        match tasks.get_mut(&key) {
            Some(entry) if entry.run == run && matches!(entry.state, TaskState::Pending(_)) => {
                entry.state = TaskState::Queued;
                true
            }
            _ => false,
        }
    }

    /// Moves a queued attempt to running, unless it was dropped meanwhile; returns the token
    /// that cancels it.
    fn start_executing(&self, key: TaskKey, run: u64) -> Option<CancelToken> {
        let mut tasks = self.tasks.lock();
        match tasks.get_mut(&key) {
            Some(entry) if entry.run == run && matches!(entry.state, TaskState::Queued) => {
                let cancel = CancelToken::new();
                entry.state = TaskState::Running {
                    cancel: cancel.clone(),
                };
                Some(cancel)
            }
            _ => None,
        }
    }

    /// The task's limits: the worker's defaults where the task sets none.
    fn limits_for(&self, limits: &TaskLimits) -> Limits {
        let default = self.default_limits;
        Limits {
            timeout: limits
                .timeout_ms
                .map_or(default.timeout, Duration::from_millis),
            memory: limits.memory_bytes.unwrap_or(default.memory),
            fuel: limits.fuel.or(default.fuel),
        }
    }

    /// Runs the task on this (blocking) thread and keeps its output in the store.
    fn execute(
        &self,
        task: &RunTask,
        inputs: Vec<Input>,
        limits: &Limits,
        cancel: &CancelToken,
    ) -> Outcome {
        let mut args = Vec::with_capacity(inputs.len());
        let mut missing = Vec::new();
        let mut vanished = Vec::new();
        let mut lost = Vec::new();
        {
            let mut store = self.store.lock();
            for input in inputs {
                match input {
                    Input::Bytes(bytes) => args.push(bytes),
                    Input::Local(key) => match store.get(&key) {
                        Ok(Some(bytes)) => args.push(bytes),
                        Ok(None) => {
                            missing.push(key);
                            vanished.push(key);
                        }
                        Err(e) => {
                            missing.push(key);
                            lost.push((key, e.to_string()));
                        }
                    },
                }
            }
        }
        for (key, why) in lost {
            self.chunk_lost(key, &why);
        }
        for &key in &vanished {
            // A local input that is gone: the scheduler must not count this worker as its
            // holder any more (it ignores the report if it does not).
            self.report(WorkerReport::ChunkLost(key));
        }
        if !missing.is_empty() {
            return Outcome::Missing(missing);
        }
        let refs: Vec<&[u8]> = args.iter().map(|b| b.as_ref()).collect();
        let started = Instant::now();
        let result =
            self.runtime
                .execute_cancellable(&task.module, &task.function, &refs, limits, cancel);
        let duration_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        drop(refs);
        drop(args);
        match result {
            Ok(output) => {
                let size = output.len() as u64;
                let inline = (task.send_result && output.len() <= INLINE_LIMIT)
                    .then(|| Blob(output.clone()));
                // Computed here: the chunk is this worker's own now, even if it was a replica.
                self.replicas.lock().remove(&task.key);
                if let Err(e) = self.store.lock().put(task.key, Bytes::from(output)) {
                    return Outcome::Failed {
                        kind: FailureKind::Internal,
                        message: format!("cannot keep the result: {e}"),
                    };
                }
                Outcome::Done {
                    size,
                    duration_us,
                    inline,
                }
            }
            Err(e) => {
                let (kind, message) = failure_of(e);
                Outcome::Failed { kind, message }
            }
        }
    }

    /// Reports the attempt's outcome, unless it was cancelled, stolen or superseded.
    fn conclude(&self, key: TaskKey, run: u64, outcome: Outcome) {
        self.conclude_with(key, run, outcome, false);
    }

    /// [`Inner::conclude`]; with `deferred`, the report is queued without waking the writer
    /// (the caller wakes it). Returns whether a report was queued.
    fn conclude_with(&self, key: TaskKey, run: u64, outcome: Outcome, mut deferred: bool) -> bool {
        let cancelled = {
            let mut tasks = self.tasks.lock();
            match tasks.get(&key) {
                Some(entry) if entry.run == run => {
                    let cancelled = matches!(&entry.state, TaskState::Running { cancel } if cancel.is_cancelled());
                    tasks.remove(&key);
                    if cancelled && matches!(outcome, Outcome::Done { .. }) {
                        self.store.lock().remove(&key);
                    }
                    Some(cancelled)
                }
                _ => None,
            }
        };
        let Some(cancelled) = cancelled else {
            self.counters.tasks_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(key = %key.short(), "discarded the result of a stale attempt");
            return false;
        };
        let done = matches!(outcome, Outcome::Done { .. });
        if cancelled {
            self.wake_watchers(key);
            self.release_parked(key, false);
            self.counters.tasks_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(key = %key.short(), "discarded the result of a cancelled task");
            return false;
        }
        // Tasks that wait for this one (parked here, or watching for it on behalf of a peer)
        // start only after this report is queued, so that the scheduler hears of this result
        // before theirs. With tasks parked here the report is not held back: their own
        // dependents can be sent ahead only once the scheduler has it.
        let chained = self.local_dependents.lock().contains_key(&key);
        if chained {
            deferred = false;
        }
        let queued = self.queue_report(key, outcome, deferred);
        self.wake_watchers(key);
        if chained {
            self.release_parked(key, done);
        }
        queued
    }

    /// Queues the report of `key`'s outcome (deferred: without waking the writer). Returns
    /// whether a report was queued.
    fn queue_report(&self, key: TaskKey, outcome: Outcome, deferred: bool) -> bool {
        let report = match outcome {
            Outcome::Done {
                size,
                duration_us,
                inline,
            } => {
                self.counters.tasks_finished.fetch_add(1, Ordering::Relaxed);
                WorkerReport::Finished {
                    key,
                    size,
                    duration_us,
                    inline,
                }
            }
            Outcome::Failed { kind, message } => {
                self.counters.tasks_failed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(key = %key.short(), %kind, %message, "task failed");
                WorkerReport::Failed { key, kind, message }
            }
            Outcome::Missing(missing) => {
                self.counters
                    .tasks_rescheduled
                    .fetch_add(1, Ordering::Relaxed);
                WorkerReport::Reschedule { key, missing }
            }
        };
        if deferred {
            self.report_deferred(report)
        } else {
            self.report(report);
            true
        }
    }
}

/// The failure kind and message of a runtime error.
fn failure_of(error: RuntimeError) -> (FailureKind, String) {
    let kind = match &error {
        RuntimeError::Guest(TaskError::InvalidInput(message)) => {
            return (FailureKind::InvalidInput, message.clone());
        }
        RuntimeError::Guest(TaskError::Failed(message)) => {
            return (FailureKind::Failed, message.clone());
        }
        RuntimeError::Guest(TaskError::UnknownFunction(_))
        | RuntimeError::UnknownFunction { .. } => FailureKind::UnknownFunction,
        RuntimeError::Trap { .. } => FailureKind::Trap,
        RuntimeError::DeadlineExceeded(_) => FailureKind::DeadlineExceeded,
        RuntimeError::MemoryLimitExceeded { .. } => FailureKind::MemoryLimitExceeded,
        RuntimeError::OutOfFuel { .. } => FailureKind::OutOfFuel,
        RuntimeError::Cancelled => FailureKind::Cancelled,
        RuntimeError::HashMismatch { .. }
        | RuntimeError::InvalidComponent(_)
        | RuntimeError::UnknownModule(_) => FailureKind::BadModule,
        _ => FailureKind::Internal,
    };
    (kind, error.to_string())
}

/// The replicas (chunks fetched from peers) one task attempt uses. While any attempt holds a
/// lease on a replica it stays in the store; when the last lease is dropped (the attempt ended,
/// failed, or was aborted) the replica is removed, since the scheduler, not knowing about
/// replicas, will never release it.
struct ReplicaLease {
    inner: Arc<Inner>,
    keys: Vec<TaskKey>,
}

impl ReplicaLease {
    fn new(inner: Arc<Inner>) -> Self {
        Self {
            inner,
            keys: Vec::new(),
        }
    }

    /// Leases `key` if it is a replica.
    fn take_if_replica(&mut self, key: TaskKey) {
        if let Some(users) = self.inner.replicas.lock().get_mut(&key) {
            *users += 1;
            self.keys.push(key);
        }
    }
}

impl Drop for ReplicaLease {
    fn drop(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        let mut replicas = self.inner.replicas.lock();
        for key in self.keys.drain(..) {
            let Some(users) = replicas.get_mut(&key) else {
                continue;
            };
            *users = users.saturating_sub(1);
            if *users == 0 {
                replicas.remove(&key);
                self.inner.store.lock().remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_slow_run_does_not_move_a_function_off_the_network_thread() {
        let module = ModuleId::of(b"module");
        let task = RunTask {
            key: TaskKey::builder(&module, "f").finish(),
            module,
            function: "f".into(),
            args: vec![],
            limits: TaskLimits::default(),
            send_result: false,
            priority: RunPriority::default(),
        };
        let us = Duration::from_micros;
        let mut queue = ExecState::default();
        assert!(!queue.runs_inline(&task), "never ran here");
        queue.remember(module, "f", us(100));
        assert!(queue.runs_inline(&task));
        // Its thread taken away for 300 us once: still inline, and a fast run restores it.
        queue.remember(module, "f", us(400));
        assert!(queue.runs_inline(&task));
        assert!(queue.last_took(&task).unwrap() < INLINE_TASK);
        queue.remember(module, "f", us(100));
        assert_eq!(queue.last_took(&task), Some(us(100)));
        // A function whose runs became long leaves at the first such run.
        queue.remember(module, "f", us(5000));
        assert!(!queue.runs_inline(&task));
    }

    #[test]
    fn runtime_errors_map_to_failure_kinds() {
        let module = ModuleId::of(b"m");
        let cases = [
            (
                RuntimeError::Guest(TaskError::InvalidInput("bad".into())),
                FailureKind::InvalidInput,
            ),
            (
                RuntimeError::Guest(TaskError::Failed("no".into())),
                FailureKind::Failed,
            ),
            (
                RuntimeError::UnknownFunction {
                    module,
                    function: "f".into(),
                },
                FailureKind::UnknownFunction,
            ),
            (
                RuntimeError::Trap {
                    message: "x".into(),
                },
                FailureKind::Trap,
            ),
            (
                RuntimeError::DeadlineExceeded(Duration::from_secs(1)),
                FailureKind::DeadlineExceeded,
            ),
            (
                RuntimeError::MemoryLimitExceeded { limit: 1 },
                FailureKind::MemoryLimitExceeded,
            ),
            (RuntimeError::OutOfFuel { fuel: 1 }, FailureKind::OutOfFuel),
            (
                RuntimeError::HashMismatch {
                    expected: module,
                    actual: module,
                },
                FailureKind::BadModule,
            ),
            (
                RuntimeError::InvalidComponent("x".into()),
                FailureKind::BadModule,
            ),
            (RuntimeError::UnknownModule(module), FailureKind::BadModule),
            (RuntimeError::Internal("x".into()), FailureKind::Internal),
            (
                RuntimeError::PoolExhausted("x".into()),
                FailureKind::Internal,
            ),
        ];
        for (error, kind) in cases {
            assert_eq!(failure_of(error).0, kind);
        }
        assert_eq!(
            failure_of(RuntimeError::Guest(TaskError::Failed("why".into()))).1,
            "why"
        );
    }
}
