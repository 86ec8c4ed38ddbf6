//! The client against an embedded local cluster (the daemons' own scheduler and worker code,
//! over QUIC on loopback) running the example guest.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use taskhost_client::{
    Args, CallOptions, Client, Error, FailureKind, FutureStatus, Graph, Handle, LocalCluster,
    Module, Raw,
};
use tokio::time::timeout;

/// Bound of every wait in these tests.
const LIMIT: Duration = Duration::from_secs(60);

fn guest() -> Vec<u8> {
    taskhost_guest_artifacts::read(taskhost_guest_artifacts::EXAMPLE_GUEST)
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

async fn cluster(workers: usize, slots: u32) -> Result<(LocalCluster, Client, Module)> {
    init_tracing();
    let cluster = timeout(
        LIMIT,
        LocalCluster::builder()
            .workers(workers)
            .slots(slots)
            .start(),
    )
    .await
    .context("starting the cluster timed out")??;
    let client = timeout(LIMIT, cluster.client()).await??;
    let module = timeout(LIMIT, client.module(guest())).await??;
    Ok((cluster, client, module))
}

/// Polls `check` until it holds or the limit passes.
async fn eventually<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + LIMIT;
    while tokio::time::Instant::now() < deadline {
        if check().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("timed out waiting until {what}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compute_typed_values_through_a_graph() -> Result<()> {
    let (_cluster, client, m) = cluster(1, 2).await?;
    let names: Vec<&str> = m
        .functions()
        .context("the module was described")?
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert!(
        names.contains(&"add") && names.contains(&"sum"),
        "{names:?}"
    );

    let g = Graph::new();
    let x = g.call::<f64>(&m, "add", (1.0f64, 2.0f64))?;
    let y = g.call::<f64>(&m, "add", (&x, 3.0))?;
    assert_eq!(timeout(LIMIT, client.compute(&y)).await??, 6.0);

    let s = g.call::<f64>(&m, "sum", (vec![1.0f64, 2.0, 3.5],))?;
    let i = g.call::<i64>(&m, "inc", (41i64,))?;
    let j = g.call::<i64>(&m, "inc", Args::new().arg(&i))?;
    assert_eq!(timeout(LIMIT, client.compute(&s)).await??, 6.5);
    assert_eq!(
        timeout(LIMIT, client.compute_all(&[i, j])).await??,
        vec![42, 43]
    );
    // The module is registered once: a second registration finds it on the scheduler.
    let again = timeout(LIMIT, client.module(guest())).await??;
    assert_eq!(again.id(), m.id());
    assert_eq!(timeout(LIMIT, client.status()).await??.modules, 1);
    Ok(())
}

/// A refused graph fails its own futures: `submit` at once (it waits for the scheduler's
/// verdict), `compute` with its result (it sends no barrier); a `compute` still running is not
/// touched by another's refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_submissions_fail_their_own_futures_only() -> Result<()> {
    let (_cluster, client, m) = cluster(1, 1).await?;
    // A module registered with another cluster: this scheduler never stored it.
    let (_other, other_client, _) = cluster(1, 1).await?;
    let lean = timeout(
        LIMIT,
        other_client.module(taskhost_guest_artifacts::read(
            taskhost_guest_artifacts::LEAN_GUEST,
        )),
    )
    .await??;

    let g = Graph::new();
    let slow = g.call::<u64>(&m, "sleep", (300u64,))?;
    let refused = g.call::<i64>(&lean, "inc", (1i64,))?;
    let running = {
        let client = client.clone();
        tokio::spawn(async move { client.compute(&slow).await })
    };
    for attempt in 0..3 {
        match timeout(LIMIT, client.compute(&refused)).await? {
            Err(Error::SubmitRejected { reason }) => {
                assert!(reason.contains("never uploaded"), "{reason}")
            }
            other => bail!("compute {attempt}: expected SubmitRejected, got {other:?}"),
        }
    }
    match timeout(LIMIT, client.submit(&[refused])).await? {
        Err(Error::SubmitRejected { reason }) => {
            assert!(reason.contains("never uploaded"), "{reason}")
        }
        other => bail!(
            "submit: expected SubmitRejected, got {:?}",
            other.map(|_| ())
        ),
    }
    assert!(timeout(LIMIT, running).await??? >= 300);
    let i = g.call::<i64>(&m, "inc", (41i64,))?;
    assert_eq!(timeout(LIMIT, client.compute(&i)).await??, 42);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_functions_fail_when_the_graph_is_built() -> Result<()> {
    let (_cluster, _client, m) = cluster(1, 1).await?;
    let g = Graph::new();
    match g.call::<f64>(&m, "multiply", (1.0, 2.0)) {
        Err(Error::UnknownFunction {
            function,
            available,
            ..
        }) => {
            assert_eq!(function, "multiply");
            assert!(available.iter().any(|f| f == "add"));
        }
        other => bail!("expected UnknownFunction, got {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn futures_gather_wait_and_complete() -> Result<()> {
    let (_cluster, client, m) = cluster(2, 1).await?;
    let g = Graph::new();
    let hs: Vec<Handle<i64>> = (0..20i64)
        .map(|i| g.call(&m, "inc", (i,)))
        .collect::<Result<_, _>>()?;
    let futures = timeout(LIMIT, client.submit(&hs)).await??;
    assert_eq!(futures.len(), 20);
    timeout(LIMIT, client.wait(&futures)).await?;
    assert!(futures.iter().all(|f| f.status() == FutureStatus::Finished));
    let values = timeout(LIMIT, client.gather(&futures)).await??;
    assert_eq!(values, (1..=20).collect::<Vec<i64>>());

    // as_completed yields every future once, finished.
    let g = Graph::new();
    let slow = g.call::<u64>(&m, "busy_wait", (300_000u64,))?;
    let fast = g.call::<u64>(&m, "busy_wait", (1_000u64,))?;
    let fs = timeout(LIMIT, client.submit(&[slow.clone(), fast.clone()])).await??;
    let order: Vec<_> = timeout(
        LIMIT,
        client
            .as_completed(fs)
            .map(|f| (f.key(), f.done()))
            .collect::<Vec<_>>(),
    )
    .await?;
    assert_eq!(order.len(), 2);
    assert!(order.iter().all(|(_, done)| *done));
    assert_eq!(order[0].0, fast.key(), "the fast task finishes first");

    // Dask-style submission of single calls, with futures as arguments.
    let a = timeout(LIMIT, client.call::<f64>(&m, "add", (1.0, 2.0))).await??;
    let b = timeout(LIMIT, client.call::<f64>(&m, "add", (&a, 10.0))).await??;
    assert_eq!(timeout(LIMIT, b.result()).await??, 13.0);
    assert_eq!(timeout(LIMIT, a.result()).await??, 3.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_results_are_fetched_from_workers_and_raw_bytes_pass_verbatim() -> Result<()> {
    let (_cluster, client, m) = cluster(1, 1).await?;
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let g = Graph::new();
    let echoed = g.call::<Raw>(&m, "echo", (Raw::from(data.clone()),))?;
    let back = timeout(LIMIT, client.compute(&echoed)).await??;
    assert_eq!(back.len(), data.len());
    assert!(*back == data[..]);
    // Typed values from raw bytes: echo of a postcard-encoded f64 read as f64.
    let bytes = postcard::to_allocvec(&2.5f64)?;
    let typed = g.call::<f64>(&m, "echo", (Raw::from(bytes),))?;
    assert_eq!(timeout(LIMIT, client.compute(&typed)).await??, 2.5);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_errors_name_the_function_key_kind_and_message() -> Result<()> {
    let (_cluster, client, m) = cluster(1, 2).await?;
    let g = Graph::new();

    let failing = g.call::<u64>(&m, "fail", ("no luck",))?;
    let err = timeout(LIMIT, client.compute(&failing))
        .await?
        .expect_err("fail fails");
    let failure = err.task_failure().context("a task failure")?.clone();
    assert_eq!(failure.kind, FailureKind::Failed);
    assert_eq!(failure.function, "fail");
    assert_eq!(failure.origin, failing.key());
    assert!(failure.message.contains("no luck"), "{failure}");
    assert!(matches!(&err, Error::Task { key, .. } if *key == failing.key()));

    let trapping = g.call::<u64>(&m, "panic", ("boom",))?;
    let err = timeout(LIMIT, client.compute(&trapping))
        .await?
        .expect_err("panic traps");
    assert_eq!(err.failure_kind(), Some(FailureKind::Trap), "{err}");

    // A dependent fails with its dependency as the origin.
    let dependent = g.call::<i64>(&m, "inc", (&failing,))?;
    let second = g.call::<i64>(&m, "inc", (&dependent,))?;
    let err = timeout(LIMIT, client.compute(&second))
        .await?
        .expect_err("dependents fail");
    let failure = err.task_failure().context("a task failure")?;
    assert_eq!(failure.origin, failing.key());
    assert_eq!(failure.function, "fail");
    assert!(failure.message.contains("no luck"), "{failure}");
    assert!(matches!(&err, Error::Task { key, .. } if *key == second.key()));

    // Bad input: the guest cannot decode a string as an i64.
    let bad = g.call::<i64>(&m, "inc", ("not a number",))?;
    let err = timeout(LIMIT, client.compute(&bad))
        .await?
        .expect_err("bad input");
    assert_eq!(err.failure_kind(), Some(FailureKind::InvalidInput), "{err}");

    // A deadline set per call.
    let slow = g.call_with::<u64>(
        &m,
        "busy_wait",
        (5_000_000u64,),
        &CallOptions::new().timeout(Duration::from_millis(200)),
    )?;
    let err = timeout(LIMIT, client.compute(&slow))
        .await?
        .expect_err("deadline");
    assert_eq!(
        err.failure_kind(),
        Some(FailureKind::DeadlineExceeded),
        "{err}"
    );

    // Decoding into the wrong type is a decode error, not a panic.
    let wrong = g.call::<String>(&m, "add", (1.0, 2.0))?;
    let err = timeout(LIMIT, client.compute(&wrong))
        .await?
        .expect_err("decode");
    assert!(matches!(err, Error::Decode { .. }), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_fails_waiters_and_frees_the_slot() -> Result<()> {
    let (_cluster, client, m) = cluster(1, 1).await?;
    let g = Graph::new();
    let long = g.call::<u64>(&m, "busy_wait", (20_000_000u64,))?;
    let fs = timeout(LIMIT, client.submit(&[long])).await??;
    tokio::time::sleep(Duration::from_millis(200)).await;
    timeout(LIMIT, client.cancel(&fs)).await??;
    let err = timeout(Duration::from_secs(5), fs[0].result())
        .await?
        .expect_err("cancelled");
    assert_eq!(err.failure_kind(), Some(FailureKind::Cancelled), "{err}");
    // The single slot serves new work (long before the cancelled task's 20 s are over).
    let quick = g.call::<i64>(&m, "inc", (1i64,))?;
    assert_eq!(
        timeout(Duration::from_secs(15), client.compute(&quick)).await??,
        2
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_future_releases_the_chunk_on_the_worker() -> Result<()> {
    let (cluster, client, m) = cluster(1, 1).await?;
    let g = Graph::new();
    let big = g.call::<Raw>(&m, "echo", (Raw::from(vec![7u8; 1 << 20]),))?;
    let fs = timeout(LIMIT, client.submit(&[big])).await??;
    let f2 = fs[0].clone();
    assert_eq!(timeout(LIMIT, fs[0].result()).await??.len(), 1 << 20);
    let held = || async {
        let status = timeout(LIMIT, client.status()).await??;
        let chunks: u64 = status.workers.iter().map(|w| w.chunks).sum();
        Ok::<_, anyhow::Error>((chunks, cluster.worker_stats()[0].chunks))
    };
    assert_eq!(held().await?, (1, 1), "the result is held while wanted");
    drop(fs);
    // A clone still holds the reference.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(held().await?, (1, 1), "a clone keeps it");
    drop(f2);
    eventually("the worker dropped the chunk", || async {
        Ok(held().await? == (0, 0))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_share_identical_tasks() -> Result<()> {
    let (cluster, a, m) = cluster(1, 2).await?;
    let b = timeout(LIMIT, cluster.client()).await??;
    let mb = timeout(LIMIT, b.module(guest())).await??;
    assert_eq!(m.id(), mb.id());
    let before = cluster.worker_stats()[0].tasks_finished;

    let ga = Graph::new();
    let ha = ga.call::<u64>(&m, "busy_wait", (1_000_000u64,))?;
    let gb = Graph::new();
    let hb = gb.call::<u64>(&mb, "busy_wait", (1_000_000u64,))?;
    assert_eq!(ha.key(), hb.key());
    let fa = timeout(LIMIT, a.submit(&[ha])).await??;
    let fb = timeout(LIMIT, b.submit(&[hb])).await??;
    let (ra, rb) = tokio::join!(fa[0].result(), fb[0].result());
    assert_eq!(ra?, rb?);
    let ran = cluster.worker_stats()[0].tasks_finished - before;
    assert_eq!(ran, 1, "the shared task ran once");

    // One client letting go does not take the result from the other.
    drop(fa);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(timeout(LIMIT, fb[0].result()).await?.is_ok());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reports_counts_while_work_is_pending() -> Result<()> {
    let (_cluster, client, m) = cluster(1, 1).await?;
    let mut progress = client.progress();
    let g = Graph::new();
    let hs: Vec<Handle<u64>> = (0..4u64)
        .map(|i| g.call(&m, "busy_wait", (300_000u64 + i,)))
        .collect::<Result<_, _>>()?;
    let bar = client.progress_bar();
    let fs = timeout(LIMIT, client.submit(&hs)).await??;
    let counts = timeout(LIMIT, progress.next())
        .await?
        .context("a progress report")?;
    assert!(
        counts.waiting + counts.queued + counts.processing + counts.memory >= 1,
        "{counts:?}"
    );
    timeout(LIMIT, client.gather(&fs)).await??;
    bar.finish();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_fails_pending_futures() -> Result<()> {
    let (cluster, client, m) = cluster(1, 1).await?;
    let g = Graph::new();
    let long = g.call::<u64>(&m, "busy_wait", (30_000_000u64,))?;
    let fs = timeout(LIMIT, client.submit(&[long])).await??;
    timeout(LIMIT, cluster.shutdown()).await?;
    let err = timeout(Duration::from_secs(40), fs[0].result())
        .await
        .context("a lost connection must not hang")?
        .expect_err("lost");
    assert!(matches!(err, Error::ConnectionLost(_)), "{err}");
    assert!(!client.is_connected());
    let g = Graph::new();
    let h = g.call::<i64>(&m, "inc", (1i64,))?;
    let err = timeout(LIMIT, client.compute(&h))
        .await?
        .expect_err("no connection");
    assert!(matches!(err, Error::ConnectionLost(_)), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphs_larger_than_one_message_are_split_and_computed() -> Result<()> {
    let (_cluster, client, m) = cluster(1, 2).await?;
    let g = Graph::new();
    // ~4,000 leaves each carrying a 2 KiB literal: more than one 4 MiB message.
    let leaves: Vec<Handle<f64>> = (0..4_000)
        .map(|i| {
            let mut xs = vec![0.0f64; 256];
            xs[0] = i as f64;
            g.call(&m, "sum", (xs,))
        })
        .collect::<Result<_, _>>()?;
    let wire = Client::wire_messages(&leaves)?;
    // Every leaf wanted at once, across several messages.
    let fs = timeout(LIMIT, client.submit(&leaves)).await??;
    let sums = timeout(LIMIT, client.gather(&fs)).await??;
    assert_eq!(sums.len(), 4_000);
    assert!(sums.iter().enumerate().all(|(i, &s)| s == i as f64));
    drop(fs);
    let mut level = leaves;
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|p| match p {
                [a, b] => g.call::<f64>(&m, "add", (a, b)),
                [a] => Ok(a.clone()),
                _ => unreachable!(),
            })
            .collect::<Result<_, _>>()?;
    }
    let total = timeout(LIMIT, client.compute(&level[0])).await??;
    assert_eq!(total, (0..4_000).map(f64::from).sum::<f64>());
    assert!(
        Client::wire_messages(&level)?.len() > 1 && wire.len() > 1,
        "the graph was split"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_local_owns_its_cluster() -> Result<()> {
    init_tracing();
    let client = timeout(LIMIT, Client::local()).await??;
    let m = timeout(LIMIT, client.module(guest())).await??;
    let g = Graph::new();
    let x = g.call::<f64>(&m, "add", (0.5, 0.25))?;
    assert_eq!(timeout(LIMIT, client.compute(&x)).await??, 0.75);
    timeout(LIMIT, client.close()).await?;
    assert!(!client.is_connected());
    Ok(())
}

/// A result dropped and at once asked for again (as dependency or as output) is recomputed on
/// the worker that just released it; the release must not overtake the new run and delete the
/// fresh chunk (this once hung the array tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_released_and_resubmitted_at_once_are_recomputed() -> Result<()> {
    let (_cluster, client, m) = cluster(2, 1).await?;
    for round in 0..150i64 {
        let g = Graph::new();
        let xs: Vec<Handle<i64>> = (0..4)
            .map(|i| g.call::<i64>(&m, "inc", (round * 10 + i,)))
            .collect::<Result<_, _>>()?;
        let got = timeout(LIMIT, client.compute_all(&xs))
            .await
            .with_context(|| format!("round {round}: the inputs hung"))??;
        assert_eq!(got, (0..4).map(|i| round * 10 + i + 1).collect::<Vec<_>>());
        // The same keys again, now as dependencies and as outputs.
        let next: Vec<Handle<i64>> = xs
            .iter()
            .map(|x| g.call::<i64>(&m, "inc", (x,)))
            .collect::<Result<_, _>>()?;
        let got = timeout(LIMIT, client.compute_all(&next))
            .await
            .with_context(|| format!("round {round}: the dependents hung"))??;
        assert_eq!(got, (0..4).map(|i| round * 10 + i + 2).collect::<Vec<_>>());
        let again = timeout(LIMIT, client.compute_all(&xs))
            .await
            .with_context(|| format!("round {round}: the recomputed inputs hung"))??;
        assert_eq!(
            again,
            (0..4).map(|i| round * 10 + i + 1).collect::<Vec<_>>()
        );
    }
    Ok(())
}

/// The CPUs each thread named `name` of this process may run on, from `/proc`.
#[cfg(target_os = "linux")]
fn cpus_of_threads(name: &str) -> Result<Vec<String>> {
    let mut sets = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task")? {
        let dir = entry?.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue; // the thread ended meanwhile
        };
        if comm.trim() != name {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status"))?;
        let line = status
            .lines()
            .find(|l| l.starts_with("Cpus_allowed_list:"))
            .context("no Cpus_allowed_list")?;
        sets.push(line["Cpus_allowed_list:".len()..].trim().to_owned());
    }
    Ok(sets)
}

/// Pinned workers run on CPUs of their own, one each, and compute as usual; where there are
/// fewer CPUs than slots nothing is pinned.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_workers_keep_to_cpus_of_their_own() -> Result<()> {
    init_tracing();
    let allowed = taskhost_worker::allowed_cpus();
    let cluster = timeout(
        LIMIT,
        LocalCluster::builder()
            .workers(2)
            .slots(1)
            .pin_workers(true)
            .start(),
    )
    .await??;
    let client = timeout(LIMIT, cluster.client()).await??;
    let m = timeout(LIMIT, client.module(guest())).await??;
    let g = Graph::new();
    let xs: Vec<Handle<f64>> = (0..8)
        .map(|i| g.call::<f64>(&m, "add", (f64::from(i), 1.0)))
        .collect::<std::result::Result<_, _>>()?;
    let total: f64 = timeout(LIMIT, client.compute_all(&xs)).await??.iter().sum();
    assert_eq!(total, 36.0);
    // Other tests of this binary may run clusters of their own meanwhile, unpinned: look
    // at the threads whose set differs from the process's.
    let whole = std::fs::read_to_string("/proc/self/status")?
        .lines()
        .find_map(|l| {
            l.strip_prefix("Cpus_allowed_list:")
                .map(|v| v.trim().to_owned())
        })
        .context("no Cpus_allowed_list")?;
    let mut sets = cpus_of_threads("taskhost-worker")?;
    sets.extend(cpus_of_threads("taskhost-exec-0")?);
    sets.retain(|s| *s != whole);
    if allowed.len() >= 2 {
        // Each worker's network and executor threads.
        assert_eq!(sets.len(), 4, "{sets:?}");
        let mut distinct = sets.clone();
        distinct.sort();
        distinct.dedup();
        let mut expected = vec![allowed[0].to_string(), allowed[1].to_string()];
        expected.sort();
        assert_eq!(distinct, expected, "{sets:?}");
    } else {
        assert!(sets.is_empty(), "{sets:?}");
    }
    drop(client);
    cluster.shutdown().await;
    Ok(())
}
