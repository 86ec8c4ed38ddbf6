//! `taskhost-bench`: Task Bench shapes, METG(50%) and latency on taskhost, and the same on Dask
//! in the same invocation (`compare`).

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use clap::{Args as ClapArgs, Parser, Subcommand};
use serde::Serialize;
use serde_json::{Value, json};
use taskhost_bench::{Latency, Metg, RunResult, Shape, Spec, Target};
use taskhost_client::{Client, JoinTicket, LocalCluster};

#[derive(Parser)]
#[command(
    name = "taskhost-bench",
    about = "Task Bench shapes, METG and latency on taskhost, side by side with Dask"
)]
struct Cli {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Write the scheduler's and workers' task events (dispatches, starts, ends, chunk
    /// requests and answers, with microsecond times) to this file; `host/bench/timeline.py`
    /// reads it. It slows the run a little.
    #[arg(long, global = true, value_name = "FILE")]
    timeline: Option<PathBuf>,
    /// Runs per measurement; the median is reported.
    #[arg(long, global = true, default_value_t = 3)]
    repeat: usize,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(ClapArgs)]
struct ClusterArgs {
    /// Join ticket of a running scheduler (default: an embedded local cluster).
    #[arg(long, global = true)]
    scheduler: Option<String>,
    /// With --scheduler: the scheduler's pid, whose CPU time and peak RSS are measured.
    #[arg(long, global = true)]
    scheduler_pid: Option<u32>,
    /// With --scheduler: a worker's pid, whose CPU time is measured too (repeat for several).
    #[arg(long = "worker-pid", global = true)]
    worker_pids: Vec<u32>,
    /// With --scheduler: the cluster's total execution slots (for efficiency).
    #[arg(long, global = true)]
    cores: Option<usize>,
    /// Workers of the embedded cluster.
    #[arg(long, global = true, default_value_t = 2)]
    workers: usize,
    /// Slots per worker of the embedded cluster.
    #[arg(long, global = true, default_value_t = 1)]
    slots: u32,
    /// Embedded cluster: send tasks to workers only once their inputs are computed.
    #[arg(long, global = true)]
    no_early_dispatch: bool,
    /// Embedded cluster: keep each worker's threads on CPUs of its own (when there is one per
    /// slot; see `LocalClusterBuilder::pin_workers`).
    #[arg(long, global = true)]
    pin: bool,
    /// Run zero-work trivial tasks and the latency probe on the wasip2 example guest too
    /// (default: on the lean guest, whose instances are cheaper).
    #[arg(long, global = true)]
    wasi_guest: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs one shape.
    Run {
        /// trivial, no_comm, stencil_1d, nearest, spread, fft, tree, merge.
        #[arg(long, default_value = "stencil_1d")]
        shape: String,
        /// Radix K of nearest and spread.
        #[arg(long, default_value_t = 3)]
        radix: usize,
        /// W.
        #[arg(long, default_value_t = 4)]
        width: usize,
        /// H.
        #[arg(long, default_value_t = 100)]
        height: usize,
        /// Busy-wait per task in microseconds (0: zero-work).
        #[arg(long, default_value_t = 0)]
        micros: u64,
        /// Output bytes per task.
        #[arg(long, default_value_t = 8)]
        bytes: u32,
    },
    /// METG(50%) of a shape.
    Metg {
        /// The shape.
        #[arg(long, default_value = "stencil_1d")]
        shape: String,
        /// Radix K of nearest and spread.
        #[arg(long, default_value_t = 3)]
        radix: usize,
        /// W.
        #[arg(long, default_value_t = 4)]
        width: usize,
        /// Largest task duration tried, in microseconds.
        #[arg(long, default_value_t = 10_000)]
        start_us: u64,
        /// Ideal seconds per run (the height follows from it).
        #[arg(long, default_value_t = 0.25)]
        target_s: f64,
        /// Largest height.
        #[arg(long, default_value_t = 5000)]
        max_height: usize,
    },
    /// Single-task submit-to-result latency.
    Latency {
        /// Round trips measured.
        #[arg(long, default_value_t = 1000)]
        iters: usize,
    },
    /// The standard set: every shape zero-work, stencil_1d METG, latency.
    Suite(SuiteArgs),
    /// The standard set on taskhost, then on Dask (LocalCluster and threads), with ratios.
    Compare {
        #[command(flatten)]
        suite: SuiteArgs,
        /// Largest graph for Dask's runs (heights/widths are scaled down to it).
        #[arg(long, default_value_t = 20_000)]
        dask_max_tasks: usize,
        /// Dask's schedulers to run.
        #[arg(long, value_delimiter = ',', default_value = "cluster,threads")]
        dask_sched: Vec<String>,
    },
}

#[derive(ClapArgs, Clone, Serialize)]
struct SuiteArgs {
    /// Tasks of the trivial graph.
    #[arg(long, default_value_t = 100_000)]
    trivial_tasks: usize,
    /// Scale of the other shapes (tasks ~ 10,000 x scale).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Round trips of the latency measurement.
    #[arg(long, default_value_t = 1000)]
    latency_iters: usize,
    /// Largest task duration METG tries, in microseconds.
    #[arg(long, default_value_t = 10_000)]
    metg_start_us: u64,
    /// Ideal seconds per METG run.
    #[arg(long, default_value_t = 0.25)]
    metg_target_s: f64,
}

/// The specs of the standard set.
fn suite_specs(a: &SuiteArgs) -> Vec<Spec> {
    let s = |n: f64| ((n * a.scale).round() as usize).max(2);
    let trivial_w = 1000.min(a.trivial_tasks.max(1));
    let mut specs = vec![Spec {
        shape: Shape::Trivial,
        width: trivial_w,
        height: a.trivial_tasks.div_ceil(trivial_w),
        micros: 0,
        bytes: 8,
    }];
    for shape in [
        Shape::NoComm,
        Shape::Stencil1d,
        Shape::Nearest { radix: 5 },
        Shape::Spread { radix: 3 },
        Shape::Fft,
    ] {
        specs.push(Spec {
            shape,
            width: 100,
            height: s(100.0),
            micros: 0,
            bytes: 8,
        });
    }
    specs.push(Spec {
        shape: Shape::Tree,
        width: s(8192.0).next_power_of_two(),
        height: 1,
        micros: 0,
        bytes: 8,
    });
    specs.push(Spec {
        shape: Shape::Merge,
        width: s(10_000.0),
        height: 1,
        micros: 0,
        bytes: 8,
    });
    specs
}

#[derive(Serialize)]
struct SuiteResult {
    system: &'static str,
    runs: Vec<RunResult>,
    metg: Metg,
    latency: Latency,
    load: String,
    /// Rounds of the lean guest's spin loop per microsecond (None with `--wasi-guest`).
    spin_rounds_per_us: Option<f64>,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

async fn connect(c: &ClusterArgs) -> Result<Target> {
    match &c.scheduler {
        Some(t) => {
            let ticket: JoinTicket = match std::fs::read_to_string(t) {
                Ok(s) => s.trim().parse()?,
                Err(_) => t.parse()?,
            };
            let client = Client::connect(&ticket).await?;
            let cores = match c.cores {
                Some(n) => n,
                None => client.status().await?.workers.len().max(1),
            };
            let mut target = Target::new(client, cores, c.scheduler_pid).await?;
            target.worker_pids = c.worker_pids.clone();
            target.wasi_guest = c.wasi_guest;
            Ok(target)
        }
        None => {
            let client = LocalCluster::builder()
                .workers(c.workers)
                .slots(c.slots)
                .early_dispatch(!c.no_early_dispatch)
                .pin_workers(c.pin)
                .client()
                .await?;
            let mut target = Target::new(client, c.workers * c.slots as usize, None).await?;
            target.wasi_guest = c.wasi_guest;
            Ok(target)
        }
    }
}

/// How the spin loop was calibrated, for a table's title (empty before any calibration).
fn spin_note(t: &Target) -> String {
    t.spins_per_us
        .map(|v| format!("; spin loop {v:.0} rounds/us"))
        .unwrap_or_default()
}

fn print_runs(title: &str, runs: &[RunResult]) {
    println!("{title}");
    println!(
        "{:<12} {:>6} {:>6} {:>7} {:>8} {:>9} {:>11} {:>6} {:>10} {:>10} {:>10} {:>10}",
        "shape",
        "W",
        "H",
        "T(us)",
        "tasks",
        "wall(s)",
        "tasks/s",
        "eff",
        "cpu us/t",
        "rss B/t",
        "wrk us/t",
        "cli us/t"
    );
    for r in runs {
        println!(
            "{:<12} {:>6} {:>6} {:>7} {:>8} {:>9.3} {:>11.0} {:>6.2} {:>10.1} {:>10.0} {:>10.1} {:>10.1}",
            r.spec.shape.name(),
            r.spec.width,
            r.spec.height,
            r.spec.micros,
            r.tasks,
            r.wall_s,
            r.tasks_per_s,
            r.efficiency,
            r.cpu_us_per_task,
            r.peak_rss_per_task,
            r.worker_cpu_us_per_task,
            r.client_cpu_us_per_task
        );
    }
}

fn print_metg(m: &Metg, spins_per_us: Option<f64>) {
    let note = spins_per_us
        .map(|v| format!(" (spin loop {v:.0} rounds/us)"))
        .unwrap_or_default();
    print_runs(&format!("METG(50%) runs{note}"), &m.points);
    match (m.metg50_us, m.metg50_measured_us) {
        (Some(t), Some(g)) => {
            println!("METG(50%): {t} us (measured granularity {g:.1} us)")
        }
        _ => println!("METG(50%): no duration reached 50% efficiency"),
    }
}

fn print_latency(l: &Latency) {
    println!(
        "latency over {} round trips: median {:.0} us, p99 {:.0} us, min {:.0} us",
        l.iters, l.median_us, l.p99_us, l.min_us
    );
}

async fn suite(t: &mut Target, a: &SuiteArgs, repeat: usize) -> Result<SuiteResult> {
    let mut runs = Vec::new();
    for spec in suite_specs(a) {
        runs.push(t.run_median(&spec, repeat).await?);
    }
    let metg = t
        .metg(
            Shape::Stencil1d,
            4,
            a.metg_start_us,
            a.metg_target_s,
            5000,
            repeat,
        )
        .await?;
    let latency = t.latency(a.latency_iters, 50).await?;
    Ok(SuiteResult {
        system: "taskhost",
        runs,
        metg,
        latency,
        load: loadavg(),
        spin_rounds_per_us: t.spins_per_us,
    })
}

fn print_suite(s: &SuiteResult) {
    print_runs(&format!("taskhost (load {})", s.load), &s.runs);
    print_metg(&s.metg, s.spin_rounds_per_us);
    print_latency(&s.latency);
}

/// Runs the Dask script and returns its JSON.
fn dask(args: &[String]) -> Result<Value> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dask");
    let out = Command::new("bash")
        .arg(dir.join("run.sh"))
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running host/bench/dask/run.sh")?;
    if !out.status.success() {
        bail!("the Dask script failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("the Dask script printed no JSON")?;
    Ok(serde_json::from_str(last)?)
}

fn f(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.1}x", a / b)
    } else {
        "-".into()
    }
}

fn print_compare(th: &SuiteResult, dasks: &[(String, Value)]) {
    println!();
    println!("tasks/s (zero-work tasks; Dask graphs capped in size, see JSON):");
    let mut header = format!("{:<12} {:>11}", "shape", "taskhost");
    for (s, _) in dasks {
        header += &format!(" {:>13} {:>9}", format!("dask-{s}"), "ratio");
    }
    println!("{header}");
    for r in &th.runs {
        let mut line = format!("{:<12} {:>11.0}", r.spec.shape.name(), r.tasks_per_s);
        for (_, d) in dasks {
            let run = d["runs"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["shape"] == r.spec.shape.name()));
            let tps = run.map_or(f64::NAN, |x| f(x, "tasks_per_s"));
            line += &format!(" {:>13.0} {:>9}", tps, ratio(r.tasks_per_s, tps));
        }
        println!("{line}");
    }
    let row = |name: &str, ours: f64, key: &dyn Fn(&Value) -> f64, lower_better: bool| {
        let mut line = format!("{name:<26} {ours:>11.1}");
        for (_, d) in dasks {
            let theirs = key(d);
            let r = if lower_better {
                ratio(theirs, ours)
            } else {
                ratio(ours, theirs)
            };
            line += &format!(" {theirs:>13.1} {r:>9}");
        }
        println!("{line}");
    };
    println!();
    let mut header = format!(
        "{:<26} {:>11}",
        "metric (ratio: ours better by)", "taskhost"
    );
    for (s, _) in dasks {
        header += &format!(" {:>13} {:>9}", format!("dask-{s}"), "ratio");
    }
    println!("{header}");
    let trivial = &th.runs[0];
    let dtriv = |d: &Value, k: &str| {
        d["runs"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["shape"] == "trivial"))
            .map_or(f64::NAN, |x| f(x, k))
    };
    row(
        "trivial tasks/s",
        trivial.tasks_per_s,
        &|d| dtriv(d, "tasks_per_s"),
        false,
    );
    row(
        "stencil_1d METG(50%) us",
        th.metg.metg50_us.map_or(f64::NAN, |v| v as f64),
        &|d| f(&d["metg"], "metg50_us"),
        true,
    );
    row(
        "cpu us per trivial task",
        trivial.cpu_us_per_task,
        &|d| dtriv(d, "cpu_us_per_task"),
        true,
    );
    row(
        "peak RSS B per trivial task",
        trivial.peak_rss_per_task,
        &|d| dtriv(d, "peak_rss_per_task"),
        true,
    );
    row(
        "latency median us",
        th.latency.median_us,
        &|d| f(&d["latency"], "median_us"),
        true,
    );
    row(
        "latency p99 us",
        th.latency.p99_us,
        &|d| f(&d["latency"], "p99_us"),
        true,
    );
}

