//! Loopback tests of endpoints, authentication, the control stream and bulk transfers.
//! Every wait is bounded.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use taskhost_proto::{AuthProof, Hello, HelloOutcome, HelloReply, Role, encode, protocol_word};

use crate::tls::{self, Side};
use crate::*;

const WAIT: Duration = Duration::from_secs(10);

pub(crate) async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(WAIT, f)
        .await
        .expect("test step timed out")
}

/// Nothing arrives within a short time.
pub(crate) async fn nothing_within<F: Future>(f: F) -> bool {
    tokio::time::timeout(Duration::from_millis(300), f)
        .await
        .is_err()
}

pub(crate) fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub(crate) struct Cluster {
    _dir: tempfile::TempDir,
    pub(crate) identity: ClusterIdentity,
    pub(crate) listener: Listener,
    pub(crate) ticket: JoinTicket,
}

pub(crate) async fn scheduler() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let (identity, created) = ClusterIdentity::load_or_create(dir.path()).unwrap();
    assert!(created);
    let listener = Listener::bind(loopback(), ListenerConfig::scheduler(&identity))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let ticket = identity.ticket(vec![addr.to_string()]);
    Cluster {
        _dir: dir,
        identity,
        listener,
        ticket,
    }
}

/// Writes a frame whose payload is not a `Msg` (variant 200) on `est`'s control stream and
/// checks that `server`'s receiver refuses it; returns the server's halves (its sender's
/// writer is what tells the peer why the connection closed).
pub(crate) async fn garbage_frame_is_refused(
    est: &mut Established,
    server: Established,
) -> (Sender<Msg>, Receiver<Msg>) {
    let (stx, mut srx) = server.control.split::<Msg, Msg>();
    est.control
        .send
        .write_all(&[2, 0, 0, 0, 200, 1])
        .await
        .unwrap();
    let err = bounded(srx.recv()).await.unwrap_err();
    assert!(err.to_string().contains("malformed frame payload"), "{err}");
    (stx, srx)
}

