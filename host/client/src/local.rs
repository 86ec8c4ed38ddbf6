//! An embedded cluster: the scheduler and workers of the `taskhost` daemons, started inside
//! this process, so that a program needs no running cluster.

use std::net::{Ipv4Addr, SocketAddr};

use futures::future::BoxFuture;
use taskhost_net::JoinTicket;
use taskhost_scheduler::{SchedulerConfig, SchedulerHandle};
use taskhost_worker::{WorkerConfig, WorkerHandle};

pub use taskhost_worker::WorkerStats;

use crate::client::{Client, ClientOptions, OwnedCluster};
use crate::error::{Error, Result};

/// Settings of a [`LocalCluster`]; start it with [`start`](Self::start) or
/// [`client`](Self::client).
///
/// ```no_run
/// # async fn demo() -> taskhost_client::Result<()> {
/// let cluster = taskhost_client::LocalCluster::builder().workers(2).slots(1).start().await?;
/// let client = cluster.client().await?;
/// # let _ = client; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct LocalClusterBuilder {
    workers: usize,
    slots: Option<u32>,
    memory_limit: Option<u64>,
    early_dispatch: bool,
    pin_workers: bool,
    options: ClientOptions,
}

impl LocalClusterBuilder {
    /// How many workers (default 1).
    ///
    /// ```
    /// let b = taskhost_client::LocalCluster::builder().workers(2);
    /// # let _ = b;
    /// ```
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Execution slots per worker (default: one per CPU core, divided among the workers).
    ///
    /// ```
    /// let b = taskhost_client::LocalCluster::builder().slots(4);
    /// # let _ = b;
    /// ```
    pub fn slots(mut self, slots: u32) -> Self {
        self.slots = Some(slots);
        self
    }

    /// Memory for chunks per worker, in bytes (default: the worker's default).
    ///
    /// ```
    /// let b = taskhost_client::LocalCluster::builder().memory_limit(1 << 30);
    /// # let _ = b;
    /// ```
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// Whether the scheduler sends a task to its worker before its inputs are computed, to
    /// start as soon as they exist (default: yes; see the scheduler core's `early_dispatch`).
    ///
    /// ```
    /// let b = taskhost_client::LocalCluster::builder().early_dispatch(false);
    /// # let _ = b;
    /// ```
    pub fn early_dispatch(mut self, on: bool) -> Self {
        self.early_dispatch = on;
        self
    }

    /// Whether each worker's threads are kept on CPUs of their own (default: no). It applies
    /// when there are two workers or more and a CPU for every slot of every worker (see
    /// [`taskhost_worker::cpu_sets`]); otherwise the OS places the threads as usual. Kept
    /// apart, a worker's thread is not woken behind another worker's running task, which
    /// cut the time a chunk takes between two workers on a 2-CPU machine (`docs/worker.md`);
    /// but a worker cannot move away from a CPU that another program keeps busy.
    ///
    /// ```
    /// let b = taskhost_client::LocalCluster::builder().pin_workers(true);
    /// # let _ = b;
    /// ```
    pub fn pin_workers(mut self, on: bool) -> Self {
        self.pin_workers = on;
        self
    }

    /// Options of the clients [`client`](Self::client) and [`LocalCluster::client`] connect.
    ///
    /// ```
    /// let b = taskhost_client::LocalCluster::builder()
    ///     .client_options(taskhost_client::ClientOptions::new().describe_modules(false));
    /// # let _ = b;
    /// ```
    pub fn client_options(mut self, options: ClientOptions) -> Self {
        self.options = options;
        self
    }

    /// Starts the scheduler and the workers (on the current tokio runtime, which should be
    /// multi-threaded) and returns once every worker has registered.
    ///
    /// ```no_run
    /// # async fn demo() -> taskhost_client::Result<()> {
    /// let cluster = taskhost_client::LocalCluster::builder().start().await?;
    /// println!("ticket: {}", cluster.ticket());
    /// # Ok(()) }
    /// ```
    pub async fn start(self) -> Result<LocalCluster> {
        let dir = tempfile::Builder::new()
            .prefix("taskhost-local-")
            .tempdir()
            .map_err(|e| Error::LocalCluster(format!("cannot create a data directory: {e}")))?;
        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let mut config = SchedulerConfig::new(listen, dir.path().join("scheduler"));
        config.core.early_dispatch = self.early_dispatch;
        let scheduler = taskhost_scheduler::start(config)
            .await
            .map_err(|e| Error::LocalCluster(format!("cannot start the scheduler: {e}")))?;
        let ticket = scheduler.ticket().clone();
        let cpus = taskhost_worker::allowed_cpus();
        let workers_n = self.workers.max(1);
        let slots = self
            .slots
            .unwrap_or_else(|| (cpus.len() as u32 / workers_n as u32).max(1));
        let cpu_sets = self
            .pin_workers
            .then(|| taskhost_worker::cpu_sets(&cpus, workers_n, slots))
            .flatten();
        let mut cluster = LocalCluster {
            workers: Vec::with_capacity(workers_n),
            scheduler: Some(scheduler),
            ticket,
            options: self.options,
            dir,
        };
        for i in 0..workers_n {
            let mut config = WorkerConfig::new(
                cluster.ticket.clone(),
                cluster.dir.path().join(format!("worker-{i}")),
            );
            config.name = Some(format!("local-{i}"));
            config.slots = slots;
            config.listen = listen;
            if let Some(sets) = &cpu_sets {
                config.cpus = sets[i].clone();
            }
            if let Some(limit) = self.memory_limit {
                config.memory_limit = limit;
            }
            let worker = taskhost_worker::start(config)
                .await
                .map_err(|e| Error::LocalCluster(format!("cannot start worker {i}: {e}")))?;
            cluster.workers.push(worker);
        }
        Ok(cluster)
    }

