//! The connection to the scheduler: one background task reads its events and wakes whoever
//! waits for them; requests go out on the batched control stream.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use parking_lot::Mutex;
use taskhost_net::{
    ClusterToken, Connection, ControlOptions, Credentials, Endpoint, JoinTicket, Receiver, Sender,
    TransportSettings,
};
use taskhost_proto::{
    BulkRequest, ClientEvent, ClientRequest, ClusterStatus, FailureKind, Graph as WireGraph,
    ModuleId, ResultLocation, Role, TaskCounts, TaskFailure, TaskKey,
};
use tokio::sync::{Notify, oneshot, watch};

use crate::error::{Error, Result};
use crate::future::{Future, FutureShared, FutureStatus};
use crate::graph::{BATCH_BYTES, Graph, Handle, IdMap, IntoArgs, TaskOutput};
use crate::module::{FunctionInfo, Module};

/// Largest control frame (a module upload is one frame; the scheduler accepts 64 MiB modules).
const MAX_FRAME: usize = 65 << 20;

/// How many times a result whose holders cannot serve it is waited for again (the scheduler
/// recomputes it elsewhere) before the fetch error is returned.
const RELOCATE_ATTEMPTS: u32 = 3;

/// How long to wait each time for the scheduler to say where such a result is now.
const RELOCATE_WAIT: Duration = Duration::from_secs(60);

/// Where a finished key's result is.
#[derive(Clone)]
enum Location {
    Inline(Bytes),
    Workers(Vec<SocketAddr>),
}

#[derive(Clone)]
enum KeyState {
    Pending,
    Done(Location),
    Failed(TaskFailure),
    Rejected(String),
    Lost(String),
}

struct Entry {
    /// Live [`FutureShared`]s of this key.
    refs: usize,
    state: KeyState,
    notify: Arc<Notify>,
}

/// Waiters for `Status` replies, in the order the requests were sent.
enum StatusWaiter {
    User(oneshot::Sender<ClusterStatus>),
    /// Sent right after a submission: if a `SubmitRejected` comes before its reply, the
    /// rejection is that submission's.
    Barrier {
        keys: Vec<TaskKey>,
        reply: oneshot::Sender<Option<String>>,
        rejected: Option<String>,
    },
}

#[derive(Default)]
struct State {
    keys: IdMap<TaskKey, Entry>,
    module_queries: VecDeque<oneshot::Sender<Vec<ModuleId>>>,
    uploads: HashMap<ModuleId, Vec<oneshot::Sender<std::result::Result<(), String>>>>,
    status: VecDeque<StatusWaiter>,
    /// Why the connection is gone, once it is.
    lost: Option<String>,
}

impl State {
    fn set(&mut self, key: &TaskKey, state: KeyState) {
        if let Some(e) = self.keys.get_mut(key) {
            // A finished key only moves to a new location: the scheduler recomputed a result
            // whose holders were lost and delivers it again.
            if matches!(e.state, KeyState::Done(_)) && !matches!(state, KeyState::Done(_)) {
                return;
            }
            e.state = state;
            e.notify.notify_waiters();
        }
    }

    fn lose(&mut self, reason: String) {
        if self.lost.is_some() {
            return;
        }
        tracing::debug!(%reason, "connection to the scheduler lost");
        for e in self.keys.values_mut() {
            if matches!(e.state, KeyState::Pending) {
                e.state = KeyState::Lost(reason.clone());
            }
            e.notify.notify_waiters();
        }
        // Dropping the senders wakes every waiter with an error.
        self.module_queries.clear();
        self.uploads.clear();
        self.status.clear();
        self.lost = Some(reason);
    }
}

/// Something a client owns and stops when it closes (an embedded local cluster).
pub(crate) trait OwnedCluster: Send + Sync {
    fn shutdown(self: Box<Self>) -> futures::future::BoxFuture<'static, ()>;
}

/// A worker connection used to fetch results (its control stream only tells when the worker
/// leaves).
struct PeerConn {
    connection: Connection,
}

pub(crate) struct ClientInner {
    sender: Sender<ClientRequest>,
    state: Arc<Mutex<State>>,
    endpoint: Endpoint,
    connection: Connection,
    token: ClusterToken,
    peers: Mutex<HashMap<SocketAddr, Arc<PeerConn>>>,
    progress: watch::Receiver<TaskCounts>,
    reader: tokio::task::JoinHandle<()>,
    describe: bool,
    /// An embedded cluster this client owns (dropped after the connection is closed).
    pub(crate) cluster: Mutex<Option<Box<dyn OwnedCluster>>>,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        self.reader.abort();
        self.connection.close("client dropped");
        self.state.lock().lose("the client was dropped".into());
    }
}

