//! What a task costs in each guest language: component size, cold compile, warm load from the
//! artifact cache, and instantiate + call latency, for the same `add(a: f64, b: f64) -> f64`.
//!
//! `cargo bench -p taskhost-polyglot-guests --bench languages` prints a Markdown table.
//! Environment: `LANG_BENCH_COMPILES` (cold compiles per language, default 3),
//! `LANG_BENCH_LOADS` (warm loads, default 20), `LANG_BENCH_CALLS` (calls for Rust and C,
//! default 2000; Python and JavaScript get a tenth).

use std::path::Path;
use std::time::{Duration, Instant};

use taskhost_runtime::{Limits, ModuleId, Runtime, RuntimeConfig};

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        .max(1)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}

/// CPU time (user + system, all threads) this process has used, from `/proc/self/stat` (Linux,
/// 10 ms resolution); zero elsewhere. Wall-clock compile times on a busy machine mislead,
/// CPU time less so.
fn cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // The kernel's USER_HZ is 100 on every Linux this runs on.
    Duration::from_millis(ticks * 10)
}

fn runtime(dir: &Path) -> Runtime {
    Runtime::new(RuntimeConfig::new(dir)).expect("the runtime starts")
}

struct Row {
    language: &'static str,
    size: usize,
    compile: Duration,
    compile_cpu: Duration,
    load: Duration,
    call_p50: Duration,
    call_p90: Duration,
}

fn measure(
    language: &'static str,
    bytes: &[u8],
    compiles: usize,
    loads: usize,
    calls: usize,
) -> Row {
    // Cold compile: a fresh data directory each time, so there is no artifact to load.
    let mut compile_samples = Vec::new();
    let mut compile_cpu_samples = Vec::new();
    let mut warm_dir = None;
    for _ in 0..compiles {
        let dir = tempfile::tempdir().unwrap();
        let runtime = runtime(dir.path());
        let id = runtime.put(bytes).unwrap();
        let started = Instant::now();
        let cpu = cpu_time();
        runtime.prepare(&id).unwrap();
        compile_samples.push(started.elapsed());
        compile_cpu_samples.push(cpu_time().saturating_sub(cpu));
        assert_eq!(runtime.stats().compilations, 1);
        warm_dir = Some((dir, id));
    }
    let (dir, id) = warm_dir.expect("at least one compile");

    // Warm load: a new runtime on the same data directory loads the compiled artifact.
    let mut load_samples = Vec::new();
    for _ in 0..loads {
        let runtime = runtime(dir.path());
        let started = Instant::now();
        runtime.prepare(&id).unwrap();
        load_samples.push(started.elapsed());
        assert_eq!(
            runtime.stats().compilations,
            0,
            "{language}: the artifact was not reused"
        );
    }

    // Instantiate + call: each task gets a fresh instance.
    let runtime = runtime(dir.path());
    runtime.prepare(&id).unwrap();
    let call_samples = calls_of(&runtime, &id, calls);
    Row {
        language,
        size: bytes.len(),
        compile: median(compile_samples),
        compile_cpu: median(compile_cpu_samples),
        load: median(load_samples),
        call_p50: percentile(&call_samples, 0.5),
        call_p90: percentile(&call_samples, 0.9),
    }
}

fn calls_of(runtime: &Runtime, id: &ModuleId, calls: usize) -> Vec<Duration> {
    let a = postcard::to_allocvec(&1.5f64).unwrap();
    let b = postcard::to_allocvec(&2.25f64).unwrap();
    let expected = postcard::to_allocvec(&3.75f64).unwrap();
    let limits = Limits::default();
    // Warm up the instance pool's slots and the page cache.
    for _ in 0..(calls / 10).max(3) {
        runtime.execute(id, "add", &[&a, &b], &limits).unwrap();
    }
    (0..calls)
        .map(|_| {
            let started = Instant::now();
            let result = runtime.execute(id, "add", &[&a, &b], &limits).unwrap();
            let elapsed = started.elapsed();
            assert_eq!(result, expected);
            elapsed
        })
        .collect()
}

fn fmt(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros >= 1e6 {
        format!("{:.2} s", micros / 1e6)
    } else if micros >= 1e3 {
        format!("{:.2} ms", micros / 1e3)
    } else {
        format!("{micros:.1} us")
    }
}

fn size(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a test run of benches (`cargo test --benches`) does not:
    // then do one quick round only, to prove the bench works.
    let quick = !std::env::args().any(|arg| arg == "--bench");
    let compiles = if quick {
        1
    } else {
        env_count("LANG_BENCH_COMPILES", 3)
    };
    let loads = if quick {
        2
    } else {
        env_count("LANG_BENCH_LOADS", 20)
    };
    let calls = if quick {
        20
    } else {
        env_count("LANG_BENCH_CALLS", 2000)
    };

    let guests: [(&'static str, &str, usize); 4] = [
        ("Rust", taskhost_guest_artifacts::EXAMPLE_GUEST, calls),
        ("C", taskhost_polyglot_guests::C_GUEST, calls),
        (
            "Python",
            taskhost_polyglot_guests::PYTHON_GUEST,
            (calls / 10).max(10),
        ),
        (
            "JavaScript",
            taskhost_polyglot_guests::JS_GUEST,
            (calls / 10).max(10),
        ),
    ];
    let mut rows = Vec::new();
    for (language, path, calls) in guests {
        let bytes = std::fs::read(path).unwrap_or_else(|err| panic!("cannot read {path}: {err}"));
        eprintln!("measuring {language} ({})...", size(bytes.len()));
        rows.push(measure(language, &bytes, compiles, loads, calls));
    }

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    println!(
        "\n{} CPUs, load average {load} at the end",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{compiles} cold compiles, {loads} warm loads (medians); instantiate + call of `add` in a fresh instance \
         ({calls} calls for Rust and C, {} for Python and JavaScript)\n",
        (calls / 10).max(10)
    );
    println!(
        "| language | component size | cold compile | its CPU time | warm load (artifact cache) | instantiate + call p50 | p90 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.language,
            size(row.size),
            fmt(row.compile),
            fmt(row.compile_cpu),
            fmt(row.load),
            fmt(row.call_p50),
            fmt(row.call_p90)
        );
    }
}
