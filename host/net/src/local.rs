//! Same-host links: the control stream and bulk transfers over Unix domain sockets.
//!
//! Every [`Listener`](crate::Listener) whose [`TransportSettings::local_transport`] is on also
//! listens on a Unix socket in a private per-user directory ([`local_dir`]), named after its UDP
//! address (`<ip>-<port>.sock`). A connector whose target is one of this host's own addresses
//! tries that socket first and falls back to QUIC when it is missing or nobody answers.
//!
//! The hello is the same as over QUIC, with the TLS session binding replaced by two fresh
//! nonces and the CA hash the acceptor announces:
//!
//! 1. connector: `protocol (u32 LE) | OPEN_CONTROL | nonce_c (32)`;
//! 2. acceptor: `nonce_s (32) | ca (32)` (its cluster CA hash, zeros for a worker's peer
//!    listener); a connector that pins another CA stops here;
//! 3. the [`Hello`] / [`HelloReply`] frames, whose token proofs are bound to
//!    `BLAKE3(nonce_c, nonce_s, ca)`.
//!
//! Both ends then derive a link secret from the token and the binding. A bulk connection opens
//! with `protocol | OPEN_BULK | secret` and then carries any number of requests in turn:
//! `len (u32 LE) | postcard request`, answered like a QUIC bulk stream (status byte, `u64`
//! length, bytes). The connector keeps idle bulk connections for reuse.
//!
//! What the socket adds over QUIC on one host: no encryption, no congestion control and one
//! wake-up per message instead of several. What it keeps: the token proofs in both directions,
//! and the pinned CA hash (announced rather than proved by a signature: a process of the same
//! user can read the token and keys from the data directory anyway, and no other user can open
//! the directory). See `docs/security.md`.
//!
//! [`TransportSettings::local_transport`]: crate::TransportSettings::local_transport

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use taskhost_proto::{FrameDecoder, Hello, HelloReply, MAX_HELLO_FRAME, PROTOCOL, Role, encode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::bulk::IncomingBulk;
use crate::control::ControlStream;
use crate::endpoint::{Connection, Established, Link, ListenerConfig, check_reply, judge_hello};
use crate::local_stream::LocalStream;
use crate::tls::{self, Side, Trust};
use crate::{ClusterToken, Credentials, MAX_BULK_REQUEST, NetError};

/// Environment variable naming the directory of same-host sockets (default
/// `$XDG_RUNTIME_DIR/taskhost`, else `<temp dir>/taskhost-<uid>`).
pub const LOCAL_DIR_ENV: &str = "TASKHOST_LOCAL_DIR";
/// Environment variable that turns same-host sockets off when set to `0`, `off` or `false`
/// (the default of [`TransportSettings::local_transport`](crate::TransportSettings)).
pub const LOCAL_TRANSPORT_ENV: &str = "TASKHOST_LOCAL_TRANSPORT";

/// A frame length that never occurs (frames are far smaller): it starts the close record that
/// carries the reason a link was closed, `CLOSE_RECORD (u32 LE) | len (u16 LE) | reason`.
const CLOSE_RECORD: u32 = u32::MAX;
/// Longest close reason sent.
const MAX_CLOSE_REASON: usize = 1024;

const OPEN_CONTROL: u8 = 0;
const OPEN_BULK: u8 = 1;
const OPEN_LEN: usize = 37;
/// `SO_SNDBUF` / `SO_RCVBUF` asked for bulk connections.
const BULK_SOCKET_BUFFER: usize = 4 * 1024 * 1024;
/// Bulk connections of one link open at once (QUIC likewise caps a connection's streams).
const MAX_BULK_CONNECTIONS: usize = 256;
/// Idle bulk connections kept per link.
const MAX_IDLE_BULK: usize = 16;

/// Whether [`LOCAL_TRANSPORT_ENV`] leaves same-host sockets on.
pub(crate) fn enabled_by_env() -> bool {
    !matches!(
        std::env::var(LOCAL_TRANSPORT_ENV).as_deref(),
        Ok("0" | "off" | "false" | "no")
    )
}

/// The private directory of same-host sockets, created with mode 0700 if missing. Refused if
/// it is not a directory owned by this user and closed to others.
pub(crate) fn local_dir() -> Result<PathBuf, String> {
    let uid = current_uid().map_err(|e| format!("cannot learn this process's user: {e}"))?;
    let dir = if let Some(dir) = std::env::var_os(LOCAL_DIR_ENV) {
        PathBuf::from(dir)
    } else if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        PathBuf::from(dir).join("taskhost")
    } else {
        std::env::temp_dir().join(format!("taskhost-{uid}"))
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let meta = std::fs::symlink_metadata(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{} must be a directory of user {uid} with mode 0700",
            dir.display()
        ));
    }
    Ok(dir)
}

