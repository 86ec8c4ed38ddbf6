//! `taskhost run`: submit one task to a cluster and print its result.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use taskhost_client::{CallOptions, Client, Graph, Raw};

use crate::cmd::GlobalArgs;
use crate::cmd::cluster::{TicketArgs, block_on};
use crate::cmd::exec::{prepare_call, print_output};
use crate::util::{open_runtime, parse_duration, parse_size, resolve_module};

/// Submit one task to a cluster and print its result.
///
/// Arguments are given as for `taskhost exec`: JSON values checked against the function's
/// signature, or raw bytes (`@FILE` or text) with `--raw`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// A component file, or the id of a module in the local store.
    module: String,
    /// The task function to call.
    function: String,
    /// The function's arguments, in order.
    #[arg(allow_negative_numbers = true)]
    args: Vec<String>,
    #[command(flatten)]
    ticket: TicketArgs,
    /// Wall-clock time the task may take (e.g. 200ms, 10s) [default: the worker's].
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Linear memory the task may use (e.g. 64MiB) [default: the worker's].
    #[arg(long, value_parser = parse_size)]
    memory_limit: Option<u64>,
    /// Fuel the task may consume.
    #[arg(long)]
    fuel: Option<u64>,
    /// Retries after a failure.
    #[arg(long, default_value_t = 0)]
    retries: u8,
    /// Write the result's bytes to this file instead of printing them.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Pass every argument as raw bytes and treat the result as raw bytes.
    #[arg(long)]
    raw: bool,
}

/// Runs `taskhost run`.
pub fn run(global: &GlobalArgs, args: RunArgs) -> anyhow::Result<()> {
    let ticket = args.ticket.resolve(global)?;
    // The local runtime reads the module's signatures to encode the arguments.
    let runtime = open_runtime(global)?;
    let id = resolve_module(&runtime, &args.module)?;
    let call = prepare_call(&runtime, &id, &args.function, &args.args, args.raw)?;
    let bytes = runtime
        .modules()
        .get(&id)
        .with_context(|| format!("reading module {id}"))?;
    let options = CallOptions {
        retries: args.retries,
        timeout: args.timeout,
        memory_limit: args.memory_limit,
        fuel: args.fuel,
        ..CallOptions::new()
    };
    let function = args.function.clone();
    let output = block_on(async move {
        let client = Client::connect(&ticket)
            .await
            .context("connecting to the scheduler")?;
        let module = client
            .module(bytes)
            .await
            .context("registering the module")?;
        let graph = Graph::new();
        let inputs = call
            .args
            .into_iter()
            .fold(taskhost_client::Args::new(), |acc, arg| {
                acc.arg(Raw(arg.into()))
            });
        let handle = graph.call_with::<Raw>(&module, &function, inputs, &options)?;
        // A spinner with the cluster's task counts while the task runs (hidden unless stderr
        // is a terminal).
        let bar = client.progress_bar();
        let result = client.compute(&handle).await;
        drop(bar);
        client.close().await;
        anyhow::Ok(result.with_context(|| format!("running {}/{}", id.short(), function))?)
    })??;
    print_output(call.result.as_ref(), &output.0, args.out.as_deref())
}
