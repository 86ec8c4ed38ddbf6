//! QUIC endpoints, the hello handshake and established connections.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{MtuDiscoveryConfig, VarInt};
use taskhost_proto::{
    FrameDecoder, Hello, HelloOutcome, HelloReply, MAX_HELLO_FRAME, Role, encode,
};
use tokio::sync::mpsc;
use tokio::time::timeout;

use crate::control::ControlStream;
use crate::local::{self, LocalLink};
use crate::tls::{self, Side};
use crate::{ClusterToken, Credentials, JoinTicket, NetError, ServerIdentity};

/// Application close code: normal shutdown.
pub const CLOSE_NORMAL: u32 = 0;
/// Application close code: the hello was rejected.
pub const CLOSE_REJECTED: u32 = 1;
/// Application close code: the peer violated the protocol (garbage, oversized frame...).
pub const CLOSE_PROTOCOL_ERROR: u32 = 2;

/// Socket and QUIC transport settings, tuned for large chunks on fast links by default.
#[derive(Debug, Clone)]
pub struct TransportSettings {
    /// `SO_RCVBUF` / `SO_SNDBUF` of the UDP socket (the kernel caps it at `rmem_max`/`wmem_max`).
    pub socket_buffer: usize,
    /// Largest UDP payload this endpoint accepts (`max_udp_payload_size`) and upper bound of path
    /// MTU discovery. Keep it at or below ~6500 with GSO: larger segments were dropped here.
    pub max_udp_payload: u16,
    /// Per-stream receive window.
    pub stream_window: u32,
    /// Per-connection receive window.
    pub connection_window: u32,
    /// Per-connection send window.
    pub send_window: u64,
    /// Maximum concurrently open bidirectional streams the peer may open.
    pub max_bidi_streams: u32,
    /// Keep-alive interval (keeps idle connections open and detects dead peers).
    pub keep_alive: Option<Duration>,
    /// Idle timeout after which a silent peer's connection is closed.
    pub idle_timeout: Duration,
    /// Bound on the TLS handshake plus hello round trip.
    pub handshake_timeout: Duration,
    /// UDP generic segmentation offload.
    pub gso: bool,
    /// If set, ask the peer (QUIC acknowledgement-frequency extension) to acknowledge only every
    /// this many ack-eliciting packets (or after its max ACK delay, or at once on a gap), rather
    /// than every second one. Default 10: a request and its reply then carry each other's
    /// acknowledgements, where quinn's default had a client send an ACK-only packet for every
    /// two events it received, a packet (and a wake-up of the scheduler) per round trip. `None`
    /// keeps quinn's default (the peer's own setting).
    pub ack_eliciting_threshold: Option<u32>,
    /// Same-host links: listeners also listen on a Unix socket, and connections to an address
    /// of this host use it when it answers (see the `local` module docs). On by default unless
    /// `TASKHOST_LOCAL_TRANSPORT=0`.
    pub local_transport: bool,
}

impl Default for TransportSettings {
    fn default() -> Self {
        Self {
            socket_buffer: 4 * 1024 * 1024,
            max_udp_payload: 6000,
            stream_window: 8 * 1024 * 1024,
            connection_window: 32 * 1024 * 1024,
            send_window: 32 * 1024 * 1024,
            max_bidi_streams: 1024,
            keep_alive: Some(Duration::from_secs(5)),
            idle_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            gso: true,
            ack_eliciting_threshold: Some(10),
            local_transport: local::enabled_by_env(),
        }
    }
}

impl TransportSettings {
    fn transport_config(&self) -> quinn::TransportConfig {
        let mut t = quinn::TransportConfig::default();
        let mut mtu = MtuDiscoveryConfig::default();
        mtu.upper_bound(self.max_udp_payload);
        t.mtu_discovery_config(Some(mtu));
        t.stream_receive_window(VarInt::from_u32(self.stream_window));
        t.receive_window(VarInt::from_u32(self.connection_window));
        t.send_window(self.send_window);
        t.max_concurrent_bidi_streams(VarInt::from_u32(self.max_bidi_streams));
        t.max_concurrent_uni_streams(VarInt::from_u32(self.max_bidi_streams));
        t.keep_alive_interval(self.keep_alive);
        t.max_idle_timeout(quinn::IdleTimeout::try_from(self.idle_timeout).ok());
        t.enable_segmentation_offload(self.gso);
        if let Some(threshold) = self.ack_eliciting_threshold {
            let mut ack = quinn::AckFrequencyConfig::default();
            ack.ack_eliciting_threshold(VarInt::from_u32(threshold));
            t.ack_frequency_config(Some(ack));
        }
        t
    }

