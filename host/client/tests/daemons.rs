//! The client against a scheduler and workers running as separate processes (this test binary
//! re-executed in a daemon role, running the daemons' own code), connected by join ticket.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use taskhost_client::{Client, Error, FailureKind, Graph, JoinTicket, Raw};
use tokio::time::timeout;

/// Bound of every wait in these tests.
const LIMIT: Duration = Duration::from_secs(60);
/// The role a re-executed copy of this binary plays.
const ROLE: &str = "TASKHOST_CLIENT_TEST_ROLE";
const DIR: &str = "TASKHOST_CLIENT_TEST_DIR";

/// The entry point of the daemon processes; does nothing in an ordinary test run.
#[test]
fn daemon_process() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let dir = std::path::PathBuf::from(std::env::var(DIR).expect("the test sets the directory"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        match role.as_str() {
            "scheduler" => {
                let handle = taskhost_scheduler::start(taskhost_scheduler::SchedulerConfig::new(
                    "127.0.0.1:0".parse().expect("an address"),
                    dir,
                ))
                .await
                .expect("the scheduler starts");
                println!("TICKET {}", handle.ticket());
                std::future::pending::<()>().await;
            }
            "worker" => {
                let ticket = taskhost_client::ticket_from_env().expect("TASKHOST_TICKET is set");
                let mut config = taskhost_worker::WorkerConfig::new(ticket, dir);
                config.slots = 1;
                config.listen = "127.0.0.1:0".parse().expect("an address");
                let handle = taskhost_worker::start(config)
                    .await
                    .expect("the worker starts");
                println!("WORKER {}", handle.peer_addr());
                std::future::pending::<()>().await;
            }
            "connect_env" => {
                // A client finding its ticket in the environment.
                let client = Client::connect_env().await.expect("connects");
                let m = client.module(guest()).await.expect("registers");
                let g = Graph::new();
                let x = g.call::<i64>(&m, "inc", (99i64,)).expect("call");
                println!("RESULT {}", client.compute(&x).await.expect("computes"));
            }
            other => panic!("unknown role {other}"),
        }
    });
}

fn guest() -> Vec<u8> {
    taskhost_guest_artifacts::read(taskhost_guest_artifacts::EXAMPLE_GUEST)
}

/// A child process, killed when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts this binary in `role` and returns it with the first stdout line starting with
/// `marker` (without the marker).
fn spawn(
    role: &str,
    dir: &std::path::Path,
    env: &[(&str, String)],
    marker: &str,
) -> Result<(Daemon, String)> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args([
        "--exact",
        "daemon_process",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ROLE, role)
    .env(DIR, dir)
    .env_remove("RUST_LOG")
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = Daemon(cmd.spawn()?);
    let stdout = child.0.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let marker = marker.to_owned();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            // The harness may have printed the test's name on the same line.
            if let Some(at) = line.find(&marker) {
                let _ = tx.send(line[at + marker.len()..].trim().to_owned());
            }
        }
    });
    let line = rx
        .recv_timeout(LIMIT)
        .with_context(|| format!("the {role} process did not start"))?;
    Ok((child, line))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_processes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (scheduler, ticket) = spawn("scheduler", &dir.path().join("scheduler"), &[], "TICKET ")?;
    let parsed: JoinTicket = ticket.parse()?;
    let mut workers = Vec::new();
    for i in 0..2 {
        let env = [("TASKHOST_TICKET", ticket.clone())];
        workers.push(spawn(
            "worker",
            &dir.path().join(format!("worker-{i}")),
            &env,
            "WORKER ",
        )?);
    }
    let client = timeout(LIMIT, Client::connect(&parsed)).await??;
    let deadline = tokio::time::Instant::now() + LIMIT;
    while timeout(LIMIT, client.status()).await??.workers.len() < 2 {
        if tokio::time::Instant::now() > deadline {
            bail!("the workers did not register");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = timeout(LIMIT, client.module(guest())).await??;

    // A graph across the two worker processes, with a result fetched from a worker.
    let g = Graph::new();
    let parts: Vec<_> = (0..8)
        .map(|i| g.call::<f64>(&m, "add", (i as f64, 0.5)))
        .collect::<Result<_, _>>()?;
    let mut level = parts;
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|p| g.call::<f64>(&m, "add", (&p[0], &p[1])))
            .collect::<Result<_, _>>()?;
    }
    assert_eq!(timeout(LIMIT, client.compute(&level[0])).await??, 32.0);
    let big = g.call::<Raw>(&m, "echo", (Raw::from(vec![3u8; 300_000]),))?;
    let back = timeout(LIMIT, client.compute(&big)).await??;
    assert!(back.len() == 300_000 && back.iter().all(|&b| b == 3));

    // Errors keep their cause across processes.
    let failing = g.call::<u64>(&m, "fail", ("remote failure",))?;
    let dependent = g.call::<i64>(&m, "inc", (&failing,))?;
    let err = timeout(LIMIT, client.compute(&dependent))
        .await?
        .expect_err("fails");
    let failure = err.task_failure().context("a task failure")?;
    assert_eq!(failure.kind, FailureKind::Failed);
    assert_eq!(failure.origin, failing.key());
    assert!(failure.message.contains("remote failure"), "{failure}");

    // A second process finds the cluster through TASKHOST_TICKET and reuses the module.
    let (_other, result) = spawn(
        "connect_env",
        &dir.path().join("unused"),
        &[("TASKHOST_TICKET", ticket.clone())],
        "RESULT ",
    )?;
    assert_eq!(result, "100");

    // The scheduler process dies: pending work fails (after the transport's idle timeout at
    // most), it does not hang.
    let long = g.call::<u64>(&m, "busy_wait", (60_000_000u64,))?;
    let fs = timeout(LIMIT, client.submit(&[long])).await??;
    drop(scheduler);
    let err = timeout(Duration::from_secs(45), fs[0].result())
        .await
        .context("a lost scheduler must not hang the client")?
        .expect_err("lost");
    assert!(matches!(err, Error::ConnectionLost(_)), "{err}");
    drop(workers);
    Ok(())
}