/// A connection to a taskhost cluster: registers modules, submits graphs, and hands back
/// results. Cheap to clone (clones share the connection).
///
/// ```no_run
/// use taskhost_client::{Client, Graph};
/// # async fn demo(wasm: Vec<u8>) -> taskhost_client::Result<()> {
/// let client = Client::connect_env().await?;         // or Client::local().await?
/// let m = client.module(wasm).await?;
/// let g = Graph::new();
/// let x = g.call::<f64>(&m, "add", (1.0, 2.0))?;
/// let y = g.call::<f64>(&m, "add", (&x, 3.0))?;
/// assert_eq!(client.compute(&y).await?, 6.0);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<ClientInner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("scheduler", &self.inner.connection.remote_address())
            .finish_non_exhaustive()
    }
}

/// Options of a [`Client`] connection.
///
/// ```no_run
/// # async fn demo(ticket: taskhost_client::JoinTicket) -> taskhost_client::Result<()> {
/// let client = taskhost_client::ClientOptions::new()
///     .describe_modules(false)
///     .connect(&ticket)
///     .await?;
/// # let _ = client; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ClientOptions {
    transport: TransportSettings,
    describe_modules: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            transport: TransportSettings::default(),
            describe_modules: true,
        }
    }
}

impl ClientOptions {
    /// The defaults: default transport settings, modules described when registered.
    ///
    /// ```
    /// let o = taskhost_client::ClientOptions::new();
    /// # let _ = o;
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// QUIC and socket settings.
    ///
    /// ```
    /// let o = taskhost_client::ClientOptions::new()
    ///     .transport(taskhost_net::TransportSettings::default());
    /// # let _ = o;
    /// ```
    pub fn transport(mut self, transport: TransportSettings) -> Self {
        self.transport = transport;
        self
    }

    /// Whether [`Client::module`] lists a module's functions (compiling it locally once, with
    /// the result cached on disk) so that calls of unknown functions fail when the graph is
    /// built. On by default.
    ///
    /// ```
    /// let o = taskhost_client::ClientOptions::new().describe_modules(false);
    /// # let _ = o;
    /// ```
    pub fn describe_modules(mut self, describe: bool) -> Self {
        self.describe_modules = describe;
        self
    }

    /// Connects to the scheduler named by `ticket`.
    ///
    /// ```no_run
    /// # async fn demo() -> taskhost_client::Result<()> {
    /// let ticket = "taskhost://...".parse()?;
    /// let client = taskhost_client::ClientOptions::new().connect(&ticket).await?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub async fn connect(self, ticket: &JoinTicket) -> Result<Client> {
        let endpoint = Endpoint::client(self.transport.clone())?;
        let established = endpoint.connect_ticket(ticket, Role::Client).await?;
        let (sender, receiver) = established
            .control
            .split_with::<ClientRequest, ClientEvent>(ControlOptions {
                max_frame: MAX_FRAME,
                ..ControlOptions::default()
            });
        let state = Arc::new(Mutex::new(State::default()));
        let (progress_tx, progress) = watch::channel(TaskCounts::default());
        let reader = tokio::spawn(read_events(
            receiver,
            established.connection.clone(),
            state.clone(),
            progress_tx,
        ));
        Ok(Client {
            inner: Arc::new(ClientInner {
                sender,
                state,
                endpoint,
                connection: established.connection,
                token: ticket.token.clone(),
                peers: Mutex::new(HashMap::new()),
                progress,
                reader,
                describe: self.describe_modules,
                cluster: Mutex::new(None),
            }),
        })
    }
}

/// The one task that reads the scheduler's events.
async fn read_events(
    mut receiver: Receiver<ClientEvent>,
    connection: Connection,
    state: Arc<Mutex<State>>,
    progress: watch::Sender<TaskCounts>,
) {
    let mut events = Vec::with_capacity(1024);
    let reason = loop {
        events.clear();
        match receiver.recv_many(&mut events, 4096).await {
            Ok(0) => break "the scheduler closed the connection".to_string(),
            Ok(_) => {
                let mut st = state.lock();
                for event in events.drain(..) {
                    dispatch(&mut st, event, &progress);
                }
            }
            Err(e) => {
                break match connection.close_reason() {
                    Some(why) => why.to_string(),
                    None => e.to_string(),
                };
            }
        }
    };
    state.lock().lose(reason);
}

fn dispatch(st: &mut State, event: ClientEvent, progress: &watch::Sender<TaskCounts>) {
    match event {
        ClientEvent::TaskDone { key, result } => {
            let location = match result {
                ResultLocation::Inline(blob) => Location::Inline(Bytes::from(blob.0)),
                ResultLocation::Workers { holders, .. } => Location::Workers(holders),
            };
            st.set(&key, KeyState::Done(location));
        }
        ClientEvent::TaskFailed { key, failure } => st.set(&key, KeyState::Failed(failure)),
        ClientEvent::Progress(counts) => {
            progress.send_replace(counts);
        }
        ClientEvent::MissingModules(ids) => {
            if let Some(w) = st.module_queries.pop_front() {
                let _ = w.send(ids);
            }
        }
        ClientEvent::ModuleStored(id) => {
            for w in st.uploads.remove(&id).unwrap_or_default() {
                let _ = w.send(Ok(()));
            }
        }
        ClientEvent::ModuleRejected { id, reason } => {
            for w in st.uploads.remove(&id).unwrap_or_default() {
                let _ = w.send(Err(reason.clone()));
            }
        }
        ClientEvent::SubmitRejected { reason, keys } => reject(st, reason, &keys),
        ClientEvent::Status(status) => match st.status.pop_front() {
            Some(StatusWaiter::User(w)) => {
                let _ = w.send(status);
            }
            Some(StatusWaiter::Barrier {
                reply, rejected, ..
            }) => {
                let _ = reply.send(rejected);
            }
            None => {}
        },
    }
}

