//! Transfers: the peer server (chunks and modules for peers and clients), one cached
//! connection per peer, deduplicated chunk fetches from peers and module fetches from the
//! scheduler.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use taskhost_net::{Connection, Listener, NetError, serve_bulk};
use taskhost_proto::{BulkRequest, ModuleId, Role, TaskKey, WorkerReport};
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

use crate::worker::Inner;

/// Largest module accepted from the scheduler.
const MAX_MODULE: usize = 512 << 20;

/// How long a peer asking for a chunk this worker is to compute waits for the `Run` of its
/// task, if it has not arrived (the scheduler sent it first, on another connection).
const UNKNOWN_TASK_GRACE: Duration = Duration::from_secs(1);

/// How long a failed connection attempt to a peer is remembered (and not retried).
const PEER_FAILURE_MEMORY: Duration = Duration::from_secs(2);

/// A fetch in flight, awaited by every task that needs its result.
pub(crate) type Fetch<T> = Shared<BoxFuture<'static, Result<T, String>>>;

/// Runs `fetch` as a task of its own (it completes even if every waiter goes away) and returns
/// a handle any number of waiters can await.
fn spawn_fetch<T, F>(fetch: F) -> Fetch<T>
where
    T: Clone + Send + 'static,
    F: std::future::Future<Output = Result<T, String>> + Send + 'static,
{
    let handle = tokio::spawn(fetch);
    async move {
        handle
            .await
            .unwrap_or_else(|e| Err(format!("the fetch task failed: {e}")))
    }
    .boxed()
    .shared()
}

/// A connection to a peer worker (chunks travel on bulk streams; its control stream only
/// tells when the peer leaves, see [`taskhost_net::Established::bulk_only`]).
pub(crate) struct PeerLink {
    connection: Connection,
}

/// The state of the connection to one peer: being established, established, or failed.
pub(crate) type PeerSlot = Arc<OnceCell<Result<PeerLink, (String, Instant)>>>;

/// Where the bytes of a chunk input come from.
pub(crate) enum ChunkSource {
    /// The local chunk store holds it.
    Local,
    /// It is being fetched from a peer.
    Fetching(Fetch<Bytes>),
}

/// Accepts peer and client connections and serves bulk requests on each until it closes.
pub(crate) fn spawn_peer_server(inner: Arc<Inner>, mut listener: Listener) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(established) = listener.accept().await {
            let connection = established.bulk_only();
            tracing::debug!(
                remote = %connection.remote_address(),
                role = %connection.peer_role(),
                "peer connected"
            );
            let handler_inner = inner.clone();
            // Ends when the peer leaves.
            serve_bulk(connection, move |request: BulkRequest| {
                handler_inner.clone().serve(request)
            });
        }
    })
}

