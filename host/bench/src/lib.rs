//! Task Bench shapes, METG(50%) and submit-to-result latency on a taskhost cluster.
//!
//! Every task is a call of the lean guest's `bench_spin<N>` (N = number of dependencies, 0 to
//! [`MAX_ARITY`]): it runs a compute-bound loop for as many rounds as `micros` microseconds
//! take (the driver calibrates rounds per microsecond on the cluster first, see
//! [`Target::calibrate`]), returns `bytes` bytes (at least 8), and its value (the first 8
//! bytes) is `salt + 1 + the sum of its dependencies' values`, so the driver checks every result
//! it gathers against the same recurrence computed here. With [`Target::wasi_guest`] the tasks
//! call the example guest's `bench_kernel<N>` instead, which busy-waits on the WASI clock (a
//! dearer instance per task: WASI is wired in, and the loop asks the host for the time).
//!
//! Shapes follow Task Bench (Slaughter et al., SC20) with width W and height H, and the RSDS
//! study (Boehm & Beranek) for `merge` and `tree`; see [`Shape`].

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;
use taskhost_client::{Args, Client, Graph, Handle, Module, Raw};

/// The largest number of dependencies one kernel call takes (the guests export
/// `bench_spin0` to `bench_spin8` and `bench_kernel0` to `bench_kernel8`).
pub const MAX_ARITY: usize = 8;

/// A graph shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// W x H independent tasks.
    Trivial,
    /// H steps of W independent chains: task (t, i) depends on (t-1, i).
    NoComm,
    /// Task (t, i) depends on (t-1, i-1), (t-1, i) and (t-1, i+1), those that exist.
    Stencil1d,
    /// Task (t, i) depends on the K nearest points of step t-1 (i - (K-1)/2 to i + K/2).
    Nearest {
        /// K, at most [`MAX_ARITY`].
        radix: usize,
    },
    /// Task (t, i) depends on K points of step t-1 spread over the width: (i + k W / K) mod W.
    Spread {
        /// K, at most [`MAX_ARITY`].
        radix: usize,
    },
    /// Butterflies, as in Task Bench's FFT pattern: task (t, i) depends on (t-1, i - s),
    /// (t-1, i) and (t-1, i + s), those that exist, with stride s = 2^((t-1) mod log2 W).
    Fft,
    /// A binary tree reduction of W leaves (H is ignored): W - 1 inner tasks for a power of 2.
    Tree,
    /// RSDS merge-N with N = W: W independent tasks and their merge. One call takes at most
    /// [`MAX_ARITY`] inputs, so the merge is a fan-in-8 tree of merges (about W/7 more tasks).
    Merge,
}

impl Shape {
    /// Parses `trivial`, `no_comm`, `stencil_1d`, `nearest`, `spread`, `fft`, `tree`, `merge`
    /// (`radix` applies to `nearest` and `spread`).
    pub fn parse(name: &str, radix: usize) -> Result<Shape> {
        Ok(match name.replace('-', "_").as_str() {
            "trivial" => Shape::Trivial,
            "no_comm" => Shape::NoComm,
            "stencil_1d" | "stencil" => Shape::Stencil1d,
            "nearest" => Shape::Nearest { radix },
            "spread" => Shape::Spread { radix },
            "fft" => Shape::Fft,
            "tree" => Shape::Tree,
            "merge" => Shape::Merge,
            other => bail!(
                "unknown shape {other:?} (trivial, no_comm, stencil_1d, nearest, spread, fft, tree, merge)"
            ),
        })
    }

    /// The shape's name as the tables print it.
    pub fn name(&self) -> String {
        match self {
            Shape::Trivial => "trivial".into(),
            Shape::NoComm => "no_comm".into(),
            Shape::Stencil1d => "stencil_1d".into(),
            Shape::Nearest { radix } => format!("nearest-{radix}"),
            Shape::Spread { radix } => format!("spread-{radix}"),
            Shape::Fft => "fft".into(),
            Shape::Tree => "tree".into(),
            Shape::Merge => "merge".into(),
        }
    }