    fn socket(&self, addr: SocketAddr) -> Result<std::net::UdpSocket, NetError> {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            // Dual-stack when bound to [::]; ignore platforms that refuse.
            let _ = socket.set_only_v6(false);
        }
        if let Err(e) = socket.set_recv_buffer_size(self.socket_buffer) {
            tracing::warn!(error = %e, "cannot set the UDP receive buffer size");
        }
        if let Err(e) = socket.set_send_buffer_size(self.socket_buffer) {
            tracing::warn!(error = %e, "cannot set the UDP send buffer size");
        }
        socket.bind(&addr.into())?;
        socket.set_nonblocking(true)?;
        Ok(socket.into())
    }

    fn endpoint(
        &self,
        addr: SocketAddr,
        server: Option<quinn::ServerConfig>,
    ) -> Result<quinn::Endpoint, NetError> {
        let mut config = quinn::EndpointConfig::default();
        config
            .max_udp_payload_size(self.max_udp_payload)
            .map_err(|e| NetError::Tls(format!("max_udp_payload: {e}")))?;
        let socket = self.socket(addr)?;
        Ok(quinn::Endpoint::new(
            config,
            server,
            socket,
            Arc::new(quinn::TokioRuntime),
        )?)
    }
}

/// What carries a connection: QUIC, or a same-host Unix socket.
#[derive(Debug, Clone)]
pub(crate) enum Link {
    Quic(quinn::Connection),
    Local(Arc<LocalLink>),
}

impl Link {
    pub(crate) fn remote_address(&self) -> SocketAddr {
        match self {
            Link::Quic(c) => c.remote_address(),
            Link::Local(l) => l.remote(),
        }
    }

    /// Closes with an application code (QUIC) and a reason.
    pub(crate) fn close_with(&self, code: u32, reason: &str) {
        match self {
            Link::Quic(c) => c.close(VarInt::from_u32(code), reason.as_bytes()),
            Link::Local(l) => l.close(reason),
        }
    }

    /// Waits until the connection closes and says why.
    pub(crate) async fn closed_reason(&self) -> String {
        match self {
            Link::Quic(c) => c.closed().await.to_string(),
            Link::Local(l) => l.closed().await,
        }
    }
}

/// An authenticated connection to a peer (cheap to clone).
///
/// The control stream was split off at establishment (see [`Established`]); this handle opens
/// and accepts bulk streams, reports the peer, and closes the connection.
#[derive(Debug, Clone)]
pub struct Connection {
    pub(crate) inner: Link,
    pub(crate) peer_role: Role,
}

impl Connection {
    /// What the peer proved to be in its hello.
    pub fn peer_role(&self) -> Role {
        self.peer_role
    }

    /// The peer's address: the one dialed, or for a same-host link accepted on a Unix socket,
    /// loopback with port 0.
    pub fn remote_address(&self) -> SocketAddr {
        self.inner.remote_address()
    }

    /// Current round-trip time estimate (zero on a same-host link).
    pub fn rtt(&self) -> Duration {
        match &self.inner {
            Link::Quic(c) => c.rtt(),
            Link::Local(_) => Duration::ZERO,
        }
    }

    /// Closes the connection with [`CLOSE_NORMAL`] and a reason (over QUIC the peer sees it;
    /// over a same-host socket it sees the socket close).
    pub fn close(&self, reason: &str) {
        self.inner.close_with(CLOSE_NORMAL, reason);
    }

    /// Waits until the connection is closed (by either side, or by idle timeout) and says why.
    pub async fn closed(&self) -> NetError {
        match &self.inner {
            Link::Quic(c) => NetError::Connection(c.closed().await),
            Link::Local(l) => NetError::LinkClosed {
                reason: l.closed().await,
            },
        }
    }

    /// Why the connection was closed, if it is.
    pub fn close_reason(&self) -> Option<NetError> {
        match &self.inner {
            Link::Quic(c) => c.close_reason().map(NetError::Connection),
            Link::Local(l) => l
                .close_reason()
                .map(|reason| NetError::LinkClosed { reason }),
        }
    }

    /// Whether this connection runs over a same-host Unix socket rather than QUIC.
    pub fn is_local(&self) -> bool {
        matches!(self.inner, Link::Local(_))
    }

