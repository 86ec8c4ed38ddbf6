//! A real cluster: `taskhost scheduler` and `taskhost worker` processes on loopback, driven by
//! the Rust client. Every wait is bounded.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use taskhost_client::{
    CallOptions, Client, ClientOptions, Error, FailureKind, Graph, Handle, JoinTicket, Module, Raw,
};
use taskhost_net::TransportSettings;

const START: Duration = Duration::from_secs(30);
const RUN: Duration = Duration::from_secs(120);

/// The `taskhost` binary, built next to this test by `cargo test --workspace`.
fn taskhost_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/..");
    let bin = dir.join("taskhost");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p taskhost-cli`",
        bin.display()
    );
    bin
}

/// A child process killed when dropped, with its output going to a log file and its stdout
/// lines also forwarded to a channel.
struct Process {
    child: Child,
    log: PathBuf,
    lines: mpsc::Receiver<String>,
}

impl Process {
    fn spawn(args: &[&str], data_dir: &Path, log_name: &str) -> Result<Self> {
        Self::spawn_over(args, data_dir, log_name, Transport::SameHost)
    }

    fn spawn_over(
        args: &[&str],
        data_dir: &Path,
        log_name: &str,
        transport: Transport,
    ) -> Result<Self> {
        let log = data_dir.join(format!("{log_name}.log"));
        let mut child = Command::new(taskhost_bin())
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env(
                "RUST_LOG",
                "warn,taskhost_worker=debug,taskhost_scheduler=info,taskhost_net=debug",
            )
            .env(
                taskhost_net::LOCAL_TRANSPORT_ENV,
                match transport {
                    Transport::SameHost => "1",
                    Transport::Quic => "0",
                },
            )
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting taskhost")?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            log,
            lines: rx,
        })
    }

    /// The first stdout line containing `needle`.
    fn wait_line(&self, needle: &str) -> Result<String> {
        let deadline = Instant::now() + START;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(_) => continue,
                Err(_) => bail!("no line with {needle:?} in time; log:\n{}", self.log_text()),
            }
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// Waits for the process to exit by itself.
    fn wait_exit(&mut self, within: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "the process did not exit within {within:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How the processes of a test cluster reach each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// Unix sockets between processes of this host (the default).
    SameHost,
    /// QUIC over loopback.
    Quic,
}

/// A scheduler process and its worker processes.
struct Cluster {
    dir: tempfile::TempDir,
    scheduler: Process,
    ticket: JoinTicket,
    workers: Vec<Process>,
    transport: Transport,
}

impl Cluster {
    fn start(workers: usize) -> Result<Self> {
        Self::start_over(workers, Transport::SameHost)
    }

    fn start_over(workers: usize, transport: Transport) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let scheduler = Process::spawn_over(
            &[
                "scheduler",
                "--listen",
                "127.0.0.1:0",
                "--heartbeat-timeout",
                "2s",
            ],
            dir.path(),
            "scheduler",
            transport,
        )?;
        let line = scheduler.wait_line("taskhost worker --ticket")?;
        let ticket = line
            .split('\'')
            .nth(1)
            .context("the join line quotes the ticket")?
            .parse()
            .context("parsing the printed ticket")?;
        let mut cluster = Self {
            dir,
            scheduler,
            ticket,
            workers: Vec::new(),
            transport,
        };
        for i in 0..workers {
            cluster.add_worker(&format!("w{}", i + 1))?;
        }
        Ok(cluster)
    }

    fn add_worker(&mut self, name: &str) -> Result<()> {
        let ticket = self.ticket.to_string();
        let worker = Process::spawn_over(
            &[
                "worker",
                &ticket,
                "--name",
                name,
                "--slots",
                "2",
                "--listen",
                "127.0.0.1:0",
            ],
            self.dir.path(),
            name,
            self.transport,
        )?;
        worker.wait_line("joined")?;
        self.workers.push(worker);
        Ok(())
    }

    async fn client(&self) -> Result<Client> {
        let transport = TransportSettings {
            local_transport: self.transport == Transport::SameHost,
            ..TransportSettings::default()
        };
        let connect = ClientOptions::new()
            .transport(transport)
            .connect(&self.ticket);
        Ok(tokio::time::timeout(START, connect).await??)
    }

    fn worker_log(&self, index: usize) -> String {
        self.workers[index].log_text()
    }
}

async fn example_module(client: &Client) -> Result<Module> {
    let bytes = std::fs::read(taskhost_guest_artifacts::EXAMPLE_GUEST)?;
    Ok(client.module(bytes).await?)
}

fn on(worker: &str) -> CallOptions {
    CallOptions {
        workers: vec![worker.to_owned()],
        ..CallOptions::new()
    }
}

async fn compute<T: taskhost_client::TaskOutput>(client: &Client, handle: &Handle<T>) -> Result<T> {
    Ok(tokio::time::timeout(RUN, client.compute(handle))
        .await
        .context("the graph did not finish in time")??)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diamond_and_a_tree_reduction_move_chunks_between_workers() -> Result<()> {
    diamond_and_tree(Transport::SameHost).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diamond_and_a_tree_reduction_over_quic() -> Result<()> {
    diamond_and_tree(Transport::Quic).await
}

async fn diamond_and_tree(transport: Transport) -> Result<()> {
    let cluster = Cluster::start_over(2, transport)?;
    let client = cluster.client().await?;
    let m = example_module(&client).await?;

    // Diamond: a on w1; b on w1 and c on w2 both read a; d on w2 reads b and c.
    let g = Graph::new();
    let a = g.call_with::<f64>(&m, "add", (1.0f64, 0.0f64), &on("w1"))?;
    let b = g.call_with::<f64>(&m, "add", (&a, 1.0f64), &on("w1"))?;
    let c = g.call_with::<f64>(&m, "add", (&a, 2.0f64), &on("w2"))?;
    let d = g.call_with::<f64>(&m, "add", (&b, &c), &on("w2"))?;
    assert_eq!(compute(&client, &d).await?, 5.0);

    // Tree reduction of 0..16, leaves alternating between the workers.
    let g = Graph::new();
    let mut level: Vec<Handle<f64>> = (0..16)
        .map(|i| {
            g.call_with::<f64>(
                &m,
                "add",
                (i as f64, 0.0f64),
                &on(if i % 2 == 0 { "w1" } else { "w2" }),
            )
        })
        .collect::<Result<_, _>>()?;
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| g.call::<f64>(&m, "add", (&pair[0], &pair[1])))
            .collect::<Result<_, _>>()?;
    }
    assert_eq!(compute(&client, &level[0]).await?, 120.0);

    // The inputs crossed between the workers directly (the scheduler holds no chunks).
    let fetched = |i: usize| cluster.worker_log(i).matches("fetched a chunk").count();
    assert!(
        fetched(1) >= 1,
        "w2 fetched a from w1; log:\n{}",
        cluster.worker_log(1)
    );
    assert!(
        fetched(0) + fetched(1) >= 3,
        "the tree moved chunks between workers"
    );
    // Every connection (client and workers to the scheduler, worker to worker) took the
    // transport asked for.
    let same_host = |log: &str| log.matches("peer joined on the same-host socket").count();
    let scheduler_log = cluster.scheduler.log_text();
    let w1_log = cluster.worker_log(0);
    match transport {
        Transport::SameHost => {
            assert!(same_host(&scheduler_log) >= 3, "{scheduler_log}");
            assert!(
                same_host(&w1_log) >= 1,
                "w2 fetched from w1; log:\n{w1_log}"
            );
        }
        Transport::Quic => {
            assert_eq!(same_host(&scheduler_log), 0, "{scheduler_log}");
            assert_eq!(same_host(&w1_log), 0, "{w1_log}");
        }
    }
    client.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_tasks_err_with_their_cause_and_the_worker_keeps_serving() -> Result<()> {
    let cluster = Cluster::start(1)?;
    let client = cluster.client().await?;
    let m = example_module(&client).await?;
    let g = Graph::new();
    let trap = g.call::<u64>(&m, "panic", ("on purpose".to_string(),))?;
    let spin = g.call_with::<u64>(
        &m,
        "spin",
        (),
        &CallOptions {
            timeout: Some(Duration::from_millis(300)),
            ..CallOptions::new()
        },
    )?;
    let hog = g.call_with::<u64>(
        &m,
        "hog",
        (1u64 << 20,),
        &CallOptions {
            memory_limit: Some(64 << 20),
            ..CallOptions::new()
        },
    )?;
    let fail = g.call::<u64>(&m, "fail", ("bad input".to_string(),))?;
    let dependent = g.call::<f64>(&m, "add", (&fail, 1.0f64))?;
    for (handle, kind, text) in [
        (&trap, FailureKind::Trap, "on purpose"),
        (&spin, FailureKind::DeadlineExceeded, ""),
        (&hog, FailureKind::MemoryLimitExceeded, ""),
        (&fail, FailureKind::Failed, "bad input"),
    ] {
        match compute(&client, handle).await {
            Err(err) => match err.downcast_ref::<Error>() {
                Some(Error::Task { failure, .. }) => {
                    assert_eq!(failure.kind, kind, "{failure}");
                    assert!(failure.message.contains(text), "{failure}");
                }
                _ => panic!("expected a task failure, got {err:#}"),
            },
            Ok(value) => panic!("expected {kind}, got {value}"),
        }
    }
    // A dependent fails with the original cause.
    match compute(&client, &dependent)
        .await
        .unwrap_err()
        .downcast_ref::<Error>()
    {
        Some(Error::Task { failure, .. }) => {
            assert_eq!(failure.kind, FailureKind::Failed);
            assert_eq!(failure.function, "fail");
            assert_eq!(failure.origin, fail.key());
        }
        other => panic!("expected a task failure, got {other:?}"),
    }
    // The worker still serves.
    let g = Graph::new();
    let ok = g.call::<f64>(&m, "add", (20.0f64, 22.0f64))?;
    assert_eq!(compute(&client, &ok).await?, 42.0);
    client.close().await;
    Ok(())
}

/// A tree reduction of `n` slow leaves: the sum of 0..n.
fn slow_tree(g: &Graph, m: &Module, n: usize, micros: u64) -> Result<Handle<f64>> {
    let mut level: Vec<Handle<f64>> = (0..n)
        .map(|i| g.call::<f64>(m, "slow_add", (i as f64, 0.0f64, micros)))
        .collect::<Result<_, _>>()?;
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [a, b] => g.call::<f64>(m, "add", (a, b)),
                [a] => g.call::<f64>(m, "add", (a, 0.0f64)),
                _ => unreachable!(),
            })
            .collect::<Result<_, _>>()?;
    }
    Ok(level.pop().expect("n > 0"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_graph_does_not_lose_the_result() -> Result<()> {
    let mut cluster = Cluster::start(2)?;
    let client = cluster.client().await?;
    let m = example_module(&client).await?;
    let g = Graph::new();
    let n = 48;
    let root = slow_tree(&g, &m, n, 40_000)?;
    let futures = client.submit(std::slice::from_ref(&root)).await?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    cluster.workers[1].kill(); // SIGKILL
    let value = tokio::time::timeout(RUN, futures[0].result())
        .await
        .context("the graph did not finish")??;
    assert_eq!(value, (0..n).sum::<usize>() as f64);
    client.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_joining_mid_graph_receives_work() -> Result<()> {
    let mut cluster = Cluster::start(1)?;
    let client = cluster.client().await?;
    let m = example_module(&client).await?;
    let g = Graph::new();
    // Keep every leaf wanted, so that chunks stay with the worker that computed them.
    let leaves: Vec<Handle<f64>> = (0..40)
        .map(|i| g.call::<f64>(&m, "slow_add", (i as f64, 0.0f64, 50_000u64)))
        .collect::<Result<_, _>>()?;
    let futures = client.submit(&leaves).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.add_worker("late")?;
    let values = tokio::time::timeout(RUN, client.gather(&futures))
        .await
        .context("the graph did not finish")??;
    assert_eq!(values, (0..40).map(|i| i as f64).collect::<Vec<_>>());
    let status = client.status().await?;
    let late = status
        .workers
        .iter()
        .find(|w| w.name == "late")
        .context("the late worker is listed")?;
    assert!(
        late.chunks > 0,
        "the late worker computed some leaves: {status:?}"
    );
    client.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_without_the_cluster_secret_are_rejected() -> Result<()> {
    let cluster = Cluster::start(1)?;
    // Same address and pinned CA, another token.
    let mut forged = cluster.ticket.clone();
    let mut text = forged.to_string();
    let at = text.find('@').context("ticket has a token")?;
    let flipped = if &text[at - 1..at] == "0" { "1" } else { "0" };
    text.replace_range(at - 1..at, flipped);
    forged = text.parse()?;
    let result = tokio::time::timeout(START, Client::connect(&forged)).await?;
    assert!(
        result.is_err(),
        "a client with a wrong token must not connect"
    );
    // A worker with the forged ticket cannot join either: it exits with an error.
    let mut rogue = Process::spawn(
        &["worker", &forged.to_string(), "--name", "rogue"],
        cluster.dir.path(),
        "rogue",
    )?;
    let status = rogue.wait_exit(START)?;
    assert!(!status.success());
    assert!(rogue.log_text().contains("error"), "{}", rogue.log_text());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_exit_with_a_clear_message_when_the_scheduler_stops() -> Result<()> {
    let mut cluster = Cluster::start(1)?;
    cluster.scheduler.signal("TERM");
    let status = cluster.workers[0].wait_exit(Duration::from_secs(20))?;
    assert!(
        !status.success(),
        "a worker whose scheduler stopped exits non-zero"
    );
    let log = cluster.worker_log(0);
    assert!(
        log.contains("scheduler"),
        "the worker says why it stopped: {log}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_watch_follows_the_cluster_until_interrupted() -> Result<()> {
    let cluster = Cluster::start(1)?;
    let ticket = cluster.ticket.to_string();
    let mut watch = Process::spawn(
        &[
            "status",
            "--ticket",
            &ticket,
            "--watch",
            "--json",
            "--interval-ms",
            "100",
        ],
        cluster.dir.path(),
        "watch",
    )?;
    let client = cluster.client().await?;
    let m = example_module(&client).await?;
    let g = Graph::new();
    let n = 8;
    let root = slow_tree(&g, &m, n, 300_000)?;
    let futures = client.submit(std::slice::from_ref(&root)).await?;
    // One JSON object per refresh; one of them shows the tasks running.
    let deadline = Instant::now() + RUN;
    let mut seen = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = watch
            .lines
            .recv_timeout(left)
            .map_err(|_| anyhow::anyhow!("no running tasks seen; log:\n{}", watch.log_text()))?;
        let status: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("--watch --json printed {line:?}"))?;
        seen += 1;
        assert_eq!(status["workers"].as_array().map(Vec::len), Some(1));
        if status["tasks"]["processing"].as_u64() > Some(0) {
            break;
        }
    }
    assert!(seen >= 1);
    let value = tokio::time::timeout(RUN, futures[0].result()).await??;
    assert_eq!(value, (0..n).sum::<usize>() as f64);
    watch.signal("INT");
    let status = watch.wait_exit(Duration::from_secs(10))?;
    assert!(status.success(), "--watch ended with {status}");
    client.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_whose_holder_died_is_recomputed_for_the_client() -> Result<()> {
    let mut cluster = Cluster::start(2)?;
    let client = cluster.client().await?;
    let m = example_module(&client).await?;
    let g = Graph::new();
    // Too large to travel inline: the result stays on the worker that computed it.
    let input = vec![5u8; 1 << 20];
    let big = g.call::<Raw>(&m, "echo", (Raw::from(input.clone()),))?;
    let futures = client.submit(std::slice::from_ref(&big)).await?;
    tokio::time::timeout(RUN, client.wait(&futures)).await?;
    let status = client.status().await?;
    let holder = status
        .workers
        .iter()
        .find(|w| w.chunks > 0)
        .context("no worker holds the result")?;
    let index = holder
        .name
        .strip_prefix('w')
        .and_then(|n| n.parse::<usize>().ok())
        .context("worker names are w1, w2")?
        - 1;
    cluster.workers[index].kill(); // SIGKILL, before the client fetched anything
    let value = tokio::time::timeout(RUN, futures[0].result())
        .await
        .context("the result was not recomputed")??;
    assert_eq!(value.0, input);
    client.close().await;
    Ok(())
}