impl Inner {
    /// Answers one bulk request of a peer or client.
    /// `Ok(None)` answers "not found".
    async fn serve(self: Arc<Self>, request: BulkRequest) -> Result<Option<Bytes>, String> {
        match request {
            BulkRequest::Chunk(key) => self.serve_chunk(key, true).await,
            BulkRequest::ChunkWhenComputed(key) => {
                tracing::trace!(target: "taskhost::timeline", w = self.peer_addr.port(), key = %key.short(), "asked");
                let waiting = self.peer_waits_for(key);
                let computed = self.await_computed(key, UNKNOWN_TASK_GRACE).await;
                drop(waiting);
                if computed {
                    tracing::trace!(target: "taskhost::timeline", w = self.peer_addr.port(), key = %key.short(), "answer");
                    self.serve_chunk(key, false).await
                } else {
                    Ok(None)
                }
            }
            BulkRequest::Module(id) => {
                let inner = self.clone();
                match tokio::task::spawn_blocking(move || inner.runtime.modules().get(&id))
                    .await
                    .map_err(|e| format!("internal error: {e}"))?
                {
                    Ok(bytes) => Ok(Some(Bytes::from(bytes))),
                    Err(taskhost_runtime::RuntimeError::UnknownModule(_)) => Ok(None),
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    }

    /// Answers with chunk `key` from the store; `report_missing`: tell the scheduler if the
    /// store lacks it (a peer was told this worker holds it).
    async fn serve_chunk(
        self: Arc<Self>,
        key: TaskKey,
        report_missing: bool,
    ) -> Result<Option<Bytes>, String> {
        // A chunk in memory is answered at once; one spilled to disk is read on a blocking
        // thread (a thread hop costs more than copying a small chunk's handle).
        let resident = {
            let mut store = self.store.lock();
            store.is_resident(&key).then(|| store.get(&key))
        };
        let got = match resident {
            Some(got) => got,
            None => {
                let inner = self.clone();
                tokio::task::spawn_blocking(move || inner.store.lock().get(&key))
                    .await
                    .map_err(|e| format!("internal error: {e}"))?
            }
        };
        match got {
            Ok(Some(bytes)) => {
                self.counters.chunks_served.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .bytes_served
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                Ok(Some(bytes))
            }
            Ok(None) => {
                // If the scheduler thinks this worker holds it, it must learn otherwise (it
                // ignores the report if not).
                if report_missing {
                    self.report(WorkerReport::ChunkLost(key));
                }
                Ok(None)
            }
            Err(e) => {
                self.chunk_lost(key, &e.to_string());
                Err(format!("chunk {} is lost: {e}", key.short()))
            }
        }
    }

    /// Where chunk `key` can be had: the local store, or a (possibly shared) fetch from
    /// `holders` (`pending`: a chunk they are computing, fetched once computed).
    pub(crate) fn chunk_source(
        self: &Arc<Self>,
        key: TaskKey,
        size: u64,
        holders: &[SocketAddr],
        pending: bool,
    ) -> ChunkSource {
        // Lock order: fetches, then the store. A finished fetch puts its chunk in the store
        // before leaving `chunk_fetches`, so one of the two checks always sees it.
        let mut fetches = self.chunk_fetches.lock();
        if let Some(fetch) = fetches.get(&key) {
            return ChunkSource::Fetching(fetch.clone());
        }
        if self.store.lock().contains(&key) {
            return ChunkSource::Local;
        }
        let inner = self.clone();
        let holders = holders.to_vec();
        let fetch =
            spawn_fetch(async move { inner.fetch_chunk(key, size, holders, pending).await });
        fetches.insert(key, fetch.clone());
        ChunkSource::Fetching(fetch)
    }

    /// Fetches chunk `key` from the first holder that has it and keeps it in the store.
    async fn fetch_chunk(
        self: Arc<Self>,
        key: TaskKey,
        size: u64,
        holders: Vec<SocketAddr>,
        pending: bool,
    ) -> Result<Bytes, String> {
        let result = self.fetch_from_holders(key, size, &holders, pending).await;
        if let Ok(bytes) = &result {
            let bytes = bytes.clone();
            // Kept at once when that spills nothing; otherwise on a blocking thread.
            let inline = {
                let mut store = self.store.lock();
                if store.fits_in_memory(bytes.len() as u64) {
                    Ok(store.put(key, bytes))
                } else {
                    Err(bytes)
                }
            };
            let stored = match inline {
                Ok(put) => put.map_err(|e| e.to_string()),
                Err(bytes) => {
                    let inner = self.clone();
                    tokio::task::spawn_blocking(move || inner.store.lock().put(key, bytes))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| e.to_string()))
                }
            };
            if let Err(e) = stored {
                tracing::warn!(key = %key.short(), error = %e, "cannot keep a fetched chunk");
            }
        }
        self.chunk_fetches.lock().remove(&key);
        result
    }

    async fn fetch_from_holders(
        &self,
        key: TaskKey,
        size: u64,
        holders: &[SocketAddr],
        pending: bool,
    ) -> Result<Bytes, String> {
        let request = if pending {
            BulkRequest::ChunkWhenComputed(key)
        } else {
            BulkRequest::Chunk(key)
        };
        let limit = usize::try_from(self.memory_limit.max(size)).unwrap_or(usize::MAX);
        let mut failures = Vec::new();
        for &addr in holders {
            if addr == self.peer_addr {
                continue;
            }
            let connection = match self.peer(addr).await {
                Ok(c) => c,
                Err(e) => {
                    failures.push(format!("{addr}: {e}"));
                    continue;
                }
            };
            let started = Instant::now();
            tracing::trace!(target: "taskhost::timeline", w = self.peer_addr.port(), key = %key.short(), "request");
            match connection.fetch(&request, limit).await {
                Ok(bytes) => {
                    tracing::trace!(target: "taskhost::timeline", w = self.peer_addr.port(), key = %key.short(), "received");
                    self.counters.chunks_fetched.fetch_add(1, Ordering::Relaxed);
                    self.counters
                        .bytes_fetched
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    tracing::debug!(
                        key = %key.short(),
                        from = %addr,
                        bytes = bytes.len(),
                        elapsed = ?started.elapsed(),
                        "fetched a chunk"
                    );
                    return Ok(bytes);
                }
                Err(e) => {
                    tracing::debug!(key = %key.short(), from = %addr, error = %e, "chunk fetch failed");
                    failures.push(format!("{addr}: {e}"));
                }
            }
        }
        if failures.is_empty() {
            Err(format!("no peer holds chunk {}", key.short()))
        } else {
            Err(format!(
                "cannot fetch chunk {}: {}",
                key.short(),
                failures.join("; ")
            ))
        }
    }

    /// The cached connection to the peer at `addr`, connecting if there is none (one attempt
    /// at a time per peer; a failure is remembered for a moment so that many tasks waiting on a
    /// dead peer fail fast).
    async fn peer(&self, addr: SocketAddr) -> Result<Connection, String> {
        for _ in 0..2 {
            let slot: PeerSlot = self.peers.lock().entry(addr).or_default().clone();
            let state = slot
                .get_or_init(|| async {
                    match self
                        .endpoint
                        .connect(addr, &self.peer_credentials, Role::Peer)
                        .await
                    {
                        Ok(established) => {
                            let connection = established.bulk_only();
                            self.counters
                                .peer_connections
                                .fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(peer = %addr, "connected to a peer");
                            Ok(PeerLink { connection })
                        }
                        Err(e) => {
                            tracing::warn!(peer = %addr, error = %e, "cannot connect to a peer");
                            Err((e.to_string(), Instant::now()))
                        }
                    }
                })
                .await;
            match state {
                Ok(link) if link.connection.close_reason().is_none() => {
                    return Ok(link.connection.clone());
                }
                Err((message, at)) if at.elapsed() < PEER_FAILURE_MEMORY => {
                    return Err(message.clone());
                }
                _ => {
                    // Closed or failed long enough ago: forget it and connect again.
                    let mut peers = self.peers.lock();
                    if peers.get(&addr).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                        peers.remove(&addr);
                    }
                }
            }
        }
        Err(format!("cannot keep a connection to {addr}"))
    }