/// A submission was refused; `refused` are the keys its message wanted. Its keys fail, and so
/// does its barrier (the `Status` request sent right after it) if it has one: the first barrier
/// waiting whose keys the message wanted; else the first barrier waiting (a graph sent in
/// several messages, whose earlier ones want other keys), unless the keys are those of a
/// submission sent without a barrier (`compute`), which are pending here.
fn reject(st: &mut State, reason: String, refused: &[TaskKey]) {
    let waiting = |w: &StatusWaiter| matches!(w, StatusWaiter::Barrier { rejected: None, .. });
    let refused_set: IdMap<TaskKey, ()> = refused.iter().map(|k| (*k, ())).collect();
    let own_barrier = st.status.iter().position(|w| {
        waiting(w)
            && matches!(w, StatusWaiter::Barrier { keys, .. } if keys.iter().any(|k| refused_set.contains_key(k)))
    });
    let pending: Vec<TaskKey> = refused
        .iter()
        .filter(|k| matches!(st.keys.get(k).map(|e| &e.state), Some(KeyState::Pending)))
        .copied()
        .collect();
    let barrier = match own_barrier {
        Some(i) => Some(i),
        None if !pending.is_empty() => {
            for k in pending {
                st.set(&k, KeyState::Rejected(reason.clone()));
            }
            return;
        }
        None => st.status.iter().position(waiting),
    };
    match barrier.map(|i| &mut st.status[i]) {
        Some(StatusWaiter::Barrier { keys, rejected, .. }) => {
            *rejected = Some(reason.clone());
            for k in std::mem::take(keys) {
                st.set(&k, KeyState::Rejected(reason.clone()));
            }
        }
        _ => {
            // Not attributable: fail everything pending rather than let it hang.
            tracing::warn!(%reason, "a graph was rejected");
            let pending: Vec<TaskKey> = st
                .keys
                .iter()
                .filter(|(_, e)| matches!(e.state, KeyState::Pending))
                .map(|(k, _)| *k)
                .collect();
            for k in pending {
                st.set(&k, KeyState::Rejected(reason.clone()));
            }
        }
    }
}

impl ClientInner {
    fn lost_error(&self) -> Error {
        Error::ConnectionLost(
            self.state
                .lock()
                .lost
                .clone()
                .unwrap_or_else(|| "the connection closed".into()),
        )
    }

    /// Queues `request` while holding the state lock, so that waiters registered under the
    /// same lock are queued in the order their requests are sent.
    fn send_locked(&self, st: &State, request: &ClientRequest) -> Result<()> {
        if let Some(why) = &st.lost {
            return Err(Error::ConnectionLost(why.clone()));
        }
        self.sender
            .send_now(request)
            .map_err(|e| Error::ConnectionLost(e.to_string()))
    }

    pub(crate) fn release_ref(&self, key: TaskKey) {
        let mut st = self.state.lock();
        let Some(e) = st.keys.get_mut(&key) else {
            return;
        };
        e.refs -= 1;
        if e.refs == 0 {
            st.keys.remove(&key);
            if st.lost.is_none() {
                let _ = self.sender.send_now(&ClientRequest::Release(vec![key]));
            }
        }
    }

    pub(crate) fn status_of(&self, key: &TaskKey) -> FutureStatus {
        match self.state.lock().keys.get(key).map(|e| &e.state) {
            Some(KeyState::Pending) => FutureStatus::Pending,
            Some(KeyState::Done(_)) => FutureStatus::Finished,
            Some(KeyState::Failed(_) | KeyState::Rejected(_)) => FutureStatus::Error,
            Some(KeyState::Lost(_)) | None => FutureStatus::Lost,
        }
    }

    /// Waits until `key` (which a live future holds) is no longer pending.
    async fn wait_state(&self, key: TaskKey) -> KeyState {
        match self
            .wait_while(key, |state| matches!(state, KeyState::Pending))
            .await
        {
            Some(state) => state,
            None => KeyState::Lost(
                self.state
                    .lock()
                    .lost
                    .clone()
                    .unwrap_or_else(|| "the key was released".into()),
            ),
        }
    }