    /// Every shape (radix 3 for `nearest` and `spread`).
    pub fn all() -> Vec<Shape> {
        vec![
            Shape::Trivial,
            Shape::NoComm,
            Shape::Stencil1d,
            Shape::Nearest { radix: 3 },
            Shape::Spread { radix: 3 },
            Shape::Fft,
            Shape::Tree,
            Shape::Merge,
        ]
    }

    /// Whether the dependencies differ from step to step.
    fn varies_by_step(&self) -> bool {
        *self == Shape::Fft
    }

    /// The dependencies of point `i` of step `t` >= 1, for the step-wise shapes.
    fn deps(&self, i: usize, width: usize, t: usize) -> Vec<usize> {
        let w = width as isize;
        let i = i as isize;
        let mut deps: Vec<usize> = match *self {
            Shape::NoComm => vec![i as usize],
            Shape::Stencil1d => (i - 1..=i + 1)
                .filter(|j| (0..w).contains(j))
                .map(|j| j as usize)
                .collect(),
            Shape::Nearest { radix } => {
                let k = radix as isize;
                (i - (k - 1) / 2..=i + k / 2)
                    .filter(|j| (0..w).contains(j))
                    .map(|j| j as usize)
                    .collect()
            }
            Shape::Spread { radix } => (0..radix)
                .map(|k| ((i as usize) + k * width / radix.max(1)) % width)
                .collect(),
            Shape::Fft => {
                let levels = width.max(2).ilog2() as usize;
                let stride = 1isize << ((t.max(1) - 1) % levels);
                [i - stride, i, i + stride]
                    .into_iter()
                    .filter(|j| (0..w).contains(j))
                    .map(|j| j as usize)
                    .collect()
            }
            _ => Vec::new(),
        };
        deps.sort_unstable();
        deps.dedup();
        deps
    }
}

/// One benchmark configuration.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spec {
    /// The graph shape.
    pub shape: Shape,
    /// W.
    pub width: usize,
    /// H.
    pub height: usize,
    /// Busy-wait per task, in microseconds (0: zero-work tasks).
    pub micros: u64,
    /// Output bytes per task (at least 8 are returned).
    pub bytes: u32,
}

impl Spec {
    /// How many tasks the graph has.
    pub fn tasks(&self) -> usize {
        match self.shape {
            Shape::Tree | Shape::Merge => {
                let fan_in = self.fan_in();
                let mut n = self.width.max(1);
                let mut total = n;
                while n > 1 {
                    n = n.div_ceil(fan_in);
                    total += n;
                }
                total
            }
            _ => self.width * self.height,
        }
    }

    /// The inputs of one reduction task of `tree` (2) and `merge` ([`MAX_ARITY`]).
    fn fan_in(&self) -> usize {
        if self.shape == Shape::Tree {
            2
        } else {
            MAX_ARITY
        }
    }

    /// The longest chain of tasks: the critical path in tasks.
    pub fn depth(&self) -> usize {
        match self.shape {
            Shape::Trivial => 1,
            Shape::Tree | Shape::Merge => {
                let (mut n, mut d) = (self.width.max(1), 1);
                while n > 1 {
                    n = n.div_ceil(self.fan_in());
                    d += 1;
                }
                d
            }
            _ => self.height,
        }
    }
}

/// The parameters literal of a kernel call.
fn params(micros: u64, bytes: u32, salt: u64) -> Raw {
    let mut p = Vec::with_capacity(20);
    p.extend_from_slice(&micros.to_le_bytes());
    p.extend_from_slice(&bytes.to_le_bytes());
    p.extend_from_slice(&salt.to_le_bytes());
    Raw::from(p)
}

/// A built graph: the handles to gather and their expected values.
pub struct Built {
    /// The calls whose results are gathered (every task for `trivial`, the last step or the
    /// root otherwise).
    pub wanted: Vec<Handle<Raw>>,
    /// The value each wanted call must return.
    pub expected: Vec<u64>,
}