/// Sends pings until a send fails (the stream closed), within the test bound.
pub(crate) async fn first_send_error(tx: &Sender<Msg>) -> NetError {
    bounded(async {
        loop {
            if let Err(e) = tx.send(&Msg::Ping(2)).await {
                break e;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// A client endpoint that always uses QUIC (these tests are about QUIC and TLS; the same-host
/// sockets have their own tests in `local_tests.rs`).
fn client() -> Endpoint {
    Endpoint::client(TransportSettings {
        local_transport: false,
        ..TransportSettings::default()
    })
    .unwrap()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Msg {
    Ping(u64),
    Pong(u64),
    Text(String),
    Blob(Vec<u8>),
}

#[tokio::test]
async fn hello_success_and_messages_both_ways() {
    let mut c = scheduler().await;
    let ticket: JoinTicket = c.ticket.to_string().parse().unwrap();
    let est = bounded(client().connect_ticket(&ticket, Role::Worker))
        .await
        .unwrap();
    assert_eq!(est.connection.peer_role(), Role::Scheduler);
    let server = bounded(c.listener.accept()).await.unwrap();
    assert_eq!(server.connection.peer_role(), Role::Worker);

    let (tx, mut rx) = est.control.split::<Msg, Msg>();
    let (stx, mut srx) = server.control.split::<Msg, Msg>();
    tx.send(&Msg::Ping(1)).await.unwrap();
    assert_eq!(bounded(srx.recv()).await.unwrap(), Some(Msg::Ping(1)));
    stx.send(&Msg::Pong(1)).await.unwrap();
    assert_eq!(bounded(rx.recv()).await.unwrap(), Some(Msg::Pong(1)));

    // Dropping the sender finishes the stream: the other side sees a clean end.
    drop(tx);
    assert_eq!(bounded(srx.recv()).await.unwrap(), None);

    // Once the connection is closed, sending fails promptly with the reason.
    server.connection.close("scheduler shutting down");
    let _ = bounded(est.connection.closed()).await;
    let err = first_send_error(&stx).await;
    assert!(err.to_string().contains("closed"), "{err}");
    assert!(bounded(rx.recv()).await.is_err());
}

#[tokio::test]
async fn wrong_token_is_rejected() {
    let mut c = scheduler().await;
    let mut ticket = c.ticket.clone();
    ticket.token = ClusterToken::generate().unwrap();
    for role in [Role::Worker, Role::Client] {
        let err = bounded(client().connect_ticket(&ticket, role))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, NetError::Rejected { reason } if reason.contains("invalid cluster token")),
            "{err}"
        );
    }
    assert!(nothing_within(c.listener.accept()).await);
}

#[tokio::test]
async fn wrong_pinned_ca_is_refused_by_tls() {
    let mut c = scheduler().await;
    let mut ticket = c.ticket.clone();
    ticket.ca_hash = CaHash([9; 32]);
    let err = bounded(client().connect_ticket(&ticket, Role::Worker))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("does not match the pinned"),
        "{err}"
    );
    assert!(nothing_within(c.listener.accept()).await);

    // Another cluster's scheduler (right token is irrelevant: different CA).
    let other = scheduler().await;
    let mut ticket = c.ticket.clone();
    ticket.addrs = other.ticket.addrs.clone();
    let err = bounded(client().connect_ticket(&ticket, Role::Worker))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("does not match the pinned"),
        "{err}"
    );
}

#[tokio::test]
async fn token_holder_cannot_impersonate_the_scheduler() {
    // A peer listener holds the right token but not the CA key: a pinned client refuses it.
    let c = scheduler().await;
    let peer = Listener::bind(
        loopback(),
        ListenerConfig::peer(c.identity.token().clone()).unwrap(),
    )
    .await
    .unwrap();
    let mut ticket = c.ticket.clone();
    ticket.addrs = vec![peer.local_addr().unwrap().to_string()];
    let err = bounded(client().connect_ticket(&ticket, Role::Worker))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("does not match the pinned"),
        "{err}"
    );
}

#[tokio::test]
async fn garbage_instead_of_hello_is_rejected() {
    let mut c = scheduler().await;
    let addr = c.listener.local_addr().unwrap();
    let creds = Credentials::peer(c.identity.token().clone());
    for garbage in [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0xff; 64],
        vec![3, 0, 0, 0, 1, 2, 3],
    ] {
        let conn = bounded(client().raw_connect(addr, &creds)).await.unwrap();
        let (mut send, mut recv) = bounded(conn.open_bi()).await.unwrap();
        send.write_all(&garbage).await.unwrap();
        send.finish().unwrap();
        let reply = bounded(recv.read_to_end(4096)).await;
        if let Ok(bytes) = reply {
            let reply = HelloReply::decode(&bytes[4..]).unwrap();
            assert!(matches!(reply.outcome, HelloOutcome::Rejected { .. }));
        }
        let closed = bounded(conn.closed()).await;
        assert!(
            matches!(&closed, quinn::ConnectionError::ApplicationClosed(c)
                if c.error_code == quinn::VarInt::from_u32(CLOSE_REJECTED)),
            "{closed}"
        );
    }
    assert!(nothing_within(c.listener.accept()).await);
}

#[tokio::test]
async fn silent_peer_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let (identity, _) = ClusterIdentity::load_or_create(dir.path()).unwrap();
    let mut config = ListenerConfig::scheduler(&identity);
    config.transport.handshake_timeout = Duration::from_secs(1);
    let mut listener = Listener::bind(loopback(), config).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conn = bounded(client().raw_connect(addr, &Credentials::peer(identity.token().clone())))
        .await
        .unwrap();
    let closed = bounded(conn.closed()).await;
    assert!(closed.to_string().contains("hello"), "{closed}");
    assert!(nothing_within(listener.accept()).await);
}

#[tokio::test]
async fn other_protocol_version_is_named() {
    let mut c = scheduler().await;
    let addr = c.listener.local_addr().unwrap();
    let token = c.identity.token().clone();
    let conn = bounded(client().raw_connect(addr, &Credentials::peer(token.clone())))
        .await
        .unwrap();
    let binding = tls::session_binding(&conn).unwrap();
    let mut hello = Hello::new(
        Role::Worker,
        tls::proof(&token, &binding, Side::Connector, Role::Worker),
    );
    let theirs = taskhost_proto::PROTOCOL_VERSION + 1;
    hello.protocol = protocol_word(theirs);
    let (mut send, mut recv) = bounded(conn.open_bi()).await.unwrap();
    send.write_all(&encode(&hello).unwrap()).await.unwrap();
    let mut len = [0u8; 4];
    bounded(recv.read_exact(&mut len)).await.unwrap();
    let mut payload = vec![0; u32::from_le_bytes(len) as usize];
    bounded(recv.read_exact(&mut payload)).await.unwrap();
    let reply = HelloReply::decode(&payload).unwrap();
    assert_eq!(
        reply.outcome,
        HelloOutcome::Rejected {
            reason: format!(
                "peer speaks taskhost protocol v{theirs}, we speak v{}",
                taskhost_proto::PROTOCOL_VERSION
            )
        }
    );
    assert!(nothing_within(c.listener.accept()).await);
}