fn current_uid() -> std::io::Result<u32> {
    Ok(std::fs::metadata("/proc/self")?.uid())
}

/// The socket of the listener bound to `addr`.
fn socket_path(dir: &Path, addr: SocketAddr) -> PathBuf {
    dir.join(format!("{}-{}.sock", addr.ip(), addr.port()))
}

/// Whether `ip` is an address of this host (cached: probing binds a UDP socket).
fn is_local_ip(ip: IpAddr) -> bool {
    if ip.is_loopback() || ip.is_unspecified() {
        return true;
    }
    static CACHE: OnceLock<Mutex<HashMap<IpAddr, bool>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(&known) = lock(cache).get(&ip) {
        return known;
    }
    let local = std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok();
    lock(cache).insert(ip, local);
    local
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The sockets a listener reachable at `addr` may have, if `addr` is on this host: its own
/// address first, then the wildcard addresses of its port.
pub(crate) fn candidates(addr: SocketAddr) -> Vec<PathBuf> {
    if !is_local_ip(addr.ip()) {
        return Vec::new();
    }
    let Ok(dir) = local_dir() else {
        return Vec::new();
    };
    let mut out = vec![socket_path(&dir, addr)];
    for wildcard in [
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    ] {
        let path = socket_path(&dir, SocketAddr::new(wildcard, addr.port()));
        if !out.contains(&path) {
            out.push(path);
        }
    }
    out.retain(|p| p.exists());
    out
}

/// The session binding: both nonces and the CA the acceptor announced.
fn binding(nonce_c: &[u8; 32], nonce_s: &[u8; 32], ca: &[u8; 32]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key("taskhost same-host session binding v1");
    hasher.update(nonce_c);
    hasher.update(nonce_s);
    hasher.update(ca);
    *hasher.finalize().as_bytes()
}

/// The secret that opens bulk connections of a link (known only to its two ends).
fn link_secret(token: &ClusterToken, binding: &[u8; 32]) -> [u8; 32] {
    let key = blake3::derive_key("taskhost same-host link secret v1", token.as_bytes());
    *blake3::keyed_hash(&key, binding).as_bytes()
}

fn open_header(kind: u8, body: &[u8; 32]) -> [u8; OPEN_LEN] {
    let mut out = [0u8; OPEN_LEN];
    out[..4].copy_from_slice(&PROTOCOL.to_le_bytes());
    out[4] = kind;
    out[5..].copy_from_slice(body);
    out
}

/// One same-host link: shared by its [`Connection`] handles and control stream halves.
pub(crate) struct LocalLink {
    remote: SocketAddr,
    /// Connector side: the socket bulk connections are opened on.
    path: Option<PathBuf>,
    secret: [u8; 32],
    /// A duplicate of the control socket, to shut it down on close.
    socket: std::os::unix::net::UnixStream,
    /// Why the link closed, once it has.
    closed: watch::Sender<Option<String>>,
    /// Whether the peer closed it (its reason arrived in a close record).
    closed_by_peer: std::sync::atomic::AtomicBool,
    /// Whether a control stream writer task runs (it sends the close record).
    writer: std::sync::atomic::AtomicBool,
    idle: Mutex<Vec<LocalStream>>,
    /// Bulk connections in use or idle (connector side).
    bulk_slots: Arc<tokio::sync::Semaphore>,
    incoming_tx: mpsc::Sender<IncomingBulk>,
    incoming_rx: tokio::sync::Mutex<mpsc::Receiver<IncomingBulk>>,
}

impl std::fmt::Debug for LocalLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLink")
            .field("remote", &self.remote)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl LocalLink {
    fn new(
        remote: SocketAddr,
        path: Option<PathBuf>,
        secret: [u8; 32],
        control: &LocalStream,
    ) -> Result<Arc<Self>, NetError> {
        let socket = control.socket().try_clone()?;
        let (incoming_tx, incoming_rx) = mpsc::channel(64);
        Ok(Arc::new(Self {
            remote,
            path,
            secret,
            socket,
            closed: watch::Sender::new(None),
            closed_by_peer: Default::default(),
            writer: Default::default(),
            idle: Mutex::new(Vec::new()),
            bulk_slots: Arc::new(tokio::sync::Semaphore::new(MAX_BULK_CONNECTIONS)),
            incoming_tx,
            incoming_rx: tokio::sync::Mutex::new(incoming_rx),
        }))
    }

    /// The address this link stands for (the one dialed, or loopback on the accepting side).
    pub(crate) fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// Closes the link: the control stream's writer sends the reason in a close record and
    /// shuts the socket down (at once if there is no writer, within a second if it is stuck);
    /// idle bulk connections are dropped.
    pub(crate) fn close(&self, reason: &str) {
        if !self.set_reason(reason) {
            return;
        }
        lock(&self.idle).clear();
        if !self.writer.load(std::sync::atomic::Ordering::Acquire) {
            self.shutdown();
            return;
        }
        match (
            tokio::runtime::Handle::try_current(),
            self.socket.try_clone(),
        ) {
            (Ok(runtime), Ok(socket)) => {
                runtime.spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    let _ = socket.shutdown(std::net::Shutdown::Both);
                });
            }
            _ => self.shutdown(),
        }
    }

    /// The peer closed the link and said why.
    pub(crate) fn closed_by_peer(&self, reason: &str) {
        self.closed_by_peer
            .store(true, std::sync::atomic::Ordering::Release);
        if self.set_reason(reason) {
            lock(&self.idle).clear();
            self.shutdown();
        }
    }

    /// Records the close reason; false if the link was already closed.
    fn set_reason(&self, reason: &str) -> bool {
        self.closed.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason.to_string());
                true
            } else {
                false
            }
        })
    }

    /// Another handle on the control socket (non-blocking, like the original).
    pub(crate) fn duplicate_socket(&self) -> Option<std::os::unix::net::UnixStream> {
        let socket = self.socket.try_clone().ok()?;
        socket.set_nonblocking(true).ok()?;
        Some(socket)
    }

    /// Shuts both directions of the control socket.
    pub(crate) fn shutdown(&self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }

    /// Marks whether a control stream writer runs.
    pub(crate) fn set_writer(&self, running: bool) {
        self.writer
            .store(running, std::sync::atomic::Ordering::Release);
    }

    /// The close record to send, if this side closed the link.
    pub(crate) fn close_record(&self) -> Option<Vec<u8>> {
        if self
            .closed_by_peer
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return None;
        }
        let reason = self.close_reason()?;
        let mut cut = reason.len().min(MAX_CLOSE_REASON);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut record = Vec::with_capacity(6 + cut);
        record.extend_from_slice(&CLOSE_RECORD.to_le_bytes());
        record.extend_from_slice(&(cut as u16).to_le_bytes());
        record.extend_from_slice(&reason.as_bytes()[..cut]);
        Some(record)
    }

    /// Why the link closed, if it has.
    pub(crate) fn close_reason(&self) -> Option<String> {
        self.closed.borrow().clone()
    }

    /// Waits until the link closes and says why.
    pub(crate) async fn closed(&self) -> String {
        let mut rx = self.closed.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "the link was dropped".into(),
        }
    }

    /// A permit to hold a bulk connection (waits while [`MAX_BULK_CONNECTIONS`] are in use).
    pub(crate) async fn bulk_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, NetError> {
        self.bulk_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| NetError::LinkClosed {
                reason: "the link is closed".into(),
            })
    }

    /// An idle bulk connection, if there is one (connector side).
    pub(crate) fn idle_stream(&self) -> Option<LocalStream> {
        lock(&self.idle).pop()
    }

    /// Drops every idle bulk connection (one of them failed: the others may be stale too).
    pub(crate) fn clear_idle(&self) {
        lock(&self.idle).clear();
    }

    /// A new bulk connection (connector side only). The link is closed only when the peer's
    /// socket is gone, not on a transient failure (out of file descriptors, full backlog).
    pub(crate) async fn new_bulk_stream(&self) -> Result<LocalStream, NetError> {
        if let Some(reason) = self.close_reason() {
            return Err(NetError::LinkClosed { reason });
        }
        let Some(path) = &self.path else {
            return Err(NetError::Protocol(
                "bulk requests on a same-host link are opened by the connecting side".into(),
            ));
        };
        let mut stream = match LocalStream::connect(path).await {
            Ok(stream) => stream,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                let reason = format!("the peer's socket {} is gone: {e}", path.display());
                self.close(&reason);
                return Err(NetError::LinkClosed { reason });
            }
            Err(e) => return Err(e.into()),
        };
        size_bulk_buffers(&stream);
        stream
            .write_all(&open_header(OPEN_BULK, &self.secret))
            .await?;
        Ok(stream)
    }

    /// Returns a bulk connection whose last response was read completely.
    pub(crate) fn reuse(&self, stream: LocalStream) {
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE_BULK && self.close_reason().is_none() {
            idle.push(stream);
        }
    }

    /// The next bulk request of the peer; `None` once the link is closed.
    pub(crate) async fn accept_bulk(&self) -> Option<IncomingBulk> {
        let mut rx = self.incoming_rx.lock().await;
        tokio::select! {
            incoming = rx.recv() => incoming,
            _ = self.closed() => None,
        }
    }
}

