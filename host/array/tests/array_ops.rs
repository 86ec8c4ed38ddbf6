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

/// Chains of elementwise operations, transposes and broadcasts are fused into one kernel call
/// per block (and into the first stage of a following reduction); compared with ndarray for
/// square and rectangular shapes with uneven last blocks, and with fusion turned off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fused_expressions_match_ndarray() -> Result<()> {
    let client = LocalCluster::builder().workers(2).slots(1).client().await?;
    for fusion in [true, false] {
        let da = ArrayContext::with_options(&client, 3, fusion).await?;
        for &(n, c) in &[(12usize, 5usize), (9, 9), (10, 3)] {
            let label = |op: &str| format!("{op} on {n}x{n} in {c}x{c}, fusion {fusion}");
            let (xv, yv) = (data(&[n, n], 11), data(&[n, n], 12));
            let x = da.from_ndarray(&xv, &[c, c]);
            let y = da.from_ndarray(&yv, &[c, c]);
            let mean0 = xv.mean_axis(Axis(0)).expect("non-empty");
            let seed1 = &xv + &xv.t() - &mean0;
            let e = &x + &x.t() - &x.mean_axis(0);
            check(&label("x + x.T - x.mean(axis=0)"), &e, seed1.clone()).await?;
            check(
                &label("(x + x.T - x.mean(axis=0)).sum()"),
                &e.sum(),
                scalar(seed1.sum()),
            )
            .await?;
            if fusion {
                // The expression itself adds no task until it is computed or reduced.
                let before = da.task_count();
                let lazy = (&x + &x.t()) * 2.0 - &y;
                assert!(lazy.is_lazy());
                assert_eq!(da.task_count(), before);
            }
            let chain = ((&x + 1.0) * &y.t() - 2.0 / &x).abs().sqrt() - &x.mean_axis(1);
            let chain_v = ((&xv + 1.0) * &yv.t() - xv.mapv(|v| 2.0 / v)).mapv(|v| v.abs().sqrt())
                - &xv
                    .mean_axis(Axis(1))
                    .expect("non-empty")
                    .insert_axis(Axis(0));
            check(&label("chain"), &chain, chain_v.clone()).await?;
            check(
                &label("chain.sum(axis=0)"),
                &chain.sum_axis(0),
                chain_v.sum_axis(Axis(0)),
            )
            .await?;
            check(
                &label("chain.sum(axis=1)"),
                &chain.sum_axis(1),
                chain_v.sum_axis(Axis(1)),
            )
            .await?;
            check(
                &label("chain.max(axis=1)"),
                &chain.max_axis(1),
                fold(&chain_v, Some(1), f64::NEG_INFINITY, f64::max),
            )
            .await?;
            check(
                &label("chain.min()"),
                &chain.min(),
                fold(&chain_v, None, f64::INFINITY, f64::min),
            )
            .await?;
            check(
                &label("chain.mean(axis=0)"),
                &chain.mean_axis(0),
                chain_v.mean_axis(Axis(0)).expect("non-empty"),
            )
            .await?;
            check(
                &label("chain.std()"),
                &chain.std(),
                population_var(&chain_v, None).mapv(f64::sqrt),
            )
            .await?;
            check(
                &label("chain.var(axis=0)"),
                &chain.var_axis(0),
                population_var(&chain_v, Some(0)),
            )
            .await?;
            check(
                &label("chain.T.var(axis=1)"),
                &chain.t().var_axis(1),
                population_var(&chain_v.t().to_owned(), Some(1)),
            )
            .await?;
            // The seed's second expression, small: a fused operand of dot, then a fused
            // epilogue under std.
            let x2 = xv.clone().into_dimensionality::<ndarray::Ix2>()?;
            let dot = x2.dot(&(&x2.t() + 1.0)).into_dyn();
            let centred = dot.mapv(|v| v - xv.mean().expect("non-empty"));
            check(
                &label("x.dot(x.T + 1)"),
                &x.dot(&(x.t() + 1.0)),
                dot.clone(),
            )
            .await?;
            check(
                &label("(x.dot(x.T + 1) - x.mean()).std()"),
                &(x.dot(&(x.t() + 1.0)) - x.mean()).std(),
                scalar(centred.std(0.0)),
            )
            .await?;
            // A random array: fused calls recompute its values from the seeds.
            let r = da.random(&[n, n], &[c, c], 5);
            let rv = r.compute().await?;
            let seed1 = &rv + &rv.t() - &rv.mean_axis(Axis(0)).expect("non-empty");
            let e = &r + &r.t() - &r.mean_axis(0);
            check(
                &label("random: (r + r.T - r.mean(axis=0)).sum()"),
                &e.sum(),
                scalar(seed1.sum()),
            )
            .await?;
            check(
                &label("random: r.T * 2 - r"),
                &(r.t() * 2.0 - &r),
                &rv.t() * 2.0 - &rv,
            )
            .await?;
            check(
                &label("random: r.std()"),
                &r.std(),
                population_var(&rv, None).mapv(f64::sqrt),
            )
            .await?;
            check(
                &label("random: r.max(axis=1)"),
                &r.max_axis(1),
                fold(&rv, Some(1), f64::NEG_INFINITY, f64::max),
            )
            .await?;
            // A 1-D vector broadcast against a transposed rectangle, and a 3-D transpose.
            let r = da.from_ndarray(&data(&[n], 13), &[c]);
            let rect = da.from_ndarray(&data(&[n, 4], 14), &[c, 3]);
            let want = &data(&[n, 4], 14).t() * &data(&[n], 13);
            check(&label("rect.T * r"), &(&rect.t() * &r), want.clone()).await?;
            check(
                &label("(rect.T * r).sum(axis=1)"),
                &(&rect.t() * &r).sum_axis(1),
                want.sum_axis(Axis(1)),
            )
            .await?;
        }
        let cube_v = data(&[3, 4, 5], 15);
        let cube = da.from_ndarray(&cube_v, &[2, 3, 2]);
        let want = cube_v.mapv(|v| v * 2.0);
        check("cube + cube.T.T", &(&cube + &cube.t().t()), want.clone()).await?;
        check(
            "(cube.T - 1).sum(axis=1)",
            &(cube.t() - 1.0).sum_axis(1),
            (cube_v.t().to_owned() - 1.0).sum_axis(Axis(1)),
        )
        .await?;
        // Past the limits of one call (deep or wide expressions), parts are materialised.
        let x = da.from_ndarray(&data(&[6, 6], 16), &[4, 4]);
        let xv = data(&[6, 6], 16);
        let mut deep = x.clone();
        let mut deep_v = xv.clone();
        for i in 0..14 {
            deep = &x - &(&deep * 0.5 + i as f64);
            deep_v = &xv - &(deep_v.mapv(|v| v * 0.5 + i as f64));
        }
        check("deep expression", &deep, deep_v.clone()).await?;
        check("deep expression sum", &deep.sum(), scalar(deep_v.sum())).await?;
        let mut wide = da.zeros(&[6, 6], &[4, 4]);
        let mut wide_v = ArrayD::<f64>::zeros(IxDyn(&[6, 6]));
        for i in 0..20 {
            let v = data(&[6, 6], 100 + i);
            wide = wide + da.from_ndarray(&v, &[4, 4]);
            wide_v = wide_v + v;
        }
        check("wide expression", &wide, wide_v.clone()).await?;
    }
    Ok(())
}