/// The kernels a graph calls: a module, the prefix of their names (`bench_spin` or
/// `bench_kernel`, followed by the number of dependencies) and the first parameter of every
/// call (spin rounds, or microseconds of busy-waiting).
#[derive(Clone, Copy)]
pub struct Kernels<'a> {
    /// The module exporting them.
    pub module: &'a Module,
    /// Their names without the number of dependencies.
    pub prefix: &'a str,
    /// The work of every call, in the unit the kernels take.
    pub work: u64,
}

/// Adds one kernel call with the given dependencies.
fn kernel(
    g: &Graph,
    k: &Kernels<'_>,
    p: &Raw,
    deps: &[(&Handle<Raw>, u64)],
    salt: u64,
) -> Result<(Handle<Raw>, u64)> {
    ensure!(
        deps.len() <= MAX_ARITY,
        "a kernel takes at most {MAX_ARITY} dependencies"
    );
    let mut args = Args::new().arg(p);
    let mut value = salt.wrapping_add(1);
    for (h, v) in deps {
        args = args.arg(*h);
        value = value.wrapping_add(*v);
    }
    let h = g.call::<Raw>(k.module, &format!("{}{}", k.prefix, deps.len()), args)?;
    Ok((h, value))
}

/// Builds the graph of `spec` in `g`; `nonce` makes its keys differ from earlier runs'.
pub fn build(g: &Graph, k: &Kernels<'_>, spec: &Spec, nonce: u64) -> Result<Built> {
    let shared = params(k.work, spec.bytes, 0);
    let salt = |i: usize| (nonce << 32) | i as u64;
    let leaf = |i: usize| kernel(g, k, &params(k.work, spec.bytes, salt(i)), &[], salt(i));
    let width = spec.width.max(1);
    match spec.shape {
        Shape::Trivial => {
            let mut wanted = Vec::with_capacity(spec.tasks());
            let mut expected = Vec::with_capacity(spec.tasks());
            for i in 0..width * spec.height {
                let (h, v) = leaf(i)?;
                wanted.push(h);
                expected.push(v);
            }
            Ok(Built { wanted, expected })
        }
        Shape::Tree | Shape::Merge => {
            let fan_in = spec.fan_in();
            let mut level: Vec<(Handle<Raw>, u64)> = (0..width).map(leaf).collect::<Result<_>>()?;
            while level.len() > 1 {
                let mut next = Vec::with_capacity(level.len().div_ceil(fan_in));
                for group in level.chunks(fan_in) {
                    let deps: Vec<(&Handle<Raw>, u64)> =
                        group.iter().map(|(h, v)| (h, *v)).collect();
                    next.push(kernel(g, k, &shared, &deps, 0)?);
                }
                level = next;
            }
            let (h, v) = level.pop().context("a tree has a root")?;
            Ok(Built {
                wanted: vec![h],
                expected: vec![v],
            })
        }
        shape => {
            ensure!(spec.height >= 1, "the height is at least 1");
            let mut row: Vec<(Handle<Raw>, u64)> = (0..width).map(leaf).collect::<Result<_>>()?;
            let deps_at = |t: usize| -> Vec<Vec<usize>> {
                (0..width).map(|i| shape.deps(i, width, t)).collect()
            };
            let mut deps_of = deps_at(1);
            for t in 1..spec.height {
                if t > 1 && shape.varies_by_step() {
                    deps_of = deps_at(t);
                }
                let mut next = Vec::with_capacity(width);
                for (i, deps) in deps_of.iter().enumerate() {
                    let d: Vec<(&Handle<Raw>, u64)> =
                        deps.iter().map(|&j| (&row[j].0, row[j].1)).collect();
                    let (h, v) = kernel(g, k, &shared, &d, 0)?;
                    tracing::trace!(target: "taskhost::timeline", key = %h.key().short(), column = i, step = t, "task");
                    next.push((h, v));
                }
                row = next;
            }
            let (wanted, expected) = row.into_iter().unzip();
            Ok(Built { wanted, expected })
        }
    }
}