/// The events of `--timeline`, kept in memory while the run goes on (writing each one out would
/// slow the threads being observed).
#[derive(Clone, Default)]
struct TimelineBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for TimelineBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// The client side on one thread: no hand-offs between runtime threads on the submit-to-result
// path (latency 303-316 us against 357-365 us as processes, 245 us against 338 us embedded, in
// runs of 2026-11-26 at load ~1); the scheduler and workers have threads of their own.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let timeline = cli.timeline.as_ref().map(|_| TimelineBuffer::default());
    // Logs of the embedded cluster, off unless RUST_LOG asks for them; with --timeline, the
    // scheduler's and workers' task events too, into the file.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    match &timeline {
        Some(buffer) => {
            let buffer = buffer.clone();
            tracing_subscriber::fmt()
                .with_env_filter(filter.add_directive("taskhost::timeline=trace".parse()?))
                .with_ansi(false)
                .with_writer(move || buffer.clone())
                .init();
        }
        None => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
    let result = run(&cli).await;
    if let (Some(path), Some(buffer)) = (&cli.timeline, timeline) {
        let bytes = std::mem::take(&mut *buffer.0.lock().unwrap_or_else(|e| e.into_inner()));
        std::fs::write(path, bytes)
            .with_context(|| format!("writing the timeline to {}", path.display()))?;
    }
    result
}