    /// Waits while `key`'s state satisfies `waiting`, and returns the first state that does
    /// not; `None` once the key is no longer referenced.
    async fn wait_while(
        &self,
        key: TaskKey,
        waiting: impl Fn(&KeyState) -> bool,
    ) -> Option<KeyState> {
        loop {
            let notify = {
                let st = self.state.lock();
                let e = st.keys.get(&key)?;
                if !waiting(&e.state) {
                    return Some(e.state.clone());
                }
                e.notify.clone()
            };
            let mut notified = pin!(notify.notified());
            notified.as_mut().enable();
            // A change between the check and `enable` would be missed: check again.
            let changed = {
                let st = self.state.lock();
                st.keys.get(&key).is_none_or(|e| !waiting(&e.state))
            };
            if !changed {
                notified.await;
            }
        }
    }

    /// Waits for `key`; `Ok` with its location once done, its error otherwise.
    pub(crate) async fn wait_key(&self, key: TaskKey) -> Result<()> {
        self.wait_location(key).await.map(|_| ())
    }

    async fn wait_location(&self, key: TaskKey) -> Result<Location> {
        match self.wait_state(key).await {
            KeyState::Done(location) => Ok(location),
            KeyState::Failed(failure) => Err(Error::Task { key, failure }),
            KeyState::Rejected(reason) => Err(Error::SubmitRejected { reason }),
            KeyState::Lost(reason) => Err(Error::ConnectionLost(reason)),
            KeyState::Pending => unreachable!("wait_state returns finished states"),
        }
    }

    pub(crate) async fn result_bytes(&self, key: TaskKey) -> Result<Bytes> {
        let mut location = self.wait_location(key).await?;
        let mut attempts = 0;
        loop {
            let holders = match location {
                Location::Inline(bytes) => return Ok(bytes),
                Location::Workers(holders) => holders,
            };
            let error = match self.fetch(key, &holders).await {
                Ok(bytes) => return Ok(bytes),
                Err(error) => error,
            };
            // The holders died or lost the chunk: once the scheduler notices (a closed
            // connection, a missed heartbeat, or the holder's own report), it computes the
            // result again and says where it is now.
            attempts += 1;
            if attempts > RELOCATE_ATTEMPTS {
                return Err(error);
            }
            tracing::debug!(key = %key.short(), %error, "result unavailable; waiting for it to be recomputed");
            location = match tokio::time::timeout(
                RELOCATE_WAIT,
                self.wait_while(key, |state| match state {
                    KeyState::Done(Location::Workers(h)) => *h == holders,
                    KeyState::Pending => true,
                    _ => false,
                }),
            )
            .await
            {
                Ok(Some(state)) => match state {
                    KeyState::Done(location) => location,
                    KeyState::Failed(failure) => return Err(Error::Task { key, failure }),
                    KeyState::Lost(reason) => return Err(Error::ConnectionLost(reason)),
                    KeyState::Rejected(reason) => return Err(Error::SubmitRejected { reason }),
                    KeyState::Pending => return Err(error),
                },
                Ok(None) | Err(_) => return Err(error),
            };
        }
    }

    async fn peer(&self, addr: SocketAddr) -> Result<Arc<PeerConn>> {
        if let Some(p) = self.peers.lock().get(&addr)
            && p.connection.close_reason().is_none()
        {
            return Ok(p.clone());
        }
        let established = self
            .endpoint
            .connect(addr, &Credentials::peer(self.token.clone()), Role::Client)
            .await?;
        let conn = Arc::new(PeerConn {
            connection: established.bulk_only(),
        });
        self.peers.lock().insert(addr, conn.clone());
        Ok(conn)
    }

    async fn fetch(&self, key: TaskKey, holders: &[SocketAddr]) -> Result<Bytes> {
        let mut failures = Vec::new();
        for &addr in holders {
            let conn = match self.peer(addr).await {
                Ok(c) => c,
                Err(e) => {
                    failures.push(format!("{addr}: {e}"));
                    continue;
                }
            };
            match conn
                .connection
                .fetch(&BulkRequest::Chunk(key), usize::MAX)
                .await
            {
                Ok(bytes) => return Ok(bytes),
                Err(e) => {
                    failures.push(format!("{addr}: {e}"));
                    if conn.connection.close_reason().is_some() {
                        self.peers.lock().remove(&addr);
                    }
                }
            }
        }
        if holders.is_empty() {
            failures.push("no worker holds it".into());
        }
        Err(Error::Fetch {
            key,
            reason: failures.join("; "),
        })
    }

    /// Takes one reference to `key` for a new future.
    fn reference(self: &Arc<Self>, st: &mut State, key: TaskKey) -> Arc<FutureShared> {
        let e = st.keys.entry(key).or_insert_with(|| Entry {
            refs: 0,
            state: KeyState::Pending,
            notify: Arc::new(Notify::new()),
        });
        e.refs += 1;
        // A resubmission asks again for what was cancelled or rejected.
        if matches!(
            e.state,
            KeyState::Rejected(_)
                | KeyState::Failed(TaskFailure {
                    kind: FailureKind::Cancelled,
                    ..
                })
        ) {
            e.state = KeyState::Pending;
        }
        Arc::new(FutureShared {
            key,
            client: self.clone(),
        })
    }