/// CPU time and memory of a process, from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// User + system CPU time, in seconds.
    pub cpu_s: f64,
    /// Resident set size now, in bytes.
    pub rss: u64,
    /// Peak resident set size, in bytes.
    pub peak_rss: u64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status` (`pid` "self" for this process).
pub fn proc_sample(pid: &str) -> Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 2..])
        .context("/proc/PID/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 11 and 12 after the command.
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Ok(ProcSample {
        cpu_s: ticks as f64 / 100.0,
        rss: kib("VmRSS:"),
        peak_rss: kib("VmHWM:"),
    })
}

/// Resets the peak RSS of a process (`/proc/<pid>/clear_refs`); best effort.
pub fn reset_peak_rss(pid: &str) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// What one run of a graph measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// The configuration.
    pub spec: Spec,
    /// Tasks in the graph.
    pub tasks: usize,
    /// Seconds to build the graph (not included in `wall_s`).
    pub build_s: f64,
    /// Seconds from submission to the last gathered result.
    pub wall_s: f64,
    /// `tasks / wall_s`.
    pub tasks_per_s: f64,
    /// Ideal time (tasks x micros / cores) over `wall_s`; 0 for zero-work tasks.
    pub efficiency: f64,
    /// CPU seconds of the measured process per task, in microseconds.
    pub cpu_us_per_task: f64,
    /// Peak RSS growth of the measured process during the run, per task, in bytes.
    pub peak_rss_per_task: f64,
    /// Peak RSS of the measured process during the run, in bytes.
    pub peak_rss: u64,
    /// CPU seconds of the worker processes (`--worker-pid`) per task, in microseconds (0 when
    /// none are given or the cluster is embedded).
    pub worker_cpu_us_per_task: f64,
    /// CPU seconds of this process (the client) per task, in microseconds; for the embedded
    /// cluster this is the same as `cpu_us_per_task`.
    pub client_cpu_us_per_task: f64,
}

/// A cluster to run on, with the cores (worker slots) it has and the process whose CPU and
/// memory are measured.
pub struct Target {
    /// The connected client.
    pub client: Client,
    /// The example guest, registered.
    pub module: Module,
    /// The lean guest (no WASI), registered: runs every task unless `wasi_guest` is set.
    pub lean: Module,
    /// Run every task on the example guest (busy-waiting on the WASI clock).
    pub wasi_guest: bool,
    /// Rounds of the lean guest's spin loop per microsecond, once [`Target::calibrate`] ran.
    pub spins_per_us: Option<f64>,
    /// Execution slots over all workers.
    pub cores: usize,
    /// The process measured: "self" for the embedded cluster, the scheduler's pid otherwise.
    pub pid: String,
    /// Worker processes whose CPU time is measured too (empty for the embedded cluster).
    pub worker_pids: Vec<u32>,
    nonce: u64,
}

impl Target {
    /// Registers the example and lean guests through `client`.
    pub async fn new(client: Client, cores: usize, pid: Option<u32>) -> Result<Target> {
        let module = client
            .module(taskhost_guest_artifacts::read(
                taskhost_guest_artifacts::EXAMPLE_GUEST,
            ))
            .await?;
        let lean = client
            .module(taskhost_guest_artifacts::read(
                taskhost_guest_artifacts::LEAN_GUEST,
            ))
            .await?;
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64 & 0xffff_ffff)
            .unwrap_or(1);
        Ok(Target {
            client,
            module,
            lean,
            wasi_guest: false,
            spins_per_us: None,
            cores: cores.max(1),
            pid: pid.map_or_else(|| "self".to_owned(), |p| p.to_string()),
            worker_pids: Vec::new(),
            nonce,
        })
    }

    fn next_nonce(&mut self) -> u64 {
        self.nonce = self.nonce.wrapping_add(1) & 0xffff_ffff;
        self.nonce
    }

    /// The kernels that run `spec`: the lean guest's spin loop (calibrated first if it was
    /// not), or the example guest's busy-wait with `wasi_guest`.
    async fn kernels_for(&mut self, spec: &Spec) -> Result<Kernels<'_>> {
        if self.wasi_guest {
            return Ok(Kernels {
                module: &self.module,
                prefix: "bench_kernel",
                work: spec.micros,
            });
        }
        let work = if spec.micros == 0 {
            0
        } else {
            let per_us = match self.spins_per_us {
                Some(v) => v,
                None => self.calibrate().await?,
            };
            (spec.micros as f64 * per_us).round().max(1.0) as u64
        };
        Ok(Kernels {
            module: &self.lean,
            prefix: "bench_spin",
            work,
        })
    }

    /// Measures how many rounds of the lean guest's spin loop a worker runs per microsecond:
    /// single tasks of about 20 ms, timed from submission to result, less the round trip of a
    /// task that does nothing; the fastest of 5 of each (the least disturbed). Kept in
    /// `spins_per_us` for the runs that follow.
    pub async fn calibrate(&mut self) -> Result<f64> {
        const TARGET: Duration = Duration::from_millis(20);
        let mut spins = 1u64 << 16;
        let base = self.spin_time(0, 5).await?;
        loop {
            let t = self.spin_time(spins, 1).await?;
            if t.saturating_sub(base) >= TARGET / 4 || spins >= 1 << 40 {
                let per = t.saturating_sub(base).as_secs_f64().max(1e-6);
                spins = ((spins as f64) * TARGET.as_secs_f64() / per) as u64;
                break;
            }
            spins *= 8;
        }
        let t = self.spin_time(spins, 5).await?.saturating_sub(base);
        let per_us = spins as f64 / (t.as_secs_f64() * 1e6).max(1.0);
        ensure!(
            per_us.is_finite() && per_us > 0.0,
            "spin calibration failed"
        );
        self.spins_per_us = Some(per_us);
        Ok(per_us)
    }

    /// The fastest of `times` submit-to-result round trips of one `bench_spin0` of `spins`
    /// rounds.
    async fn spin_time(&mut self, spins: u64, times: usize) -> Result<Duration> {
        let mut best = Duration::MAX;
        for _ in 0..times {
            let salt = self.next_nonce() << 32;
            let g = Graph::new();
            let h = g.call::<Raw>(&self.lean, "bench_spin0", (params(spins, 8, salt),))?;
            let t = Instant::now();
            let v = self.client.compute(&h).await?;
            best = best.min(t.elapsed());
            ensure!(
                v.len() >= 8 && u64::from_le_bytes(v[0..8].try_into()?) == salt + 1,
                "wrong calibration result"
            );
        }
        Ok(best)
    }

    /// Builds, runs and checks `spec` once.
    pub async fn run(&mut self, spec: &Spec) -> Result<RunResult> {
        let nonce = self.next_nonce();
        let t = Instant::now();
        let g = Graph::with_capacity(spec.tasks());
        let kernels = self.kernels_for(spec).await?;
        let built = build(&g, &kernels, spec, nonce)?;
        let build_s = t.elapsed().as_secs_f64();
        let tasks = g.len();
        reset_peak_rss(&self.pid);
        let before = proc_sample(&self.pid)?;
        let workers_before = self.workers_cpu_s();
        let client_before = proc_sample("self")?;
        let t = Instant::now();
        tracing::trace!(target: "taskhost::timeline", "compute_all");
        let values = self.client.compute_all(&built.wanted).await?;
        tracing::trace!(target: "taskhost::timeline", "computed");
        let wall_s = t.elapsed().as_secs_f64();
        let after = proc_sample(&self.pid)?;
        let workers_after = self.workers_cpu_s();
        let client_after = proc_sample("self")?;
        for (i, (v, e)) in values.iter().zip(&built.expected).enumerate() {
            ensure!(
                v.len() >= 8.max(spec.bytes as usize),
                "{}: result {i} has {} bytes",
                spec.shape.name(),
                v.len()
            );
            let got = u64::from_le_bytes(v[0..8].try_into()?);
            ensure!(
                got == *e,
                "{}: result {i} is {got}, expected {e}",
                spec.shape.name()
            );
        }
        ensure!(values.len() == built.expected.len(), "missing results");
        let ideal = tasks as f64 * spec.micros as f64 / 1e6 / self.cores as f64;
        Ok(RunResult {
            spec: *spec,
            tasks,
            build_s,
            wall_s,
            tasks_per_s: tasks as f64 / wall_s,
            efficiency: ideal / wall_s,
            cpu_us_per_task: (after.cpu_s - before.cpu_s) * 1e6 / tasks as f64,
            peak_rss_per_task: after.peak_rss.saturating_sub(before.rss) as f64 / tasks as f64,
            peak_rss: after.peak_rss,
            worker_cpu_us_per_task: (workers_after - workers_before) * 1e6 / tasks as f64,
            client_cpu_us_per_task: (client_after.cpu_s - client_before.cpu_s) * 1e6 / tasks as f64,
        })
    }

    /// Total CPU seconds of the worker processes (those that can still be read).
    fn workers_cpu_s(&self) -> f64 {
        self.worker_pids
            .iter()
            .filter_map(|pid| proc_sample(&pid.to_string()).ok())
            .map(|s| s.cpu_s)
            .sum()
    }

    /// Runs `spec` `repeat` times and returns the run of median wall time.
    pub async fn run_median(&mut self, spec: &Spec, repeat: usize) -> Result<RunResult> {
        let mut runs = Vec::with_capacity(repeat.max(1));
        for _ in 0..repeat.max(1) {
            runs.push(self.run(spec).await?);
        }
        runs.sort_by(|a, b| a.wall_s.total_cmp(&b.wall_s));
        Ok(runs.swap_remove(runs.len() / 2))
    }

    /// METG(50%) of `shape` with width `width`: runs task durations from `start_us` down,
    /// each with a height chosen for about `target_s` of ideal time, until the efficiency
    /// falls below 50%.
    pub async fn metg(
        &mut self,
        shape: Shape,
        width: usize,
        start_us: u64,
        target_s: f64,
        max_height: usize,
        repeat: usize,
    ) -> Result<Metg> {
        let mut points = Vec::new();
        let cores = self.cores as f64;
        let spec = move |micros: u64| Spec {
            shape,
            width,
            height: ((target_s * cores * 1e6) / (width as f64 * micros as f64))
                .round()
                .clamp(4.0, max_height as f64) as usize,
            micros,
            bytes: 8,
        };
        // The 1-2-5 sweep down to the first duration below 50%...
        let mut bracket = None;
        let mut last_good = None;
        for micros in granularities(start_us) {
            let r = self.run_median(&spec(micros), repeat).await?;
            let low = r.efficiency < 0.5;
            points.push(r);
            if low {
                bracket = last_good.map(|good| (micros, good));
                break;
            }
            last_good = Some(micros);
        }
        // ... then bisection between it and the last one above, in 10% steps at least.
        for _ in 0..METG_BISECTIONS {
            let Some((bad, good)) = bracket else { break };
            let Some(mid) = metg_midpoint(bad, good) else {
                break;
            };
            let r = self.run_median(&spec(mid), repeat).await?;
            bracket = Some(if r.efficiency < 0.5 {
                (mid, good)
            } else {
                (bad, mid)
            });
            points.push(r);
        }
        Ok(Metg::from_points(points, self.cores))
    }

    /// Submit-to-result latency of single zero-work tasks, over `iters` round trips after
    /// `warmup` unmeasured ones.
    pub async fn latency(&mut self, iters: usize, warmup: usize) -> Result<Latency> {
        let nonce = self.next_nonce();
        let mut samples = Vec::with_capacity(iters);
        for i in 0..iters + warmup {
            let g = Graph::new();
            let salt = (nonce << 32) | i as u64;
            let h = if self.wasi_guest {
                g.call::<Raw>(&self.module, "bench_kernel0", (params(0, 8, salt),))?
            } else {
                g.call::<Raw>(&self.lean, "bench_spin0", (params(0, 8, salt),))?
            };
            let t = Instant::now();
            let v = self.client.compute(&h).await?;
            let d = t.elapsed();
            ensure!(
                v.len() >= 8 && u64::from_le_bytes(v[0..8].try_into()?) == salt + 1,
                "wrong latency result"
            );
            if i >= warmup {
                samples.push(d);
            }
        }
        Ok(Latency::from_samples(samples))
    }
}

/// Bisection steps of [`Target::metg`] between the last 1-2-5 duration above 50% and the
/// first below (200 and 100 us: 140, then 120 or 170).
pub const METG_BISECTIONS: usize = 2;

/// The duration METG tries between `bad` (below 50%) and `good` (above): their geometric mean
/// rounded to 10 us, or `None` when that is not strictly between them or they are within 10%.
///
/// ```
/// use taskhost_bench::metg_midpoint;
/// assert_eq!(metg_midpoint(100, 200), Some(140));
/// assert_eq!(metg_midpoint(140, 200), Some(170));
/// assert_eq!(metg_midpoint(100, 140), Some(120));
/// assert_eq!(metg_midpoint(100, 105), None);
/// assert_eq!(metg_midpoint(10, 20), None);
/// ```
pub fn metg_midpoint(bad: u64, good: u64) -> Option<u64> {
    if good <= bad || (good - bad) * 10 < good {
        return None;
    }
    let mid = ((bad as f64 * good as f64).sqrt() / 10.0).round() as u64 * 10;
    (mid > bad && mid < good).then_some(mid)
}