async fn run(cli: &Cli) -> Result<()> {
    let mut t = connect(&cli.cluster).await?;
    match &cli.command {
        Cmd::Run {
            shape,
            radix,
            width,
            height,
            micros,
            bytes,
        } => {
            let spec = Spec {
                shape: Shape::parse(shape, *radix)?,
                width: *width,
                height: *height,
                micros: *micros,
                bytes: *bytes,
            };
            let r = t.run_median(&spec, cli.repeat).await?;
            if cli.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                print_runs(
                    &format!("taskhost (load {}{})", loadavg(), spin_note(&t)),
                    &[r],
                );
            }
        }
        Cmd::Metg {
            shape,
            radix,
            width,
            start_us,
            target_s,
            max_height,
        } => {
            let m = t
                .metg(
                    Shape::parse(shape, *radix)?,
                    *width,
                    *start_us,
                    *target_s,
                    *max_height,
                    cli.repeat,
                )
                .await?;
            if cli.json {
                println!("{}", serde_json::to_string(&m)?);
            } else {
                print_metg(&m, t.spins_per_us);
            }
        }
        Cmd::Latency { iters } => {
            let l = t.latency(*iters, 50).await?;
            if cli.json {
                println!("{}", serde_json::to_string(&l)?);
            } else {
                print_latency(&l);
            }
        }
        Cmd::Suite(a) => {
            let s = suite(&mut t, a, cli.repeat).await?;
            if cli.json {
                println!("{}", serde_json::to_string(&s)?);
            } else {
                print_suite(&s);
            }
        }
        Cmd::Compare {
            suite: a,
            dask_max_tasks,
            dask_sched,
        } => {
            let s = suite(&mut t, a, cli.repeat).await?;
            t.client.close().await;
            drop(t);
            if !cli.json {
                print_suite(&s);
            }
            let mut dasks = Vec::new();
            for sched in dask_sched {
                eprintln!("running Dask ({sched})...");
                let args = vec![
                    "suite".to_owned(),
                    "--sched".to_owned(),
                    sched.clone(),
                    "--max-tasks".to_owned(),
                    dask_max_tasks.to_string(),
                    "--repeat".to_owned(),
                    cli.repeat.to_string(),
                    "--latency-iters".to_owned(),
                    a.latency_iters.min(1000).to_string(),
                    "--scale".to_owned(),
                    a.scale.to_string(),
                    "--trivial-tasks".to_owned(),
                    a.trivial_tasks.to_string(),
                ];
                let v = dask(&args)?;
                if !cli.json {
                    println!("dask-{sched}: {}", serde_json::to_string(&v["summary"])?);
                }
                dasks.push((sched.clone(), v));
            }
            if cli.json {
                let d: serde_json::Map<String, Value> = dasks.into_iter().collect();
                println!("{}", json!({"taskhost": s, "dask": d}));
            } else {
                print_compare(&s, &dasks);
            }
        }
    }
    Ok(())
}
