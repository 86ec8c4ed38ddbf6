//! Every array operation on a local cluster, compared with ndarray computed here, for several
//! shapes and chunkings (uneven last blocks included).

use anyhow::Result;
use ndarray::{ArrayD, Axis, IxDyn};
use taskhost_array::{Array, ArrayContext, chunk};
use taskhost_client::LocalCluster;

fn data(shape: &[usize], seed: u64) -> ArrayD<f64> {
    let n: usize = shape.iter().product();
    let values = (0..n)
        .map(|i| chunk::uniform(seed, i as u64) + 0.5)
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), values).expect("shape")
}

fn close(label: &str, got: &ArrayD<f64>, want: &ArrayD<f64>) {
    assert_eq!(got.shape(), want.shape(), "{label}: shapes");
    for (g, w) in got.iter().zip(want.iter()) {
        assert!(
            (g - w).abs() <= 1e-9 * (1.0 + w.abs()),
            "{label}: {g} vs {w}\n got {got}\nwant {want}"
        );
    }
}

async fn check(label: &str, array: &Array, want: ArrayD<f64>) -> Result<()> {
    assert_eq!(array.shape(), want.shape(), "{label}: lazy shape");
    eprintln!("{label}");
    let got = array.compute().await?;
    close(label, &got, &want);
    Ok(())
}

fn scalar(v: f64) -> ArrayD<f64> {
    ArrayD::from_elem(IxDyn(&[]), v)
}

fn population_var(a: &ArrayD<f64>, axis: Option<usize>) -> ArrayD<f64> {
    match axis {
        None => scalar(a.var(0.0)),
        Some(ax) => a.var_axis(Axis(ax), 0.0),
    }
}

