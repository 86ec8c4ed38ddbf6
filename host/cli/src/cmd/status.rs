//! `taskhost status`: the cluster's workers and tasks.

use anyhow::Context;
use clap::Args;

use crate::cmd::GlobalArgs;
use crate::cmd::cluster::{TicketArgs, block_on};

/// Options of `taskhost status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    ticket: TicketArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Prints the status.
pub fn run(global: &GlobalArgs, args: StatusArgs) -> anyhow::Result<()> {
    let ticket = args.ticket.resolve(global)?;
    let status = block_on(async move {
        let client = taskhost_client::Client::connect(&ticket)
            .await
            .context("connecting to the scheduler")?;
        let status = client.status().await.context("asking for the status")?;
        client.close().await;
        anyhow::Ok(status)
    })??;
    if args.json {
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
        let json = serde_json::json!({
            "workers": workers,
            "tasks": {"waiting": t.waiting, "queued": t.queued, "processing": t.processing,
                      "memory": t.memory, "erred": t.erred, "released": t.released},
            "modules": status.modules,
        });
        println!("{json}");
        return Ok(());
    }
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
    Ok(())
}