    pub(crate) fn cancel_keys(&self, keys: &[TaskKey]) -> Result<()> {
        let mut st = self.state.lock();
        self.send_locked(&st, &ClientRequest::Cancel(keys.to_vec()))?;
        for key in keys {
            if let Some(e) = st.keys.get(key)
                && matches!(e.state, KeyState::Pending)
            {
                let failure = TaskFailure {
                    kind: FailureKind::Cancelled,
                    message: "cancelled by the client".into(),
                    origin: *key,
                    function: String::new(),
                };
                st.set(key, KeyState::Failed(failure));
            }
        }
        Ok(())
    }
}

impl Client {
    /// Connects to the scheduler named by `ticket` (printed by `taskhost scheduler`, stored in
    /// its data directory's `ticket` file).
    ///
    /// ```no_run
    /// # async fn demo() -> taskhost_client::Result<()> {
    /// let ticket: taskhost_client::JoinTicket = std::fs::read_to_string("/var/lib/taskhost/ticket")
    ///     .unwrap().parse()?;
    /// let client = taskhost_client::Client::connect(&ticket).await?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub async fn connect(ticket: &JoinTicket) -> Result<Client> {
        ClientOptions::new().connect(ticket).await
    }

    /// Connects with the ticket from the environment: `TASKHOST_TICKET` holds a ticket or the
    /// path of a ticket file; otherwise the ticket `taskhost scheduler` wrote in its data
    /// directory is read (see [`ticket_from_env`]).
    ///
    /// ```no_run
    /// # async fn demo() -> taskhost_client::Result<()> {
    /// let client = taskhost_client::Client::connect_env().await?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub async fn connect_env() -> Result<Client> {
        Self::connect(&ticket_from_env()?).await
    }

    /// Registers a module: asks the scheduler whether it has these bytes (by hash) and
    /// uploads them only if not. When describing is on (the default), the module's functions
    /// are listed so that graphs calling unknown functions fail early.
    ///
    /// ```no_run
    /// # async fn demo(client: taskhost_client::Client) -> taskhost_client::Result<()> {
    /// let m = client.module(std::fs::read("guest.wasm").unwrap()).await?;
    /// for f in m.functions().unwrap_or_default() { println!("{}", f.signature); }
    /// # Ok(()) }
    /// ```
    pub async fn module(&self, bytes: impl Into<Vec<u8>>) -> Result<Module> {
        let bytes: Vec<u8> = bytes.into();
        let id = ModuleId::of(&bytes);
        let size = bytes.len();
        let inner = &self.inner;
        let (functions, uploaded) = tokio::join!(
            async {
                if inner.describe {
                    crate::describe::describe(id, &bytes).await
                } else {
                    Ok(None)
                }
            },
            self.upload(id, &bytes)
        );
        uploaded?;
        let functions: Option<Vec<FunctionInfo>> = functions?;
        Ok(Module::new(id, Some(size), functions))
    }

    async fn upload(&self, id: ModuleId, bytes: &[u8]) -> Result<()> {
        let inner = &self.inner;
        let query = {
            let mut st = inner.state.lock();
            inner.send_locked(&st, &ClientRequest::QueryModules(vec![id]))?;
            let (tx, rx) = oneshot::channel();
            st.module_queries.push_back(tx);
            rx
        };
        let missing = query.await.map_err(|_| inner.lost_error())?;
        if !missing.contains(&id) {
            return Ok(());
        }
        let stored = {
            let mut st = inner.state.lock();
            inner.send_locked(
                &st,
                &ClientRequest::UploadModule {
                    id,
                    bytes: bytes.to_vec().into(),
                },
            )?;
            let (tx, rx) = oneshot::channel();
            st.uploads.entry(id).or_default().push(tx);
            rx
        };
        match stored.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(Error::ModuleRejected { id, reason }),
            Err(_) => Err(inner.lost_error()),
        }
    }

    /// Reads a component file and registers it (see [`module`](Self::module)).
    ///
    /// ```no_run
    /// # async fn demo(client: taskhost_client::Client) -> taskhost_client::Result<()> {
    /// let m = client.module_from_file("target/wasm32-wasip2/release/guest.wasm").await?;
    /// # let _ = m; Ok(()) }
    /// ```
    pub async fn module_from_file(&self, path: impl AsRef<Path>) -> Result<Module> {
        let path = path.as_ref();
        let bytes = tokio::fs::read(path).await.map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        self.module(bytes).await
    }

    /// Submits what `handles` need and returns one future per handle. Only the calls the
    /// handles depend on are sent; tasks the scheduler already knows (from this or another
    /// client) are reused, not recomputed. Returns once the scheduler has accepted the graph.
    ///
    /// ```no_run
    /// # async fn demo(client: taskhost_client::Client, m: taskhost_client::Module) -> taskhost_client::Result<()> {
    /// let g = taskhost_client::Graph::new();
    /// let xs: Vec<_> = (0..10).map(|i| g.call::<i64>(&m, "inc", (i as i64,))).collect::<Result<_, _>>()?;
    /// let futures = client.submit(&xs).await?;
    /// let values = client.gather(&futures).await?;
    /// assert_eq!(values, (1..=10).collect::<Vec<i64>>());
    /// # Ok(()) }
    /// ```
    pub async fn submit<T>(&self, handles: &[Handle<T>]) -> Result<Vec<Future<T>>> {
        self.submit_with(handles, true).await
    }

    /// [`Client::submit`]; without `barrier`, a graph sent in one message returns as soon as it
    /// is queued, without waiting for the scheduler to accept it (a refusal then fails the
    /// futures): for callers that wait for the results anyway, one message and one wake-up
    /// less per submission.
    async fn submit_with<T>(&self, handles: &[Handle<T>], barrier: bool) -> Result<Vec<Future<T>>> {
        // Group by graph (nearly always one), keeping the caller's order of futures.
        let mut groups: Vec<(Graph, Vec<u32>)> = Vec::new();
        for h in handles {
            match groups.iter_mut().find(|(g, _)| g.same_as(&h.graph)) {
                Some((_, nodes)) => nodes.push(h.node),
                None => groups.push((h.graph.clone(), vec![h.node])),
            }
        }
        let futures: Vec<Future<T>> = {
            let mut st = self.inner.state.lock();
            if let Some(why) = &st.lost {
                return Err(Error::ConnectionLost(why.clone()));
            }
            handles
                .iter()
                .map(|h| Future::new(self.inner.reference(&mut st, h.key)))
                .collect()
        };
        for (graph, nodes) in groups {
            self.submit_nodes(&graph, &nodes, barrier).await?;
        }
        Ok(futures)
    }

    async fn submit_nodes(&self, graph: &Graph, nodes: &[u32], barrier: bool) -> Result<()> {
        let inner = &self.inner;
        let mut plan = graph.plan(nodes, BATCH_BYTES)?;
        tracing::trace!(target: "taskhost::timeline", "submit planned");
        for b in 0..plan.batches() {
            let message = ClientRequest::Submit(graph.batch(&mut plan, b));
            tracing::trace!(target: "taskhost::timeline", b, "submit batch encoded");
            if inner.state.lock().lost.is_some() {
                return Err(inner.lost_error());
            }
            inner
                .sender
                .send(&message)
                .await
                .map_err(|e| Error::ConnectionLost(e.to_string()))?;
        }
        if !barrier && plan.batches() == 1 {
            return Ok(());
        }
        let keys = graph.keys_of(nodes);
        let reply = {
            let mut st = inner.state.lock();
            // Keys wanted only so that later messages could refer to them are released now,
            // unless some future of this client wants them.
            if plan.batches() > 1 {
                let boundary: Vec<u32> = plan.boundary().collect();
                let release: Vec<TaskKey> = graph
                    .keys_of(&boundary)
                    .into_iter()
                    .filter(|k| !st.keys.contains_key(k))
                    .collect();
                if !release.is_empty() {
                    inner.send_locked(&st, &ClientRequest::Release(release))?;
                }
            }
            inner.send_locked(&st, &ClientRequest::Status)?;
            let (tx, rx) = oneshot::channel();
            st.status.push_back(StatusWaiter::Barrier {
                keys: keys.clone(),
                reply: tx,
                rejected: None,
            });
            rx
        };
        match reply.await {
            Ok(None) => {
                // A rejection that arrived before the barrier was queued failed the keys
                // already (the scheduler can answer that fast on a same-host link).
                let st = inner.state.lock();
                let rejected = keys
                    .iter()
                    .find_map(|k| match st.keys.get(k).map(|e| &e.state) {
                        Some(KeyState::Rejected(reason)) => Some(reason.clone()),
                        _ => None,
                    });
                match rejected {
                    Some(reason) => Err(Error::SubmitRejected { reason }),
                    None => Ok(()),
                }
            }
            Ok(Some(reason)) => Err(Error::SubmitRejected { reason }),
            Err(_) => Err(inner.lost_error()),
        }
    }

    /// Submits a single call at once (a one-call graph), like Dask's `client.submit(f, *args)`.
    /// Its arguments may be other futures.
    ///
    /// ```no_run
    /// # async fn demo(client: taskhost_client::Client, m: taskhost_client::Module) -> taskhost_client::Result<()> {
    /// let a = client.call::<f64>(&m, "add", (1.0, 2.0)).await?;
    /// let b = client.call::<f64>(&m, "add", (&a, 10.0)).await?;
    /// assert_eq!(b.result().await?, 13.0);
    /// # Ok(()) }
    /// ```
    pub async fn call<T>(
        &self,
        module: &Module,
        function: &str,
        args: impl IntoArgs,
    ) -> Result<Future<T>> {
        let g = Graph::new();
        let h = g.call::<T>(module, function, args)?;
        let mut futures = self.submit(&[h]).await?;
        Ok(futures.pop().expect("one future per handle"))
    }

    /// Computes one handle and returns its value (its result is released afterwards).
    ///
    /// ```no_run
    /// # async fn demo(client: taskhost_client::Client, m: taskhost_client::Module) -> taskhost_client::Result<()> {
    /// let g = taskhost_client::Graph::new();
    /// let x = g.call::<f64>(&m, "add", (1.0, 2.0))?;
    /// assert_eq!(client.compute(&x).await?, 3.0);
    /// # Ok(()) }
    /// ```
    pub async fn compute<T: TaskOutput>(&self, handle: &Handle<T>) -> Result<T> {
        let futures = self
            .submit_with(std::slice::from_ref(handle), false)
            .await?;
        futures[0].result().await
    }

    /// Computes several handles in one submission and returns their values in order.
    ///
    /// ```no_run
    /// # async fn demo(client: taskhost_client::Client, m: taskhost_client::Module) -> taskhost_client::Result<()> {
    /// let g = taskhost_client::Graph::new();
    /// let a = g.call::<f64>(&m, "add", (1.0, 2.0))?;
    /// let b = g.call::<f64>(&m, "add", (&a, 1.0))?;
    /// assert_eq!(client.compute_all(&[a, b]).await?, vec![3.0, 4.0]);
    /// # Ok(()) }
    /// ```
    pub async fn compute_all<T: TaskOutput>(&self, handles: &[Handle<T>]) -> Result<Vec<T>> {
        let futures = self.submit_with(handles, false).await?;
        self.gather(&futures).await
    }

    /// Waits for every future and returns their results in order (fetching them concurrently);
    /// the first error is returned.
    ///
    /// ```no_run
    /// # async fn demo(client: taskhost_client::Client, fs: Vec<taskhost_client::Future<f64>>) -> taskhost_client::Result<()> {
    /// let values: Vec<f64> = client.gather(&fs).await?;
    /// # let _ = values; Ok(()) }
    /// ```
    pub async fn gather<T: TaskOutput>(&self, futures: &[Future<T>]) -> Result<Vec<T>> {
        use futures::StreamExt;
        let results: Vec<Result<T>> = futures::stream::iter(futures.iter().map(|f| f.result()))
            .buffered(64)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Waits until every future has finished, successfully or not (no results are fetched).
    ///
    /// ```no_run
    /// # async fn demo(client: taskhost_client::Client, fs: Vec<taskhost_client::Future<f64>>) {
    /// client.wait(&fs).await;
    /// assert!(fs.iter().all(|f| f.done()));
    /// # }
    /// ```
    pub async fn wait<T>(&self, futures: &[Future<T>]) {
        futures::future::join_all(futures.iter().map(|f| f.wait())).await;
    }

    /// Yields the futures as they finish; see [`as_completed`](crate::as_completed).
    ///
    /// ```no_run
    /// # async fn demo(client: taskhost_client::Client, fs: Vec<taskhost_client::Future<f64>>) {
    /// use futures::StreamExt;
    /// let mut stream = client.as_completed(fs);
    /// while let Some(f) = stream.next().await { println!("{:?}", f.status()); }
    /// # }
    /// ```
    pub fn as_completed<T: 'static>(
        &self,
        futures: impl IntoIterator<Item = Future<T>>,
    ) -> impl Stream<Item = Future<T>> + Send + Unpin + 'static {
        crate::future::as_completed(futures)
    }

    /// Cancels the futures' tasks (and whatever only they needed); their waiters fail with a
    /// `Cancelled` task error. Tasks other clients want keep running.
    ///
    /// ```no_run
    /// # async fn demo(client: taskhost_client::Client, fs: Vec<taskhost_client::Future<u64>>) -> taskhost_client::Result<()> {
    /// client.cancel(&fs).await?;
    /// # Ok(()) }
    /// ```
    pub async fn cancel<T>(&self, futures: &[Future<T>]) -> Result<()> {
        let keys: Vec<TaskKey> = futures.iter().map(|f| f.key()).collect();
        self.inner.cancel_keys(&keys)
    }

    /// The cluster's status: workers (their tasks, chunks and memory), task counts, modules.
    ///
    /// ```no_run
    /// # async fn demo(client: taskhost_client::Client) -> taskhost_client::Result<()> {
    /// let status = client.status().await?;
    /// for w in &status.workers { println!("{} holds {} chunks", w.name, w.chunks); }
    /// # Ok(()) }
    /// ```
    pub async fn status(&self) -> Result<ClusterStatus> {
        let inner = &self.inner;
        let rx = {
            let mut st = inner.state.lock();
            inner.send_locked(&st, &ClientRequest::Status)?;
            let (tx, rx) = oneshot::channel();
            st.status.push_back(StatusWaiter::User(tx));
            rx
        };
        rx.await.map_err(|_| inner.lost_error())
    }

    /// A stream of this client's task counts by state, as the scheduler reports them. It
    /// ends when the connection does.
    ///
    /// ```no_run
    /// # async fn demo(client: taskhost_client::Client) {
    /// use futures::StreamExt;
    /// let mut progress = client.progress();
    /// while let Some(c) = progress.next().await {
    ///     println!("{} of {} done", c.memory, c.waiting + c.queued + c.processing + c.memory);
    /// }
    /// # }
    /// ```
    pub fn progress(&self) -> impl Stream<Item = TaskCounts> + Send + Unpin + 'static {
        let rx = self.inner.progress.clone();
        Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            let counts = *rx.borrow_and_update();
            Some((counts, rx))
        }))
    }

    /// The latest task counts the scheduler reported.
    ///
    /// ```no_run
    /// # fn demo(client: taskhost_client::Client) {
    /// println!("{} tasks running", client.counts().processing);
    /// # }
    /// ```
    pub fn counts(&self) -> TaskCounts {
        *self.inner.progress.borrow()
    }

    /// The scheduler's address.
    ///
    /// ```no_run
    /// # fn demo(client: taskhost_client::Client) {
    /// println!("connected to {}", client.scheduler_addr());
    /// # }
    /// ```
    pub fn scheduler_addr(&self) -> SocketAddr {
        self.inner.connection.remote_address()
    }

    /// Whether the connection to the scheduler is still up.
    ///
    /// ```no_run
    /// # fn demo(client: taskhost_client::Client) {
    /// assert!(client.is_connected());
    /// # }
    /// ```
    pub fn is_connected(&self) -> bool {
        self.inner.state.lock().lost.is_none()
    }

    /// Closes the connection now: pending futures fail with
    /// [`Error::ConnectionLost`], and an embedded cluster this client owns is shut down.
    ///
    /// ```no_run
    /// # async fn demo(client: taskhost_client::Client) {
    /// client.close().await;
    /// # }
    /// ```
    pub async fn close(&self) {
        // Deliver queued messages (releases, cancels) first, then tell the scheduler we leave
        // and wait (briefly) until it was told, so a process exiting right after `close`
        // does not leave its results held until the idle timeout.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.inner.sender.flush()).await;
        self.inner.connection.close("client closed");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.inner.endpoint.shutdown()).await;
        self.inner
            .state
            .lock()
            .lose("the client closed the connection".into());
        let cluster = self.inner.cluster.lock().take();
        if let Some(cluster) = cluster {
            cluster.shutdown().await;
        }
    }

    /// Wire messages a submission of `handles` would send (for measurements).
    ///
    /// ```
    /// # use taskhost_client::{Client, Graph, Module};
    /// # let m = Module::from_bytes(b"guest");
    /// let g = Graph::new();
    /// let x = g.call::<f64>(&m, "add", (1.0, 2.0)).unwrap();
    /// let wire = Client::wire_messages(&[x]).unwrap();
    /// assert_eq!(wire.len(), 1);
    /// ```
    pub fn wire_messages<T>(handles: &[Handle<T>]) -> Result<Vec<WireGraph>> {
        let Some(first) = handles.first() else {
            return Ok(Vec::new());
        };
        first.graph.to_wire(handles)
    }
}