/// The task durations METG tries first, from `start_us` down to 1 us (1-2-5 steps).
pub fn granularities(start_us: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut decade = 1u64;
    while decade <= start_us.max(1) * 10 {
        for m in [1, 2, 5] {
            let v = decade * m;
            if v <= start_us.max(1) {
                out.push(v);
            }
        }
        decade *= 10;
    }
    out.sort_unstable_by(|a, b| b.cmp(a));
    out
}

/// A METG(50%) measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Metg {
    /// The smallest task duration (us) whose efficiency reached 50%, if any did.
    pub metg50_us: Option<u64>,
    /// At that duration, the measured granularity: wall time x cores / tasks, in us (Task
    /// Bench's definition of the task granularity).
    pub metg50_measured_us: Option<f64>,
    /// Every run, largest duration first.
    pub points: Vec<RunResult>,
}

impl Metg {
    fn from_points(mut points: Vec<RunResult>, cores: usize) -> Metg {
        points.sort_by_key(|p| std::cmp::Reverse(p.spec.micros));
        let best = points
            .iter()
            .filter(|p| p.efficiency >= 0.5)
            .min_by_key(|p| p.spec.micros);
        Metg {
            metg50_us: best.map(|p| p.spec.micros),
            metg50_measured_us: best.map(|p| p.wall_s * cores as f64 * 1e6 / p.tasks as f64),
            points,
        }
    }
}

