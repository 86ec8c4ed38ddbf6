//! The worker daemon against a small fake scheduler built on taskhost-net, on loopback.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use taskhost_net::{
    ClusterIdentity, ClusterToken, Connection, Credentials, Endpoint, JoinTicket, Listener,
    ListenerConfig, NetError, Receiver, Sender, TransportSettings, serve_bulk,
};
use taskhost_proto::{
    BulkRequest, FailureKind, ModuleId, Role, RunArg, RunTask, TaskKey, TaskLimits, WorkerCommand,
    WorkerReport,
};
use taskhost_worker::{WorkerConfig, WorkerError, WorkerHandle, start};
use tempfile::TempDir;
use tokio::time::timeout;

/// Bound on every wait for a report.
const WAIT: Duration = Duration::from_secs(30);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn example_guest() -> Vec<u8> {
    taskhost_guest_artifacts::read(taskhost_guest_artifacts::EXAMPLE_GUEST)
}

/// The postcard encoding of a typed argument.
fn enc<T: serde::Serialize>(value: T) -> Vec<u8> {
    postcard::to_allocvec(&value).unwrap()
}

/// A scheduler stand-in: the cluster identity, a listener, and modules served by hash.
struct FakeScheduler {
    _dir: TempDir,
    listener: Listener,
    ticket: JoinTicket,
    token: ClusterToken,
    modules: Arc<Mutex<HashMap<ModuleId, Bytes>>>,
}

/// The scheduler's side of one registered worker.
struct Link {
    tx: Sender<WorkerCommand>,
    rx: Receiver<WorkerReport>,
    conn: Connection,
    peer_addr: SocketAddr,
    /// The last `Memory` report: (in memory, spilled).
    memory: Option<(u64, u64)>,
    heartbeats: u64,
}

impl FakeScheduler {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (identity, created) = ClusterIdentity::load_or_create(dir.path()).unwrap();
        assert!(created);
        let listener = Listener::bind(
            "127.0.0.1:0".parse().unwrap(),
            ListenerConfig::scheduler(&identity),
        )
        .await
        .unwrap();
        let addr = listener.local_addr().unwrap();
        let ticket = identity.ticket(vec![addr.to_string()]);
        Self {
            _dir: dir,
            listener,
            ticket,
            token: identity.token().clone(),
            modules: Arc::default(),
        }
    }

    fn add_module(&self, bytes: Vec<u8>) -> ModuleId {
        let id = ModuleId::of(&bytes);
        self.add_module_as(id, bytes);
        id
    }

    /// Serves `bytes` under `id`, whatever they hash to.
    fn add_module_as(&self, id: ModuleId, bytes: Vec<u8>) {
        self.modules.lock().unwrap().insert(id, Bytes::from(bytes));
    }

    fn config(&self, dir: &TempDir, slots: u32) -> WorkerConfig {
        let mut config = WorkerConfig::new(self.ticket.clone(), dir.path());
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.slots = slots;
        config.memory_limit = 256 << 20;
        config.heartbeat = Duration::from_millis(100);
        config
    }

    /// Starts a worker and accepts its registration.
    async fn worker(&mut self, dir: &TempDir, slots: u32) -> (WorkerHandle, Link) {
        let config = self.config(dir, slots);
        self.worker_with(config).await
    }

    async fn worker_with(&mut self, config: WorkerConfig) -> (WorkerHandle, Link) {
        let (worker, link) = tokio::join!(
            async { timeout(WAIT, start(config)).await.expect("start timed out") },
            self.accept()
        );
        let worker = worker.expect("the worker starts");
        assert_eq!(worker.peer_addr(), link.peer_addr);
        (worker, link)
    }

    async fn accept(&mut self) -> Link {
        let established = timeout(WAIT, self.listener.accept())
            .await
            .expect("no worker connected")
            .expect("listener closed");
        assert_eq!(established.connection.peer_role(), Role::Worker);
        let conn = established.connection;
        let (tx, mut rx) = established.control.split::<WorkerCommand, WorkerReport>();
        let register = timeout(WAIT, rx.recv()).await.unwrap().unwrap().unwrap();
        let WorkerReport::Register {
            name,
            slots,
            memory_limit,
            peer_addr,
        } = register
        else {
            panic!("expected Register, got {register:?}");
        };
        assert!(!name.is_empty());
        assert!(slots > 0);
        assert!(memory_limit > 0);
        assert!(peer_addr.ip().is_loopback());
        let modules = self.modules.clone();
        serve_bulk(conn.clone(), move |request: BulkRequest| {
            let found = match request {
                BulkRequest::Module(id) => modules.lock().unwrap().get(&id).cloned(),
                BulkRequest::Chunk(_) | BulkRequest::ChunkWhenComputed(_) => None,
            };
            async move { Ok(found) }
        });
        tx.send(&WorkerCommand::Welcome { worker_id: 7 })
            .await
            .unwrap();
        Link {
            tx,
            rx,
            conn,
            peer_addr,
            memory: None,
            heartbeats: 0,
        }
    }
}

impl Link {
    fn send(&self, command: WorkerCommand) {
        self.tx.send_now(&command).unwrap();
    }

