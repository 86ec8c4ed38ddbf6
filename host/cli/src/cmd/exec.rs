//! `taskhost exec`: run one task locally and print its result.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use taskhost_proto::ModuleId;
use taskhost_runtime::{Limits, Runtime};

use crate::args::{Type, decode_result, encode_arg, parse_signature, raw_arg};
use crate::cmd::GlobalArgs;
use crate::util::{open_runtime, parse_duration, parse_size, resolve_module};

/// Run one task locally and print its result.
///
/// Arguments are JSON values checked against the parameter types of the function's signature
/// (see `taskhost module describe`) and encoded with postcard; text is accepted as is for
/// `String` parameters. Raw `&[u8]` parameters take `@FILE` or text. Typed results are printed
/// as JSON; raw results as text when they are UTF-8, as hex otherwise, or written to `--out`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// A component file, or the id of a stored module.
    module: String,
    /// The task function to call.
    function: String,
    /// The function's arguments, in order.
    #[arg(allow_negative_numbers = true)]
    args: Vec<String>,
    /// Wall-clock time the task may take (e.g. 200ms, 10s, 2m).
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    timeout: Duration,
    /// Linear memory the task may use (e.g. 64MiB, 1GiB).
    #[arg(long, value_parser = parse_size, default_value = "256MiB")]
    memory_limit: u64,
    /// Fuel the task may consume (about one unit per wasm instruction); unlimited by default.
    #[arg(long)]
    fuel: Option<u64>,
    /// Write the result's bytes to this file instead of printing them.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Ignore the signature: pass every argument as raw bytes (`@FILE` or text) and treat the
    /// result as raw bytes. For modules whose signatures this tool cannot read.
    #[arg(long)]
    raw: bool,
}

/// Runs `taskhost exec`.
pub fn run(global: &GlobalArgs, args: ExecArgs) -> anyhow::Result<()> {
    let runtime = open_runtime(global)?;
    let id = resolve_module(&runtime, &args.module)?;
    let call = prepare_call(&runtime, &id, &args.function, &args.args, args.raw)?;
    let limits = Limits {
        timeout: args.timeout,
        memory: args.memory_limit,
        fuel: args.fuel,
    };
    let inputs: Vec<&[u8]> = call.args.iter().map(Vec::as_slice).collect();
    let output = runtime
        .execute(&id, &args.function, &inputs, &limits)
        .with_context(|| format!("running {}/{}", id.short(), args.function))?;
    print_output(call.result.as_ref(), &output, args.out.as_deref())
}

/// A call's arguments encoded for the guest, and how to read its result.
pub struct PreparedCall {
    /// One byte string per argument.
    pub args: Vec<Vec<u8>>,
    /// The result's type, or `None` for raw bytes.
    pub result: Option<Type>,
}

/// Encodes command-line arguments for `function` of module `id`: raw bytes with `raw`, else
/// JSON values checked against the function's signature (read from the module itself).
pub fn prepare_call(
    runtime: &Runtime,
    id: &ModuleId,
    function: &str,
    args: &[String],
    raw: bool,
) -> anyhow::Result<PreparedCall> {
    if raw {
        let encoded = args
            .iter()
            .enumerate()
            .map(|(i, a)| raw_arg(a).map_err(|e| anyhow::anyhow!("argument {}: {e}", i + 1)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        return Ok(PreparedCall {
            args: encoded,
            result: None,
        });
    }
    let functions = runtime
        .describe(id)
        .with_context(|| format!("describing module {id}"))?;
    let Some(info) = functions.iter().find(|f| f.name == function) else {
        let names: Vec<&str> = functions.iter().map(|f| f.name.as_str()).collect();
        bail!(
            "module {} exports no task function {:?}; it exports: {}",
            id.short(),
            function,
            names.join(", ")
        );
    };
    let signature = parse_signature(&info.signature).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the signature {:?}: {e}; use --raw to pass raw bytes",
            info.signature
        )
    })?;
    if signature.params.len() != args.len() {
        bail!(
            "{} takes {} argument{} ({}), {} given",
            function,
            signature.params.len(),
            if signature.params.len() == 1 { "" } else { "s" },
            info.signature,
            args.len()
        );
    }
    let encoded = signature
        .params
        .iter()
        .zip(args)
        .map(|((name, ty), text)| {
            encode_arg(ty, text).map_err(|e| anyhow::anyhow!("argument {name}: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let result = (!signature.raw).then_some(signature.result);
    Ok(PreparedCall {
        args: encoded,
        result,
    })
}

/// Prints a task's output (typed as JSON, raw as text or hex) or writes it to `out`.
pub fn print_output(
    result: Option<&Type>,
    output: &[u8],
    out: Option<&Path>,
) -> anyhow::Result<()> {
    if let Some(path) = out {
        std::fs::write(path, output).with_context(|| format!("writing {}", path.display()))?;
        return Ok(());
    }
    match result {
        Some(ty) => print_typed(ty, output),
        None => print_raw(output),
    }
}

fn print_typed(ty: &Type, output: &[u8]) -> anyhow::Result<()> {
    let value = decode_result(ty, output).map_err(|e| anyhow::anyhow!(e))?;
    println!("{value}");
    Ok(())
}

fn print_raw(output: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match std::str::from_utf8(output) {
        Ok(text) if !text.chars().any(|c| c.is_control() && !c.is_whitespace()) => {
            stdout.write_all(text.as_bytes())?;
            if !text.ends_with('\n') {
                stdout.write_all(b"\n")?;
            }
        }
        _ => {
            eprintln!(
                "note: the result is {} bytes of binary data, shown as hex (use --out FILE for the bytes)",
                output.len()
            );
            writeln!(stdout, "{}", hex::encode(output))?;
        }
    }
    Ok(())
}