/// The number of tasks of the seed's two at-scale expressions, with and without fusion (graph
/// building only, nothing runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fusion_cuts_the_task_count_of_the_seed_expressions() -> Result<()> {
    let client = LocalCluster::builder().workers(1).slots(1).client().await?;
    let mut counts = Vec::new();
    for fusion in [false, true] {
        let da =
            ArrayContext::with_options(&client, taskhost_array::DEFAULT_FAN_IN, fusion).await?;
        let x = da.random(&[20000, 20000], &[1000, 1000], 42);
        let start = da.task_count();
        let first = (&x + &x.t() - &x.mean_axis(0)).sum();
        first.blocks();
        let first_tasks = da.task_count() - start;
        let x = da.random(&[8000, 8000], &[1000, 1000], 43);
        let start = da.task_count();
        let second = (x.dot(&(x.t() + 1.0)) - x.mean()).std();
        second.blocks();
        let second_tasks = da.task_count() - start;
        eprintln!(
            "fusion {fusion}: expression 1: {first_tasks} tasks, expression 2: {second_tasks} tasks (random blocks excluded)"
        );
        counts.push((first_tasks, second_tasks));
    }
    assert!(counts[1].0 * 2 < counts[0].0, "{counts:?}");
    assert!(counts[1].1 + 64 < counts[0].1, "{counts:?}");
    Ok(())
}