    /// The underlying quinn connection (statistics, advanced use); `None` on a same-host link.
    pub fn quinn(&self) -> Option<&quinn::Connection> {
        match &self.inner {
            Link::Quic(c) => Some(c),
            Link::Local(_) => None,
        }
    }
}

impl Established {
    /// For a connection that carries only bulk transfers: keeps its control stream in a task
    /// that reads it until the peer leaves and then closes the connection, so that
    /// [`Connection::close_reason`] reports the departure and [`Connection::accept_bulk`] ends
    /// (a same-host link has no idle timeout to notice it). Call within a tokio runtime.
    pub fn bulk_only(self) -> Connection {
        let connection = self.connection.clone();
        let (keep, mut control) = self.control.split::<(), ()>();
        tokio::spawn(async move {
            let _keep = keep;
            while let Ok(Some(())) = control.recv().await {}
            connection.close("the peer left");
        });
        self.connection
    }
}

/// A connection whose hello round trip succeeded, with its control stream.
///
/// The connection stays open while the [`Connection`] handle, the control stream or its
/// sender/receiver halves are alive; close it explicitly with [`Connection::close`].
#[derive(Debug)]
pub struct Established {
    /// The connection handle (bulk streams, close).
    pub connection: Connection,
    /// The long-lived control stream; split it into a typed sender and receiver.
    pub control: ControlStream,
}

/// A QUIC endpoint for outgoing connections (one UDP socket, any number of connections).
#[derive(Debug, Clone)]
pub struct Endpoint {
    inner: quinn::Endpoint,
    settings: TransportSettings,
    /// Same-host links made or accepted through this endpoint.
    links: local::Tracker,
}

