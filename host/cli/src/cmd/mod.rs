//! The subcommands. Each lives in its own module with an `Args` struct and a `run` function;
//! add new ones (scheduler, worker, run, status...) as variants of [`Command`].

mod cluster;
mod exec;
mod module;
mod run;
mod scheduler;
mod status;
mod worker;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// taskhost runs graphs of WebAssembly component tasks in parallel, on one machine or many.
#[derive(Debug, Parser)]
#[command(name = "taskhost", version, about)]
pub struct Cli {
    /// Options that apply to every subcommand.
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Options that apply to every subcommand.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Where modules and compiled artifacts are kept [default: ~/.local/share/taskhost].
    #[arg(long, global = true, env = "TASKHOST_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log more (-v: taskhost's progress, -vv: debugging detail). RUST_LOG overrides this.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl GlobalArgs {
    /// The data directory: `--data-dir`, `$TASKHOST_DATA_DIR`, or `~/.local/share/taskhost`.
    pub fn data_dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = &self.data_dir {
            return Ok(dir.clone());
        }
        match std::env::var_os("HOME") {
            Some(home) if !home.is_empty() => Ok(PathBuf::from(home).join(".local/share/taskhost")),
            _ => anyhow::bail!(
                "cannot choose a data directory: HOME is not set; pass --data-dir or set TASKHOST_DATA_DIR"
            ),
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the local module store.
    #[command(subcommand)]
    Module(module::ModuleCommand),
    /// Run one task locally and print its result.
    Exec(exec::ExecArgs),
    /// Run the scheduler: workers and clients join it with the ticket it prints.
    Scheduler(scheduler::SchedulerArgs),
    /// Run a worker that joins a scheduler.
    Worker(worker::WorkerArgs),
    /// Submit one task to a cluster and print its result.
    Run(run::RunArgs),
    /// Show the cluster's workers and tasks.
    Status(status::StatusArgs),
}

impl Cli {
    /// Runs the chosen subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Module(command) => module::run(&self.global, command),
            Command::Exec(args) => exec::run(&self.global, args),
            Command::Scheduler(args) => scheduler::run(&self.global, args),
            Command::Worker(args) => worker::run(&self.global, args),
            Command::Run(args) => run::run(&self.global, args),
            Command::Status(args) => status::run(&self.global, args),
        }
    }
}
