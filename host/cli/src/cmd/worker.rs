//! `taskhost worker`: run a worker daemon that joins a scheduler.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use taskhost_worker::WorkerConfig;

use crate::cmd::GlobalArgs;
use crate::cmd::cluster::{TicketArgs, block_on, stop_signal};
use crate::util::{parse_duration, parse_size};

/// Options of `taskhost worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The join ticket (same as --ticket).
    #[arg(value_name = "TICKET", conflicts_with_all = ["ticket", "ticket_file"])]
    positional_ticket: Option<String>,
    #[command(flatten)]
    ticket: TicketArgs,
    /// Execution slots (tasks run at once) [default: one per CPU].
    #[arg(long)]
    slots: Option<u32>,
    /// Memory for chunks, such as `4GiB`; the least recently used are spilled to disk above 70%
    /// of it [default: half of the machine's RAM].
    #[arg(long, value_parser = parse_size)]
    memory_limit: Option<u64>,
    /// The name to register under [default: host name and peer port].
    #[arg(long)]
    name: Option<String>,
    /// Where the peer server (chunks for other workers and clients) listens.
    #[arg(long, default_value = "0.0.0.0:0")]
    listen: SocketAddr,
    /// The address other workers reach this one at [default: the address used to reach the
    /// scheduler].
    #[arg(long)]
    advertise_host: Option<IpAddr>,
    /// The worker's own data directory (modules, compiled artifacts, spilled chunks); two
    /// workers must not share one [default: <data-dir>/worker-<name or process id>].
    #[arg(long = "worker-dir", value_name = "DIR")]
    worker_dir: Option<PathBuf>,
    /// Default wall-clock limit of a task.
    #[arg(long, value_parser = parse_duration)]
    task_timeout: Option<std::time::Duration>,
    /// Default memory cap of a task, such as `256MiB`.
    #[arg(long, value_parser = parse_size)]
    task_memory: Option<u64>,
    /// Keep the worker's threads on these CPUs, such as `2,3` (workers sharing a host should
    /// each get their own, one per slot) [default: wherever the OS puts them].
    #[arg(long, value_delimiter = ',', value_name = "CPU,...")]
    cpus: Vec<usize>,
}

/// Runs the worker until Ctrl-C, SIGTERM, or the scheduler goes away.
pub fn run(global: &GlobalArgs, args: WorkerArgs) -> anyhow::Result<()> {
    let ticket = match &args.positional_ticket {
        Some(text) => text.parse().context("parsing the ticket")?,
        None => args.ticket.resolve(global)?,
    };
    let dir = match &args.worker_dir {
        Some(dir) => dir.clone(),
        None => {
            let suffix = args
                .name
                .clone()
                .unwrap_or_else(|| std::process::id().to_string());
            global.data_dir()?.join(format!("worker-{suffix}"))
        }
    };
    let mut config = WorkerConfig::new(ticket, dir.clone());
    if let Some(slots) = args.slots {
        anyhow::ensure!(slots > 0, "--slots must be at least 1");
        config.slots = slots;
    }
    if let Some(limit) = args.memory_limit {
        config.memory_limit = limit;
    }
    config.name = args.name;
    config.listen = args.listen;
    config.advertise_host = args.advertise_host;
    if let Some(timeout) = args.task_timeout {
        config.default_limits.timeout = timeout;
    }
    if let Some(memory) = args.task_memory {
        config.default_limits.memory = memory;
    }
    let allowed = taskhost_worker::allowed_cpus();
    if let Some(cpu) = args.cpus.iter().find(|c| !allowed.contains(c)) {
        anyhow::bail!("--cpus: CPU {cpu} is not one this process may use ({allowed:?})");
    }
    config.cpus = args.cpus;
    block_on(async move {
        let mut handle = taskhost_worker::start(config)
            .await
            .context("joining the cluster")?;
        println!(
            "taskhost worker {} joined; serving peers on {} (data in {})",
            handle.worker_id(),
            handle.peer_addr(),
            dir.display()
        );
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        tokio::select! {
            _ = stop_signal() => {
                eprintln!("shutting down");
                handle.shutdown().await;
                Ok(())
            }
            result = handle.wait() => result.context("the worker stopped"),
        }
    })?
}