/// A close record at the start of `unread`: `Some(Some(reason))` when complete, `Some(None)`
/// when more bytes are needed, `None` if the next bytes are a frame.
pub(crate) fn close_record_in(unread: &[u8]) -> Option<Option<(String, usize)>> {
    let header = unread.get(..4)?;
    if header != CLOSE_RECORD.to_le_bytes() {
        return None;
    }
    let Some(len) = unread.get(4..6) else {
        return Some(None);
    };
    let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
    let Some(reason) = unread.get(6..6 + len) else {
        return Some(None);
    };
    Some(Some((
        String::from_utf8_lossy(reason).into_owned(),
        6 + len,
    )))
}

/// Socket buffers of a bulk connection: large enough that an 8 MiB chunk crosses in a few
/// writes rather than dozens of 200 KiB ones (the kernel caps them at `wmem_max`).
fn size_bulk_buffers(stream: &LocalStream) {
    let socket = socket2::SockRef::from(stream);
    let _ = socket.set_send_buffer_size(BULK_SOCKET_BUFFER);
    let _ = socket.set_recv_buffer_size(BULK_SOCKET_BUFFER);
}

/// The same-host links of an endpoint (made or accepted through it), closed when it shuts
/// down, as its QUIC connections are.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tracker(Arc<Mutex<Vec<Weak<LocalLink>>>>);

