//! Graph building at scale: time to build a graph of about 1,000,000 calls, to turn it into
//! wire messages, and their encoded size.
//!
//! Run with `cargo bench -p taskhost-client --bench graph` (optionally `-- <calls>`).

use std::time::{Duration, Instant};

use taskhost_client::{Client, Graph, Handle, Module};
use taskhost_proto::ClientRequest;

fn report(
    shape: &str,
    calls: usize,
    build: Duration,
    wire: &[taskhost_proto::Graph],
    plan: Duration,
) {
    let t = Instant::now();
    let mut bytes = 0usize;
    for g in wire {
        bytes += postcard::to_allocvec(&ClientRequest::Submit(g.clone()))
            .expect("encodes")
            .len();
    }
    let encode = t.elapsed();
    let tasks: usize = wire.iter().map(|g| g.tasks.len()).sum();
    println!(
        "| {shape} | {calls} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {:.1} | {:.1} |",
        build.as_secs_f64() * 1e3,
        build.as_secs_f64() * 1e9 / calls as f64,
        plan.as_secs_f64() * 1e3,
        encode.as_secs_f64() * 1e3,
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
        "| shape | calls | build ms | ns/call | plan+messages ms | encode ms | messages | MiB | bytes/task |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");

    for _ in 0..2 {
        // Independent calls, one distinct literal each: `inc(i)`.
        let t = Instant::now();
        let g = Graph::new();
        let handles: Vec<Handle<i64>> = (0..calls as i64)
            .map(|i| g.call::<i64>(&m, "inc", (i,)).expect("call"))
            .collect();
        let build = t.elapsed();
        let t = Instant::now();
        let wire = Client::wire_messages(&handles).expect("wire");
        let plan = t.elapsed();
        report("map inc(i)", calls, build, &wire, plan);
        drop((handles, wire, g));

        // A map and a binary tree reduction: `add(i, 1.0)` then pairwise `add`, one result.
        let t = Instant::now();
        let g = Graph::new();
        let leaves = calls / 2;
        let mut level: Vec<Handle<f64>> = (0..leaves)
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
        let build = t.elapsed();
        let total = g.len();
        let t = Instant::now();
        let wire = Client::wire_messages(&level).expect("wire");
        let plan = t.elapsed();
        report("map + tree reduction", total, build, &wire, plan);
    }
}
