//! `taskhost scheduler`: run the scheduler daemon.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use taskhost_scheduler::{DEFAULT_PORT, SchedulerConfig};

use crate::cmd::GlobalArgs;
use crate::cmd::cluster::{block_on, scheduler_dir, stop_signal};
use crate::util::parse_duration;

/// Options of `taskhost scheduler`.
#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Address to listen on (QUIC over UDP).
    #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)))]
    listen: SocketAddr,
    /// Address (`host:port`) to put in the join ticket; repeat for several. Derived from the
    /// listen address when not given.
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Vec<String>,
    /// Declare a worker dead after this long without a heartbeat.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    heartbeat_timeout: Duration,
    /// Send a task to its worker only once its inputs are computed (by default a task whose
    /// inputs are being computed is sent ahead, and starts as soon as they exist).
    #[arg(long)]
    no_early_dispatch: bool,
}

/// Runs the scheduler until Ctrl-C or SIGTERM.
pub fn run(global: &GlobalArgs, args: SchedulerArgs) -> anyhow::Result<()> {
    let dir = scheduler_dir(global)?;
    let mut config = SchedulerConfig::new(args.listen, dir.clone());
    config.advertise = args.advertise;
    config.heartbeat_timeout = args.heartbeat_timeout;
    config.core.early_dispatch = !args.no_early_dispatch;
    block_on(async move {
        let handle = taskhost_scheduler::start(config)
            .await
            .with_context(|| format!("starting the scheduler on {}", args.listen))?;
        let ticket = handle.ticket().to_string();
        println!(
            "taskhost scheduler listening on {} (data in {})",
            handle.addr(),
            dir.display()
        );
        println!("Join a worker with:");
        println!("  taskhost worker --ticket '{ticket}'");
        println!("or set TASKHOST_TICKET='{ticket}' for workers and clients.");
        println!("The ticket is a secret: anyone holding it can join and submit work.");
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        stop_signal().await;
        eprintln!("shutting down");
        handle.shutdown().await;
        Ok(())
    })?
}