impl Tracker {
    /// Remembers `link` (and forgets links dropped meanwhile).
    pub(crate) fn track(&self, link: &Arc<LocalLink>) {
        let mut links = lock(&self.0);
        links.retain(|l| l.strong_count() > 0);
        links.push(Arc::downgrade(link));
    }

    /// Closes every live link.
    pub(crate) fn close_all(&self, reason: &str) {
        let links = std::mem::take(&mut *lock(&self.0));
        for link in links.iter().filter_map(Weak::upgrade) {
            link.close(reason);
        }
    }
}

/// Tries the same-host sockets of `addr`. `Ok(None)`: none accepted us (use QUIC). A refusal
/// here also falls back to QUIC, which then gives the peer's answer with the certainty of TLS:
/// the socket of another network namespace sharing the directory may stand at this name, and
/// falling back costs nothing but a handshake.
pub(crate) async fn connect(
    addr: SocketAddr,
    credentials: &Credentials,
    role: Role,
) -> Result<Option<Established>, NetError> {
    for path in candidates(addr) {
        let stream = match LocalStream::connect(&path).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "same-host socket unavailable");
                continue;
            }
        };
        match client_handshake(stream, &path, addr, credentials, role).await {
            Ok(established) => return Ok(Some(established)),
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "same-host handshake failed; trying QUIC");
            }
        }
    }
    Ok(None)
}

async fn read_frame(
    stream: &mut LocalStream,
    decoder: &mut FrameDecoder,
) -> Result<Vec<u8>, NetError> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(frame) = decoder.next_frame()? {
            return Ok(frame.to_vec());
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(NetError::Protocol(
                "the socket closed before a complete hello frame".into(),
            ));
        }
        decoder.push(&buf[..n]);
    }
}

