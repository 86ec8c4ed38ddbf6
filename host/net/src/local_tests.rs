//! Tests of same-host links (Unix sockets beside the QUIC listeners). Every wait is bounded.

use std::time::Duration;

use bytes::Bytes;
use taskhost_proto::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::tests::{
    Cluster, Msg, bounded, first_send_error, garbage_frame_is_refused, loopback, nothing_within,
    pattern, scheduler,
};
use crate::*;

fn local_client() -> Endpoint {
    Endpoint::client(TransportSettings {
        local_transport: true,
        ..TransportSettings::default()
    })
    .unwrap()
}

/// The same-host socket of a listener.
fn socket_of(listener: &Listener) -> std::path::PathBuf {
    let paths = crate::local::candidates(listener.local_addr().unwrap());
    assert!(!paths.is_empty(), "the listener has no same-host socket");
    paths[0].clone()
}

/// Connects over the same-host socket and serves chunks on the scheduler side.
async fn linked(c: &mut Cluster) -> (Established, Established) {
    let est = bounded(local_client().connect_ticket(&c.ticket, Role::Worker))
        .await
        .unwrap();
    let server = bounded(c.listener.accept()).await.unwrap();
    assert!(est.connection.is_local() && server.connection.is_local());
    (est, server)
}

#[tokio::test]
async fn same_host_link_carries_messages_both_ways_and_closes() {
    let mut c = scheduler().await;
    let (est, server) = linked(&mut c).await;
    assert_eq!(est.connection.peer_role(), Role::Scheduler);
    assert_eq!(server.connection.peer_role(), Role::Worker);
    assert_eq!(
        est.connection.remote_address(),
        c.listener.local_addr().unwrap()
    );

    let (tx, mut rx) = est.control.split::<Msg, Msg>();
    let (stx, mut srx) = server.control.split::<Msg, Msg>();
    for i in 0..1000 {
        tx.send(&Msg::Ping(i)).await.unwrap();
    }
    for i in 0..1000 {
        assert_eq!(bounded(srx.recv()).await.unwrap(), Some(Msg::Ping(i)));
    }
    stx.send(&Msg::Pong(1)).await.unwrap();
    assert_eq!(bounded(rx.recv()).await.unwrap(), Some(Msg::Pong(1)));

    // Closing one end is seen at the other, with the reason: reads fail, sends fail,
    // `closed` resolves.
    server.connection.close("scheduler shutting down");
    let err = bounded(rx.recv()).await.unwrap_err();
    assert!(err.to_string().contains("scheduler shutting down"), "{err}");
    let closed = bounded(est.connection.closed()).await;
    assert!(
        closed.to_string().contains("scheduler shutting down"),
        "{closed}"
    );
    assert!(est.connection.close_reason().is_some());
    let err = first_send_error(&stx).await;
    assert!(err.to_string().contains("closed"), "{err}");
}

