//! `taskhost`: the command-line tool of taskhost.
//!
//! Subcommands live in [`cmd`], one module each; this file only parses the command line, sets
//! up logging and reports errors.

mod args;
mod cmd;
mod util;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cmd::Cli::parse();
    init_logging(cli.global.verbose);
    match cli.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Only the chain of messages: never a backtrace, whatever RUST_BACKTRACE says.
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr. `RUST_LOG` overrides the default, which shows warnings and the output
/// of guests (their stdout, stderr and log records); `-v` adds taskhost's own info and debug.
fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn,taskhost::guest=info",
        1 => "warn,taskhost=info,taskhost_runtime=info",
        _ => "info,taskhost=debug,taskhost_runtime=debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}
