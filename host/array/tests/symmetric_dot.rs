//! The algebraic rewrites of matrix products (`ArrayConfig::rewrites`): the product of an
//! array with its own transpose computes only the upper block triangle, and a number added to
//! or subtracted from an operand moves out of the product when that makes it symmetric.
//! Compared with ndarray computed here, for square, rectangular and unevenly chunked arrays,
//! with the rewrites on and off; and the task counts that prove only the upper triangle of
//! block products is computed.

use anyhow::Result;
use ndarray::{Array2, ArrayD, Axis, Ix2, IxDyn};
use taskhost_array::{Array, ArrayConfig, ArrayContext, chunk};
use taskhost_client::LocalCluster;

fn data(shape: &[usize], seed: u64) -> ArrayD<f64> {
    let n: usize = shape.iter().product();
    let values = (0..n)
        .map(|i| chunk::uniform(seed, i as u64) + 0.5)
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), values).expect("shape")
}

/// Equal up to the order of floating-point sums (the rewrites sum differently).
fn close(label: &str, got: &ArrayD<f64>, want: &ArrayD<f64>) {
    assert_eq!(got.shape(), want.shape(), "{label}: shapes");
    for (g, w) in got.iter().zip(want.iter()) {
        assert!(
            (g - w).abs() <= 1e-10 * (1.0 + w.abs()),
            "{label}: {g} vs {w}\n got {got}\nwant {want}"
        );
    }
}

async fn check(label: &str, array: &Array, want: ArrayD<f64>) -> Result<()> {
    assert_eq!(array.shape(), want.shape(), "{label}: lazy shape");
    let got = array.compute().await?;
    close(label, &got, &want);
    Ok(())
}

fn scalar(v: f64) -> ArrayD<f64> {
    ArrayD::from_elem(IxDyn(&[]), v)
}

fn two(a: &ArrayD<f64>) -> Array2<f64> {
    a.clone().into_dimensionality::<Ix2>().expect("2-D")
}