impl Endpoint {
    /// A client endpoint on an ephemeral port of `0.0.0.0`. Call within a tokio runtime.
    pub fn client(settings: TransportSettings) -> Result<Self, NetError> {
        Self::client_bound(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), settings)
    }

    /// A client endpoint bound to `addr`.
    pub fn client_bound(addr: SocketAddr, settings: TransportSettings) -> Result<Self, NetError> {
        let inner = settings.endpoint(addr, None)?;
        Ok(Self {
            inner,
            settings,
            links: local::Tracker::default(),
        })
    }

    /// The local address of the socket.
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        Ok(self.inner.local_addr()?)
    }

    /// Connects to `addr`, authenticates the server according to `credentials`, and performs the
    /// hello as `role`. Returns only once the peer has accepted the hello.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        credentials: &Credentials,
        role: Role,
    ) -> Result<Established, NetError> {
        let after = self.settings.handshake_timeout;
        match timeout(after, self.connect_inner(addr, credentials, role)).await {
            Ok(result) => result,
            Err(_) => Err(NetError::Timeout {
                what: "the TLS handshake and hello",
                after,
            }),
        }
    }

    /// Connects to the scheduler named by `ticket`, trying its addresses in order.
    pub async fn connect_ticket(
        &self,
        ticket: &JoinTicket,
        role: Role,
    ) -> Result<Established, NetError> {
        let credentials = ticket.credentials();
        let mut failures = Vec::new();
        for name in &ticket.addrs {
            let addrs = match tokio::net::lookup_host(name.as_str()).await {
                Ok(addrs) => addrs.collect::<Vec<_>>(),
                Err(e) => {
                    failures.push(format!("{name}: {e}"));
                    continue;
                }
            };
            for addr in addrs {
                match self.connect(addr, &credentials, role).await {
                    Ok(established) => return Ok(established),
                    // An answer from the real scheduler is final.
                    Err(e @ (NetError::Rejected { .. } | NetError::Hello(_))) => return Err(e),
                    Err(e) => failures.push(format!("{addr}: {e}")),
                }
            }
        }
        Err(NetError::Unreachable(failures.join("; ")))
    }

    /// TLS handshake only, no hello: lets tests play a misbehaving peer.
    #[cfg(test)]
    pub(crate) async fn raw_connect(
        &self,
        addr: SocketAddr,
        credentials: &Credentials,
    ) -> Result<quinn::Connection, NetError> {
        let tls = tls::client_config(&credentials.trust)?;
        let quic = QuicClientConfig::try_from(tls).map_err(|e| NetError::Tls(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(Arc::new(self.settings.transport_config()));
        Ok(self
            .inner
            .connect_with(config, addr, credentials.server_name())?
            .await?)
    }

    async fn connect_inner(
        &self,
        addr: SocketAddr,
        credentials: &Credentials,
        role: Role,
    ) -> Result<Established, NetError> {
        if let Ok(local) = self.inner.local_addr()
            && local.is_ipv4()
            && addr.is_ipv6()
        {
            return Err(NetError::Protocol(format!(
                "cannot reach the IPv6 address {addr} from an endpoint bound to {local}; \
                 bind it to [::]:0 (Endpoint::client_bound)"
            )));
        }
        if self.settings.local_transport
            && let Some(established) = local::connect(addr, credentials, role).await?
        {
            if let Link::Local(link) = &established.connection.inner {
                self.links.track(link);
            }
            return Ok(established);
        }
        let tls = tls::client_config(&credentials.trust)?;
        let quic = QuicClientConfig::try_from(tls).map_err(|e| NetError::Tls(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(Arc::new(self.settings.transport_config()));
        let conn = self
            .inner
            .connect_with(config, addr, credentials.server_name())?
            .await?;
        match client_hello(&conn, credentials, role).await {
            Ok(established) => Ok(established),
            Err(e) => {
                let reason = e.to_string();
                conn.close(
                    VarInt::from_u32(match e {
                        NetError::Rejected { .. } => CLOSE_REJECTED,
                        _ => CLOSE_PROTOCOL_ERROR,
                    }),
                    reason.as_bytes(),
                );
                Err(e)
            }
        }
    }

    /// Closes every connection of this endpoint and waits for the peers to be told.
    pub async fn shutdown(&self) {
        self.links.close_all("endpoint shut down");
        self.inner
            .close(VarInt::from_u32(CLOSE_NORMAL), b"endpoint shut down");
        self.inner.wait_idle().await;
    }
}

/// Connects from a fresh client endpoint (ephemeral UDP port, default transport settings).
///
/// A process making many connections should keep one [`Endpoint`] (or use its listener's) and
/// call [`Endpoint::connect`] instead, to share one socket.
pub async fn connect(
    addr: SocketAddr,
    credentials: &Credentials,
    role: Role,
) -> Result<Established, NetError> {
    Endpoint::client(TransportSettings::default())?
        .connect(addr, credentials, role)
        .await
}

/// Reads one frame of at most [`MAX_HELLO_FRAME`] bytes, keeping any bytes after it.
async fn read_hello_frame(
    recv: &mut quinn::RecvStream,
    decoder: &mut FrameDecoder,
) -> Result<Vec<u8>, NetError> {
    loop {
        if let Some(frame) = decoder.next_frame()? {
            return Ok(frame.to_vec());
        }
        match recv.read_chunk(MAX_HELLO_FRAME, true).await? {
            Some(chunk) => decoder.push(&chunk.bytes),
            None => {
                return Err(NetError::Protocol(
                    "the stream ended before a complete hello frame".into(),
                ));
            }
        }
    }
}

/// Turns a connection failure while waiting for the hello reply into a rejection if the peer
/// closed with [`CLOSE_REJECTED`].
fn rejection_of(e: NetError) -> NetError {
    let close = match &e {
        NetError::Read(quinn::ReadError::ConnectionLost(c)) => Some(c),
        NetError::Connection(c) => Some(c),
        _ => None,
    };
    if let Some(quinn::ConnectionError::ApplicationClosed(close)) = close
        && close.error_code == VarInt::from_u32(CLOSE_REJECTED)
    {
        return NetError::Rejected {
            reason: String::from_utf8_lossy(&close.reason).into_owned(),
        };
    }
    e
}

async fn client_hello(
    conn: &quinn::Connection,
    credentials: &Credentials,
    role: Role,
) -> Result<Established, NetError> {
    let binding = tls::session_binding(conn)?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let hello = Hello::new(
        role,
        tls::proof(&credentials.token, &binding, Side::Connector, role),
    );
    send.write_all(&encode(&hello)?)
        .await
        .map_err(|e| rejection_of(e.into()))?;
    let mut decoder = FrameDecoder::new(MAX_HELLO_FRAME);
    let payload = read_hello_frame(&mut recv, &mut decoder)
        .await
        .map_err(rejection_of)?;
    let peer_role = check_reply(&payload, credentials, &binding)?;
    Ok(Established {
        connection: Connection {
            inner: Link::Quic(conn.clone()),
            peer_role,
        },
        control: ControlStream::new(Link::Quic(conn.clone()), send, recv, decoder),
    })
}

/// Configuration of a [`Listener`].
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Certificate chain and key to present.
    pub identity: ServerIdentity,
    /// The cluster token peers must prove.
    pub token: ClusterToken,
    /// Our own role, announced in the hello reply (`Scheduler`, or `Peer` for a worker).
    pub role: Role,
    /// Roles admitted; a hello with another role is rejected.
    pub accept: Vec<Role>,
    /// Socket and transport settings.
    pub transport: TransportSettings,
    /// The CA hash announced on the same-host socket, which connectors pinning a CA compare
    /// (the cluster CA for the scheduler, `None` for a worker's peer listener).
    pub local_ca: Option<crate::CaHash>,
}

impl ListenerConfig {
    /// The scheduler's listener: its cluster identity, admitting clients and workers.
    pub fn scheduler(identity: &crate::ClusterIdentity) -> Self {
        Self {
            identity: identity.server_identity(),
            token: identity.token().clone(),
            role: Role::Scheduler,
            accept: vec![Role::Client, Role::Worker],
            transport: TransportSettings::default(),
            local_ca: Some(identity.ca_hash()),
        }
    }

    /// A worker's peer listener: a fresh self-signed certificate, admitting peers (and clients,
    /// which may fetch results directly).
    pub fn peer(token: ClusterToken) -> Result<Self, NetError> {
        Ok(Self {
            identity: ServerIdentity::self_signed_peer()?,
            token,
            role: Role::Peer,
            accept: vec![Role::Peer, Role::Client],
            transport: TransportSettings::default(),
            local_ca: None,
        })
    }
}

/// A listening endpoint: accepts connections, runs TLS and the hello, and yields only the
/// connections whose hello succeeded. Rejections are logged (`warn`) and never yielded.
///
/// The same socket can also make outgoing connections through [`Listener::endpoint`].
#[derive(Debug)]
pub struct Listener {
    endpoint: Endpoint,
    incoming: mpsc::Receiver<Established>,
    task: tokio::task::JoinHandle<()>,
    /// The same-host socket (removed when the listener is dropped).
    _local: Option<local::LocalListener>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Refuse new connections; established ones keep working.
        self.endpoint.inner.set_server_config(None);
        self.task.abort();
    }
}

/// Handshakes (TLS + hello) allowed to run at once on one listener; more are refused.
const MAX_PENDING_HANDSHAKES: usize = 256;

impl Listener {
    /// Binds `addr` (port 0 for an ephemeral port) and starts accepting (within the current
    /// tokio runtime).
    pub async fn bind(addr: SocketAddr, config: ListenerConfig) -> Result<Self, NetError> {
        let tls = tls::server_config(&config.identity)?;
        let quic = QuicServerConfig::try_from(tls).map_err(|e| NetError::Tls(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
        server.transport_config(Arc::new(config.transport.transport_config()));
        let inner = config.transport.endpoint(addr, Some(server))?;
        let endpoint = Endpoint {
            inner: inner.clone(),
            settings: config.transport.clone(),
            links: local::Tracker::default(),
        };
        let (tx, incoming) = mpsc::channel(256);
        let config = Arc::new(config);
        let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
        let local = if config.transport.local_transport {
            let bound = endpoint.local_addr()?;
            match local::listen(
                bound,
                config.clone(),
                tx.clone(),
                pending.clone(),
                endpoint.links.clone(),
            ) {
                Ok(local) => Some(local),
                Err(e) => {
                    tracing::warn!(error = %e, "no same-host socket; peers on this host use QUIC");
                    None
                }
            }
        } else {
            None
        };
        let task = tokio::spawn(async move {
            while let Some(incoming) = inner.accept().await {
                let Ok(permit) = pending.clone().try_acquire_owned() else {
                    tracing::warn!(remote = %incoming.remote_address(), "too many pending handshakes; refusing a connection");
                    incoming.refuse();
                    continue;
                };
                let config = config.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let remote = incoming.remote_address();
                    match accept_one(incoming, &config).await {
                        Ok(established) => {
                            tracing::debug!(%remote, role = %established.connection.peer_role(), "peer joined");
                            let _ = tx.send(established).await;
                        }
                        Err(e) => tracing::warn!(%remote, error = %e, "refused a connection"),
                    }
                });
            }
        });
        Ok(Self {
            endpoint,
            incoming,
            task,
            _local: local,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.endpoint.local_addr()
    }

    /// The next authenticated connection; `None` once the endpoint is closed.
    pub async fn accept(&mut self) -> Option<Established> {
        self.incoming.recv().await
    }

    /// The endpoint, to make outgoing connections from the same socket.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
}

async fn accept_one(
    incoming: quinn::Incoming,
    config: &ListenerConfig,
) -> Result<Established, NetError> {
    let after = config.transport.handshake_timeout;
    let conn = match timeout(after, incoming).await {
        Ok(conn) => conn?,
        Err(_) => {
            return Err(NetError::Timeout {
                what: "the TLS handshake",
                after,
            });
        }
    };
    match timeout(after, server_hello(&conn, config)).await {
        Ok(Ok(established)) => Ok(established),
        Ok(Err((e, send))) => {
            reject(&conn, send, &e).await;
            Err(e)
        }
        Err(_) => {
            let e = NetError::Timeout {
                what: "the hello",
                after,
            };
            conn.close(VarInt::from_u32(CLOSE_REJECTED), e.to_string().as_bytes());
            Err(e)
        }
    }
}

/// Tells the peer why it was rejected (as a reply if the stream is open, and as the close
/// reason), giving the reply a moment to arrive before closing.
async fn reject(conn: &quinn::Connection, send: Option<quinn::SendStream>, e: &NetError) {
    let reason = match e {
        NetError::Denied { reason } => reason.clone(),
        other => other.to_string(),
    };
    if let Some(mut send) = send
        && let Ok(frame) = encode(&HelloReply::rejected(reason.clone()))
        && send.write_all(&frame).await.is_ok()
        && send.finish().is_ok()
    {
        // The peer closes when it has read the reply; don't wait long for it.
        let _ = timeout(Duration::from_millis(500), conn.closed()).await;
    }
    conn.close(VarInt::from_u32(CLOSE_REJECTED), reason.as_bytes());
}

type HelloFailure = (NetError, Option<quinn::SendStream>);

/// The acceptor's judgement of a hello whose proof is bound to `binding`: the peer's role and
/// the accepting reply to send, or why it is refused.
pub(crate) fn judge_hello(
    payload: &[u8],
    config: &ListenerConfig,
    binding: &[u8; 32],
) -> Result<(Role, Vec<u8>), NetError> {
    let hello = Hello::decode(payload)?;
    if !config.accept.contains(&hello.role) {
        return Err(NetError::Denied {
            reason: format!("a {} may not connect to this {}", hello.role, config.role),
        });
    }
    if !tls::check_proof(
        &config.token,
        binding,
        Side::Connector,
        hello.role,
        &hello.auth,
    ) {
        return Err(NetError::Denied {
            reason: "invalid cluster token".into(),
        });
    }
    let reply = HelloReply::accepted(
        config.role,
        tls::proof(&config.token, binding, Side::Acceptor, config.role),
    );
    Ok((hello.role, encode(&reply)?))
}

/// The connector's check of a hello reply whose proof is bound to `binding`: the peer's role,
/// or its refusal, or a proof that does not verify.
pub(crate) fn check_reply(
    payload: &[u8],
    credentials: &Credentials,
    binding: &[u8; 32],
) -> Result<Role, NetError> {
    match HelloReply::decode(payload)?.outcome {
        HelloOutcome::Rejected { reason } => Err(NetError::Rejected { reason }),
        HelloOutcome::Accepted {
            role: peer_role,
            auth,
        } => {
            if tls::check_proof(
                &credentials.token,
                binding,
                Side::Acceptor,
                peer_role,
                &auth,
            ) {
                Ok(peer_role)
            } else {
                Err(NetError::BadProof)
            }
        }
    }
}

async fn server_hello(
    conn: &quinn::Connection,
    config: &ListenerConfig,
) -> Result<Established, HelloFailure> {
    let binding = tls::session_binding(conn).map_err(|e| (e, None))?;
    let (send, mut recv) = conn.accept_bi().await.map_err(|e| (e.into(), None))?;
    let mut decoder = FrameDecoder::new(MAX_HELLO_FRAME);
    let payload = match read_hello_frame(&mut recv, &mut decoder).await {
        Ok(p) => p,
        Err(e) => return Err((e, Some(send))),
    };
    let (role, frame) = match judge_hello(&payload, config, &binding) {
        Ok(judged) => judged,
        Err(e) => return Err((e, Some(send))),
    };
    let mut send = send;
    if let Err(e) = send.write_all(&frame).await {
        return Err((e.into(), None));
    }
    Ok(Established {
        connection: Connection {
            inner: Link::Quic(conn.clone()),
            peer_role: role,
        },
        control: ControlStream::new(Link::Quic(conn.clone()), send, recv, decoder),
    })
}
