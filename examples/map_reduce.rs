//! A map over many inputs and a tree reduction, on an embedded local cluster.
//!
//! Each input is a vector of numbers; the map stage sums each one with the example guest's
//! `sum` task, submitted as futures and watched with `as_completed`; the reduce stage adds the
//! partial sums pairwise in a binary tree of `add` tasks whose leaves are those futures.
//!
//! Run: `cargo run --release --example map_reduce [-- <inputs> <values per input> <workers>]`.

use std::time::Instant;

use anyhow::{Context, bail};
use futures::StreamExt;
use taskhost_client::{Future, Graph, Handle, LocalCluster};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let inputs = args
        .next()
        .transpose()
        .context("<inputs>")?
        .unwrap_or(2_000);
    let width = args
        .next()
        .transpose()
        .context("<values per input>")?
        .unwrap_or(1_000);
    let workers = args.next().transpose().context("<workers>")?.unwrap_or(2);

    let client = LocalCluster::builder().workers(workers).client().await?;
    let m = client
        .module(taskhost_guest_artifacts::read(
            taskhost_guest_artifacts::EXAMPLE_GUEST,
        ))
        .await?;

    // The inputs, and the expected total computed here.
    // (Identical inputs would be one task: keys are derived from content.)
    let data: Vec<Vec<f64>> = (0..inputs)
        .map(|i| (0..width).map(|k| i as f64 + k as f64 * 1e-3).collect())
        .collect();
    let expected: f64 = data.iter().map(|xs| xs.iter().sum::<f64>()).sum();

    // Map: one `sum` task per input, submitted at once.
    let t = Instant::now();
    let map_graph = Graph::new();
    let partials: Vec<Handle<f64>> = data
        .iter()
        .map(|xs| map_graph.call(&m, "sum", (xs,)))
        .collect::<Result<_, _>>()?;
    let futures: Vec<Future<f64>> = client.submit(&partials).await?;
    let mut finished = 0;
    let mut completed = client.as_completed(futures.clone());
    while let Some(f) = completed.next().await {
        f.wait().await?;
        finished += 1;
        if finished % (inputs / 10).max(1) == 0 {
            println!("map: {finished}/{inputs} inputs summed");
        }
    }
    println!(
        "map of {inputs} inputs ({} distinct tasks) done in {:.2?}",
        map_graph.len(),
        t.elapsed()
    );

    // Reduce: a binary tree of `add` whose leaves are the map futures.
    let t = Instant::now();
    let reduce_graph = Graph::new();
    let mut level: Vec<Handle<f64>> = futures
        .chunks(2)
        .map(|pair| match pair {
            [x, y] => reduce_graph.call(&m, "add", (x, y)),
            [x] => reduce_graph.call(&m, "add", (x, 0.0)),
            _ => unreachable!(),
        })
        .collect::<Result<_, _>>()?;
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [x, y] => reduce_graph.call(&m, "add", (x, y)),
                [x] => Ok(x.clone()),
                _ => unreachable!(),
            })
            .collect::<Result<_, _>>()?;
    }
    let total = client.compute(&level[0]).await?;
    println!(
        "tree reduction of {} tasks done in {:.2?}",
        reduce_graph.len(),
        t.elapsed()
    );
    drop(futures);

    println!("total = {total}, expected {expected}");
    if (total - expected).abs() > 1e-9 * expected.abs().max(1.0) {
        bail!("the total differs from the local computation");
    }
    client.close().await;
    Ok(())
}
