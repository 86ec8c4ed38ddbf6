//! The scheduler daemon against scripted workers and clients over real QUIC on loopback.

use std::time::Duration;

use taskhost_net::{Endpoint, Receiver, Sender, TransportSettings};
use taskhost_proto::{
    Arg, Blob, ClientEvent, ClientRequest, FailureKind, Graph, ModuleId, ResultLocation, Role,
    RunArg, TaskKey, TaskLimits, TaskSpec, WorkerCommand, WorkerReport,
};
use taskhost_scheduler::{SchedulerConfig, SchedulerHandle, start};

const WAIT: Duration = Duration::from_secs(10);

async fn scheduler(dir: &tempfile::TempDir) -> SchedulerHandle {
    let mut config = SchedulerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_owned());
    config.heartbeat_timeout = Duration::from_millis(1500);
    start(config).await.expect("scheduler starts")
}

async fn client(handle: &SchedulerHandle) -> (Sender<ClientRequest>, Receiver<ClientEvent>) {
    let endpoint = Endpoint::client(TransportSettings::default()).unwrap();
    let est = endpoint
        .connect_ticket(handle.ticket(), Role::Client)
        .await
        .unwrap();
    est.control.split()
}

async fn worker(
    handle: &SchedulerHandle,
    name: &str,
) -> (
    Sender<WorkerReport>,
    Receiver<WorkerCommand>,
    taskhost_net::Connection,
) {
    let endpoint = Endpoint::client(TransportSettings::default()).unwrap();
    let est = endpoint
        .connect_ticket(handle.ticket(), Role::Worker)
        .await
        .unwrap();
    let (tx, mut rx) = est.control.split::<WorkerReport, WorkerCommand>();
    tx.send(&WorkerReport::Register {
        name: name.into(),
        slots: 2,
        memory_limit: 1 << 30,
        peer_addr: "127.0.0.1:9".parse().unwrap(),
    })
    .await
    .unwrap();
    let welcome = next(&mut rx).await;
    assert!(
        matches!(welcome, WorkerCommand::Welcome { .. }),
        "{welcome:?}"
    );
    (tx, rx, est.connection)
}

async fn next<T: serde::de::DeserializeOwned + Send>(rx: &mut Receiver<T>) -> T {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a message in time")
        .expect("stream works")
        .expect("stream open")
}

async fn next_done(rx: &mut Receiver<ClientEvent>) -> ClientEvent {
    loop {
        match next(rx).await {
            ClientEvent::Progress(_) => continue,
            other => return other,
        }
    }
}

fn task(module: ModuleId, function: &str, args: Vec<Arg>, literals: &[Blob]) -> TaskSpec {
    let mut builder = TaskKey::builder(&module, function);
    for arg in &args {
        match arg {
            Arg::Task(key) => builder.task_arg(key),
            Arg::Literal(i) => builder.literal_arg(&literals[*i as usize].0),
        };
    }
    TaskSpec {
        key: builder.finish(),
        module,
        function: function.into(),
        args,
        priority: 0,
        retries: 0,
        limits: TaskLimits::default(),
        workers: vec![],
        annotations: vec![],
    }
}

async fn upload(
    tx: &Sender<ClientRequest>,
    rx: &mut Receiver<ClientEvent>,
    bytes: &[u8],
) -> ModuleId {
    let id = ModuleId::of(bytes);
    tx.send(&ClientRequest::QueryModules(vec![id]))
        .await
        .unwrap();
    assert_eq!(next(rx).await, ClientEvent::MissingModules(vec![id]));
    tx.send(&ClientRequest::UploadModule {
        id,
        bytes: Blob(bytes.to_vec()),
    })
    .await
    .unwrap();
    assert_eq!(next(rx).await, ClientEvent::ModuleStored(id));
    id
}

