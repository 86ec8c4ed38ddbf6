//! Identifiers, wire messages and the frame codec shared by every taskhost process.
//!
//! This crate does no I/O: it defines what travels between clients, the scheduler and workers,
//! and how it is encoded. Everything that names a module or a task lives here so that all crates
//! agree on it.

mod codec;
pub mod fasthash;
mod hello;
mod ids;
mod messages;

pub use codec::{
    CodecError, DEFAULT_MAX_FRAME, FRAME_HEADER_LEN, FrameDecoder, decode_payload, encode,
    encode_into, encode_into_limited,
};
pub use hello::{
    AuthProof, Hello, HelloError, HelloOutcome, HelloReply, MAX_HELLO_FRAME, PROTOCOL,
    PROTOCOL_MAGIC, PROTOCOL_VERSION, Role, check_protocol, protocol_word,
};
pub use ids::{INLINE_LITERAL, IdParseError, ModuleId, TaskKey, TaskKeyBuilder};
pub use messages::{
    Arg, Blob, BulkReply, BulkRequest, ClientEvent, ClientRequest, ClusterStatus, FailureKind,
    Graph, ResultLocation, RunArg, RunPriority, RunTask, TaskCounts, TaskFailure, TaskLimits,
    TaskSpec, WorkerCommand, WorkerReport, WorkerStatus,
};
