//! The error type of this crate.

use std::path::PathBuf;
use std::time::Duration;

use taskhost_proto::{CodecError, HelloError};

/// Everything that can go wrong in `taskhost-net`.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A socket or file operation failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Reading or writing a file of the cluster identity failed.
    #[error("{path}: {message}")]
    Identity {
        /// The file concerned.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Generating a certificate or key failed.
    #[error("cannot generate certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// The TLS configuration was rejected.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// A join ticket could not be parsed.
    #[error("invalid join ticket: {0}")]
    Ticket(String),
    /// Starting a connection failed locally.
    #[error("cannot connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The QUIC connection failed or was closed (this includes TLS failures such as a server
    /// certificate that does not match the pinned CA).
    #[error("connection failed: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Something did not happen in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What we were waiting for.
        what: &'static str,
        /// How long we waited.
        after: Duration,
    },
    /// The peer refused our hello (wrong token, role not accepted, other protocol version...).
    #[error("rejected by peer: {reason}")]
    Rejected {
        /// The reason the peer gave.
        reason: String,
    },
    /// We refused the peer's hello (reported on the accepting side).
    #[error("denied the peer: {reason}")]
    Denied {
        /// The reason sent to the peer.
        reason: String,
    },
    /// The peer's hello or hello reply was unacceptable.
    #[error(transparent)]
    Hello(#[from] HelloError),
    /// The peer could not prove it holds the cluster token.
    #[error("peer failed to prove the cluster token")]
    BadProof,
    /// A frame could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// Writing to a stream failed.
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// Reading from a stream failed.
    #[error("stream read failed: {0}")]
    Read(#[from] quinn::ReadError),
    /// A stream ended early or could not be read completely.
    #[error("stream read failed: {0}")]
    ReadExact(#[from] quinn::ReadExactError),
    /// A stream was already closed.
    #[error("stream closed: {0}")]
    ClosedStream(#[from] quinn::ClosedStream),
    /// The control stream's writer stopped; no more messages can be sent.
    #[error("control stream closed: {reason}")]
    ControlClosed {
        /// Why it stopped.
        reason: String,
    },
    /// The serving side refused a bulk request.
    #[error("bulk request refused by peer: {reason}")]
    Refused {
        /// The reason the peer gave.
        reason: String,
    },
    /// The serving side does not hold the requested item.
    #[error("not found on the peer")]
    NotFound,
    /// A bulk response is larger than the caller allows.
    #[error("bulk response of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Announced size.
        size: u64,
        /// The caller's limit.
        limit: usize,
    },
    /// The peer violated the bulk or hello stream protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A same-host link was closed (by either side, or because the peer's process is gone).
    #[error("connection closed: {reason}")]
    LinkClosed {
        /// Why.
        reason: String,
    },
    /// The server on a same-host socket announced another CA than the pinned one.
    #[error("the server's CA does not match the pinned {pinned} (wrong cluster or wrong ticket)")]
    PinMismatch {
        /// The CA hash the connector pinned.
        pinned: crate::CaHash,
    },
    /// None of a ticket's scheduler addresses could be reached.
    #[error("no scheduler address of the ticket could be reached: {0}")]
    Unreachable(String),
}