async fn client_handshake(
    mut stream: LocalStream,
    path: &Path,
    addr: SocketAddr,
    credentials: &Credentials,
    role: Role,
) -> Result<Established, NetError> {
    let nonce_c = crate::identity::random_bytes()?;
    stream
        .write_all(&open_header(OPEN_CONTROL, &nonce_c))
        .await?;
    let mut answer = [0u8; 64];
    stream.read_exact(&mut answer).await?;
    let nonce_s: [u8; 32] = answer[..32].try_into().unwrap_or_default();
    let ca: [u8; 32] = answer[32..].try_into().unwrap_or_default();
    if let Trust::PinnedCa(pinned) = credentials.trust
        && pinned.0 != ca
    {
        return Err(NetError::PinMismatch { pinned });
    }
    let binding = binding(&nonce_c, &nonce_s, &ca);
    let hello = Hello::new(
        role,
        tls::proof(&credentials.token, &binding, Side::Connector, role),
    );
    stream.write_all(&encode(&hello)?).await?;
    let mut decoder = FrameDecoder::new(MAX_HELLO_FRAME);
    let payload = read_frame(&mut stream, &mut decoder).await?;
    let peer_role = check_reply(&payload, credentials, &binding)?;
    let secret = link_secret(&credentials.token, &binding);
    let link = LocalLink::new(addr, Some(path.to_path_buf()), secret, &stream)?;
    Ok(established(link, peer_role, stream, decoder))
}

fn established(
    link: Arc<LocalLink>,
    peer_role: Role,
    stream: LocalStream,
    decoder: FrameDecoder,
) -> Established {
    let (read, write) = stream.into_split();
    let link = Link::Local(link);
    Established {
        connection: Connection {
            inner: link.clone(),
            peer_role,
        },
        control: ControlStream::local(link, read, write, decoder),
    }
}