fn fold(a: &ArrayD<f64>, axis: Option<usize>, init: f64, f: fn(f64, f64) -> f64) -> ArrayD<f64> {
    match axis {
        None => scalar(a.fold(init, |acc, &v| f(acc, v))),
        Some(ax) => a.fold_axis(Axis(ax), init, |acc, &v| f(*acc, v)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_match_ndarray() -> Result<()> {
    let client = LocalCluster::builder().workers(2).slots(1).client().await?;
    // A small fan-in so that reductions build trees of several levels.
    let da = ArrayContext::with_fan_in(&client, 2).await?;
    let cases: &[(&[usize], &[usize])] = &[
        (&[15], &[5]),
        (&[15], &[4]),
        (&[7, 5], &[3, 2]),
        (&[6, 6], &[4, 4]),
        (&[15, 15], &[5, 5]),
        (&[2, 3, 4], &[1, 2, 3]),
    ];
    for &(shape, chunks) in cases {
        let label = |op: &str| format!("{op} on {shape:?} in {chunks:?}");
        let (xv, yv) = (data(shape, 1), data(shape, 2));
        let x = da.from_ndarray(&xv, chunks);
        let y = da.from_ndarray(&yv, chunks);
        check(&label("x"), &x, xv.clone()).await?;
        check(&label("x + y"), &(&x + &y), &xv + &yv).await?;
        check(&label("x - y"), &(&x - &y), &xv - &yv).await?;
        check(&label("x * y"), &(&x * &y), &xv * &yv).await?;
        check(&label("x / y"), &(&x / &y), &xv / &yv).await?;
        check(&label("x + 2"), &(&x + 2.0), xv.mapv(|v| v + 2.0)).await?;
        check(&label("2 - x"), &(2.0 - &x), xv.mapv(|v| 2.0 - v)).await?;
        check(&label("3 / x"), &(3.0 / &x), xv.mapv(|v| 3.0 / v)).await?;
        check(&label("-x"), &(-&x), xv.mapv(|v| -v)).await?;
        check(&label("sqrt"), &x.sqrt(), xv.mapv(f64::sqrt)).await?;
        check(&label("x.T"), &x.t(), xv.t().to_owned()).await?;
        check(&label("sum"), &x.sum(), scalar(xv.sum())).await?;
        check(
            &label("mean"),
            &x.mean(),
            scalar(xv.mean().expect("non-empty")),
        )
        .await?;
        check(
            &label("min"),
            &x.min(),
            fold(&xv, None, f64::INFINITY, f64::min),
        )
        .await?;
        check(
            &label("max"),
            &x.max(),
            fold(&xv, None, f64::NEG_INFINITY, f64::max),
        )
        .await?;
        check(&label("var"), &x.var(), population_var(&xv, None)).await?;
        check(
            &label("std"),
            &x.std(),
            population_var(&xv, None).mapv(f64::sqrt),
        )
        .await?;
        for axis in 0..shape.len() {
            let l = |op: &str| label(&format!("{op}(axis={axis})"));
            check(&l("sum"), &x.sum_axis(axis), xv.sum_axis(Axis(axis))).await?;
            check(
                &l("mean"),
                &x.mean_axis(axis),
                xv.mean_axis(Axis(axis)).expect("non-empty"),
            )
            .await?;
            check(
                &l("min"),
                &x.min_axis(axis),
                fold(&xv, Some(axis), f64::INFINITY, f64::min),
            )
            .await?;
            check(
                &l("max"),
                &x.max_axis(axis),
                fold(&xv, Some(axis), f64::NEG_INFINITY, f64::max),
            )
            .await?;
            check(
                &l("var"),
                &x.var_axis(axis),
                population_var(&xv, Some(axis)),
            )
            .await?;
            check(
                &l("std"),
                &x.std_axis(axis),
                population_var(&xv, Some(axis)).mapv(f64::sqrt),
            )
            .await?;
        }
        // Broadcasting a reduction back against the array (a row vector, then a 0-d scalar).
        let mean0 = xv.mean_axis(Axis(0)).expect("non-empty");
        check(
            &label("x - x.mean(axis=0)"),
            &(&x - &x.mean_axis(0)),
            &xv - &mean0,
        )
        .await?;
        check(
            &label("x - x.mean()"),
            &(&x - &x.mean()),
            xv.mapv(|v| v - xv.mean().expect("non-empty")),
        )
        .await?;
        // Slicing: whole blocks, and ranges cutting blocks.
        let ranges: Vec<std::ops::Range<usize>> = shape.iter().map(|&n| 1..n - 1).collect();
        let want = xv
            .slice_each_axis(|ax| ndarray::Slice::from(1..shape[ax.axis.index()] - 1))
            .to_owned();
        check(&label("slice"), &x.slice(&ranges), want).await?;
        let first = x.block_slice(&[std::ops::Range { start: 0, end: 1 }]);
        let want = xv
            .slice_axis(Axis(0), ndarray::Slice::from(0..chunks[0]))
            .to_owned();
        check(&label("blocks[0]"), &first, want).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creation_dot_and_the_seed_expressions() -> Result<()> {
    let client = LocalCluster::builder().workers(2).slots(1).client().await?;
    let da = ArrayContext::new(&client).await?;

    check(
        "ones",
        &da.ones(&[5, 3], &[2, 2]),
        ArrayD::ones(IxDyn(&[5, 3])),
    )
    .await?;
    check("zeros", &da.zeros(&[4], &[3]), ArrayD::zeros(IxDyn(&[4]))).await?;
    check(
        "full",
        &da.full(&[3, 3], &[2, 2], 2.5),
        ArrayD::from_elem(IxDyn(&[3, 3]), 2.5),
    )
    .await?;
    let ar: Vec<f64> = (0..11).map(|i| i as f64).collect();
    check(
        "arange",
        &da.arange(11, 4),
        ArrayD::from_shape_vec(IxDyn(&[11]), ar)?,
    )
    .await?;
    let r = da.random(&[5, 7], &[2, 3], 9).compute().await?;
    // Block (1, 2) holds rows 2..4 and column 6; its element (0, 0) is index 0 of that block.
    assert_eq!(r[[2, 6]], chunk::random_value(9, 5, 0));
    assert_eq!(r[[3, 6]], chunk::random_value(9, 5, 1));
    assert!(r.iter().all(|v| (0.0..1.0).contains(v)));

    for (m, k, n, cm, ck, cn) in [(7, 5, 4, 3, 2, 3), (6, 9, 6, 6, 4, 2), (1, 1, 1, 1, 1, 1)] {
        let (av, bv) = (data(&[m, k], 3), data(&[k, n], 4));
        let a = da.from_ndarray(&av, &[cm, ck]);
        let b = da.from_ndarray(&bv, &[ck, cn]);
        let want = av
            .clone()
            .into_dimensionality::<ndarray::Ix2>()?
            .dot(&bv.clone().into_dimensionality::<ndarray::Ix2>()?);
        check(&format!("dot {m}x{k}x{n}"), &a.dot(&b), want.into_dyn()).await?;
    }
    assert!(
        da.ones(&[4, 4], &[2, 2])
            .try_dot(&da.ones(&[4, 4], &[3, 3]))
            .is_err()
    );
    assert!(
        da.ones(&[4], &[2])
            .try_binary(taskhost_array::BinaryOp::Add, &da.ones(&[3], &[3]))
            .is_err()
    );

    // The seed's small examples.
    let x = da.ones(&[15], &[5]);
    assert_eq!(x.sum().compute_scalar().await?, 15.0);
    let x = da.ones(&[15, 15], &[5, 5]);
    let xv = ArrayD::<f64>::ones(IxDyn(&[15, 15]));
    let x2 = xv.clone().into_dimensionality::<ndarray::Ix2>()?;
    check("x.sum(axis=0)", &x.sum_axis(0), xv.sum_axis(Axis(0))).await?;
    check("x + x.T", &(&x + &x.t()), &xv + &xv.t()).await?;
    let dot = x2.dot(&(&x2.t() + 1.0)).into_dyn();
    check("x.dot(x.T + 1)", &x.dot(&(x.t() + 1.0)), dot.clone()).await?;
    let centred = dot.mapv(|v| v - 1.0);
    check(
        "x.dot(x.T + 1) - x.mean()",
        &(x.dot(&(x.t() + 1.0)) - x.mean()),
        centred.clone(),
    )
    .await?;
    check(
        "(x.dot(x.T + 1) - x.mean()).std()",
        &(x.dot(&(x.t() + 1.0)) - x.mean()).std(),
        scalar(centred.std(0.0)),
    )
    .await?;
    Ok(())
}
