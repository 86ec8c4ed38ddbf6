//! What the cluster subcommands share: finding the join ticket and running async code.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use taskhost_net::{JoinTicket, TICKET_ENV, TICKET_FILE};

use crate::cmd::GlobalArgs;

/// How to find the cluster: a ticket given, in the environment, or the local scheduler's file.
#[derive(Debug, Args)]
pub struct TicketArgs {
    /// The join ticket the scheduler printed (`taskhost://...`) [default: $TASKHOST_TICKET, else
    /// the ticket file of a scheduler using the same data directory].
    #[arg(long, value_name = "TICKET")]
    pub ticket: Option<String>,
    /// Read the join ticket from this file.
    #[arg(long, value_name = "FILE", conflicts_with = "ticket")]
    pub ticket_file: Option<PathBuf>,
}

impl TicketArgs {
    /// The ticket, from the first source that has one.
    pub fn resolve(&self, global: &GlobalArgs) -> anyhow::Result<JoinTicket> {
        if let Some(text) = &self.ticket {
            return text.parse().context("parsing --ticket");
        }
        if let Some(path) = &self.ticket_file {
            return JoinTicket::read(path)
                .with_context(|| format!("reading the ticket in {}", path.display()));
        }
        if let Some(ticket) =
            JoinTicket::from_env().with_context(|| format!("parsing ${TICKET_ENV}"))?
        {
            return Ok(ticket);
        }
        let local = scheduler_dir(global)?.join(TICKET_FILE);
        if local.is_file() {
            return JoinTicket::read(&local)
                .with_context(|| format!("reading the ticket in {}", local.display()));
        }
        bail!(
            "no join ticket: pass --ticket 'taskhost://...' (printed by `taskhost scheduler`), set {TICKET_ENV}, \
             or run on the scheduler's machine with the same data directory ({} does not exist)",
            local.display()
        )
    }
}

/// The scheduler's data directory inside the global one.
pub fn scheduler_dir(global: &GlobalArgs) -> anyhow::Result<PathBuf> {
    Ok(global.data_dir()?.join("scheduler"))
}

/// Runs `future` on a multi-threaded tokio runtime.
pub fn block_on<F: std::future::Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    Ok(runtime.block_on(future))
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
