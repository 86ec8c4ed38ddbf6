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
    /// Defaults: a 10 s heartbeat timeout and the core's default policies.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            advertise: Vec::new(),
            heartbeat_timeout: Duration::from_secs(10),
            core: CoreConfig::default(),
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
}

/// A running scheduler.
pub struct SchedulerHandle {
    addr: SocketAddr,
    ticket: JoinTicket,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
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
        let _ = (&mut self.task).await;
    }

    /// Waits until the scheduler stops.
    pub async fn wait(&mut self) {
        let _ = (&mut self.task).await;
    }
}

impl Drop for SchedulerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the scheduler on the current tokio runtime and returns once it listens.
pub async fn start(config: SchedulerConfig) -> Result<SchedulerHandle, SchedulerError> {
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

    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    let daemon = Daemon::new(
        config.core.clone(),
        modules.clone(),
        config.heartbeat_timeout,
    );
    let task = tokio::spawn(async move {
        let acceptor = tokio::spawn(conn::accept_loop(listener, events_tx, modules));
        run_loop(daemon, events_rx, stop_rx).await;
        acceptor.abort();
    });
    tracing::info!(%addr, "scheduler listening");
    Ok(SchedulerHandle {
        addr,
        ticket,
        stop: Some(stop_tx),
        task,
    })
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
            _ = &mut stop => {
                daemon.shutdown("the scheduler is shutting down");
                // Give the control streams a moment to carry the notice.
                tokio::time::sleep(Duration::from_millis(50)).await;
                daemon.close_connections("the scheduler is shutting down");
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