    /// Starts the cluster and connects a client that owns it: the cluster stops when the last
    /// clone of the client (and of its futures) is dropped.
    ///
    /// ```no_run
    /// # async fn demo() -> taskhost_client::Result<()> {
    /// let client = taskhost_client::LocalCluster::builder().workers(2).client().await?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub async fn client(self) -> Result<Client> {
        let cluster = self.start().await?;
        let client = cluster.client().await?;
        *client.inner.cluster.lock() = Some(Box::new(cluster));
        Ok(client)
    }
}

/// A scheduler and workers running inside this process, with their data in a temporary
/// directory removed when the cluster is dropped. It runs the very code of the `taskhost
/// scheduler` and `taskhost worker` daemons, over QUIC on the loopback interface.
///
/// ```no_run
/// # async fn demo() -> taskhost_client::Result<()> {
/// use taskhost_client::LocalCluster;
/// let cluster = LocalCluster::builder().workers(2).slots(1).start().await?;
/// let client = cluster.client().await?;
/// // ... use the client ...
/// drop(client);
/// cluster.shutdown().await;
/// # Ok(()) }
/// ```
pub struct LocalCluster {
    // Workers first: they stop before the scheduler does.
    workers: Vec<WorkerHandle>,
    scheduler: Option<SchedulerHandle>,
    ticket: JoinTicket,
    options: ClientOptions,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for LocalCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCluster")
            .field("scheduler", &self.scheduler_addr())
            .field("workers", &self.worker_addrs())
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl LocalCluster {
    /// Settings for a local cluster (one worker with a slot per core by default).
    ///
    /// ```
    /// let b = taskhost_client::LocalCluster::builder();
    /// # let _ = b;
    /// ```
    pub fn builder() -> LocalClusterBuilder {
        LocalClusterBuilder {
            workers: 1,
            slots: None,
            memory_limit: None,
            early_dispatch: true,
            pin_workers: false,
            options: ClientOptions::default(),
        }
    }

    /// The ticket clients (also in other processes) and extra workers join with.
    ///
    /// ```no_run
    /// # async fn demo(cluster: taskhost_client::LocalCluster) {
    /// println!("TASKHOST_TICKET={}", cluster.ticket());
    /// # }
    /// ```
    pub fn ticket(&self) -> &JoinTicket {
        &self.ticket
    }

    /// The scheduler's address.
    ///
    /// ```no_run
    /// # fn demo(cluster: taskhost_client::LocalCluster) {
    /// println!("{:?}", cluster.scheduler_addr());
    /// # }
    /// ```
    pub fn scheduler_addr(&self) -> Option<SocketAddr> {
        self.scheduler.as_ref().map(SchedulerHandle::addr)
    }

    /// The workers' peer addresses.
    ///
    /// ```no_run
    /// # fn demo(cluster: taskhost_client::LocalCluster) {
    /// assert_eq!(cluster.worker_addrs().len(), 1);
    /// # }
    /// ```
    pub fn worker_addrs(&self) -> Vec<SocketAddr> {
        self.workers.iter().map(WorkerHandle::peer_addr).collect()
    }

    /// What each worker has done and holds now (tasks run, chunks and bytes held...).
    ///
    /// ```no_run
    /// # fn demo(cluster: taskhost_client::LocalCluster) {
    /// let chunks: u64 = cluster.worker_stats().iter().map(|s| s.chunks).sum();
    /// # let _ = chunks;
    /// # }
    /// ```
    pub fn worker_stats(&self) -> Vec<WorkerStats> {
        self.workers.iter().map(WorkerHandle::stats).collect()
    }

    /// Connects a new client to this cluster.
    ///
    /// ```no_run
    /// # async fn demo(cluster: taskhost_client::LocalCluster) -> taskhost_client::Result<()> {
    /// let a = cluster.client().await?;
    /// let b = cluster.client().await?; // a second client shares the cluster and its tasks
    /// # let _ = (a, b); Ok(()) }
    /// ```
    pub async fn client(&self) -> Result<Client> {
        self.options.clone().connect(&self.ticket).await
    }

    /// Stops worker `index` (as if its process ended); its chunks are lost.
    ///
    /// ```no_run
    /// # async fn demo(mut cluster: taskhost_client::LocalCluster) {
    /// cluster.stop_worker(0).await;
    /// # }
    /// ```
    pub async fn stop_worker(&mut self, index: usize) {
        if index < self.workers.len() {
            self.workers.remove(index).shutdown().await;
        }
    }

    /// Stops the workers, then the scheduler, and removes the data directory.
    ///
    /// ```no_run
    /// # async fn demo(cluster: taskhost_client::LocalCluster) {
    /// cluster.shutdown().await;
    /// # }
    /// ```
    pub async fn shutdown(mut self) {
        for w in self.workers.drain(..) {
            w.shutdown().await;
        }
        if let Some(s) = self.scheduler.take() {
            s.shutdown().await;
        }
    }
}

impl OwnedCluster for LocalCluster {
    fn shutdown(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(LocalCluster::shutdown(*self))
    }
}

impl Client {
    /// Starts an embedded local cluster (one worker, a slot per core) and connects to it; the
    /// cluster lives as long as the client.
    ///
    /// ```no_run
    /// # async fn demo() -> taskhost_client::Result<()> {
    /// let client = taskhost_client::Client::local().await?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub async fn local() -> Result<Client> {
        LocalCluster::builder().client().await
    }
}
