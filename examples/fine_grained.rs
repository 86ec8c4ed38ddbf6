//! The seed's fine-grained loop as one lazy graph of WebAssembly tasks:
//!
//! ```text
//! for i, j: results[i][j] = f(a[i], b[j]) if a[i] < b[j] else g(a[i], b[j])
//! ```
//!
//! with `f(x, y) = add(x, y)` and `g(x, y) = add(add(x, x), y)` (that is `2x + y`), both
//! functions of the example guest. Every call is a task; the inner `add(x, x)` of `g` is the
//! same task for every `j` (identical calls share one content-derived key), so it runs once
//! per `a[i]`. The whole matrix is computed by one `compute_all` on an embedded local cluster.
//!
//! Run: `cargo run --release --example fine_grained [-- <len a> <len b> <workers>]`.

use std::time::Instant;

use anyhow::{Context, bail};
use taskhost_client::{Graph, Handle, LocalCluster};

fn f(x: f64, y: f64) -> f64 {
    x + y
}

fn g(x: f64, y: f64) -> f64 {
    (x + x) + y
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let n_a = args.next().transpose().context("<len a>")?.unwrap_or(100);
    let n_b = args.next().transpose().context("<len b>")?.unwrap_or(100);
    let workers = args.next().transpose().context("<workers>")?.unwrap_or(2);

    let a: Vec<f64> = (0..n_a).map(|i| (i as f64 * 0.37).sin() * 10.0).collect();
    let b: Vec<f64> = (0..n_b).map(|j| (j as f64 * 0.73).cos() * 10.0).collect();

    let started = Instant::now();
    let client = LocalCluster::builder().workers(workers).client().await?;
    let m = client
        .module(taskhost_guest_artifacts::read(
            taskhost_guest_artifacts::EXAMPLE_GUEST,
        ))
        .await?;
    println!(
        "local cluster with {workers} workers up, module {} registered in {:.2?}",
        m.id().short(),
        started.elapsed()
    );

    // Build the lazy graph: nothing runs yet.
    let t = Instant::now();
    let graph = Graph::new();
    let mut cells: Vec<Handle<f64>> = Vec::with_capacity(n_a * n_b);
    for &x in &a {
        for &y in &b {
            let cell = if x < y {
                graph.call(&m, "add", (x, y))?
            } else {
                let doubled = graph.call::<f64>(&m, "add", (x, x))?;
                graph.call(&m, "add", (&doubled, y))?
            };
            cells.push(cell);
        }
    }
    println!(
        "built {} cells as {} distinct tasks in {:.2?}",
        cells.len(),
        graph.len(),
        t.elapsed()
    );

    // Compute everything in one call.
    let t = Instant::now();
    let bar = client.progress_bar();
    let values = client.compute_all(&cells).await?;
    bar.finish();
    let elapsed = t.elapsed();
    println!(
        "computed {} tasks in {:.2?} ({:.0} tasks/s)",
        graph.len(),
        elapsed,
        graph.len() as f64 / elapsed.as_secs_f64()
    );

    // Check against the same loop run here.
    let mut mismatches = 0;
    for (i, &x) in a.iter().enumerate() {
        for (j, &y) in b.iter().enumerate() {
            let expected = if x < y { f(x, y) } else { g(x, y) };
            if values[i * n_b + j] != expected {
                mismatches += 1;
            }
        }
    }
    println!("results[0][0..4] = {:?}", &values[..n_b.min(4)]);
    if mismatches > 0 {
        bail!("{mismatches} results differ from the local computation");
    }
    println!("all {} results match the local computation", values.len());
    client.close().await;
    Ok(())
}