    /// Makes sure the module `id` is in the runtime's store: fetches it from the scheduler
    /// (once, however many tasks wait for it), verifies its hash and validates it.
    pub(crate) async fn ensure_module(self: &Arc<Self>, id: ModuleId) -> Result<(), String> {
        if self.runtime.is_prepared(&id) {
            return Ok(());
        }
        let fetch = {
            let mut fetches = self.module_fetches.lock();
            if let Some(fetch) = fetches.get(&id) {
                fetch.clone()
            } else if self.runtime.modules().contains(&id) {
                return Ok(());
            } else {
                let inner = self.clone();
                let fetch = spawn_fetch(async move { inner.fetch_module(id).await });
                fetches.insert(id, fetch.clone());
                fetch
            }
        };
        fetch.await
    }

    async fn fetch_module(self: Arc<Self>, id: ModuleId) -> Result<(), String> {
        let result = self.fetch_and_store_module(id).await;
        match &result {
            Ok(()) => {
                self.counters
                    .modules_fetched
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(module = %id.short(), "fetched and verified a module");
            }
            Err(e) => tracing::warn!(module = %id.short(), error = %e, "module rejected"),
        }
        self.module_fetches.lock().remove(&id);
        result
    }

    async fn fetch_and_store_module(self: &Arc<Self>, id: ModuleId) -> Result<(), String> {
        let bytes = self
            .scheduler
            .fetch(&BulkRequest::Module(id), MAX_MODULE)
            .await
            .map_err(|e: NetError| format!("cannot fetch module {}: {e}", id.short()))?;
        let inner = self.clone();
        tokio::task::spawn_blocking(move || {
            inner.runtime.put_with_id(&id, &bytes)?;
            // Compile now, before the task takes a slot.
            inner.runtime.prepare(&id)
        })
        .await
        .map_err(|e| format!("internal error: {e}"))?
        .map_err(|e| format!("module {} rejected: {e}", id.short()))
    }
}