    fn run(&self, task: &RunTask) {
        self.send(WorkerCommand::Run(task.clone()));
    }

    /// The next report other than `Memory` and `Heartbeat` (which are recorded).
    async fn next(&mut self) -> WorkerReport {
        timeout(WAIT, self.next_unbounded())
            .await
            .expect("no report in time")
    }

    async fn next_unbounded(&mut self) -> WorkerReport {
        loop {
            let report = self
                .rx
                .recv()
                .await
                .expect("control stream failed")
                .expect("control stream ended");
            match report {
                WorkerReport::Memory { in_memory, spilled } => {
                    self.memory = Some((in_memory, spilled))
                }
                WorkerReport::Heartbeat => self.heartbeats += 1,
                other => return other,
            }
        }
    }

    /// Waits for a `Memory` report satisfying `ok`.
    async fn memory_until(&mut self, ok: impl Fn((u64, u64)) -> bool) {
        timeout(WAIT, async {
            loop {
                if self.memory.is_some_and(&ok) {
                    return;
                }
                let report = self.rx.recv().await.unwrap().unwrap();
                match report {
                    WorkerReport::Memory { in_memory, spilled } => {
                        self.memory = Some((in_memory, spilled))
                    }
                    WorkerReport::Heartbeat => self.heartbeats += 1,
                    other => panic!("unexpected report {other:?}"),
                }
            }
        })
        .await
        .expect("no such Memory report in time");
    }

    /// Waits for the report of `key`'s result.
    async fn finished(&mut self, key: TaskKey) -> (u64, Option<Vec<u8>>) {
        match self.next().await {
            WorkerReport::Finished {
                key: k,
                size,
                inline,
                ..
            } if k == key => (size, inline.map(|b| b.0)),
            other => panic!("expected Finished of {}, got {other:?}", key.short()),
        }
    }

    async fn failed(&mut self, key: TaskKey) -> (FailureKind, String) {
        match self.next().await {
            WorkerReport::Failed {
                key: k,
                kind,
                message,
            } if k == key => (kind, message),
            other => panic!("expected Failed of {}, got {other:?}", key.short()),
        }
    }
}

/// A task of `function` on literal arguments; `salt` makes otherwise equal tasks distinct.
fn literal_task(module: ModuleId, function: &str, args: Vec<Vec<u8>>, salt: u64) -> RunTask {
    let mut builder = TaskKey::builder(&module, function);
    for arg in &args {
        builder.literal_arg(arg);
    }
    builder.literal_arg(&salt.to_le_bytes());
    RunTask {
        key: builder.finish(),
        module,
        function: function.into(),
        args: args
            .into_iter()
            .map(|a| RunArg::Literal(a.into()))
            .collect(),
        limits: TaskLimits::default(),
        send_result: true,
        priority: Default::default(),
    }
}

/// A task of `function` on the output of `input`, held by `holders`.
fn chunk_task(
    module: ModuleId,
    function: &str,
    input: TaskKey,
    size: u64,
    holders: Vec<SocketAddr>,
    salt: u64,
) -> RunTask {
    let key = TaskKey::builder(&module, function)
        .task_arg(&input)
        .literal_arg(&salt.to_le_bytes())
        .finish();
    RunTask {
        key,
        module,
        function: function.into(),
        args: vec![RunArg::Chunk {
            key: input,
            size,
            holders,
            pending: false,
        }],
        limits: TaskLimits::default(),
        send_result: true,
        priority: Default::default(),
    }
}