#[tokio::test]
async fn garbage_on_a_same_host_control_stream_closes_with_reason() {
    let mut c = scheduler().await;
    let (mut est, server) = linked(&mut c).await;
    let _server = garbage_frame_is_refused(&mut est, server).await;
    // The sender learns why once it reads its stream.
    let (_tx, mut rx) = est.control.split::<Msg, Msg>();
    let err = bounded(rx.recv()).await.unwrap_err();
    assert!(
        err.to_string().contains("malformed control stream"),
        "{err}"
    );
    let closed = bounded(est.connection.closed()).await;
    assert!(
        closed.to_string().contains("malformed control stream"),
        "{closed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_host_bulk_transfers_reuse_connections() {
    const CHUNK: usize = 8 * 1024 * 1024;
    let mut c = scheduler().await;
    let (est, server) = linked(&mut c).await;
    serve_bulk(server.connection.clone(), |key: u64| async move {
        match key {
            403 => Err(format!("no chunk {key} for you")),
            404 => Ok(None),
            _ => Ok(Some(pattern(key, if key < 100 { 64 } else { CHUNK }))),
        }
    });
    let conn = est.connection.clone();
    // Small and large chunks, one after another and at once, with the answers that are not
    // chunks in between: each leaves its connection ready for the next request.
    for key in [1u64, 404, 2, 403, 200, 3] {
        let got = bounded(conn.fetch(&key, usize::MAX)).await;
        match key {
            403 => assert!(
                matches!(&got, Err(NetError::Refused { reason }) if reason.contains("no chunk 403")),
                "{got:?}"
            ),
            404 => assert!(matches!(got, Err(NetError::NotFound)), "{got:?}"),
            _ => assert_eq!(
                got.unwrap(),
                pattern(key, if key < 100 { 64 } else { CHUNK })
            ),
        }
    }
    let fetches = (300..308u64).map(|key| {
        let conn = conn.clone();
        tokio::spawn(async move { conn.fetch_segments(&key, usize::MAX).await })
    });
    for (key, fetch) in (300..308u64).zip(fetches) {
        let segments = bounded(fetch).await.unwrap().unwrap();
        let joined: Vec<u8> = segments.iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(Bytes::from(joined), pattern(key, CHUNK));
    }
    // A response larger than the caller allows is refused before allocating.
    let err = bounded(conn.fetch(&5u64, 10)).await.unwrap_err();
    assert!(
        matches!(
            err,
            NetError::TooLarge {
                size: 64,
                limit: 10
            }
        ),
        "{err}"
    );
    assert!(bounded(conn.fetch(&6u64, usize::MAX)).await.is_ok());
}

/// Connecting over the same-host socket with `ticket` fails with an error containing `needle`.
async fn refused(ticket: &JoinTicket, needle: &str) {
    let err = bounded(local_client().connect_ticket(ticket, Role::Worker))
        .await
        .unwrap_err();
    assert!(err.to_string().contains(needle), "{err}");
}

/// The socket refuses each of these; the connector then tries QUIC, which refuses them too with
/// the same messages, and the listener yields no connection from either.
#[tokio::test]
async fn same_host_wrong_token_and_wrong_ca_are_refused() {
    let mut c = scheduler().await;
    let mut ticket = c.ticket.clone();
    ticket.token = ClusterToken::generate().unwrap();
    refused(&ticket, "invalid cluster token").await;
    let mut ticket = c.ticket.clone();
    ticket.ca_hash = CaHash([9; 32]);
    refused(&ticket, "does not match the pinned").await;
    // A worker's peer listener holds the token but announces no cluster CA.
    let peer = Listener::bind(
        loopback(),
        ListenerConfig::peer(c.identity.token().clone()).unwrap(),
    )
    .await
    .unwrap();
    let mut ticket = c.ticket.clone();
    ticket.addrs = vec![peer.local_addr().unwrap().to_string()];
    refused(&ticket, "does not match the pinned").await;
    // A role the listener does not admit.
    let err = bounded(local_client().connect(
        c.listener.local_addr().unwrap(),
        &c.ticket.credentials(),
        Role::Peer,
    ))
    .await
    .unwrap_err();
    assert!(err.to_string().contains("may not connect"), "{err}");
    assert!(nothing_within(c.listener.accept()).await);
}

#[tokio::test]
async fn garbage_and_forged_bulk_openings_on_the_socket_are_dropped() {
    let mut c = scheduler().await;
    let path = socket_of(&c.listener);
    // Random bytes, a short opening, a control opening followed by garbage, a bulk opening
    // with a made-up secret: each connection is closed, nothing is accepted or served.
    let mut control_then_garbage = taskhost_proto::PROTOCOL.to_le_bytes().to_vec();
    control_then_garbage.push(0);
    control_then_garbage.extend_from_slice(&[7; 32]);
    let mut forged_bulk = taskhost_proto::PROTOCOL.to_le_bytes().to_vec();
    forged_bulk.push(1);
    forged_bulk.extend_from_slice(&[7; 32]);
    forged_bulk.extend_from_slice(&8u32.to_le_bytes());
    forged_bulk.extend_from_slice(&[0; 8]);
    for bytes in [
        vec![0xff; 4096],
        vec![1, 2, 3],
        control_then_garbage,
        forged_bulk,
    ] {
        let mut s = bounded(UnixStream::connect(&path)).await.unwrap();
        let _ = s.write_all(&bytes).await;
        if bytes.len() > 37 && bytes[4] == 0 {
            let mut nonce_and_ca = [0u8; 64];
            bounded(s.read_exact(&mut nonce_and_ca)).await.unwrap();
            let _ = s.write_all(&[0xff; 64]).await;
        }
        let _ = s.shutdown().await;
        let mut rest = Vec::new();
        let _ = bounded(s.read_to_end(&mut rest)).await;
    }
    assert!(nothing_within(c.listener.accept()).await);
    // The listener still works.
    let (est, _server) = linked(&mut c).await;
    assert!(est.connection.close_reason().is_none());
}

#[tokio::test]
async fn without_the_socket_connections_fall_back_to_quic() {
    let mut c = scheduler().await;
    // This listener has no same-host socket: the connector uses QUIC.
    let dir = tempfile::tempdir().unwrap();
    let (identity, _) = ClusterIdentity::load_or_create(dir.path()).unwrap();
    let mut config = ListenerConfig::scheduler(&identity);
    config.transport.local_transport = false;
    let mut quic_only = Listener::bind(loopback(), config).await.unwrap();
    let ticket = identity.ticket(vec![quic_only.local_addr().unwrap().to_string()]);
    let est = bounded(local_client().connect_ticket(&ticket, Role::Worker))
        .await
        .unwrap();
    assert!(!est.connection.is_local());
    assert!(
        !bounded(quic_only.accept())
            .await
            .unwrap()
            .connection
            .is_local()
    );

    // A connector with the same-host path off uses QUIC even where a socket exists.
    let quic = Endpoint::client(TransportSettings {
        local_transport: false,
        ..TransportSettings::default()
    })
    .unwrap();
    let est = bounded(quic.connect_ticket(&c.ticket, Role::Worker))
        .await
        .unwrap();
    assert!(!est.connection.is_local());
    assert!(
        !bounded(c.listener.accept())
            .await
            .unwrap()
            .connection
            .is_local()
    );
}

#[tokio::test]
async fn a_departed_peer_fails_fetches_promptly() {
    let mut c = scheduler().await;
    let (est, server) = linked(&mut c).await;
    serve_bulk(server.connection.clone(), |key: u64| async move {
        Ok(Some(pattern(key, 16)))
    });
    assert!(bounded(est.connection.fetch(&1u64, 1024)).await.is_ok());
    // The peer goes away: it closes its link and its listener.
    server.connection.close("worker exiting");
    drop(server);
    drop(c.listener);
    let err = bounded(async {
        loop {
            match est.connection.fetch(&2u64, 1024).await {
                Err(e) => break e,
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await;
    assert!(!err.to_string().is_empty());
    bounded(est.connection.closed()).await;
}

#[tokio::test]
async fn a_malformed_bulk_request_fails_alone() {
    let mut c = scheduler().await;
    let (est, server) = linked(&mut c).await;
    serve_bulk(server.connection.clone(), |key: u64| async move {
        Ok(Some(pattern(key, 32)))
    });
    // Not a u64: refused, and the link (and its pooled connection) still serve.
    let err = bounded(est.connection.fetch(&vec![0xffu8; 20], 1024))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("malformed bulk request"), "{err}");
    assert!(est.connection.close_reason().is_none());
    assert_eq!(
        bounded(est.connection.fetch(&7u64, 1024)).await.unwrap(),
        pattern(7, 32)
    );
}

#[tokio::test]
async fn shutting_an_endpoint_down_closes_its_same_host_links() {
    let mut c = scheduler().await;
    let endpoint = local_client();
    let est = bounded(endpoint.connect_ticket(&c.ticket, Role::Worker))
        .await
        .unwrap();
    let server = bounded(c.listener.accept()).await.unwrap();
    assert!(est.connection.is_local());
    let (_stx, mut srx) = server.control.split::<Msg, Msg>();
    let (_tx, _rx) = est.control.split::<Msg, Msg>();
    bounded(endpoint.shutdown()).await;
    assert!(est.connection.close_reason().is_some());
    let err = bounded(srx.recv()).await.unwrap_err();
    assert!(err.to_string().contains("endpoint shut down"), "{err}");

    // A bulk-only connection learns that its peer left without reading anything itself.
    let est = bounded(local_client().connect_ticket(&c.ticket, Role::Worker))
        .await
        .unwrap();
    let server = bounded(c.listener.accept()).await.unwrap();
    let conn = est.bulk_only();
    let (_stx, _srx) = server.control.split::<Msg, Msg>();
    server.connection.close("scheduler leaving");
    let closed = bounded(conn.closed()).await;
    assert!(closed.to_string().contains("scheduler leaving"), "{closed}");
}

#[tokio::test]
async fn messages_after_a_pause_are_read_after_a_drained_socket() {
    // Each message is read whole by one short read, which clears the socket's readiness: the
    // next message, sent after a pause, must still wake the reader.
    let mut c = scheduler().await;
    let (est, server) = linked(&mut c).await;
    let (tx, _rx) = est.control.split::<Msg, Msg>();
    let (_stx, mut srx) = server.control.split::<Msg, Msg>();
    for i in 0..20 {
        tx.send(&Msg::Ping(i)).await.unwrap();
        assert_eq!(bounded(srx.recv()).await.unwrap(), Some(Msg::Ping(i)));
        if i % 5 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test]
async fn deferred_messages_go_out_together_when_sent() {
    let mut c = scheduler().await;
    let (est, server) = linked(&mut c).await;
    let (tx, _rx) = est.control.split::<Msg, Msg>();
    let (_stx, mut srx) = server.control.split::<Msg, Msg>();
    let before = tx.stats().writes;
    for i in 0..3 {
        tx.send_deferred(&Msg::Ping(i)).unwrap();
    }
    assert_eq!(tx.stats().writes, before, "deferred messages wait");
    tx.send_queued();
    assert_eq!(tx.stats().writes, before + 1, "one write for the three");
    for i in 0..3 {
        assert_eq!(bounded(srx.recv()).await.unwrap(), Some(Msg::Ping(i)));
    }
    // Nothing queued: nothing written.
    tx.send_queued();
    assert_eq!(tx.stats().writes, before + 1);
}
