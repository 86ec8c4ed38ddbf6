//! Connection tasks: one per client or worker, turning frames into loop events and serving
//! module bytes to workers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use taskhost_net::{
    Connection, ControlOptions, ControlStream, Established, Listener, NetError, serve_bulk,
};
use taskhost_proto::{BulkRequest, ClientEvent, ClientRequest, Role, WorkerCommand, WorkerReport};
use taskhost_scheduler_core::{ClientId, WorkerId};
use tokio::sync::mpsc;

use crate::daemon::Event;
use crate::modules::{MAX_MODULE_BYTES, ModuleStore};

/// How long a worker may take to register after its hello.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame a client may send (graphs are sent in parts of at most this size; modules
/// travel in one frame).
const CLIENT_MAX_FRAME: usize = MAX_MODULE_BYTES + 1024 * 1024;

/// Accepts authenticated connections until the listener closes.
pub(crate) async fn accept_loop(
    mut listener: Listener,
    events: mpsc::UnboundedSender<Event>,
    modules: Arc<ModuleStore>,
) {
    let next_id = Arc::new(AtomicU64::new(1));
    while let Some(established) = listener.accept().await {
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let Established {
            connection,
            control,
        } = established;
        let peer = Peer {
            connection,
            control,
            events: events.clone(),
            modules: modules.clone(),
        };
        match peer.connection.peer_role() {
            Role::Client => {
                tokio::spawn(client_connection(ClientId(id), peer));
            }
            Role::Worker => {
                tokio::spawn(worker_connection(WorkerId(id), peer));
            }
            other => {
                tracing::warn!(role = %other, "unexpected peer role at the scheduler");
                peer.connection
                    .close("the scheduler admits clients and workers only");
            }
        }
    }
}

/// An authenticated connection and what its task needs.
struct Peer {
    connection: Connection,
    control: ControlStream,
    events: mpsc::UnboundedSender<Event>,
    modules: Arc<ModuleStore>,
}

/// Closes a connection whose peer sent what is not a valid message, saying why.
fn close_malformed(connection: &Connection, err: &NetError) {
    connection.close(&format!("bad message: {err}"));
}

async fn client_connection(id: ClientId, peer: Peer) {
    let Peer {
        connection,
        control,
        events,
        modules,
    } = peer;
    let options = ControlOptions {
        max_frame: CLIENT_MAX_FRAME,
        ..ControlOptions::default()
    };
    let (tx, mut rx) = control.split_with::<ClientEvent, ClientRequest>(options);
    tracing::debug!(client = id.0, remote = %connection.remote_address(), "client connected");
    if events
        .send(Event::ClientJoined {
            id,
            tx: tx.clone(),
            conn: connection.clone(),
        })
        .is_err()
    {
        return;
    }
    loop {
        match rx.recv().await {
            Ok(Some(ClientRequest::QueryModules(ids))) => {
                let missing = ids.into_iter().filter(|m| !modules.contains(m)).collect();
                let _ = tx.send_now(&ClientEvent::MissingModules(missing));
            }
            Ok(Some(ClientRequest::UploadModule { id: module, bytes })) => {
                let store = modules.clone();
                let stored =
                    tokio::task::spawn_blocking(move || store.put(&module, Bytes::from(bytes.0)))
                        .await;
                let reply = match stored {
                    Ok(Ok(())) => {
                        tracing::info!(%module, "module stored");
                        ClientEvent::ModuleStored(module)
                    }
                    Ok(Err(err)) => ClientEvent::ModuleRejected {
                        id: module,
                        reason: err.to_string(),
                    },
                    Err(err) => ClientEvent::ModuleRejected {
                        id: module,
                        reason: err.to_string(),
                    },
                };
                let _ = tx.send_now(&reply);
            }
            Ok(Some(request)) => {
                if events.send(Event::Client { id, request }).is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(err) => {
                tracing::warn!(client = id.0, %err, "client connection failed");
                close_malformed(&connection, &err);
                break;
            }
        }
    }
    let _ = events.send(Event::ClientLeft { id });
}

async fn worker_connection(id: WorkerId, peer: Peer) {
    let Peer {
        connection,
        control,
        events,
        modules,
    } = peer;
    let (tx, mut rx) = control.split::<WorkerCommand, WorkerReport>();
    let remote = connection.remote_address();
    let register = match tokio::time::timeout(REGISTER_TIMEOUT, rx.recv()).await {
        Ok(Ok(Some(WorkerReport::Register {
            name,
            slots,
            memory_limit,
            peer_addr,
        }))) => (name, slots, memory_limit, peer_addr),
        Ok(Ok(Some(other))) => {
            tracing::warn!(%remote, ?other, "worker spoke before registering");
            connection.close("register first");
            return;
        }
        Ok(Ok(None)) => return,
        Ok(Err(err)) => {
            tracing::warn!(%remote, %err, "worker connection failed before registering");
            close_malformed(&connection, &err);
            return;
        }
        Err(_) => {
            tracing::warn!(%remote, "worker did not register in time");
            connection.close("no registration within 10 s");
            return;
        }
    };
    let (name, slots, memory_limit, peer_addr) = register;
    let store = modules.clone();
    let bulk = serve_bulk(connection.clone(), move |request: BulkRequest| {
        let store = store.clone();
        async move {
            match request {
                BulkRequest::Module(module) => store.get(&module).map_err(|err| err.to_string()),
                BulkRequest::Chunk(key) | BulkRequest::ChunkWhenComputed(key) => Err(format!(
                    "the scheduler holds no chunks (asked for {})",
                    key.short()
                )),
            }
        }
    });
    let joined = Event::WorkerJoined {
        id,
        tx,
        conn: connection.clone(),
        name,
        slots,
        memory_limit,
        peer_addr,
    };
    if events.send(joined).is_err() {
        bulk.abort();
        return;
    }
    let reason = loop {
        // One event for every report already received: one wake-up of the loop per batch.
        let mut reports = Vec::new();
        match rx.recv_many(&mut reports, 1024).await {
            Ok(0) => break "connection closed".to_owned(),
            Ok(_) => {
                if events.send(Event::Worker { id, reports }).is_err() {
                    bulk.abort();
                    return;
                }
            }
            Err(err) => {
                close_malformed(&connection, &err);
                break err.to_string();
            }
        }
    };
    bulk.abort();
    let _ = events.send(Event::WorkerLeft { id, reason });
}