#[tokio::test]
async fn forged_proof_and_wrong_role_are_rejected() {
    let mut c = scheduler().await;
    let addr = c.listener.local_addr().unwrap();
    let token = c.identity.token().clone();
    // A proof computed for another session (replayed) is useless.
    let conn = bounded(client().raw_connect(addr, &Credentials::peer(token.clone())))
        .await
        .unwrap();
    let hello = Hello::new(Role::Worker, AuthProof([0; 32]));
    let (mut send, _recv) = bounded(conn.open_bi()).await.unwrap();
    send.write_all(&encode(&hello).unwrap()).await.unwrap();
    let closed = bounded(conn.closed()).await;
    assert!(
        closed.to_string().contains("invalid cluster token"),
        "{closed}"
    );

    // A peer role is not admitted by the scheduler.
    let err = bounded(client().connect(addr, &c.ticket.credentials(), Role::Peer))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("may not connect"), "{err}");
    assert!(nothing_within(c.listener.accept()).await);
}

#[tokio::test]
async fn worker_peers_authenticate_each_other() {
    let token = ClusterToken::generate().unwrap();
    let mut peer = Listener::bind(loopback(), ListenerConfig::peer(token.clone()).unwrap())
        .await
        .unwrap();
    let addr = peer.local_addr().unwrap();
    let est = bounded(connect(addr, &Credentials::peer(token.clone()), Role::Peer))
        .await
        .unwrap();
    assert_eq!(est.connection.peer_role(), Role::Peer);
    bounded(peer.accept()).await.unwrap();

    let wrong = Credentials::peer(ClusterToken::generate().unwrap());
    let err = bounded(client().connect(addr, &wrong, Role::Peer))
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Rejected { .. }), "{err}");

    // A listener with the wrong token cannot prove itself to a connecting peer.
    let impostor = Listener::bind(
        loopback(),
        ListenerConfig::peer(ClusterToken::generate().unwrap()).unwrap(),
    )
    .await
    .unwrap();
    let err = bounded(client().connect(
        impostor.local_addr().unwrap(),
        &Credentials::peer(token),
        Role::Peer,
    ))
    .await
    .unwrap_err();
    // The impostor rejects our proof; even if it accepted, its own proof would fail.
    assert!(
        matches!(err, NetError::Rejected { .. } | NetError::BadProof),
        "{err}"
    );
    assert!(nothing_within(peer.accept()).await);
}

#[tokio::test]
async fn many_small_messages_are_batched() {
    let mut c = scheduler().await;
    let est = bounded(client().connect_ticket(&c.ticket, Role::Client))
        .await
        .unwrap();
    let server = bounded(c.listener.accept()).await.unwrap();
    let (tx, _rx) = est.control.split::<Msg, Msg>();
    let (_stx, mut srx) = server.control.split::<Msg, Msg>();
    const N: u64 = 100_000;
    let sender = tokio::spawn({
        let tx = tx.clone();
        async move {
            for i in 0..N {
                tx.send(&Msg::Ping(i)).await.unwrap();
            }
            tx.flush().await.unwrap();
        }
    });
    let mut got = Vec::with_capacity(N as usize);
    while (got.len() as u64) < N {
        let n = bounded(srx.recv_many(&mut got, 10_000)).await.unwrap();
        assert!(n > 0);
    }
    bounded(sender).await.unwrap();
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m, &Msg::Ping(i as u64));
    }
    let stats = tx.stats();
    eprintln!("{stats:?}");
    assert_eq!(stats.messages, N);
    assert!(
        stats.writes * 20 < N,
        "expected batched writes, got {} writes for {N} messages",
        stats.writes
    );
}

