//! The taskhost scheduler daemon.
//!
//! One tokio task owns the [scheduler core](taskhost_scheduler_core) and is the only place that
//! makes decisions. Connection tasks (one per client or worker, see `conn.rs`) turn frames into
//! events on one channel; the loop applies every pending event, then turns all of the core's
//! outputs into messages, so one flush of a worker's control stream carries many decisions.
//! Timers come from the core's `poll_timeout`; a tick checks heartbeats and sends progress.
//!
//! On first start the scheduler creates the cluster identity (CA, certificate, token) in its
//! data directory and writes the join ticket there; workers and clients need that ticket.
//!
//! ```no_run
//! # async fn demo() -> Result<(), taskhost_scheduler::SchedulerError> {
//! use taskhost_scheduler::{SchedulerConfig, start};
//!
//! let handle = start(SchedulerConfig::new("127.0.0.1:8786".parse().unwrap(), "/tmp/th".into())).await?;
//! println!("join with: taskhost worker --ticket {}", handle.ticket());
//! handle.shutdown().await;
//! # Ok(()) }
//! ```

mod conn;
mod daemon;
mod literals;
pub mod modules;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use taskhost_net::{
    ClusterIdentity, JoinTicket, Listener, ListenerConfig, NetError, TransportSettings,
};
use tokio::sync::{mpsc, oneshot};

use crate::daemon::{Daemon, Event};
use crate::modules::{ModuleStore, ModuleStoreError};

pub use taskhost_scheduler_core::Config as CoreConfig;

/// The port the scheduler listens on by default (Dask's).
pub const DEFAULT_PORT: u16 = 8786;

/// Ready root tasks the daemon hands each worker per slot (the core's `root_saturation`; the
/// rest wait in the scheduler).
///
/// Deeper than the core's default (1.1, Dask's) because a worker with one task per slot idles for
/// a whole round trip to the scheduler after each task: with tasks of tens of microseconds that
/// round trip, not the work, sets the pace (and every task costs a wake-up and a packet each
/// way). With more queued, commands and reports travel in batches. Workers run their queued
/// tasks in the scheduler's priority order, and idle workers steal queued tasks from busy ones,
/// so a deeper queue costs little balance for long tasks.
pub const DEFAULT_ROOT_SATURATION: f64 = 32.0;

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Address to listen on (QUIC, UDP).
    pub listen: SocketAddr,
    /// Where the cluster identity, the ticket and the modules are kept.
    pub data_dir: PathBuf,
    /// Addresses (`host:port`) written into the join ticket; derived from `listen` when empty.
    pub advertise: Vec<String>,
    /// A worker not heard from for this long is declared dead.
    pub heartbeat_timeout: Duration,
    /// Scheduling policy settings.
    pub core: CoreConfig,
    /// QUIC transport settings.
    pub transport: TransportSettings,
}

impl SchedulerConfig {
    /// Defaults: a 10 s heartbeat timeout and the core's default policies, except a root
    /// saturation of [`DEFAULT_ROOT_SATURATION`].
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            advertise: Vec::new(),
            heartbeat_timeout: Duration::from_secs(10),
            core: CoreConfig {
                root_saturation: DEFAULT_ROOT_SATURATION,
                ..CoreConfig::default()
            },
            transport: TransportSettings::default(),
        }
    }
}

/// Why the scheduler could not start.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The identity could not be created or loaded, or the listener could not bind.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The module store could not be opened.
    #[error(transparent)]
    Modules(#[from] ModuleStoreError),
    /// The scheduler's thread or its async runtime could not be started.
    #[error("cannot start the scheduler's thread: {0}")]
    Runtime(std::io::Error),
}

/// A running scheduler.
pub struct SchedulerHandle {
    addr: SocketAddr,
    ticket: JoinTicket,
    /// `Ok(())` sent: stop gracefully; dropped: stop at once.
    stop: Option<oneshot::Sender<()>>,
    /// Fires when the scheduler's thread has stopped.
    done: Option<oneshot::Receiver<()>>,
}

impl SchedulerHandle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The ticket workers and clients join with.
    pub fn ticket(&self) -> &JoinTicket {
        &self.ticket
    }

    /// Tells workers to stop, then stops the scheduler.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.wait().await;
    }

    /// Waits until the scheduler stops.
    pub async fn wait(&mut self) {
        if let Some(done) = self.done.as_mut() {
            let _ = done.await;
            self.done = None;
        }
    }
}

impl Drop for SchedulerHandle {
    fn drop(&mut self) {
        // Dropping the stop sender unsent makes the scheduler stop at once.
        self.stop.take();
    }
}