/// Latency percentiles.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Round trips measured.
    pub iters: usize,
    /// Median, in microseconds.
    pub median_us: f64,
    /// 99th percentile, in microseconds.
    pub p99_us: f64,
    /// Fastest, in microseconds.
    pub min_us: f64,
}

impl Latency {
    fn from_samples(mut samples: Vec<Duration>) -> Latency {
        samples.sort_unstable();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let n = samples.len();
        if n == 0 {
            return Latency {
                iters: 0,
                median_us: 0.0,
                p99_us: 0.0,
                min_us: 0.0,
            };
        }
        Latency {
            iters: n,
            median_us: us(samples[n / 2]),
            p99_us: us(samples[((n as f64 * 0.99).ceil() as usize).clamp(1, n) - 1]),
            min_us: us(samples[0]),
        }
    }
}

/// The median of some values (0 when empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::Shape;

    #[test]
    fn fft_strides_double_each_step_and_wrap_after_log2_width() {
        let deps = |i, t| Shape::Fft.deps(i, 8, t);
        assert_eq!(deps(3, 1), vec![2, 3, 4]);
        assert_eq!(deps(3, 2), vec![1, 3, 5]);
        assert_eq!(deps(3, 3), vec![3, 7]);
        assert_eq!(deps(3, 4), vec![2, 3, 4]);
        assert_eq!(deps(0, 2), vec![0, 2]);
        // A width below 2 has one level: stride 1.
        assert_eq!(Shape::Fft.deps(0, 1, 5), vec![0]);
    }
}
