//! Host bindings generated from the WIT contract in `wit/`.
#![allow(missing_docs, clippy::all)]

wasmtime::component::bindgen!({
    world: "task-module",
    path: "../../wit",
});

pub use exports::taskhost::task::tasks::TaskError;
