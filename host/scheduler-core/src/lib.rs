//! The taskhost scheduler as a deterministic state machine, with no clock, no I/O and no
//! threads (in the style of `quinn-proto`).
//!
//! # The contract
//!
//! The daemon owns one [`Core`] and drives it with events:
//!
//! - every message from a client or worker becomes an [`Input`], fed with
//!   [`Core::handle`]`(now, input)`; `now` is a [`Micros`] virtual time the daemon reads from
//!   its clock (the core never reads one). A rejected input returns a [`CoreError`] and changes
//!   nothing: log it and go on;
//! - after feeding a batch of inputs, drain [`Core::poll_output`] until `None` and turn every
//!   [`Output`] into a message to a worker or client (`RunTask`, `ReleaseChunk`, `CancelTask`,
//!   `StealRequest`, `TaskDone`, `TaskErred`, ...);
//! - arm a timer at [`Core::poll_timeout`] and call [`Core::handle_timeout`] when it fires;
//! - keep each worker's messages in order, both ways (one control stream per worker): a
//!   `CancelTask` followed by a `RunTask` of the same key must arrive in that order, and a
//!   worker's `TaskFinished` must reach the core before its `WorkerLeft`.
//!
//! Tasks are named by their content-derived [`TaskKey`]: submitting a task that already exists
//! (from any client) reuses it. Literal arguments are [`LiteralHandle`]s the daemon resolves;
//! [`Output::TaskForgotten`] tells it when a task's literals may be freed. Workers and clients
//! are named by the daemon's [`WorkerId`] and [`ClientId`].
//!
//! ```
//! use taskhost_proto::ModuleId;
//! use taskhost_scheduler_core::*;
//!
//! let mut core = Core::new(Config::default());
//! let t0 = Micros(0);
//! core.handle(t0, Input::WorkerJoined {
//!     worker: WorkerId(1), slots: 2, memory_limit: 1 << 30,
//!     address: "10.0.0.1:7000".into(), resources: vec![],
//! }).unwrap();
//! let module = ModuleId::of(b"module bytes");
//! let a = TaskSpec::derived(module, "load", vec![ArgSpec::Literal(LiteralHandle(7))]);
//! let b = TaskSpec::derived(module, "sum", vec![ArgSpec::Task(a.key)]);
//! let want = b.key;
//! core.handle(t0, Input::SubmitGraph { client: ClientId(1), tasks: vec![a, b], wants: vec![want] })
//!     .unwrap();
//! // Run whatever the core asks for, report completion, until the result is delivered.
//! let mut done = None;
//! for step in 1..10 {
//!     while let Some(out) = core.poll_output() {
//!         match out {
//!             Output::RunTask(run) => core.handle(Micros(step), Input::TaskFinished {
//!                 worker: run.worker, key: run.key, nbytes: 8, duration: Micros(5),
//!             }).unwrap(),
//!             Output::TaskDone { key, .. } => done = Some(key),
//!             _ => {}
//!         }
//!     }
//! }
//! assert_eq!(done, Some(want));
//! core.validate().unwrap();
//! ```
//!
//! See `docs/scheduler-core.md` for the states, policies and invariants, and [`sim`] for the
//! simulator that tests them.

mod clients;
mod collections;
mod config;
mod core;
mod ids;
mod io;
mod order;
mod placement;
mod queries;
mod queue;
pub mod sim;
mod spec;
mod state;
mod stealing;
mod transition;
mod validate;
mod workers;

pub use crate::config::{Config, Placement};
pub use crate::core::{Core, Phase, Stats};
pub use crate::ids::{ClientId, LiteralHandle, Micros, WorkerId};
pub use crate::io::{CoreError, Input, InputLocation, Output, RunTask, TaskFailure};
pub use crate::queries::PhaseCounts;
pub use crate::spec::{Annotations, ArgSpec, Priority, Restrictions, TaskSpec};
pub use crate::validate::ValidationError;
pub use taskhost_proto::{ModuleId, TaskKey};
