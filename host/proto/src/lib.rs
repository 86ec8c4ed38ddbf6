//! Identifiers, wire messages and the frame codec shared by every taskhost process.
//!
//! This crate does no I/O: it defines what travels between clients, the scheduler and workers,
//! and how it is encoded. Everything that names a module or a task lives here so that all crates
//! agree on it.

mod ids;

pub use ids::{IdParseError, ModuleId, TaskKey, TaskKeyBuilder};