#[tokio::test]
async fn garbage_on_control_stream_closes_with_reason() {
    let mut c = scheduler().await;
    let mut est = bounded(client().connect_ticket(&c.ticket, Role::Worker))
        .await
        .unwrap();
    let server = bounded(c.listener.accept()).await.unwrap();
    let _server = garbage_frame_is_refused(&mut est, server).await;
    let closed = bounded(est.connection.closed()).await;
    assert!(
        closed.to_string().contains("malformed control stream"),
        "{closed}"
    );
}

#[tokio::test]
async fn frame_too_large_is_refused_on_both_ends() {
    let mut c = scheduler().await;
    let est = bounded(client().connect_ticket(&c.ticket, Role::Worker))
        .await
        .unwrap();
    let server = bounded(c.listener.accept()).await.unwrap();
    let small = ControlOptions {
        max_frame: 1024,
        ..ControlOptions::default()
    };
    // Sending side: refused locally, nothing sent, the stream stays usable.
    let (tx, _rx) = est.control.split_with::<Msg, Msg>(small.clone());
    let err = tx.send(&Msg::Blob(vec![0; 4096])).await.unwrap_err();
    assert!(
        err.to_string().contains("exceeds the limit of 1024"),
        "{err}"
    );
    tx.send(&Msg::Text("still fine".into())).await.unwrap();
    let (_stx, mut srx) = server.control.split_with::<Msg, Msg>(small);
    assert_eq!(
        bounded(srx.recv()).await.unwrap(),
        Some(Msg::Text("still fine".into()))
    );

    // Receiving side: a peer announcing a 1 GiB frame is cut off before any allocation.
    let mut est2 = bounded(client().connect_ticket(&c.ticket, Role::Worker))
        .await
        .unwrap();
    let server2 = bounded(c.listener.accept()).await.unwrap();
    let (_stx2, mut srx2) = server2.control.split_with::<Msg, Msg>(ControlOptions {
        max_frame: 1024,
        ..ControlOptions::default()
    });
    est2.control
        .send
        .write_all(&(1u32 << 30).to_le_bytes())
        .await
        .unwrap();
    let err = bounded(srx2.recv()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "frame of 1073741824 bytes exceeds the limit of 1024 bytes"
    );
    let closed = bounded(est2.connection.closed()).await;
    assert!(closed.to_string().contains("exceeds the limit"), "{closed}");
}

pub(crate) fn pattern(key: u64, len: usize) -> Bytes {
    let mut v = Vec::with_capacity(len);
    let mut x = key.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_8mib_alongside_control_messages() {
    const CHUNK: usize = 8 * 1024 * 1024;
    let mut c = scheduler().await;
    let est = bounded(client().connect_ticket(&c.ticket, Role::Worker))
        .await
        .unwrap();
    let server = bounded(c.listener.accept()).await.unwrap();
    // The scheduler side serves chunks (here: computed from the key) and echoes pings.
    serve_bulk(server.connection.clone(), |key: u64| async move {
        match key {
            403 => Err(format!("no chunk {key} for you")),
            404 => Ok(None),
            _ => Ok(Some(pattern(key, CHUNK))),
        }
    });
    let (stx, mut srx) = server.control.split::<Msg, Msg>();
    tokio::spawn(async move {
        while let Ok(Some(Msg::Ping(i))) = srx.recv().await {
            if stx.send(&Msg::Pong(i)).await.is_err() {
                break;
            }
        }
    });

    let conn = est.connection.clone();
    let fetches = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for key in 1..=4u64 {
            let conn = conn.clone();
            tasks.push(tokio::spawn(async move {
                let data = conn.fetch(&key, CHUNK).await.unwrap();
                assert_eq!(data.len(), CHUNK);
                assert_eq!(blake3::hash(&data), blake3::hash(&pattern(key, CHUNK)));
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    // Control round trips keep flowing while the chunks move.
    let (tx, mut rx) = est.control.split::<Msg, Msg>();
    for i in 0..50 {
        tx.send(&Msg::Ping(i)).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .expect("control message delayed by bulk")
            .unwrap();
        assert_eq!(reply, Some(Msg::Pong(i)));
    }
    bounded(fetches).await.unwrap();

    let segments = bounded(est.connection.fetch_segments(&7u64, CHUNK))
        .await
        .unwrap();
    let mut hasher = blake3::Hasher::new();
    for s in &segments {
        hasher.update(s);
    }
    assert_eq!(hasher.finalize(), blake3::hash(&pattern(7, CHUNK)));

    // Re-serve the segments from the other side, without copying them.
    let reserve = est.connection.clone();
    tokio::spawn(async move {
        let incoming = reserve.accept_bulk().await.unwrap().unwrap();
        let (key, responder) = incoming.request::<u64>().await.unwrap();
        assert_eq!(key, 7);
        responder.send_segments(segments).await.unwrap();
    });
    let back = bounded(server.connection.fetch(&7u64, CHUNK))
        .await
        .unwrap();
    assert_eq!(blake3::hash(&back), blake3::hash(&pattern(7, CHUNK)));

    let err = bounded(est.connection.fetch(&403u64, CHUNK))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, NetError::Refused { reason } if reason == "no chunk 403 for you"),
        "{err}"
    );
    let err = bounded(est.connection.fetch(&404u64, CHUNK))
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::NotFound), "{err}");
    let err = bounded(est.connection.fetch(&1u64, 1024))
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::TooLarge { .. }), "{err}");
}