/// Every form of the rewrites, and products they must leave alone, against ndarray.
async fn products_match(da: &ArrayContext, x: &Array, xv: &ArrayD<f64>, what: &str) -> Result<()> {
    let label = |op: &str| {
        format!(
            "{op} on {what} {:?} in {:?}, rewrites {}",
            x.shape(),
            x.chunks(),
            da.config().rewrites
        )
    };
    let a = two(xv);
    let at = a.t();
    let gram = a.dot(&at); // x . x.T
    let cross = at.dot(&a); // x.T . x
    let mean = xv.mean().expect("non-empty");

    // Rule 1, both forms, with a materialising consumer (compute) and fused ones.
    let p = x.dot(&x.t());
    check(&label("x.dot(x.T)"), &p, gram.clone().into_dyn()).await?;
    check(
        &label("x.dot(x.T).T"),
        &p.t(),
        gram.t().to_owned().into_dyn(),
    )
    .await?;
    let centred = gram.mapv(|v| v - mean);
    check(
        &label("(x.dot(x.T) - x.mean()).std()"),
        &(&p - &x.mean()).std(),
        scalar(centred.std(0.0)),
    )
    .await?;
    check(
        &label("x.dot(x.T).sum(axis=0)"),
        &p.sum_axis(0),
        gram.sum_axis(Axis(0)).into_dyn(),
    )
    .await?;
    check(
        &label("x.dot(x.T) * 2 - x.dot(x.T).T"),
        &(&p * 2.0 - &p.t()),
        (&gram * 2.0 - gram.t()).into_dyn(),
    )
    .await?;
    let q = x.t().dot(x);
    check(&label("x.T.dot(x)"), &q, cross.clone().into_dyn()).await?;
    check(
        &label("x.T.dot(x).max(axis=1)"),
        &q.max_axis(1),
        cross
            .fold_axis(Axis(1), f64::NEG_INFINITY, |m, &v| m.max(v))
            .into_dyn(),
    )
    .await?;
    // A symmetric product used as an operand of another product (materialised).
    check(
        &label("x.dot(x.T).dot(x)"),
        &p.dot(x),
        gram.dot(&a).into_dyn(),
    )
    .await?;

    // Rule 2 (and then rule 1), every placement of the number.
    let plus1 = a.dot(&(&at + 1.0));
    check(
        &label("x.dot(x.T + 1)"),
        &x.dot(&(x.t() + 1.0)),
        plus1.clone().into_dyn(),
    )
    .await?;
    check(
        &label("(x.dot(x.T + 1) - x.mean()).std()"),
        &(x.dot(&(x.t() + 1.0)) - x.mean()).std(),
        scalar(plus1.mapv(|v| v - mean).std(0.0)),
    )
    .await?;
    check(
        &label("x.dot(2.5 + x.T)"),
        &x.dot(&(2.5 + x.t())),
        a.dot(&(&at + 2.5)).into_dyn(),
    )
    .await?;
    check(
        &label("x.dot(x.T - 0.75)"),
        &x.dot(&(x.t() - 0.75)),
        a.dot(&(&at - 0.75)).into_dyn(),
    )
    .await?;
    check(
        &label("x.dot(3 - x.T)"),
        &x.dot(&(3.0 - x.t())),
        a.dot(&at.mapv(|v| 3.0 - v)).into_dyn(),
    )
    .await?;
    check(
        &label("(x.T - 2).dot(x)"),
        &(x.t() - 2.0).dot(x),
        (&at - 2.0).dot(&a).into_dyn(),
    )
    .await?;
    check(
        &label("(1.5 + x.T).dot(x)"),
        &(1.5 + x.t()).dot(x),
        (&at + 1.5).dot(&a).into_dyn(),
    )
    .await?;
    check(
        &label("(4 - x.T).dot(x)"),
        &(4.0 - x.t()).dot(x),
        at.mapv(|v| 4.0 - v).dot(&a).into_dyn(),
    )
    .await?;
    check(
        &label("(x + 1).dot(x.T)"),
        &(x + 1.0).dot(&x.t()),
        (&a + 1.0).dot(&at).into_dyn(),
    )
    .await?;
    check(
        &label("(x.T + 1).dot(x).sum(axis=1)"),
        &(x.t() + 1.0).dot(x).sum_axis(1),
        (&at + 1.0).dot(&a).sum_axis(Axis(1)).into_dyn(),
    )
    .await?;

    // A lazy operand and its own transpose: still a symmetric product.
    let y = (x * 0.5).sqrt();
    let yv = a.mapv(|v| (v * 0.5).sqrt());
    check(
        &label("y.dot(y.T), y = sqrt(x / 2)"),
        &y.dot(&y.t()),
        yv.dot(&yv.t()).into_dyn(),
    )
    .await?;

    // Products the rewrites must leave alone (or get right if they touch them).
    check(
        &label("x.dot(x.T * 2)"),
        &x.dot(&(x.t() * 2.0)),
        a.dot(&(&at * 2.0)).into_dyn(),
    )
    .await?;
    check(
        &label("x.dot(x.T + 1 - 3)"),
        &x.dot(&(x.t() + 1.0 - 3.0)),
        a.dot(&(&at - 2.0)).into_dyn(),
    )
    .await?;
    check(
        &label("(x.T + 1).dot(x + 1)"),
        &(x.t() + 1.0).dot(&(x + 1.0)),
        (&at + 1.0).dot(&(&a + 1.0)).into_dyn(),
    )
    .await?;
    if x.shape()[0] == x.shape()[1] && x.chunks()[0] == x.chunks()[1] {
        // x . x is not x . x.T.
        check(&label("x.dot(x)"), &x.dot(x), a.dot(&a).into_dyn()).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symmetric_and_distributed_products_match_ndarray() -> Result<()> {
    let client = LocalCluster::builder().workers(2).slots(1).client().await?;
    let cases: &[(&[usize], &[usize])] = &[
        (&[9, 9], &[3, 3]),   // square, even
        (&[7, 5], &[3, 2]),   // rectangular, uneven last blocks on both axes
        (&[10, 6], &[4, 4]),  // uneven, a non-square block grid (3 x 2)
        (&[5, 12], &[2, 5]),  // wide
        (&[6, 6], &[6, 6]),   // one block
        (&[11, 8], &[11, 3]), // one block of rows, uneven columns
    ];
    for rewrites in [true, false] {
        let config = ArrayConfig {
            fan_in: 3,
            rewrites,
            ..ArrayConfig::default()
        };
        let da = ArrayContext::with_config(&client, config).await?;
        for (n, &(shape, chunks)) in cases.iter().enumerate() {
            let xv = data(shape, 40 + n as u64);
            let x = da.from_ndarray(&xv, chunks);
            products_match(&da, &x, &xv, "data").await?;
        }
        // A random array: the fused calls recompute its values from the block seeds.
        let r = da.random(&[7, 9], &[3, 4], 77);
        let rv = r.compute().await?;
        products_match(&da, &r, &rv, "random").await?;
    }
    Ok(())
}

/// Fusion off: the rewrites need its lazy expressions and do not apply, the products are
/// still right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn products_without_fusion_match_ndarray() -> Result<()> {
    let client = LocalCluster::builder().workers(2).slots(1).client().await?;
    let config = ArrayConfig {
        fusion: false,
        ..ArrayConfig::default()
    };
    let da = ArrayContext::with_config(&client, config).await?;
    let xv = data(&[7, 5], 3);
    let x = da.from_ndarray(&xv, &[3, 2]);
    let a = two(&xv);
    check(
        "x.dot(x.T + 1), fusion off",
        &x.dot(&(x.t() + 1.0)),
        a.dot(&(&a.t() + 1.0)).into_dyn(),
    )
    .await?;
    check(
        "(x.T - 2).dot(x), fusion off",
        &(x.t() - 2.0).dot(&x),
        (&a.t() - 2.0).dot(&a).into_dyn(),
    )
    .await?;
    Ok(())
}

/// The block products (`matmul_sum`, `matmul_nt_sum` and `syrk_sum` tasks) and transposes each
/// form adds to the graph, with the rewrites on and off (graph building only, nothing runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symmetric_products_compute_only_the_upper_triangle() -> Result<()> {
    let client = LocalCluster::builder().workers(1).slots(1).client().await?;
    for rewrites in [true, false] {
        let config = ArrayConfig {
            rewrites,
            ..ArrayConfig::default()
        };
        let da = ArrayContext::with_config(&client, config).await?;
        // Counts the tasks of `kernel` that `build` adds.
        let added = |kernel: &str, build: &dyn Fn() -> Array| {
            let before = da.task_count_of(kernel);
            build().blocks();
            da.task_count_of(kernel) - before
        };
        // The `matmul_sum`, `matmul_nt_sum` and `syrk_sum` tasks `build` adds.
        let products = |build: &dyn Fn() -> Array| {
            let kernels = ["matmul_sum", "matmul_nt_sum", "syrk_sum"];
            let before = kernels.map(|k| da.task_count_of(k));
            build().blocks();
            let after = kernels.map(|k| da.task_count_of(k));
            (
                after[0] - before[0],
                after[1] - before[1],
                after[2] - before[2],
            )
        };
        // The seed's expression 2: an 8 x 8 grid of blocks, 8 contraction blocks per output
        // block, one task each: 36 upper-triangle blocks instead of 64, the 8 diagonal ones
        // `syrk_sum` (half products), the others `matmul_nt_sum` (x.T never materialised).
        let x = da.random(&[8000, 8000], &[1000, 1000], 43);
        let seed2 = products(&|| (x.dot(&(x.t() + 1.0)) - x.mean()).std());
        let y = da.random(&[8000, 8000], &[1000, 1000], 44);
        let gram = products(&|| y.dot(&y.t()));
        let z = da.random(&[8000, 8000], &[1000, 1000], 45);
        let cross = products(&|| (z.t() - 2.0).dot(&z));
        // Non-square blocks, uneven last ones: 7 x 5 in 3 x 2 is a 3 x 3 grid of blocks of
        // the 7 x 7 product (3 contraction blocks, one task each): 6 upper blocks of 9.
        let xv = data(&[7, 5], 1);
        let s = da.from_ndarray(&xv, &[3, 2]);
        let small = products(&|| s.dot(&(s.t() + 1.0)));
        // And 7 x 5 as x.T . x: a 3 x 3 grid of the 5 x 5 product (contraction over 3 blocks).
        let small_t = products(&|| (s.t() - 2.0).dot(&s));
        eprintln!(
            "rewrites {rewrites}: (matmul_sum, matmul_nt_sum, syrk_sum) tasks: seed expression 2 {seed2:?}, \
             x.dot(x.T) {gram:?}, (x.T - 2).dot(x) {cross:?}, 7x5 in 3x2: {small:?} and \
             {small_t:?}"
        );
        if rewrites {
            assert_eq!(
                (seed2, gram, cross, small, small_t),
                ((0, 28, 8), (0, 28, 8), (0, 28, 8), (0, 3, 3), (0, 3, 3))
            );
        } else {
            assert_eq!(
                (seed2, gram, cross, small, small_t),
                ((64, 0, 0), (64, 0, 0), (64, 0, 0), (9, 0, 0), (9, 0, 0))
            );
        }

        // The symmetric product reads the transposed operand's blocks from the other one's:
        // no transpose of v's 9 blocks, only of the 3 result blocks below the diagonal, which
        // `blocks()` materialises (without the rewrites: v.T's 9 blocks, and no others).
        let v = da.from_ndarray(&data(&[7, 5], 3), &[3, 2]);
        let operand_transposes = added("transpose", &|| v.dot(&v.t()));
        assert_eq!(operand_transposes, if rewrites { 3 } else { 9 });

        // Block (j, i) is no task for a fused consumer (it reads (i, j) transposed); a
        // materialising one transposes the 3 blocks below the diagonal.
        let w = da.from_ndarray(&data(&[7, 5], 2), &[3, 2]);
        let wt_blocks = added("transpose", &|| w.t());
        let product = w.dot(&w.t());
        let fused_transposes = added("transpose", &|| (&product - 1.0).std());
        let materialised = added("transpose", &|| product.clone());
        eprintln!(
            "rewrites {rewrites}: transposes: w.T {wt_blocks}, a fused consumer \
             {fused_transposes}, materialising the product {materialised}"
        );
        assert_eq!(wt_blocks, 9);
        assert_eq!(fused_transposes, 0);
        assert_eq!(materialised, if rewrites { 3 } else { 0 });
    }
    Ok(())
}