/// Starts the scheduler and returns once it listens.
///
/// The scheduler runs on a thread of its own with a single-threaded tokio runtime: its event
/// loop, connection tasks and QUIC drivers then hand work to each other without cross-thread
/// wake-ups, which cost more than the scheduling itself for small tasks. Call from within a
/// tokio runtime (any flavour).
pub async fn start(config: SchedulerConfig) -> Result<SchedulerHandle, SchedulerError> {
    let (ready_tx, ready_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    taskhost_net::spawn_runtime_thread("taskhost-scheduler", move |runtime| {
        let runtime = match runtime {
            Ok(runtime) => runtime,
            Err(err) => {
                let _ = ready_tx.send(Err(SchedulerError::Runtime(err)));
                return;
            }
        };
        runtime.block_on(serve(config, ready_tx, stop_rx));
        drop(runtime);
        let _ = done_tx.send(());
    })
    .map_err(SchedulerError::Runtime)?;
    let (addr, ticket) = match ready_rx.await {
        Ok(ready) => ready?,
        Err(_) => {
            return Err(SchedulerError::Runtime(std::io::Error::other(
                "the scheduler thread stopped during start-up",
            )));
        }
    };
    tracing::info!(%addr, "scheduler listening");
    Ok(SchedulerHandle {
        addr,
        ticket,
        stop: Some(stop_tx),
        done: Some(done_rx),
    })
}

type Ready = Result<(SocketAddr, JoinTicket), SchedulerError>;

/// Binds, reports the address (or why not) through `ready`, then runs until `stop`.
async fn serve(
    config: SchedulerConfig,
    ready: oneshot::Sender<Ready>,
    stop: oneshot::Receiver<()>,
) {
    let (listener, daemon, modules, addr, ticket) = match bind(&config).await {
        Ok(bound) => bound,
        Err(err) => {
            let _ = ready.send(Err(err));
            return;
        }
    };
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let acceptor = tokio::spawn(conn::accept_loop(listener, events_tx, modules));
    if ready.send(Ok((addr, ticket))).is_err() {
        acceptor.abort();
        return;
    }
    run_loop(daemon, events_rx, stop).await;
    acceptor.abort();
}

type Bound = (Listener, Daemon, Arc<ModuleStore>, SocketAddr, JoinTicket);

/// Loads the identity, opens the module store, binds the listener and writes the ticket.
async fn bind(config: &SchedulerConfig) -> Result<Bound, SchedulerError> {
    let (identity, created) = ClusterIdentity::load_or_create(&config.data_dir)?;
    if created {
        tracing::info!(dir = %config.data_dir.display(), "created a new cluster identity");
    }
    let modules = Arc::new(ModuleStore::open(&config.data_dir)?);
    let mut listener_config = ListenerConfig::scheduler(&identity);
    listener_config.transport = config.transport.clone();
    let listener = Listener::bind(config.listen, listener_config).await?;
    let addr = listener.local_addr()?;
    let advertise = if config.advertise.is_empty() {
        advertised_addresses(addr)
    } else {
        config.advertise.clone()
    };
    let ticket = identity.ticket(advertise);
    identity.write_ticket(&ticket)?;
    let daemon = Daemon::new(
        config.core.clone(),
        modules.clone(),
        config.heartbeat_timeout,
    );
    Ok((listener, daemon, modules, addr, ticket))
}

/// The scheduler's one loop: apply events in batches, run timers, flush outputs.
async fn run_loop(
    mut daemon: Daemon,
    mut events: mpsc::UnboundedReceiver<Event>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let timeout = daemon.next_timeout();
        tokio::select! {
            biased;
            stopped = &mut stop => {
                if stopped.is_ok() {
                    daemon.shutdown("the scheduler is shutting down");
                    // Give the control streams a moment to carry the notice.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                daemon.close_connections("the scheduler is shutting down");
                // Let the QUIC drivers send the close frames.
                tokio::time::sleep(Duration::from_millis(10)).await;
                break;
            }
            event = events.recv() => {
                let Some(event) = event else { break };
                daemon.handle(event);
                for _ in 0..10_000 {
                    match events.try_recv() {
                        Ok(event) => daemon.handle(event),
                        Err(_) => break,
                    }
                }
            }
            _ = sleep_until(timeout), if timeout.is_some() => daemon.handle_timeout(),
            _ = tick.tick() => {
                daemon.check_heartbeats();
                daemon.send_progress();
            }
        }
        daemon.flush_outputs();
    }
}

async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The addresses to put in the ticket for a listener bound to `addr`.
fn advertised_addresses(addr: SocketAddr) -> Vec<String> {
    if !addr.ip().is_unspecified() {
        return vec![addr.to_string()];
    }
    let mut addrs = Vec::new();
    // The address this host would use to reach others (no packet is sent).
    if let Ok(socket) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        && socket
            .connect((Ipv4Addr::new(10, 255, 255, 255), 9))
            .is_ok()
        && let Ok(local) = socket.local_addr()
        && !local.ip().is_unspecified()
        && !local.ip().is_loopback()
    {
        addrs.push(SocketAddr::new(local.ip(), addr.port()).to_string());
    }
    addrs.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port()).to_string());
    addrs
}