/// The ticket named by the environment (see [`Client::connect_env`]): `TASKHOST_TICKET` (a
/// ticket, or the path of a ticket file), else the ticket a scheduler wrote in the data
/// directory `taskhost` uses (`$TASKHOST_DATA_DIR`, else `~/.local/share/taskhost`):
/// `<data-dir>/scheduler/ticket`.
///
/// ```no_run
/// let ticket = taskhost_client::ticket_from_env().expect("TASKHOST_TICKET is set");
/// # let _ = ticket;
/// ```
pub fn ticket_from_env() -> Result<JoinTicket> {
    if let Ok(value) = std::env::var(taskhost_net::TICKET_ENV) {
        let value = value.trim();
        if value.starts_with("taskhost://") {
            return Ok(value.parse()?);
        }
        return Ok(JoinTicket::read(Path::new(value))?);
    }
    let data_dir = match std::env::var_os("TASKHOST_DATA_DIR") {
        Some(dir) => Some(PathBuf::from(dir)),
        None => {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share/taskhost"))
        }
    };
    if let Some(dir) = data_dir {
        for path in [
            dir.join("scheduler").join(taskhost_net::TICKET_FILE),
            dir.join(taskhost_net::TICKET_FILE),
        ] {
            if path.is_file() {
                return Ok(JoinTicket::read(&path)?);
            }
        }
    }
    Err(Error::NoTicket)
}
