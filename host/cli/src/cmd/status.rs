//! `taskhost status`: the cluster's workers and tasks.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use taskhost_net::JoinTicket;
use taskhost_proto::{ClusterStatus, TaskCounts};

use crate::cmd::GlobalArgs;
use crate::cmd::cluster::{TicketArgs, block_on, stop_signal};

/// Options of `taskhost status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    ticket: TicketArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Keep watching: a live progress bar of the cluster's tasks (one line per refresh when
    /// stderr is not a terminal, or with --json one JSON object per line) until Ctrl-C.
    #[arg(long)]
    watch: bool,
    /// Refresh period of --watch, in milliseconds.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(50..))]
    interval_ms: u64,
}

/// Prints the status (once, or continuously with `--watch`).
pub fn run(global: &GlobalArgs, args: StatusArgs) -> anyhow::Result<()> {
    let ticket = args.ticket.resolve(global)?;
    if args.watch {
        return block_on(watch(
            ticket,
            args.json,
            Duration::from_millis(args.interval_ms),
        ))?;
    }
    let status = block_on(async move {
        let client = taskhost_client::Client::connect(&ticket)
            .await
            .context("connecting to the scheduler")?;
        let status = client.status().await.context("asking for the status")?;
        client.close().await;
        anyhow::Ok(status)
    })??;
    if args.json {
        println!("{}", status_json(&status));
        return Ok(());
    }
    print_table(&status);
    Ok(())
}

/// The status as one JSON object.
fn status_json(status: &ClusterStatus) -> serde_json::Value {
    let workers: Vec<serde_json::Value> = status
        .workers
        .iter()
        .map(|w| {
            serde_json::json!({
                "name": w.name, "peer_addr": w.peer_addr.to_string(), "slots": w.slots,
                "tasks": w.tasks, "chunks": w.chunks, "memory_used": w.memory_used,
                "memory_limit": w.memory_limit, "paused": w.paused,
            })
        })
        .collect();
    let t = status.tasks;
    serde_json::json!({
        "workers": workers,
        "tasks": {"waiting": t.waiting, "queued": t.queued, "processing": t.processing,
                  "memory": t.memory, "erred": t.erred, "released": t.released},
        "modules": status.modules,
    })
}

/// The status as a table of workers and a line of task counts.
fn print_table(status: &ClusterStatus) {
    println!(
        "{} worker(s), {} module(s)",
        status.workers.len(),
        status.modules
    );
    println!(
        "{:<28} {:<22} {:>5} {:>6} {:>7} {:>12} {:>12} {:>6}",
        "worker", "peer address", "slots", "tasks", "chunks", "memory", "limit", "paused"
    );
    for w in &status.workers {
        println!(
            "{:<28} {:<22} {:>5} {:>6} {:>7} {:>12} {:>12} {:>6}",
            w.name,
            w.peer_addr,
            w.slots,
            w.tasks,
            w.chunks,
            w.memory_used,
            w.memory_limit,
            if w.paused { "yes" } else { "no" }
        );
    }
    let t = status.tasks;
    println!(
        "tasks: {} waiting, {} queued, {} processing, {} in memory, {} erred, {} released",
        t.waiting, t.queued, t.processing, t.memory, t.erred, t.released
    );
}

/// Finished and total tasks (those in memory or erred, and those plus the ones still to run).
fn totals(t: &TaskCounts) -> (u64, u64) {
    let done = t.memory + t.erred;
    (done, done + t.waiting + t.queued + t.processing)
}

/// One line summing up the cluster.
fn summary(status: &ClusterStatus) -> String {
    let t = &status.tasks;
    let memory: u64 = status.workers.iter().map(|w| w.memory_used).sum();
    let slots: u32 = status.workers.iter().map(|w| w.slots).sum();
    format!(
        "{} worker(s), {} slot(s), {} running, {} waiting, {} queued, {} erred, {:.1} MiB held",
        status.workers.len(),
        slots,
        t.processing,
        t.waiting,
        t.queued,
        t.erred,
        memory as f64 / (1u64 << 20) as f64
    )
}

/// Polls the scheduler every `interval` and shows the cluster's progress until Ctrl-C (or
/// SIGTERM); a lost connection is an error.
async fn watch(ticket: JoinTicket, json: bool, interval: Duration) -> anyhow::Result<()> {
    let client = taskhost_client::Client::connect(&ticket)
        .await
        .context("connecting to the scheduler")?;
    let live = !json && std::io::stderr().is_terminal();
    let bar = live.then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} tasks\n{msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let stop = stop_signal();
    tokio::pin!(stop);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let outcome = loop {
        tokio::select! {
            _ = &mut stop => break Ok(()),
            _ = ticker.tick() => {}
        }
        let status = match client.status().await {
            Ok(status) => status,
            Err(e) => break Err(anyhow::Error::new(e).context("asking for the status")),
        };
        let (done, total) = totals(&status.tasks);
        match &bar {
            Some(bar) => {
                bar.set_length(total);
                bar.set_position(done);
                bar.set_message(summary(&status));
            }
            None if json => println!("{}", status_json(&status)),
            None => println!("{done}/{total} tasks done; {}", summary(&status)),
        }
    };
    if let Some(bar) = bar {
        bar.finish();
    }
    client.close().await;
    outcome
}