/// A listener's same-host socket: removed when dropped.
#[derive(Debug)]
pub(crate) struct LocalListener {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LocalListener {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Links accepted by one listener, by secret, for their bulk connections to find.
type Registry = Arc<Mutex<HashMap<[u8; 32], Weak<LocalLink>>>>;

/// Listens on the same-host socket of `addr`, handing established links to `tx`.
pub(crate) fn listen(
    addr: SocketAddr,
    config: Arc<ListenerConfig>,
    tx: mpsc::Sender<Established>,
    pending: Arc<tokio::sync::Semaphore>,
    tracker: Tracker,
) -> Result<LocalListener, String> {
    let dir = local_dir()?;
    let path = socket_path(&dir, addr);
    remove_dead_sockets(&dir);
    // A live listener at this name can only be in another network namespace sharing the
    // directory: leave it alone (peers here then use QUIC).
    if std::os::unix::net::UnixStream::connect(&path).is_ok() {
        return Err(format!(
            "{} belongs to a live listener (another network namespace?)",
            path.display()
        ));
    }
    // A socket left by a process that died.
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    let registry: Registry = Arc::default();
    let ca = config.local_ca.map_or([0u8; 32], |ca| ca.0);
    let task = tokio::spawn(async move {
        loop {
            let stream = match listener
                .accept()
                .await
                .and_then(|(s, _)| LocalStream::from_tokio(s))
            {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "same-host accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let Ok(permit) = pending.clone().try_acquire_owned() else {
                tracing::warn!("too many pending handshakes; refusing a same-host connection");
                continue;
            };
            let (config, tx, registry) = (config.clone(), tx.clone(), registry.clone());
            let tracker = tracker.clone();
            tokio::spawn(async move {
                let after = config.transport.handshake_timeout;
                let opened =
                    tokio::time::timeout(after, accept_one(stream, &config, ca, &registry)).await;
                drop(permit);
                match opened {
                    Ok(Ok(Some(established))) => {
                        if let Link::Local(link) = &established.connection.inner {
                            tracker.track(link);
                        }
                        tracing::debug!(role = %established.connection.peer_role(), "peer joined on the same-host socket");
                        let _ = tx.send(established).await;
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "refused a same-host connection"),
                    Err(_) => {
                        tracing::warn!("a same-host connection did not finish its hello in time")
                    }
                }
            });
        }
    });
    Ok(LocalListener { path, task })
}

/// Removes the sockets in `dir` that nobody listens on any more (left by processes that were
/// killed), so that the directory does not grow without bound.
fn remove_dead_sockets(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "sock")
            && let Err(e) = std::os::unix::net::UnixStream::connect(&path)
            && e.kind() == std::io::ErrorKind::ConnectionRefused
        {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Reads the opening of a same-host connection: a control link (returned once its hello
/// succeeded) or a bulk connection of a known link (served in its own task).
async fn accept_one(
    mut stream: LocalStream,
    config: &ListenerConfig,
    ca: [u8; 32],
    registry: &Registry,
) -> Result<Option<Established>, NetError> {
    let mut open = [0u8; OPEN_LEN];
    // A connection closed at once is a liveness probe (see `remove_dead_sockets`): no noise.
    if stream.read(&mut open[..1]).await? == 0 {
        return Ok(None);
    }
    stream.read_exact(&mut open[1..]).await?;
    let protocol = u32::from_le_bytes(open[..4].try_into().unwrap_or_default());
    let body: [u8; 32] = open[5..].try_into().unwrap_or_default();
    if protocol != PROTOCOL {
        // A peer of another version falls back to QUIC and gets the hello's clear error there.
        return Err(NetError::Protocol(format!(
            "same-host opening with protocol word {protocol:#010x}"
        )));
    }
    match open[4] {
        OPEN_CONTROL => server_handshake(stream, config, ca, &body, registry)
            .await
            .map(Some),
        OPEN_BULK => {
            let link = lock(registry).get(&body).and_then(Weak::upgrade);
            let Some(link) = link else {
                return Err(NetError::Denied {
                    reason: "bulk connection for an unknown link".into(),
                });
            };
            size_bulk_buffers(&stream);
            tokio::spawn(serve_bulk_connection(Arc::downgrade(&link), stream));
            Ok(None)
        }
        other => Err(NetError::Protocol(format!(
            "unknown same-host opening kind {other}"
        ))),
    }
}

async fn server_handshake(
    mut stream: LocalStream,
    config: &ListenerConfig,
    ca: [u8; 32],
    nonce_c: &[u8; 32],
    registry: &Registry,
) -> Result<Established, NetError> {
    let nonce_s = crate::identity::random_bytes()?;
    let mut answer = [0u8; 64];
    answer[..32].copy_from_slice(&nonce_s);
    answer[32..].copy_from_slice(&ca);
    stream.write_all(&answer).await?;
    let binding = binding(nonce_c, &nonce_s, &ca);
    let mut decoder = FrameDecoder::new(MAX_HELLO_FRAME);
    let payload = read_frame(&mut stream, &mut decoder).await?;
    let e = match judge_hello(&payload, config, &binding) {
        Ok((role, frame)) => {
            stream.write_all(&frame).await?;
            let secret = link_secret(&config.token, &binding);
            let link = LocalLink::new(
                SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                None,
                secret,
                &stream,
            )?;
            {
                let mut links = lock(registry);
                links.retain(|_, l| l.strong_count() > 0);
                links.insert(secret, Arc::downgrade(&link));
            }
            return Ok(established(link, role, stream, decoder));
        }
        Err(e) => e,
    };
    let reason = match &e {
        NetError::Denied { reason } => reason.clone(),
        other => other.to_string(),
    };
    if let Ok(frame) = encode(&HelloReply::rejected(reason)) {
        let _ = stream.write_all(&frame).await;
    }
    Err(e)
}

/// Reads the requests of one bulk connection in turn and queues each for the link's
/// `accept_bulk`; the responder hands the connection back for the next request.
async fn serve_bulk_connection(link: Weak<LocalLink>, mut stream: LocalStream) {
    let Some(mut closed) = link.upgrade().map(|l| l.closed.subscribe()) else {
        return;
    };
    loop {
        // The length and the request, usually in one read (a client sends nothing else until
        // it has the answer).
        let mut buf = bytes::BytesMut::with_capacity(4096);
        while buf.len() < 4 {
            tokio::select! {
                read = stream.read_buf(&mut buf) => if !matches!(read, Ok(1..)) { return },
                _ = closed.wait_for(Option::is_some) => return,
            }
        }
        let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len > MAX_BULK_REQUEST {
            tracing::warn!(
                len,
                "same-host bulk request too long; closing its connection"
            );
            return;
        }
        buf.reserve((4 + len).saturating_sub(buf.len()));
        while buf.len() < 4 + len {
            if !matches!(stream.read_buf(&mut buf).await, Ok(1..)) {
                return;
            }
        }
        if buf.len() > 4 + len {
            tracing::warn!("same-host bulk request followed by more bytes; closing its connection");
            return;
        }
        let request = buf[4..].to_vec();
        let Some(incoming_tx) = link.upgrade().map(|l| l.incoming_tx.clone()) else {
            return;
        };
        let (back, returned) = oneshot::channel();
        if incoming_tx
            .send(IncomingBulk::local(request, stream, back))
            .await
            .is_err()
        {
            return;
        }
        drop(incoming_tx);
        match returned.await {
            Ok(s) => stream = s,
            Err(_) => return,
        }
    }
}
