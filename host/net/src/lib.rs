//! QUIC endpoints, cluster identity, authentication and framed streams for taskhost.
//!
//! - **Identity**: the scheduler creates a [`ClusterIdentity`] (self-signed CA, scheduler
//!   certificate, random token) in its data directory and hands out a [`JoinTicket`]
//!   (`taskhost://<token>@<addr>?ca=sha256:<hash>`).
//! - **Endpoints**: a [`Listener`] accepts connections and yields only those whose TLS handshake
//!   *and* hello round trip succeeded; [`Endpoint::connect`] / [`Endpoint::connect_ticket`]
//!   return only once the peer accepted our hello.
//! - **Authentication**: both sides prove they hold the cluster token with a MAC bound to the TLS
//!   session (the token is never sent); connections to the scheduler also pin its CA. See
//!   `docs/security.md`.
//! - **Control stream**: one long-lived bidirectional stream per connection carrying
//!   length-prefixed postcard frames; [`Sender`] batches queued messages into one write,
//!   [`Receiver`] decodes incrementally with a frame size limit.
//! - **Bulk**: [`Connection::fetch`] opens a stream per chunk; the serving side uses
//!   [`serve_bulk`] or [`Connection::accept_bulk`].
//! - **Same host**: listeners also listen on a Unix socket in a private per-user directory, and
//!   a connection to an address of this host takes it when it answers: the same hello and token
//!   proofs, without QUIC's encryption and wake-ups ([`TransportSettings::local_transport`],
//!   [`Connection::is_local`]).
//!
//! ```no_run
//! use taskhost_net::{
//!     ClusterIdentity, Endpoint, JoinTicket, Listener, ListenerConfig, TransportSettings,
//! };
//! use taskhost_proto::Role;
//!
//! # async fn demo() -> Result<(), taskhost_net::NetError> {
//! // Scheduler: identity, listener, ticket.
//! let (identity, _created) = ClusterIdentity::load_or_create("/var/lib/taskhost".as_ref())?;
//! let mut listener = Listener::bind("0.0.0.0:8786".parse().unwrap(),
//!     ListenerConfig::scheduler(&identity)).await?;
//! let ticket = identity.ticket(JoinTicket::addrs_for(listener.local_addr()?));
//! identity.write_ticket(&ticket)?;
//! println!("join with: taskhost worker --ticket {ticket}");
//!
//! // Worker (elsewhere): connect with the ticket.
//! let endpoint = Endpoint::client(TransportSettings::default())?;
//! let est = endpoint.connect_ticket(&ticket, Role::Worker).await?;
//! let (tx, mut rx) = est.control.split::<String, String>();
//! tx.send(&"hello".to_string()).await?;
//!
//! // Scheduler: the authenticated connection and its messages.
//! let est = listener.accept().await.unwrap();
//! let (_tx, mut from_worker) = est.control.split::<String, String>();
//! assert_eq!(from_worker.recv().await?, Some("hello".to_string()));
//! # let _ = rx.recv().await; Ok(()) }
//! ```

mod bulk;
mod control;
mod endpoint;
mod error;
mod identity;
mod local;
mod local_stream;
mod thread;
mod tls;

pub use bulk::{
    BULK_NOT_FOUND, BULK_OK, BULK_REFUSED, IncomingBulk, MAX_BULK_REQUEST, MAX_REFUSAL, Responder,
    serve_bulk,
};
pub use control::{ControlOptions, ControlStream, Receiver, Sender, SenderStats};

#[cfg(test)]
mod local_tests;
#[cfg(test)]
mod tests;
pub use endpoint::{
    CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR, CLOSE_REJECTED, Connection, Endpoint, Established,
    Listener, ListenerConfig, TransportSettings, connect,
};
pub use error::NetError;
pub use identity::{
    CaHash, ClusterIdentity, ClusterToken, IDENTITY_DIR, JoinTicket, PEER_SERVER_NAME,
    SCHEDULER_SERVER_NAME, ServerIdentity, TICKET_ENV, TICKET_FILE,
};
pub use local::{LOCAL_DIR_ENV, LOCAL_TRANSPORT_ENV};
pub use thread::{IdleSignal, spawn_runtime_thread, spawn_runtime_thread_with_idle_hook};
pub use tls::{Credentials, Trust};
