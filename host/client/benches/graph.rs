//! Graph building at scale: time to build a graph of about 1,000,000 calls, to turn it into
//! wire messages (what `Client::submit` sends), and their encoded size.
//!
//! Run with `cargo bench -p taskhost-client --bench graph` (optionally `-- <calls>`). Times
//! are wall-clock and, in brackets, this thread's CPU time (from `/proc/thread-self/schedstat`),
//! which stays meaningful on a loaded machine.

use std::time::{Duration, Instant};

use taskhost_client::{Client, Graph, Handle, Module};
use taskhost_proto::ClientRequest;

/// This thread's CPU time so far (zero where `/proc` does not say).
fn cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

/// Wall and CPU time of `f`.
fn timed<R>(f: impl FnOnce() -> R) -> (R, Duration, Duration) {
    let (w, c) = (Instant::now(), cpu());
    let r = f();
    (r, w.elapsed(), cpu() - c)
}

fn ms(wall: Duration, cpu: Duration) -> String {
    format!(
        "{:.0} ({:.0})",
        wall.as_secs_f64() * 1e3,
        cpu.as_secs_f64() * 1e3
    )
}

fn report(
    shape: &str,
    calls: usize,
    build: (Duration, Duration),
    wire: &[taskhost_proto::Graph],
    plan: (Duration, Duration),
) {
    let (bytes, ew, ec) = timed(|| {
        wire.iter()
            .map(|g| {
                postcard::to_allocvec(&ClientRequest::Submit(g.clone()))
                    .expect("encodes")
                    .len()
            })
            .sum::<usize>()
    });
    let tasks: usize = wire.iter().map(|g| g.tasks.len()).sum();
    println!(
        "| {shape} | {calls} | {} | {:.0} | {} | {} | {} | {:.1} | {:.1} |",
        ms(build.0, build.1),
        build.1.as_secs_f64() * 1e9 / calls as f64,
        ms(plan.0, plan.1),
        ms(ew, ec),
        wire.len(),
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / tasks as f64,
    );
}

fn main() {
    let calls: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let m = Module::from_bytes(b"a module standing in for the example guest");
    println!(
        "| shape | calls | build ms (cpu) | cpu ns/call | plan+messages ms (cpu) | encode ms (cpu) | messages | MiB | bytes/task |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");

    for round in 0..3 {
        let presized = round == 2;
        let new_graph = || {
            if presized {
                Graph::with_capacity(calls)
            } else {
                Graph::new()
            }
        };
        let suffix = if presized { ", with_capacity" } else { "" };

        // Independent calls, one distinct literal each: `inc(i)`.
        let ((g, handles), bw, bc) = timed(|| {
            let g = new_graph();
            let handles: Vec<Handle<i64>> = (0..calls as i64)
                .map(|i| g.call::<i64>(&m, "inc", (i,)).expect("call"))
                .collect();
            (g, handles)
        });
        let (wire, pw, pc) = timed(|| Client::wire_messages(&handles).expect("wire"));
        report(
            &format!("map inc(i){suffix}"),
            calls,
            (bw, bc),
            &wire,
            (pw, pc),
        );
        drop((handles, wire, g));

        // A map and a binary tree reduction: `add(i, 1.0)` then pairwise `add`, one result.
        let ((g, root), bw, bc) = timed(|| {
            let g = new_graph();
            let mut level: Vec<Handle<f64>> = (0..calls / 2)
                .map(|i| g.call::<f64>(&m, "add", (i as f64, 1.0f64)).expect("call"))
                .collect();
            while level.len() > 1 {
                level = level
                    .chunks(2)
                    .map(|pair| match pair {
                        [a, b] => g.call::<f64>(&m, "add", (a, b)).expect("call"),
                        [a] => a.clone(),
                        _ => unreachable!(),
                    })
                    .collect();
            }
            (g, level)
        });
        let total = g.len();
        let (wire, pw, pc) = timed(|| Client::wire_messages(&root).expect("wire"));
        report(
            &format!("map + tree reduction{suffix}"),
            total,
            (bw, bc),
            &wire,
            (pw, pc),
        );
    }
}