fn f64_of(bytes: &[u8]) -> f64 {
    postcard::from_bytes(bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_add_with_the_module_fetched_by_hash() {
    init_tracing();
    let mut scheduler = FakeScheduler::new().await;
    let module = scheduler.add_module(example_guest());
    let dir = tempfile::tempdir().unwrap();
    let (worker, mut link) = scheduler.worker(&dir, 2).await;
    assert_eq!(worker.worker_id(), 7);

    let add = literal_task(module, "add", vec![enc(2.0f64), enc(3.5f64)], 0);
    link.run(&add);
    let (size, inline) = link.finished(add.key).await;
    assert_eq!(size, 8);
    assert_eq!(
        f64_of(&inline.expect("a wanted small result travels inline")),
        5.5
    );

    // The module is cached now; a result nobody waits for stays on the worker.
    let mut quiet = literal_task(module, "add", vec![enc(1.0f64), enc(1.0f64)], 1);
    quiet.send_result = false;
    link.run(&quiet);
    let (size, inline) = link.finished(quiet.key).await;
    assert_eq!((size, inline), (8, None));

    let stats = worker.stats();
    assert_eq!(stats.modules_fetched, 1);
    assert_eq!(stats.tasks_finished, 2);
    assert_eq!(stats.chunks, 2);
    assert_eq!(stats.memory_bytes, 16);
    link.memory_until(|(in_memory, _)| in_memory == 16).await;
    link.memory_until(|_| true).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    link.send(WorkerCommand::Release(vec![add.key, quiet.key]));
    link.memory_until(|(in_memory, _)| in_memory == 0).await;
    assert!(link.heartbeats > 0, "heartbeats arrive every 100 ms");
    assert_eq!(worker.stats().chunks, 0);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tasks_fetch_a_module_once() {
    init_tracing();
    let mut scheduler = FakeScheduler::new().await;
    let module = scheduler.add_module(example_guest());
    let dir = tempfile::tempdir().unwrap();
    let (worker, mut link) = scheduler.worker(&dir, 2).await;
    let tasks: Vec<_> = (0..8)
        .map(|i| literal_task(module, "inc", vec![enc(i as i64)], i))
        .collect();
    for task in &tasks {
        link.run(task);
    }
    let mut results = HashMap::new();
    for _ in &tasks {
        match link.next().await {
            WorkerReport::Finished { key, inline, .. } => {
                let value: i64 = postcard::from_bytes(&inline.unwrap().0).unwrap();
                results.insert(key, value);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    for (i, task) in tasks.iter().enumerate() {
        assert_eq!(results[&task.key], i as i64 + 1);
    }
    assert_eq!(worker.stats().modules_fetched, 1);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_or_invalid_module_is_rejected() {
    init_tracing();
    let mut scheduler = FakeScheduler::new().await;
    let bytes = example_guest();
    let good = ModuleId::of(&bytes);
    // Served under the right id but altered on the way: the hash no longer matches.
    let mut tampered = bytes.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0xff;
    scheduler.add_module_as(good, tampered);
    // Bytes that match their id but are no component.
    let garbage = scheduler.add_module(b"not a component at all".to_vec());

    let dir = tempfile::tempdir().unwrap();
    let (worker, mut link) = scheduler.worker(&dir, 2).await;
    let task = literal_task(good, "add", vec![enc(1.0f64), enc(2.0f64)], 0);
    link.run(&task);
    let (kind, message) = link.failed(task.key).await;
    assert_eq!(kind, FailureKind::BadModule, "{message}");
    assert!(message.contains("hash"), "{message}");

    let task = literal_task(garbage, "add", vec![enc(1.0f64), enc(2.0f64)], 0);
    link.run(&task);
    let (kind, message) = link.failed(task.key).await;
    assert_eq!(kind, FailureKind::BadModule, "{message}");

    // An unknown module too.
    let unknown = ModuleId::of(b"nobody has this");
    let task = literal_task(unknown, "add", vec![], 0);
    link.run(&task);
    let (kind, _) = link.failed(task.key).await;
    assert_eq!(kind, FailureKind::BadModule);

    // Once the real bytes are served, the same module id works.
    scheduler.add_module_as(good, bytes);
    let task = literal_task(good, "add", vec![enc(1.0f64), enc(2.0f64)], 1);
    link.run(&task);
    let (_, inline) = link.finished(task.key).await;
    assert_eq!(f64_of(&inline.unwrap()), 3.0);
    assert_eq!(worker.stats().modules_fetched, 1);
    assert_eq!(worker.stats().tasks_failed, 3);
    worker.shutdown().await;
}

/// A fake scheduler with the example guest and two workers of `slots` slots each (their data
/// directories live as long as the struct).
struct TwoWorkers {
    scheduler: FakeScheduler,
    module: ModuleId,
    /// Kept only so that the directories outlive the workers.
    _dirs: (TempDir, TempDir),
    a: WorkerHandle,
    link_a: Link,
    b: WorkerHandle,
    link_b: Link,
}

async fn two_workers(slots: u32) -> TwoWorkers {
    init_tracing();
    let mut scheduler = FakeScheduler::new().await;
    let module = scheduler.add_module(example_guest());
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, link_a) = scheduler.worker(&dirs.0, slots).await;
    let (b, link_b) = scheduler.worker(&dirs.1, slots).await;
    TwoWorkers {
        scheduler,
        module,
        _dirs: dirs,
        a,
        link_a,
        b,
        link_b,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_move_from_worker_to_worker() {
    // The fields moved out here; the scheduler and the directories live on in `w`.
    let w = two_workers(2).await;
    let (module, a, b) = (w.module, w.a, w.b);
    let (mut link_a, mut link_b) = (w.link_a, w.link_b);

    // A computes inc(41) and keeps it.
    let mut first = literal_task(module, "inc", vec![enc(41i64)], 0);
    first.send_result = false;
    link_a.run(&first);
    let (size, _) = link_a.finished(first.key).await;
    assert_eq!(size, 1, "postcard encodes 42i64 as one varint byte");

    // B computes inc of it, fetching the input from A directly.
    let second = chunk_task(module, "inc", first.key, size, vec![a.peer_addr()], 0);
    link_b.run(&second);
    let (_, inline) = link_b.finished(second.key).await;
    assert_eq!(postcard::from_bytes::<i64>(&inline.unwrap()).unwrap(), 43);
    assert_eq!(a.stats().bytes_served, size);
    assert_eq!(a.stats().chunks_served, 1);
    assert_eq!(b.stats().bytes_fetched, size);
    assert_eq!(b.stats().chunks_fetched, 1);

    // The fetched copy is a replica the scheduler does not know about: once no task on B
    // needs it, B drops it (B keeps only its own output), and a later reader fetches again.
    wait_until(|| b.stats().chunks == 1).await;
    let third = chunk_task(module, "inc", first.key, size, vec![a.peer_addr()], 1);
    link_b.run(&third);
    link_b.finished(third.key).await;
    assert_eq!(b.stats().chunks_fetched, 2);
    wait_until(|| b.stats().chunks == 2).await;

    // A large chunk wanted by several tasks at once crosses once.
    let big = vec![7u8; 4 << 20];
    let mut echo = literal_task(module, "echo", vec![big.clone()], 0);
    echo.send_result = false;
    link_a.run(&echo);
    let (big_size, _) = link_a.finished(echo.key).await;
    assert_eq!(big_size, big.len() as u64);
    let readers: Vec<_> = (0..4)
        .map(|salt| {
            let mut t = chunk_task(
                module,
                "echo",
                echo.key,
                big_size,
                vec![a.peer_addr()],
                salt,
            );
            t.send_result = false;
            t
        })
        .collect();
    for t in &readers {
        link_b.run(t);
    }
    for _ in &readers {
        match link_b.next().await {
            WorkerReport::Finished { size, .. } => assert_eq!(size, big_size),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(b.stats().chunks_fetched, 3);
    assert_eq!(b.stats().bytes_fetched, 2 * size + big_size);
    assert_eq!(a.stats().bytes_served, 2 * size + big_size);
    // The big replica went with its last reader: B holds its own outputs only.
    wait_until(|| b.stats().chunks == 2 + readers.len() as u64).await;
    assert_eq!(b.stats().peer_connections, 1, "one connection per peer");

    // An input nobody can serve sends the task back to the scheduler, after telling it that
    // this worker lacks the chunk (which matters when the scheduler counts it as the holder).
    let ghost = TaskKey::builder(&module, "ghost").finish();
    for holders in [vec![a.peer_addr()], vec![]] {
        let lost = chunk_task(module, "inc", ghost, 1, holders, 9);
        link_b.run(&lost);
        match link_b.next().await {
            WorkerReport::ChunkLost(key) => assert_eq!(key, ghost),
            other => panic!("expected ChunkLost, got {other:?}"),
        }
        match link_b.next().await {
            WorkerReport::Reschedule { key, missing } => {
                assert_eq!(key, lost.key);
                assert_eq!(missing, vec![ghost]);
            }
            other => panic!("expected Reschedule, got {other:?}"),
        }
    }
    // A, asked for a chunk it does not hold, says so as well.
    match link_a.next().await {
        WorkerReport::ChunkLost(key) => assert_eq!(key, ghost),
        other => panic!("expected ChunkLost from the asked peer, got {other:?}"),
    }

    // A client may fetch results from a worker directly; without the token, nobody can.
    let endpoint = Endpoint::client(TransportSettings::default()).unwrap();
    let client = endpoint
        .connect(
            a.peer_addr(),
            &Credentials::peer(w.scheduler.token.clone()),
            Role::Client,
        )
        .await
        .unwrap();
    let bytes = client
        .connection
        .fetch(&BulkRequest::Chunk(echo.key), 8 << 20)
        .await
        .unwrap();
    assert_eq!(&bytes[..], &big[..]);
    let refused = client
        .connection
        .fetch(&BulkRequest::Chunk(ghost), 8 << 20)
        .await;
    assert!(matches!(refused, Err(NetError::NotFound)), "{refused:?}");
    let intruder = endpoint
        .connect(
            a.peer_addr(),
            &Credentials::peer(ClusterToken::generate().unwrap()),
            Role::Peer,
        )
        .await;
    assert!(intruder.is_err(), "a peer without the token is refused");

    a.shutdown().await;
    b.shutdown().await;
}

/// A task on the output of `input`, which is still being computed (by `holders`, or by the
/// receiving worker when empty): dispatched early.
fn early_task(
    module: ModuleId,
    function: &str,
    input: TaskKey,
    holders: Vec<SocketAddr>,
    salt: u64,
) -> RunTask {
    let mut task = chunk_task(module, function, input, 0, holders, salt);
    if let RunArg::Chunk { pending, .. } = &mut task.args[0] {
        *pending = true;
    }
    task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_dispatched_tasks_start_once_their_inputs_are_computed() {
    // The fields moved out here; the scheduler and the directories live on in `w`.
    let w = two_workers(2).await;
    let (module, a, b) = (w.module, w.a, w.b);
    let (mut link_a, mut link_b) = (w.link_a, w.link_b);

    // A computes sleep(300 ms); its dependents are sent at the same time, one to A itself and
    // one to B, and wait for it there.
    let mut slow = literal_task(module, "sleep", vec![enc(300u64)], 0);
    slow.send_result = false;
    let here = early_task(module, "echo", slow.key, vec![], 1);
    let there = early_task(module, "echo", slow.key, vec![a.peer_addr()], 2);
    link_b.run(&there);
    link_a.run(&slow);
    link_a.run(&here);
    let (size, _) = link_a.finished(slow.key).await;
    let (_, from_here) = link_a.finished(here.key).await;
    let (_, from_there) = link_b.finished(there.key).await;
    let slept: u64 = postcard::from_bytes(&from_here.clone().unwrap()).unwrap();
    assert!(slept >= 300, "{slept}");
    assert_eq!(from_here, from_there);
    assert_eq!(b.stats().chunks_fetched, 1);
    assert_eq!(a.stats().bytes_served, size);

    // An input that fails where it was computed: the waiting task goes back to the scheduler
    // (which has by then heard of the failure and fails the task instead).
    let mut failing = literal_task(module, "fail", vec![enc("no")], 0);
    failing.send_result = false;
    let orphan = early_task(module, "echo", failing.key, vec![a.peer_addr()], 3);
    link_b.run(&orphan);
    link_a.run(&failing);
    assert_eq!(link_a.failed(failing.key).await.0, FailureKind::Failed);
    match link_b.next().await {
        WorkerReport::Reschedule { key, missing } => {
            assert_eq!(key, orphan.key);
            assert_eq!(missing, vec![failing.key]);
        }
        other => panic!("expected Reschedule, got {other:?}"),
    }

    // An input the named peer never hears of: given back after a grace period, not a hang.
    let ghost = TaskKey::builder(&module, "ghost").finish();
    let waiting = early_task(module, "echo", ghost, vec![a.peer_addr()], 4);
    link_b.run(&waiting);
    match link_b.next().await {
        WorkerReport::Reschedule { key, missing } => {
            assert_eq!(key, waiting.key);
            assert_eq!(missing, vec![ghost]);
        }
        other => panic!("expected Reschedule, got {other:?}"),
    }

    // A task waiting for an input computed here is cancelled with it.
    let mut long = literal_task(module, "sleep", vec![enc(60_000u64)], 5);
    long.send_result = false;
    let after = early_task(module, "echo", long.key, vec![], 6);
    link_a.run(&long);
    link_a.run(&after);
    link_a.send(WorkerCommand::Cancel(after.key));
    link_a.send(WorkerCommand::Cancel(long.key));
    wait_until(|| a.stats().tasks_dropped >= 2).await;
    let next = literal_task(module, "inc", vec![enc(1i64)], 7);
    link_a.run(&next);
    let (_, inline) = link_a.finished(next.key).await;
    assert_eq!(postcard::from_bytes::<i64>(&inline.unwrap()).unwrap(), 2);

    a.shutdown().await;
    b.shutdown().await;
}

/// Runs `sleep(ms)` (result not sent back) on the worker behind `link`, an idle worker with one
/// slot, and returns the task once it holds that slot.
async fn occupy_slot(
    link: &mut Link,
    worker: &WorkerHandle,
    module: ModuleId,
    ms: u64,
    salt: u64,
) -> RunTask {
    let mut blocker = literal_task(module, "sleep", vec![enc(ms)], salt);
    blocker.send_result = false;
    link.run(&blocker);
    wait_until(|| worker.stats().tasks_active == 1).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    blocker
}

/// The keys of the next `n` reports of `link`, which must all be `Finished`.
async fn finished_in_order(link: &mut Link, n: usize) -> Vec<TaskKey> {
    let mut keys = Vec::new();
    for _ in 0..n {
        match link.next().await {
            WorkerReport::Finished { key, .. } => keys.push(key),
            other => panic!("unexpected {other:?}"),
        }
    }
    keys
}

/// A ready task whose output a peer is waiting for runs before the other ready tasks, even
/// those of a better priority (its output is on the path between two workers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_a_peer_waits_for_runs_first() {
    // The fields moved out here; the scheduler and the directories live on in `w`.
    let w = two_workers(1).await;
    let (module, a, b) = (w.module, w.a, w.b);
    let (mut link_a, mut link_b) = (w.link_a, w.link_b);

    // The module is loaded first, so that the blocker starts before the others exist.
    let warm_up = literal_task(module, "inc", vec![enc(0i64)], 9);
    link_a.run(&warm_up);
    link_a.finished(warm_up.key).await;
    // A's only slot is busy for 2 s (time for B's request to arrive, even on a loaded
    // machine); two ready tasks queue behind it, `first` with the better priority.
    let blocker = occupy_slot(&mut link_a, &a, module, 2000, 0).await;
    let mut first = literal_task(module, "inc", vec![enc(1i64)], 1);
    first.priority.order = 1;
    let mut second = literal_task(module, "inc", vec![enc(2i64)], 2);
    second.priority.order = 2;
    second.send_result = false;
    link_a.run(&first);
    link_a.run(&second);
    // B waits for `second`'s output.
    let reader = early_task(module, "echo", second.key, vec![a.peer_addr()], 3);
    link_b.run(&reader);
    // Let B's request reach A while the blocker runs.
    wait_until(|| a.stats().tasks_active == 3 && b.stats().tasks_active == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let order = finished_in_order(&mut link_a, 3).await;
    assert_eq!(order, vec![blocker.key, second.key, first.key]);
    let (_, echoed) = link_b.finished(reader.key).await;
    assert_eq!(postcard::from_bytes::<i64>(&echoed.unwrap()).unwrap(), 3);

    // Without a waiting peer, priorities decide.
    let mut blocker = literal_task(module, "sleep", vec![enc(100u64)], 4);
    blocker.send_result = false;
    let mut first = literal_task(module, "inc", vec![enc(1i64)], 5);
    first.priority.order = 1;
    let mut second = literal_task(module, "inc", vec![enc(2i64)], 6);
    second.priority.order = 2;
    for t in [&blocker, &first, &second] {
        link_a.run(t);
    }
    let order = finished_in_order(&mut link_a, 3).await;
    assert_eq!(order, vec![blocker.key, first.key, second.key]);

    a.shutdown().await;
    b.shutdown().await;
}

/// A ready task with an input fetched from a peer runs before ready tasks whose inputs were all
/// here, even those of a better priority: it likely sits on a path between workers (a
/// stencil's border column), its output wanted back there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_with_an_input_from_a_peer_runs_first() {
    let w = two_workers(1).await;
    let (module, a, b) = (w.module, w.a, w.b);
    let (mut link_a, mut link_b) = (w.link_a, w.link_b);

    // B holds `source`; A has the module loaded.
    let source = literal_task(module, "inc", vec![enc(10i64)], 20);
    link_b.run(&source);
    link_b.finished(source.key).await;
    let warm_up = literal_task(module, "inc", vec![enc(0i64)], 21);
    link_a.run(&warm_up);
    link_a.finished(warm_up.key).await;
    // A's only slot is busy for 1 s; two tasks queue behind it, `local` with the better
    // priority, `remote` with an input it fetches from B meanwhile.
    let blocker = occupy_slot(&mut link_a, &a, module, 1000, 22).await;
    let mut local = literal_task(module, "inc", vec![enc(1i64)], 23);
    local.priority.order = 1;
    let mut remote = chunk_task(module, "echo", source.key, 0, vec![b.peer_addr()], 24);
    remote.priority.order = 2;
    link_a.run(&local);
    link_a.run(&remote);
    wait_until(|| a.stats().chunks_fetched == 1).await;

    let order = finished_in_order(&mut link_a, 3).await;
    assert_eq!(order, vec![blocker.key, remote.key, local.key]);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_tasks_fail_with_their_cause_and_the_worker_carries_on() {
    init_tracing();
    let mut scheduler = FakeScheduler::new().await;
    let module = scheduler.add_module(example_guest());
    let dir = tempfile::tempdir().unwrap();
    let (worker, mut link) = scheduler.worker(&dir, 2).await;

    let panic = literal_task(module, "panic", vec![enc("boom")], 0);
    link.run(&panic);
    let (kind, message) = link.failed(panic.key).await;
    assert_eq!(kind, FailureKind::Trap, "{message}");

    let mut spin = literal_task(module, "spin", vec![], 0);
    spin.limits.timeout_ms = Some(200);
    link.run(&spin);
    let started = std::time::Instant::now();
    let (kind, message) = link.failed(spin.key).await;
    assert_eq!(kind, FailureKind::DeadlineExceeded, "{message}");
    assert!(started.elapsed() < Duration::from_secs(10));

    let mut hog = literal_task(module, "hog", vec![enc(1u64 << 20)], 0);
    hog.limits.memory_bytes = Some(32 << 20);
    link.run(&hog);
    let (kind, message) = link.failed(hog.key).await;
    assert_eq!(kind, FailureKind::MemoryLimitExceeded, "{message}");

    let mut fuel = literal_task(module, "spin", vec![], 1);
    fuel.limits.fuel = Some(1_000_000);
    link.run(&fuel);
    let (kind, message) = link.failed(fuel.key).await;
    assert_eq!(kind, FailureKind::OutOfFuel, "{message}");

    let fail = literal_task(module, "fail", vec![enc("no luck")], 0);
    link.run(&fail);
    assert_eq!(
        link.failed(fail.key).await,
        (FailureKind::Failed, "no luck".to_string())
    );

    let bad_input = literal_task(module, "add", vec![enc(1.0f64)], 0);
    link.run(&bad_input);
    assert_eq!(
        link.failed(bad_input.key).await.0,
        FailureKind::InvalidInput
    );

    let unknown = literal_task(module, "no_such_function", vec![], 0);
    link.run(&unknown);
    assert_eq!(
        link.failed(unknown.key).await.0,
        FailureKind::UnknownFunction
    );

    let add = literal_task(module, "add", vec![enc(20.0f64), enc(22.0f64)], 0);
    link.run(&add);
    let (_, inline) = link.finished(add.key).await;
    assert_eq!(f64_of(&inline.unwrap()), 42.0);
    assert_eq!(worker.stats().tasks_failed, 7);
    assert_eq!(worker.stats().chunks, 1, "failed tasks leave no chunk");
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steal_cancel_and_release() {
    init_tracing();
    let mut scheduler = FakeScheduler::new().await;
    let module = scheduler.add_module(example_guest());
    let dir = tempfile::tempdir().unwrap();
    let (worker, mut link) = scheduler.worker(&dir, 1).await;

    // Warm up: the module is fetched and compiled.
    let warm = literal_task(module, "inc", vec![enc(1i64)], 0);
    link.run(&warm);
    link.finished(warm.key).await;

    // One slot: `long` (two minutes of work) runs, the others queue behind it.
    let long = literal_task(module, "busy_wait", vec![enc(120_000_000u64)], 0);
    let stolen = literal_task(module, "busy_wait", vec![enc(1u64)], 1);
    let cancelled = literal_task(module, "busy_wait", vec![enc(1u64)], 2);
    link.run(&long);
    tokio::time::sleep(Duration::from_millis(300)).await;
    link.run(&stolen);
    link.run(&cancelled);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(worker.stats().tasks_active, 3);

    link.send(WorkerCommand::Steal(long.key));
    match link.next().await {
        WorkerReport::StealAnswer { key, released } => {
            assert_eq!(key, long.key);
            assert!(!released, "a running task cannot be stolen");
        }
        other => panic!("unexpected {other:?}"),
    }
    link.send(WorkerCommand::Steal(stolen.key));
    match link.next().await {
        WorkerReport::StealAnswer { key, released } => {
            assert_eq!(key, stolen.key);
            assert!(released, "a queued task is given back");
        }
        other => panic!("unexpected {other:?}"),
    }
    let unknown = TaskKey::builder(&module, "unknown").finish();
    link.send(WorkerCommand::Steal(unknown));
    match link.next().await {
        WorkerReport::StealAnswer { key, released } => {
            assert_eq!(key, unknown);
            assert!(released, "an unknown task will not run here");
        }
        other => panic!("unexpected {other:?}"),
    }
    link.send(WorkerCommand::Cancel(cancelled.key));
    let cancelling = std::time::Instant::now();
    link.send(WorkerCommand::Cancel(long.key));

    // Nothing is reported for the three; the running task is interrupted, and the next task
    // runs in its slot long before `long` would have ended.
    let after = literal_task(module, "inc", vec![enc(5i64)], 0);
    link.run(&after);
    let (_, inline) = link.finished(after.key).await;
    assert_eq!(postcard::from_bytes::<i64>(&inline.unwrap()).unwrap(), 6);
    assert!(
        cancelling.elapsed() < Duration::from_secs(30),
        "the cancelled task kept its slot for {:?}",
        cancelling.elapsed()
    );
    let stats = worker.stats();
    assert_eq!(stats.tasks_dropped, 3);
    assert_eq!(stats.tasks_finished, 2);
    assert_eq!(stats.tasks_active, 0);
    assert_eq!(stats.chunks, 2, "the cancelled task's output is not kept");

    link.send(WorkerCommand::Release(vec![warm.key, after.key]));
    link.memory_until(|(in_memory, _)| in_memory == 0).await;
    assert_eq!(worker.stats().chunks, 0);
    worker.shutdown().await;
}

/// After short runs of a function, a lone task of it makes the network thread poll for its
/// report instead of sleeping; when the task turns out long, commands still get through at
/// once and cancelling it works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_task_after_short_ones_does_not_hold_up_commands() {
    init_tracing();
    let mut scheduler = FakeScheduler::new().await;
    let module = scheduler.add_module(example_guest());
    let dir = tempfile::tempdir().unwrap();
    let (worker, mut link) = scheduler.worker(&dir, 1).await;

    // Lone short runs of `busy_wait`, one after the other (each report is polled for).
    for i in 0..5u64 {
        let short = literal_task(module, "busy_wait", vec![enc(10u64 + i)], 0);
        link.run(&short);
        link.finished(short.key).await;
    }
    // The same function, now two minutes long, alone on the idle worker: from the runs before
    // it looks short, so the network thread starts it itself, then hands it to an executor
    // thread when it overruns.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let long = literal_task(module, "busy_wait", vec![enc(120_000_000u64)], 0);
    link.run(&long);
    let asked = std::time::Instant::now();
    link.send(WorkerCommand::Steal(long.key));
    let released = match link.next().await {
        WorkerReport::StealAnswer { key, released } => {
            assert_eq!(key, long.key);
            released
        }
        other => panic!("unexpected {other:?}"),
    };
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "the steal was answered after {:?}",
        asked.elapsed()
    );
    if !released {
        // Running: cancelling interrupts it.
        link.send(WorkerCommand::Cancel(long.key));
    }
    let after = literal_task(module, "inc", vec![enc(1i64)], 0);
    link.run(&after);
    let (_, inline) = link.finished(after.key).await;
    assert_eq!(postcard::from_bytes::<i64>(&inline.unwrap()).unwrap(), 2);
    let stats = worker.stats();
    assert_eq!(stats.tasks_finished, 6);
    assert_eq!(stats.tasks_dropped, 1);
    assert_eq!(stats.tasks_active, 0);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_scheduler_stops_the_worker_promptly() {
    init_tracing();
    let mut scheduler = FakeScheduler::new().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut worker, link) = scheduler.worker(&dir, 1).await;
    link.conn.close("scheduler going away");
    let result = timeout(Duration::from_secs(5), worker.wait())
        .await
        .expect("the worker noticed in time");
    match result {
        Err(WorkerError::SchedulerLost(message)) => {
            assert!(message.contains("scheduler going away"), "{message}");
        }
        other => panic!("expected SchedulerLost, got {other:?}"),
    }

    // The whole scheduler process vanishing (its endpoint dropped) is noticed too.
    let dir = tempfile::tempdir().unwrap();
    let (mut worker, link) = scheduler.worker(&dir, 1).await;
    drop(link);
    drop(scheduler);
    let result = timeout(Duration::from_secs(5), worker.wait())
        .await
        .expect("the worker noticed in time");
    assert!(
        matches!(result, Err(WorkerError::SchedulerLost(_))),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_from_either_side() {
    init_tracing();
    let mut scheduler = FakeScheduler::new().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut worker, link) = scheduler.worker(&dir, 1).await;
    link.send(WorkerCommand::Shutdown {
        reason: "maintenance".into(),
    });
    let result = timeout(Duration::from_secs(5), worker.wait())
        .await
        .unwrap();
    match result {
        Err(WorkerError::Shutdown { reason }) => assert_eq!(reason, "maintenance"),
        other => panic!("expected Shutdown, got {other:?}"),
    }

    let dir = tempfile::tempdir().unwrap();
    let (worker, mut link) = scheduler.worker(&dir, 1).await;
    timeout(Duration::from_secs(10), worker.shutdown())
        .await
        .unwrap();
    let ended = timeout(Duration::from_secs(5), async {
        loop {
            match link.rx.recv().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the scheduler sees the worker leave");
    assert!(!matches!(ended, Ok(Some(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_spill_to_disk_and_are_still_served() {
    init_tracing();
    let mut scheduler = FakeScheduler::new().await;
    let module = scheduler.add_module(example_guest());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // 1 MiB for chunks: above 70% of it, the least recently used chunks go to disk.
    let mut config = scheduler.config(&dir_a, 1);
    config.memory_limit = 1 << 20;
    let (a, mut link_a) = scheduler.worker_with(config).await;
    let (b, mut link_b) = scheduler.worker(&dir_b, 1).await;

    let half = |byte: u8| vec![byte; 512 << 10];
    let mut first = literal_task(module, "echo", vec![half(1)], 0);
    let mut second = literal_task(module, "echo", vec![half(2)], 0);
    first.send_result = false;
    second.send_result = false;
    link_a.run(&first);
    link_a.finished(first.key).await;
    link_a.run(&second);
    link_a.finished(second.key).await;
    let stats = a.stats();
    assert_eq!(stats.chunks, 2);
    assert_eq!(
        stats.spilled_bytes,
        512 << 10,
        "the older chunk went to disk"
    );
    assert_eq!(stats.memory_bytes, 512 << 10);
    link_a
        .memory_until(|(in_memory, spilled)| in_memory == 512 << 10 && spilled == 512 << 10)
        .await;

    // A spilled chunk is read back for a local task and for a peer.
    let local = chunk_task(module, "echo", first.key, 512 << 10, vec![], 1);
    link_a.run(&local);
    let (size, inline) = link_a.finished(local.key).await;
    assert_eq!(size, 512 << 10);
    assert_eq!(inline, None, "larger than the inline limit");
    let remote = chunk_task(module, "echo", first.key, 512 << 10, vec![a.peer_addr()], 2);
    link_b.run(&remote);
    link_b.finished(remote.key).await;
    assert_eq!(b.stats().bytes_fetched, 512 << 10);
    a.shutdown().await;
    b.shutdown().await;
}

/// Trivial-task throughput of one worker (run with `--release -- --ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test"]
async fn throughput_of_trivial_tasks() {
    let mut scheduler = FakeScheduler::new().await;
    let module = scheduler.add_module(example_guest());
    let dir = tempfile::tempdir().unwrap();
    let (worker, mut link) = scheduler.worker(&dir, 2).await;
    let warm = literal_task(module, "noop", vec![], u64::MAX);
    link.run(&warm);
    link.finished(warm.key).await;
    for round in 0..3 {
        let n = 20_000u64;
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let mut t = literal_task(module, "noop", vec![], round * n + i);
                t.send_result = false;
                WorkerCommand::Run(t)
            })
            .collect();
        let started = std::time::Instant::now();
        for chunk in tasks.chunks(1000) {
            link.tx.send_many(chunk).await.unwrap();
        }
        for _ in 0..n {
            link.next().await;
        }
        let elapsed = started.elapsed();
        println!(
            "{n} noop tasks in {elapsed:?}: {:.0} tasks/s, {:.1} us per task",
            n as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64() * 1e6 / n as f64
        );
        let keys: Vec<_> = tasks
            .iter()
            .map(|c| match c {
                WorkerCommand::Run(t) => t.key,
                _ => unreachable!(),
            })
            .collect();
        link.send(WorkerCommand::Release(keys));
    }
    let started = std::time::Instant::now();
    let rounds = 200;
    for i in 0..rounds {
        let t = literal_task(module, "inc", vec![enc(1i64)], 1_000_000 + i);
        link.run(&t);
        link.finished(t.key).await;
    }
    println!(
        "one task at a time: {:.1} us per Run -> Finished round trip",
        started.elapsed().as_secs_f64() * 1e6 / rounds as f64
    );
    worker.shutdown().await;
}

/// Waits (at most 5 s) for `condition` to hold.
async fn wait_until(condition: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not reached in 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
