//! The seed's array examples, on an embedded local cluster: chunked arrays whose every task is
//! a sandboxed WebAssembly kernel.
//!
//! ```sh
//! cargo run --release --example seed               # everything, at the seed's sizes
//! cargo run --release --example seed -- --quick    # the at-scale expressions at 1/5 and 1/4 size
//! cargo run --release --example seed -- --only-scale --workers 1 --slots 2
//! cargo run --release --example seed -- --no-rewrites   # matrix products as written
//! ```
//!
//! Each result is printed next to its expected value, computed independently: with ndarray for
//! the small arrays; for `(x + x.T - x.mean(axis=0)).sum()`, which equals the sum of `x`
//! exactly in exact arithmetic, from the same deterministic random blocks generated here; for
//! the standard deviation of `x.dot(x.T + 1) - x.mean()` with `x` uniform in [0, 1) of size n,
//! from its expectation `sqrt(2n / 9)` (see `expected_std`). The program exits with status 1 on
//! any mismatch.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ndarray::{ArrayD, Axis, Ix2, IxDyn};
use taskhost_array::{Array, ArrayConfig, ArrayContext, chunk};
use taskhost_client::{Client, LocalCluster};

struct Options {
    quick: bool,
    only_scale: bool,
    workers: usize,
    slots: u32,
    seed: u64,
    rewrites: bool,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        quick: false,
        only_scale: false,
        workers: 2,
        slots: 1,
        seed: 42,
        rewrites: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => o.quick = true,
            "--only-scale" => o.only_scale = true,
            "--workers" => o.workers = args.next().context("--workers N")?.parse()?,
            "--slots" => o.slots = args.next().context("--slots N")?.parse()?,
            "--seed" => o.seed = args.next().context("--seed N")?.parse()?,
            "--no-rewrites" => o.rewrites = false,
            other => {
                bail!(
                    "unknown argument {other}; use --quick, --only-scale, --workers N, --slots N, --seed N, --no-rewrites"
                )
            }
        }
    }
    Ok(o)
}

/// Computes `array` under a progress bar; returns the result and the wall time.
async fn run(client: &Client, array: &Array) -> anyhow::Result<(ArrayD<f64>, Duration)> {
    let bar = client.progress_bar();
    let start = Instant::now();
    let value = array.compute().await?;
    let wall = start.elapsed();
    drop(bar);
    Ok((value, wall))
}

fn summary(a: &ArrayD<f64>) -> String {
    if a.ndim() == 0 {
        return format!("{}", a[[]]);
    }
    let values: Vec<f64> = a.iter().copied().collect();
    let all_same = values.windows(2).all(|w| w[0] == w[1]);
    match values.first() {
        Some(v) if all_same => format!("{:?} array, all {v}", a.shape()),
        _ => format!(
            "{:?} array, first {:?}",
            a.shape(),
            &values[..values.len().min(3)]
        ),
    }
}

struct Report {
    failures: usize,
}

impl Report {
    fn line(
        &mut self,
        expr: &str,
        got: &ArrayD<f64>,
        want: &ArrayD<f64>,
        rel_tol: f64,
        abs_tol: f64,
        wall: Duration,
    ) {
        let ok = got.shape() == want.shape()
            && got
                .iter()
                .zip(want.iter())
                .all(|(g, w)| (g - w).abs() <= abs_tol + rel_tol * w.abs());
        if !ok {
            self.failures += 1;
        }
        println!(
            "{} {expr}\n      result   {}\n      expected {}\n      wall     {:.3} s",
            if ok { "ok      " } else { "MISMATCH" },
            summary(got),
            summary(want),
            wall.as_secs_f64()
        );
    }
}

/// The sum of a random array of `n x n` in blocks of `c x c`, from the same deterministic
/// blocks the kernels generate (counter-based, so no array is materialised).
fn random_sum(n: usize, c: usize, seed: u64) -> f64 {
    let chunks = taskhost_array::normalize_chunks(&[n, n], &[c, c]);
    let per_axis = chunks[0].len();
    let mut total = 0.0;
    for bi in 0..per_axis {
        for bj in 0..per_axis {
            let len = (chunks[0][bi] * chunks[1][bj]) as u64;
            let block_seed = chunk::block_seed(seed, (bi * per_axis + bj) as u64);
            let mut partial = 0.0;
            for i in 0..len {
                partial += chunk::uniform(block_seed, i);
            }
            total += partial;
        }
    }
    total
}

