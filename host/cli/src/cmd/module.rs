//! `taskhost module`: add, list and describe modules in the local module store.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use taskhost_runtime::ModuleStore;

use crate::cmd::GlobalArgs;
use crate::util::{open_runtime, resolve_module};

/// Manage the local module store.
#[derive(Debug, Subcommand)]
pub enum ModuleCommand {
    /// Validate a component file, store it, and print its id.
    Add {
        /// The component (`.wasm`) to add.
        file: PathBuf,
        /// Also compile it now, so that its first task does not wait for compilation.
        #[arg(long)]
        compile: bool,
    },
    /// List the stored modules: id and size.
    List,
    /// List a module's task functions with their signatures and descriptions.
    Describe {
        /// A stored module's id, or a component file.
        module: String,
    },
}

/// Runs a `module` subcommand.
pub fn run(global: &GlobalArgs, command: ModuleCommand) -> anyhow::Result<()> {
    match command {
        ModuleCommand::Add { file, compile } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let id = if compile {
                let runtime = open_runtime(global)?;
                let id = runtime
                    .put(&bytes)
                    .with_context(|| format!("adding {}", file.display()))?;
                runtime
                    .prepare(&id)
                    .with_context(|| format!("compiling {id}"))?;
                id
            } else {
                let dir = global.data_dir()?;
                ModuleStore::open(&dir)?
                    .put(&bytes)
                    .with_context(|| format!("adding {}", file.display()))?
            };
            println!("{id}");
        }
        ModuleCommand::List => {
            let dir = global.data_dir()?;
            let store = ModuleStore::open(&dir)?;
            for id in store.list()? {
                let size = std::fs::metadata(store.path(&id))
                    .map(|m| m.len())
                    .unwrap_or(0);
                println!("{id}  {size:>10} bytes");
            }
        }
        ModuleCommand::Describe { module } => {
            let runtime = open_runtime(global)?;
            let id = resolve_module(&runtime, &module)?;
            let functions = runtime
                .describe(&id)
                .with_context(|| format!("describing module {id}"))?;
            println!("module {id}");
            for function in functions {
                println!("  {}", function.signature);
                if !function.doc.is_empty() {
                    println!("      {}", function.doc);
                }
            }
        }
    }
    Ok(())
}