#[tokio::test]
async fn a_chain_runs_on_a_worker_and_results_reach_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let handle = scheduler(&dir).await;
    let (wtx, mut wrx, wconn) = worker(&handle, "w1").await;
    let (ctx, mut crx) = client(&handle).await;
    let module = upload(&ctx, &mut crx, b"module bytes").await;

    // The worker can fetch the module by hash from the scheduler.
    let fetched = wconn
        .fetch(&taskhost_proto::BulkRequest::Module(module), 1 << 20)
        .await
        .unwrap();
    assert_eq!(&fetched[..], b"module bytes");

    let literals = vec![Blob(vec![1, 2, 3])];
    let a = task(module, "load", vec![Arg::Literal(0)], &literals);
    let b = task(module, "sum", vec![Arg::Task(a.key)], &literals);
    let (ka, kb) = (a.key, b.key);
    ctx.send(&ClientRequest::Submit(Graph {
        literals,
        tasks: vec![a, b],
        wanted: vec![kb],
    }))
    .await
    .unwrap();

    let WorkerCommand::Run(run) = next(&mut wrx).await else {
        panic!("expected a run")
    };
    assert_eq!(run.key, ka);
    assert_eq!(run.args, vec![RunArg::Literal(Blob(vec![1, 2, 3]))]);
    assert!(!run.send_result, "nobody wants a's result");
    wtx.send(&WorkerReport::Finished {
        key: ka,
        size: 100,
        duration_us: 10,
        inline: None,
    })
    .await
    .unwrap();

    let WorkerCommand::Run(run) = next(&mut wrx).await else {
        panic!("expected a run")
    };
    assert_eq!(run.key, kb);
    assert_eq!(
        run.args,
        vec![RunArg::Chunk {
            key: ka,
            size: 100,
            holders: vec![],
            pending: false,
        }]
    );
    assert!(run.send_result);
    wtx.send(&WorkerReport::Finished {
        key: kb,
        size: 2,
        duration_us: 10,
        inline: Some(Blob(vec![4, 2])),
    })
    .await
    .unwrap();

    // a is no longer needed: the worker is told to drop it.
    assert_eq!(next(&mut wrx).await, WorkerCommand::Release(vec![ka]));
    match next_done(&mut crx).await {
        ClientEvent::TaskDone { key, result } => {
            assert_eq!(key, kb);
            assert_eq!(result, ResultLocation::Inline(Blob(vec![4, 2])));
        }
        other => panic!("unexpected {other:?}"),
    }
    ctx.send(&ClientRequest::Status).await.unwrap();
    match next_done(&mut crx).await {
        ClientEvent::Status(status) => {
            assert_eq!(status.workers.len(), 1);
            assert_eq!(status.workers[0].name, "w1");
            assert_eq!(status.modules, 1);
            assert_eq!(status.tasks.memory, 1);
        }
        other => panic!("unexpected {other:?}"),
    }
    handle.shutdown().await;
}

#[tokio::test]
async fn bad_submissions_are_rejected_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let handle = scheduler(&dir).await;
    let (ctx, mut crx) = client(&handle).await;

    // A module that was never uploaded.
    let unknown = ModuleId::of(b"never uploaded");
    let t = task(unknown, "f", vec![], &[]);
    let wanted = t.key;
    ctx.send(&ClientRequest::Submit(Graph {
        literals: vec![],
        wanted: vec![t.key],
        tasks: vec![t],
    }))
    .await
    .unwrap();
    match next_done(&mut crx).await {
        ClientEvent::SubmitRejected { reason, keys } => {
            assert!(reason.contains("never uploaded"), "{reason}");
            assert_eq!(keys, vec![wanted], "the refused message's wanted keys");
        }
        other => panic!("unexpected {other:?}"),
    }

    // A key that does not match the task's content.
    let module = upload(&ctx, &mut crx, b"m").await;
    let mut t = task(module, "f", vec![], &[]);
    t.function = "g".into();
    ctx.send(&ClientRequest::Submit(Graph {
        literals: vec![],
        wanted: vec![t.key],
        tasks: vec![t],
    }))
    .await
    .unwrap();
    match next_done(&mut crx).await {
        ClientEvent::SubmitRejected { reason, .. } => {
            assert!(reason.contains("does not match its content"), "{reason}")
        }
        other => panic!("unexpected {other:?}"),
    }

    // Bytes that do not hash to the id offered.
    ctx.send(&ClientRequest::UploadModule {
        id: ModuleId::of(b"x"),
        bytes: Blob(b"y".to_vec()),
    })
    .await
    .unwrap();
    match next(&mut crx).await {
        ClientEvent::ModuleRejected { reason, .. } => assert!(reason.contains("hash"), "{reason}"),
        other => panic!("unexpected {other:?}"),
    }
    handle.shutdown().await;
}

