//! The versioned hello that opens every taskhost connection.
//!
//! The connecting side sends a [`Hello`] as the first frame of its first bidirectional stream; the
//! accepting side answers with a [`HelloReply`]. Both start with a `protocol` word (a magic number
//! plus the protocol version) that is decoded and checked *before* the rest of the message, so a
//! peer of another version gets a clear error ("peer speaks taskhost protocol v3, we speak v2")
//! even if the layout of the rest changed.

use serde::{Deserialize, Serialize};

use crate::codec::{CodecError, decode_payload};

/// Upper 16 bits of [`PROTOCOL`]: "TH".
pub const PROTOCOL_MAGIC: u32 = 0x5448_0000;
/// Version of the taskhost wire protocol spoken by this build.
pub const PROTOCOL_VERSION: u16 = 4;
/// The protocol word sent in every hello: magic in the upper 16 bits, version in the lower 16.
pub const PROTOCOL: u32 = PROTOCOL_MAGIC | PROTOCOL_VERSION as u32;
/// Maximum size of a hello or hello reply frame.
pub const MAX_HELLO_FRAME: usize = 4096;

/// Builds the protocol word for `version`.
pub const fn protocol_word(version: u16) -> u32 {
    PROTOCOL_MAGIC | version as u32
}

/// What a connecting peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// A client submitting graphs to the scheduler.
    Client,
    /// A worker daemon joining the scheduler.
    Worker,
    /// The scheduler (as the accepting side of a connection).
    Scheduler,
    /// A worker talking to another worker (chunk transfers).
    Peer,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Client => "client",
            Role::Worker => "worker",
            Role::Scheduler => "scheduler",
            Role::Peer => "peer",
        })
    }
}

/// Proof that the sender holds the cluster token, bound to this TLS session.
///
/// `taskhost-net` computes it as a keyed BLAKE3 MAC (key derived from the token) over TLS
/// exported keying material, the direction and the role; it never reveals the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthProof(pub [u8; 32]);

/// First message of the connecting side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL`] of the sender. Must stay the first field in every version.
    pub protocol: u32,
    /// What the sender is.
    pub role: Role,
    /// Proof of the cluster token.
    pub auth: AuthProof,
}

/// Answer of the accepting side to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloReply {
    /// [`PROTOCOL`] of the sender. Must stay the first field in every version.
    pub protocol: u32,
    /// Accepted or rejected.
    pub outcome: HelloOutcome,
}

/// Outcome of a hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloOutcome {
    /// The peer is admitted.
    Accepted {
        /// What the accepting side is.
        role: Role,
        /// The accepting side's own proof of the cluster token.
        auth: AuthProof,
    },
    /// The peer is refused; the connection will be closed.
    Rejected {
        /// Human-readable reason.
        reason: String,
    },
}

/// Why a hello or hello reply could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// The protocol word does not carry the taskhost magic.
    #[error("peer does not speak the taskhost protocol (protocol word {found:#010x})")]
    NotTaskhost {
        /// The protocol word received.
        found: u32,
    },
    /// The peer speaks another version of the protocol.
    #[error("peer speaks taskhost protocol v{theirs}, we speak v{ours}")]
    Version {
        /// The peer's version.
        theirs: u16,
        /// Our version.
        ours: u16,
    },
    /// The message is not a valid hello.
    #[error("malformed hello: {0}")]
    Malformed(#[from] CodecError),
}

/// Checks a received protocol word against ours.
pub fn check_protocol(found: u32) -> Result<(), HelloError> {
    if found & 0xffff_0000 != PROTOCOL_MAGIC {
        return Err(HelloError::NotTaskhost { found });
    }
    let theirs = (found & 0xffff) as u16;
    if theirs != PROTOCOL_VERSION {
        return Err(HelloError::Version {
            theirs,
            ours: PROTOCOL_VERSION,
        });
    }
    Ok(())
}

fn peek_protocol(payload: &[u8]) -> Result<(), HelloError> {
    let (found, _) =
        postcard::take_from_bytes::<u32>(payload).map_err(|source| CodecError::Decode {
            len: payload.len(),
            source,
        })?;
    check_protocol(found)
}

impl Hello {
    /// A hello of this build's protocol version.
    pub fn new(role: Role, auth: AuthProof) -> Self {
        Self {
            protocol: PROTOCOL,
            role,
            auth,
        }
    }

    /// Decodes a hello payload, checking the protocol word first.
    pub fn decode(payload: &[u8]) -> Result<Self, HelloError> {
        peek_protocol(payload)?;
        Ok(decode_payload(payload)?)
    }
}

impl HelloReply {
    /// An acceptance from this build.
    pub fn accepted(role: Role, auth: AuthProof) -> Self {
        Self {
            protocol: PROTOCOL,
            outcome: HelloOutcome::Accepted { role, auth },
        }
    }

    /// A rejection from this build.
    pub fn rejected(reason: impl Into<String>) -> Self {
        let mut reason = reason.into();
        if reason.len() > 1024 {
            let mut cut = 1024;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        Self {
            protocol: PROTOCOL,
            outcome: HelloOutcome::Rejected { reason },
        }
    }

    /// Decodes a hello reply payload, checking the protocol word first.
    pub fn decode(payload: &[u8]) -> Result<Self, HelloError> {
        peek_protocol(payload)?;
        Ok(decode_payload(payload)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{FrameDecoder, encode};

    #[test]
    fn hello_round_trip() {
        let h = Hello::new(Role::Worker, AuthProof([7; 32]));
        let frame = encode(&h).unwrap();
        let mut dec = FrameDecoder::new(MAX_HELLO_FRAME);
        dec.push(&frame);
        let payload = dec.next_frame().unwrap().unwrap();
        assert_eq!(Hello::decode(payload).unwrap(), h);
    }

    #[test]
    fn other_version_is_named() {
        // A future hello with a different layout after the protocol word.
        #[derive(Serialize)]
        struct HelloV3 {
            protocol: u32,
            something: String,
        }
        let payload = postcard::to_stdvec(&HelloV3 {
            protocol: protocol_word(5),
            something: "new".into(),
        })
        .unwrap();
        let err = Hello::decode(&payload).unwrap_err();
        assert_eq!(
            err.to_string(),
            "peer speaks taskhost protocol v5, we speak v4"
        );
        let err = HelloReply::decode(&payload).unwrap_err();
        assert!(matches!(err, HelloError::Version { theirs: 5, ours: 4 }));
    }

    #[test]
    fn garbage_is_not_taskhost() {
        assert!(matches!(
            Hello::decode(b"GET / HTTP/1.1\r\n"),
            Err(HelloError::NotTaskhost { .. }) | Err(HelloError::Malformed(_))
        ));
        assert!(matches!(Hello::decode(&[]), Err(HelloError::Malformed(_))));
    }

    #[test]
    fn long_reason_truncated() {
        let r = HelloReply::rejected("é".repeat(2000));
        match r.outcome {
            HelloOutcome::Rejected { reason } => assert!(reason.len() <= 1024),
            HelloOutcome::Accepted { .. } => unreachable!(),
        }
    }
}