#[tokio::test]
async fn unauthenticated_peer_cannot_fetch() {
    let c = scheduler().await;
    let mut peer = Listener::bind(
        loopback(),
        ListenerConfig::peer(c.identity.token().clone()).unwrap(),
    )
    .await
    .unwrap();
    // Whatever gets through the hello would be served chunks.
    let peer_addr = peer.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(est) = peer.accept().await {
            serve_bulk(est.connection.clone(), |_key: u64| async {
                Ok(Some(Bytes::from_static(b"secret chunk")))
            });
        }
    });
    for addr in [c.listener.local_addr().unwrap(), peer_addr] {
        // TLS succeeds (token-only trust skips the pin), but no valid hello: a fetch goes
        // nowhere.
        let wrong = Credentials::peer(ClusterToken::generate().unwrap());
        let conn = bounded(client().raw_connect(addr, &wrong)).await.unwrap();
        let fake = Connection {
            inner: crate::endpoint::Link::Quic(conn.clone()),
            peer_role: Role::Scheduler,
        };
        let err = bounded(fake.fetch(&1u64, 1 << 20)).await.unwrap_err();
        assert!(
            !matches!(err, NetError::TooLarge { .. } | NetError::Refused { .. }),
            "{err}"
        );
        let closed = bounded(conn.closed()).await;
        assert!(
            matches!(&closed, quinn::ConnectionError::ApplicationClosed(c)
                if c.error_code == quinn::VarInt::from_u32(CLOSE_REJECTED)),
            "{closed}"
        );
        // And with a wrong token, the hello is rejected.
        let err = bounded(client().connect(addr, &wrong, Role::Client))
            .await
            .unwrap_err();
        assert!(matches!(err, NetError::Rejected { .. }), "{err}");
    }
    // The right token fetches from the peer.
    let est = bounded(client().connect(
        peer_addr,
        &Credentials::peer(c.identity.token().clone()),
        Role::Peer,
    ))
    .await
    .unwrap();
    let data = bounded(est.connection.fetch(&1u64, 1 << 20)).await.unwrap();
    assert_eq!(&data[..], b"secret chunk");
}

#[tokio::test]
async fn dual_stack_client_reaches_ipv4_and_ipv6_is_explained() {
    let mut c = scheduler().await;
    let addr = c.listener.local_addr().unwrap();
    let v4only = client();
    let err = bounded(v4only.connect(
        "[::1]:9".parse().unwrap(),
        &c.ticket.credentials(),
        Role::Client,
    ))
    .await
    .unwrap_err();
    assert!(err.to_string().contains("[::]:0"), "{err}");
    // An endpoint bound to [::] reaches IPv4 peers too (when the host has IPv6).
    if let Ok(dual) =
        Endpoint::client_bound("[::]:0".parse().unwrap(), TransportSettings::default())
    {
        bounded(dual.connect(addr, &c.ticket.credentials(), Role::Client))
            .await
            .unwrap();
        bounded(c.listener.accept()).await.unwrap();
    }
}