#[tokio::test]
async fn failures_reach_the_client_with_kind_function_and_origin() {
    let dir = tempfile::tempdir().unwrap();
    let handle = scheduler(&dir).await;
    let (wtx, mut wrx, _wconn) = worker(&handle, "w1").await;
    let (ctx, mut crx) = client(&handle).await;
    let module = upload(&ctx, &mut crx, b"module").await;
    let a = task(module, "boom", vec![], &[]);
    let b = task(module, "after", vec![Arg::Task(a.key)], &[]);
    let (ka, kb) = (a.key, b.key);
    ctx.send(&ClientRequest::Submit(Graph {
        literals: vec![],
        tasks: vec![a, b],
        wanted: vec![kb],
    }))
    .await
    .unwrap();
    let WorkerCommand::Run(run) = next(&mut wrx).await else {
        panic!("expected a run")
    };
    assert_eq!(run.key, ka);
    wtx.send(&WorkerReport::Failed {
        key: ka,
        kind: FailureKind::Trap,
        message: "panicked at boom".into(),
    })
    .await
    .unwrap();
    match next_done(&mut crx).await {
        ClientEvent::TaskFailed { key, failure } => {
            assert_eq!(key, kb);
            assert_eq!(failure.origin, ka);
            assert_eq!(failure.kind, FailureKind::Trap);
            assert_eq!(failure.function, "boom");
            assert!(failure.message.contains("panicked at boom"));
        }
        other => panic!("unexpected {other:?}"),
    }
    handle.shutdown().await;
}

#[tokio::test]
async fn a_silent_worker_is_declared_dead_and_its_task_moves() {
    let dir = tempfile::tempdir().unwrap();
    let handle = scheduler(&dir).await;
    let (_silent_tx, mut silent_rx, _c1) = worker(&handle, "silent").await;
    let (ctx, mut crx) = client(&handle).await;
    let module = upload(&ctx, &mut crx, b"module").await;
    let t = task(module, "f", vec![], &[]);
    let key = t.key;
    ctx.send(&ClientRequest::Submit(Graph {
        literals: vec![],
        tasks: vec![t],
        wanted: vec![key],
    }))
    .await
    .unwrap();
    let WorkerCommand::Run(run) = next(&mut silent_rx).await else {
        panic!("expected a run")
    };
    assert_eq!(run.key, key);
    // A second worker joins; the first never reports again and misses its heartbeats.
    let (wtx, mut wrx, _c2) = worker(&handle, "alive").await;
    let heartbeat = tokio::spawn({
        let wtx = wtx.clone();
        async move {
            loop {
                let _ = wtx.send(&WorkerReport::Heartbeat).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    let WorkerCommand::Run(run) = next(&mut wrx).await else {
        panic!("expected the task to move")
    };
    assert_eq!(run.key, key);
    wtx.send(&WorkerReport::Finished {
        key,
        size: 1,
        duration_us: 1,
        inline: Some(Blob(vec![9])),
    })
    .await
    .unwrap();
    assert!(matches!(
        next_done(&mut crx).await,
        ClientEvent::TaskDone { .. }
    ));
    heartbeat.abort();
    handle.shutdown().await;
}
