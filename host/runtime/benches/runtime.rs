//! Runtime benchmark: cold load (compile), artifact load, warm instantiate+call latency with a
//! fresh instance per task, and 8 MiB argument/result throughput. Prints a Markdown table.
//!
//! The latency and `echo` rows are measured for the example guest (`wasm32-wasip2`, 13 WASI
//! imports) and for the lean guest (`wasm32-unknown-unknown`, no WASI imports).
//!
//! Run with `RUST_BACKTRACE=0 cargo bench -p taskhost-runtime`.

use std::time::{Duration, Instant};

use taskhost_guest_artifacts::{EXAMPLE_GUEST, LEAN_GUEST};
use taskhost_runtime::{CancelToken, Limits, ModuleId, Runtime, RuntimeConfig, RuntimeError};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn us(d: Duration) -> String {
    format!("{:.1} us", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let bytes = taskhost_guest_artifacts::read(EXAMPLE_GUEST);
    let limits = Limits::default();
    let mut rows: Vec<(String, String, String)> = Vec::new();
    // `BENCH_ONLY=noop` (or `load`, `cancel`, `bulk`, `echo`, `byte_len`, `bytes`) runs one part.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let wanted = |part: &str| only.is_empty() || only == part;
    // `BENCH_GUEST=example` (or `lean`) runs the `noop`/`echo` rows of one guest only.
    let guest = std::env::var("BENCH_GUEST").unwrap_or_default();
    let guest_wanted = |name: &str| guest.is_empty() || guest == name;

    // Cold load: compile the component in a fresh data directory.
    let mut compiles = Vec::new();
    let mut loads = Vec::new();
    for _ in 0..if wanted("load") { 5 } else { 0 } {
        let dir = tempfile::tempdir().unwrap();
        let runtime = Runtime::new(RuntimeConfig::new(dir.path())).unwrap();
        let id = runtime.put(&bytes).unwrap();
        let started = Instant::now();
        runtime.prepare(&id).unwrap();
        compiles.push(started.elapsed());
        assert_eq!(runtime.stats().compilations, 1);
        drop(runtime);
        // Warm restart: load the compiled artifact from disk.
        let runtime = Runtime::new(RuntimeConfig::new(dir.path())).unwrap();
        let started = Instant::now();
        runtime.prepare(&id).unwrap();
        loads.push(started.elapsed());
        assert_eq!(runtime.stats().compilations, 0);
    }
    compiles.sort();
    loads.sort();
    if !compiles.is_empty() {
        rows.push((
            format!("cold load (compile), {} KiB component", bytes.len() / 1024),
            format!("median {}", ms(percentile(&compiles, 0.5))),
            format!("min {}", ms(compiles[0])),
        ));
        rows.push((
            "restart load (deserialize cached artifact)".into(),
            format!("median {}", us(percentile(&loads, 0.5))),
            format!("min {}", us(loads[0])),
        ));
    }

    let dir = tempfile::tempdir().unwrap();
    let mut config = RuntimeConfig::new(dir.path());
    if let Ok(mib) = std::env::var("BENCH_KEEP_RESIDENT_MIB") {
        config.memory_keep_resident = mib.parse::<usize>().unwrap() << 20;
    }
    if std::env::var("BENCH_NO_FUEL").is_ok() {
        config.fuel_metering = false;
    }
    let runtime = Runtime::new(config).unwrap();
    let id = runtime.put(&bytes).unwrap();
    runtime.prepare(&id).unwrap();
    let lean_bytes = taskhost_guest_artifacts::read(LEAN_GUEST);
    let lean_id = runtime.put(&lean_bytes).unwrap();
    runtime.prepare(&lean_id).unwrap();
    // (row label prefix, module) of the guests whose latency and `echo` are measured.
    let lean_label = format!("lean guest ({} KiB, no WASI): ", lean_bytes.len() / 1024);
    let guests = [
        ("example", "", &id),
        ("lean", lean_label.as_str(), &lean_id),
    ];

    // Warm instantiate + call, a fresh instance per task.
    let calls = [
        ("noop", vec![]),
        ("inc", vec![postcard::to_allocvec(&41i64).unwrap()]),
    ];
    for ((name, prefix, id), (function, args)) in guests
        .iter()
        .flat_map(|guest| calls.iter().map(move |call| (guest, call)))
    {
        if !wanted("noop") || !guest_wanted(name) {
            continue;
        }
        let (prefix, id) = (*prefix, *id);
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
        for _ in 0..2000 {
            runtime.execute(id, function, &args, &limits).unwrap();
        }
        let mut samples = Vec::with_capacity(20_000);
        let cpu_before = thread_cpu();
        for _ in 0..20_000 {
            let started = Instant::now();
            runtime.execute(id, function, &args, &limits).unwrap();
            samples.push(started.elapsed());
        }
        let cpu = (thread_cpu() - cpu_before) / 20_000;
        samples.sort();
        rows.push((
            format!("{prefix}warm instantiate + call `{function}` (fresh instance per task)"),
            format!("median {}", us(percentile(&samples, 0.5))),
            format!(
                "p99 {}; CPU {} per task (mean)",
                us(percentile(&samples, 0.99)),
                us(cpu)
            ),
        ));
    }

    // Cancellation latency: from `CancelToken::cancel` to `execute_cancellable` returning, for
    // a task spinning in guest code and for one sleeping on a WASI clock.
    for function in ["spin", "sleep"] {
        if !wanted("cancel") {
            continue;
        }
        let args = if function == "sleep" {
            vec![postcard::to_allocvec(&3_600_000u64).unwrap()]
        } else {
            vec![]
        };
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
        let mut samples = Vec::new();
        for _ in 0..20 {
            let token = CancelToken::new();
            let latency = std::thread::scope(|scope| {
                let task = scope.spawn(|| {
                    let result = runtime.execute_cancellable(&id, function, &args, &limits, &token);
                    (result, Instant::now())
                });
                std::thread::sleep(Duration::from_millis(20));
                let cancelled = Instant::now();
                token.cancel();
                let (result, returned) = task.join().unwrap();
                assert!(matches!(result, Err(RuntimeError::Cancelled)), "{result:?}");
                returned.saturating_duration_since(cancelled)
            });
            samples.push(latency);
        }
        samples.sort();
        rows.push((
            format!("cancel a task in `{function}` (cancel() to return)"),
            format!("median {}", us(percentile(&samples, 0.5))),
            format!("max {}", us(samples[samples.len() - 1])),
        ));
    }

    // Throughput: 8 MiB in and/or out. `BENCH_ONLY=bulk` runs the three cases below,
    // `BENCH_ONLY=echo` (or `byte_len`, `bytes`) one of them.
    let payload: Vec<u8> = (0..8 << 20).map(|i: u32| i as u8).collect();
    let size = (payload.len() as u64).to_le_bytes();
    // `echo`: 8 MiB in, the same 8 MiB out (host -> guest copy, guest -> host copy; the guest
    // returns its argument's own buffer), for both guests; `byte_len`: 8 MiB in only; `bytes`:
    // 8 MiB made by the guest, out. (guest, row label prefix, module, function, label, argument,
    // result length)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a ModuleId,
        &'a str,
        &'a str,
        &'a [u8],
        usize,
    );
    let cases: [Case; 4] = [
        (
            "example",
            "",
            &id,
            "echo",
            "`echo` 8 MiB in and out",
            &payload,
            payload.len(),
        ),
        (
            "lean",
            &lean_label,
            &lean_id,
            "echo",
            "`echo` 8 MiB in and out",
            &payload,
            payload.len(),
        ),
        (
            "example",
            "",
            &id,
            "byte_len",
            "`byte_len` 8 MiB in, 8 bytes out",
            &payload,
            8,
        ),
        (
            "example",
            "",
            &id,
            "bytes",
            "`bytes` 8 bytes in, 8 MiB out",
            &size,
            payload.len(),
        ),
    ];
    for (name, prefix, id, function, label, arg, out_len) in cases {
        if !(wanted(function) || only == "bulk") || !guest_wanted(name) {
            continue;
        }
        for _ in 0..5 {
            runtime.execute(id, function, &[arg], &limits).unwrap();
        }
        let mut samples = Vec::new();
        let cpu_before = thread_cpu();
        for _ in 0..50 {
            let started = Instant::now();
            let out = runtime.execute(id, function, &[arg], &limits).unwrap();
            samples.push(started.elapsed());
            assert_eq!(out.len(), out_len);
        }
        let cpu = (thread_cpu() - cpu_before) / 50;
        samples.sort();
        let median = percentile(&samples, 0.5);
        let gbps = payload.len() as f64 / median.as_secs_f64() / 1e9;
        let cpu_gbps = payload.len() as f64 / cpu.as_secs_f64() / 1e9;
        let detail = if function == "echo" {
            format!(
                "{gbps:.2} GB/s each way; CPU {} per task, {cpu_gbps:.2} GB/s each way",
                ms(cpu)
            )
        } else {
            format!(
                "{gbps:.2} GB/s; CPU {} per task, {cpu_gbps:.2} GB/s",
                ms(cpu)
            )
        };
        rows.push((
            format!("{prefix}{label} (fresh instance per task)"),
            format!("median {}", ms(median)),
            detail,
        ));
    }

    print_table(&rows);
}

/// CPU time this thread has run, from `/proc/thread-self/schedstat` (Linux; zero elsewhere):
/// unlike wall-clock time it does not count the time other processes on a busy machine take.
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

fn print_table(rows: &[(String, String, String)]) {
    println!("| measurement | result | detail |");
    println!("|---|---|---|");
    for (what, result, detail) in rows {
        println!("| {what} | {result} | {detail} |");
    }
}