/// The expected standard deviation of `y = x.dot(x.T + 1) - x.mean()` over its elements, for
/// `x` of `n x n` uniform in [0, 1). With `G = x x^T` and row sums `r`, `y_ij = G_ij + r_i - m`:
/// `Var(G_ij) = n (1/9 - 1/16)`, `Var(r_i) = n / 12`, `Cov(G_ij, r_i) = n (1/6 - 1/8)`, and the
/// diagonal (`E G_ii - E G_ij = n / 12` on a fraction `1/n` of the elements) adds `n / 144`:
/// in all `n (7 + 12 + 2 * 6 + 1) / 144 = 2n / 9`, up to terms of relative size `1 / n`.
fn expected_std(n: usize) -> f64 {
    (2.0 * n as f64 / 9.0).sqrt()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = options()?;
    let client = LocalCluster::builder()
        .workers(o.workers)
        .slots(o.slots)
        .client()
        .await?;
    // `--no-rewrites`: no symmetric products, no numbers moved out of products (for comparisons).
    let config = ArrayConfig {
        rewrites: o.rewrites,
        ..ArrayConfig::default()
    };
    let da = ArrayContext::with_config(&client, config).await?;
    let mut report = Report { failures: 0 };
    let total = Instant::now();
    println!(
        "taskhost arrays: embedded local cluster, {} workers x {} slots, kernels module {}, product rewrites {}",
        o.workers,
        o.slots,
        da.module().id(),
        if o.rewrites { "on" } else { "off" }
    );

    if !o.only_scale {
        // x = da.ones((15,), chunks=(5,)); x.sum()
        let x = da.ones(&[15], &[5]);
        let (got, wall) = run(&client, &x.sum()).await?;
        report.line(
            "ones((15,), chunks=(5,)).sum()",
            &got,
            &ArrayD::from_elem(IxDyn(&[]), 15.0),
            0.0,
            0.0,
            wall,
        );

        // x = da.ones((15, 15), chunks=(5, 5))
        let x = da.ones(&[15, 15], &[5, 5]);
        let xv = ArrayD::<f64>::ones(IxDyn(&[15, 15]));
        let x2 = xv.clone().into_dimensionality::<Ix2>()?;
        let dot = x2.dot(&(&x2.t() + 1.0)).into_dyn();
        let centred = dot.mapv(|v| v - xv.mean().unwrap_or_default());
        let small: Vec<(&str, Array, ArrayD<f64>)> = vec![
            ("x.sum(axis=0)", x.sum_axis(0), xv.sum_axis(Axis(0))),
            ("x + x.T", &x + &x.t(), &xv + &xv.t()),
            ("x.dot(x.T + 1)", x.dot(&(x.t() + 1.0)), dot.clone()),
            (
                "x.dot(x.T + 1) - x.mean()",
                x.dot(&(x.t() + 1.0)) - x.mean(),
                centred.clone(),
            ),
            (
                "(x.dot(x.T + 1) - x.mean()).std()",
                (x.dot(&(x.t() + 1.0)) - x.mean()).std(),
                ArrayD::from_elem(IxDyn(&[]), centred.std(0.0)),
            ),
        ];
        for (expr, array, want) in small {
            let (got, wall) = run(&client, &array).await?;
            report.line(
                &format!("ones((15, 15), chunks=(5, 5)): {expr}"),
                &got,
                &want,
                1e-12,
                1e-12,
                wall,
            );
        }
    }

    // x = da.random.random((20000, 20000), chunks=(1000, 1000)); (x + x.T - x.mean(axis=0)).sum()
    let (n1, n2, c) = if o.quick {
        (4000, 2000, 500)
    } else {
        (20000, 8000, 1000)
    };
    let x = da.random(&[n1, n1], &[c, c], o.seed);
    let expr = (&x + &x.t() - &x.mean_axis(0)).sum();
    let (got, wall) = run(&client, &expr).await?;
    let start = Instant::now();
    let want = random_sum(n1, c, o.seed);
    let check = start.elapsed();
    report.line(
        &format!("random(({n1}, {n1}), chunks=({c}, {c})): (x + x.T - x.mean(axis=0)).sum()   [expected: sum of x, from the same seeds, {:.1} s]", check.as_secs_f64()),
        &got,
        &ArrayD::from_elem(IxDyn(&[]), want),
        1e-9,
        0.0,
        wall,
    );

    // (x.dot(x.T + 1) - x.mean()).std() for 8000 x 8000 in 1000 x 1000 chunks
    let x = da.random(&[n2, n2], &[c, c], o.seed + 1);
    let expr = (x.dot(&(x.t() + 1.0)) - x.mean()).std();
    let (got, wall) = run(&client, &expr).await?;
    report.line(
        &format!("random(({n2}, {n2}), chunks=({c}, {c})): (x.dot(x.T + 1) - x.mean()).std()   [expected: sqrt(2n/9), within 2%]"),
        &got,
        &ArrayD::from_elem(IxDyn(&[]), expected_std(n2)),
        0.02,
        0.0,
        wall,
    );

    println!(
        "total wall time {:.2} s, {} mismatch(es)",
        total.elapsed().as_secs_f64(),
        report.failures
    );
    if report.failures > 0 {
        std::process::exit(1);
    }
    Ok(())
}
