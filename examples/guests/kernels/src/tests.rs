//! Native tests of the kernels against straightforward reference computations.

use crate::chunk::{DType, Meta, from_f64, from_i64, to_f64};
use crate::ops::uniform;
use crate::{CallError, call};

fn spec(dtype: DType, shape: &[usize]) -> Vec<u8> {
    Meta::new(dtype, shape).header()
}

fn f64s(shape: &[usize], seed: u64) -> (Vec<u8>, Vec<f64>) {
    let n: usize = shape.iter().product();
    let values: Vec<f64> = (0..n)
        .map(|i| ((uniform(seed, i as u64) * 10.0 - 5.0).round() + 0.5) / 4.0)
        .collect();
    (from_f64(shape, &values), values)
}

fn run(name: &str, args: Vec<Vec<u8>>) -> (Vec<usize>, Vec<f64>) {
    let out = call(name, args).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    to_f64(&out).unwrap()
}

fn close(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len(), "lengths differ");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-9 * (1.0 + x.abs().max(y.abs())),
            "element {i}: {x} vs {y}"
        );
    }
}

fn axes(list: &[i64]) -> Vec<u8> {
    from_i64(&[list.len()], list)
}

#[test]
fn creation() {
    assert_eq!(
        run("ones", vec![spec(DType::F64, &[2, 3])]),
        (vec![2, 3], vec![1.0; 6])
    );
    assert_eq!(
        run("zeros", vec![spec(DType::I64, &[4])]),
        (vec![4], vec![0.0; 4])
    );
    assert_eq!(
        run("full", vec![spec(DType::F32, &[2]), from_f64(&[], &[2.5])]),
        (vec![2], vec![2.5; 2])
    );
    assert_eq!(
        run(
            "arange",
            vec![
                spec(DType::I64, &[4]),
                from_i64(&[], &[3]),
                from_i64(&[], &[2])
            ]
        ),
        (vec![4], vec![3.0, 5.0, 7.0, 9.0])
    );
    let (shape, r) = run(
        "random",
        vec![spec(DType::F64, &[100, 10]), from_i64(&[], &[42])],
    );
    assert_eq!(shape, vec![100, 10]);
    assert!(r.iter().all(|v| (0.0..1.0).contains(v)));
    let mean = r.iter().sum::<f64>() / r.len() as f64;
    assert!((mean - 0.5).abs() < 0.05, "mean {mean}");
    assert_eq!(r[7], uniform(42, 7));
    let (_, again) = run(
        "random",
        vec![spec(DType::F64, &[100, 10]), from_i64(&[], &[42])],
    );
    assert_eq!(r, again);
    let (_, other) = run(
        "random",
        vec![spec(DType::F64, &[100, 10]), from_i64(&[], &[43])],
    );
    assert_ne!(r, other);
}

#[test]
fn elementwise_with_broadcasting() {
    let (a, av) = f64s(&[3, 4], 1);
    let (b, bv) = f64s(&[3, 4], 2);
    let (row, rv) = f64s(&[4], 3);
    let (col, cv) = f64s(&[3, 1], 4);
    type Op = fn(f64, f64) -> f64;
    let ops: [(&str, Op); 4] = [
        ("add", |x, y| x + y),
        ("sub", |x, y| x - y),
        ("mul", |x, y| x * y),
        ("div", |x, y| x / y),
    ];
    for (name, f) in ops {
        let want: Vec<f64> = av.iter().zip(&bv).map(|(x, y)| f(*x, *y)).collect();
        assert_eq!(run(name, vec![a.clone(), b.clone()]), (vec![3, 4], want));
        let want: Vec<f64> = (0..12).map(|i| f(av[i], rv[i % 4])).collect();
        assert_eq!(run(name, vec![a.clone(), row.clone()]), (vec![3, 4], want));
        let want: Vec<f64> = (0..12).map(|i| f(rv[i % 4], av[i])).collect();
        assert_eq!(run(name, vec![row.clone(), a.clone()]), (vec![3, 4], want));
        let want: Vec<f64> = (0..12).map(|i| f(av[i], cv[i / 4])).collect();
        assert_eq!(run(name, vec![a.clone(), col.clone()]), (vec![3, 4], want));
        let want: Vec<f64> = (0..12).map(|i| f(cv[i / 4], rv[i % 4])).collect();
        assert_eq!(
            run(name, vec![col.clone(), row.clone()]),
            (vec![3, 4], want)
        );
        let want: Vec<f64> = av.iter().map(|x| f(2.0, *x)).collect();
        assert_eq!(
            run(name, vec![from_f64(&[], &[2.0]), a.clone()]),
            (vec![3, 4], want)
        );
    }
    assert!(
        matches!(call("add", vec![a.clone(), f64s(&[5], 0).0]), Err(CallError::InvalidInput(m)) if m.contains("broadcast"))
    );
    assert!(
        matches!(call("add", vec![a.clone(), from_i64(&[], &[1])]), Err(CallError::InvalidInput(m)) if m.contains("dtype"))
    );
    let ints = run(
        "div",
        vec![from_i64(&[3], &[7, -7, 1]), from_i64(&[3], &[2, 2, 0])],
    );
    assert_eq!(ints.1, vec![3.0, -4.0, 0.0]);
}

#[test]
fn unary_and_conversions() {
    let (a, av) = f64s(&[5], 9);
    let want: Vec<f64> = av.iter().map(|x| x.abs().sqrt()).collect();
    let abs = call("abs", vec![a.clone()]).unwrap();
    close(&run("sqrt", vec![abs]).1, &want);
    assert_eq!(
        run("neg", vec![a.clone()]).1,
        av.iter().map(|x| -x).collect::<Vec<_>>()
    );
    let as32 = call("astype", vec![a.clone(), spec(DType::F32, &[])]).unwrap();
    assert_eq!(as32[4], DType::F32.code());
    assert_eq!(
        run("reshape", vec![a.clone(), spec(DType::F64, &[5, 1])]).0,
        vec![5, 1]
    );
    assert!(call("reshape", vec![a, spec(DType::F64, &[4])]).is_err());
}

#[test]
fn transpose_and_slice() {
    for (m, n) in [(3, 4), (1, 7), (33, 65), (64, 64)] {
        let (a, av) = f64s(&[m, n], 5);
        let (shape, t) = run("transpose", vec![a]);
        assert_eq!(shape, vec![n, m]);
        for i in 0..m {
            for j in 0..n {
                assert_eq!(t[j * m + i], av[i * n + j]);
            }
        }
    }
    let (a, av) = f64s(&[2, 3, 4], 6);
    let (shape, t) = run("transpose", vec![a.clone()]);
    assert_eq!(shape, vec![4, 3, 2]);
    assert_eq!(t[3 * 6 + 2 * 2 + 1], av[12 + 2 * 4 + 3]);
    let bounds = from_i64(&[3, 3], &[1, 2, 1, 0, 3, 2, 1, 4, 1]);
    let (shape, s) = run("slice", vec![a, bounds]);
    assert_eq!(shape, vec![1, 2, 3]);
    let want: Vec<f64> = [0, 2]
        .iter()
        .flat_map(|j| (1..4).map(move |k| 12 + j * 4 + k))
        .map(|i| av[i])
        .collect();
    assert_eq!(s, want);
}

#[test]
fn reductions_along_axes() {
    let (a, av) = f64s(&[2, 3, 4], 7);
    let at = |i: usize, j: usize, k: usize| av[i * 12 + j * 4 + k];
    let (shape, s) = run("sum", vec![a.clone(), axes(&[1])]);
    assert_eq!(shape, vec![2, 1, 4]);
    let want: Vec<f64> = (0..2)
        .flat_map(|i| (0..4).map(move |k| (0..3).map(|j| at(i, j, k)).sum()))
        .collect();
    close(&s, &want);
    let (shape, s) = run("sum", vec![a.clone(), axes(&[0, -1])]);
    assert_eq!(shape, vec![1, 3, 1]);
    let want: Vec<f64> = (0..3)
        .map(|j| (0..2).flat_map(|i| (0..4).map(move |k| at(i, j, k))).sum())
        .collect();
    close(&s, &want);
    let (shape, s) = run("max", vec![a.clone(), axes(&[0, 1, 2])]);
    assert_eq!(shape, vec![1, 1, 1]);
    assert_eq!(s[0], av.iter().cloned().fold(f64::MIN, f64::max));
    let (_, s) = run("min", vec![a.clone(), axes(&[2])]);
    let want: Vec<f64> = (0..6)
        .map(|r| {
            av[r * 4..r * 4 + 4]
                .iter()
                .cloned()
                .fold(f64::MAX, f64::min)
        })
        .collect();
    assert_eq!(s, want);
    // A long row exercises the eight partial sums and the tail.
    let (b, bv) = f64s(&[3, 101], 8);
    let (_, s) = run("sum", vec![b, axes(&[1])]);
    close(
        &s,
        &(0..3)
            .map(|r| bv[r * 101..(r + 1) * 101].iter().sum())
            .collect::<Vec<_>>(),
    );
    // Tree combine: partial sums of two chunks, the result shaped by the spec.
    let (x, xv) = f64s(&[4, 5], 10);
    let (y, yv) = f64s(&[3, 5], 11);
    let px = call("sum", vec![x, axes(&[0])]).unwrap();
    let py = call("sum", vec![y, axes(&[0])]).unwrap();
    let (shape, s) = run("sum_combine", vec![spec(DType::F64, &[5]), px, py]);
    assert_eq!(shape, vec![5]);
    let want: Vec<f64> = (0..5)
        .map(|j| {
            (0..4).map(|i| xv[i * 5 + j]).sum::<f64>() + (0..3).map(|i| yv[i * 5 + j]).sum::<f64>()
        })
        .collect();
    close(&s, &want);
}

#[test]
fn moments_combine_exactly() {
    let (x, xv) = f64s(&[4, 6], 12);
    let (y, yv) = f64s(&[7, 6], 13);
    let (z, zv) = f64s(&[1, 6], 14);
    let parts: Vec<Vec<u8>> = [x, y, z]
        .into_iter()
        .map(|c| call("moments", vec![c, axes(&[0])]).unwrap())
        .collect();
    let mut args = vec![spec(DType::F64, &[6])];
    args.extend(parts);
    let m = call("moments_combine", args).unwrap();
    for j in 0..6 {
        let column: Vec<f64> = (0..4)
            .map(|i| xv[i * 6 + j])
            .chain((0..7).map(|i| yv[i * 6 + j]))
            .chain([zv[j]])
            .collect();
        let n = column.len() as f64;
        let mean = column.iter().sum::<f64>() / n;
        let var = column.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        let var1 = var * n / (n - 1.0);
        let (_, got_mean) = run(
            "mean_finalize",
            vec![spec(DType::F64, &[6]), m.clone(), from_f64(&[], &[0.0])],
        );
        let (_, got_var) = run(
            "var_finalize",
            vec![spec(DType::F64, &[6]), m.clone(), from_f64(&[], &[0.0])],
        );
        let (_, got_std) = run(
            "std_finalize",
            vec![spec(DType::F64, &[6]), m.clone(), from_f64(&[], &[1.0])],
        );
        close(
            &[got_mean[j], got_var[j], got_std[j]],
            &[mean, var, var1.sqrt()],
        );
    }
    // All axes at once, of an int64 chunk.
    let (shape, m) = run(
        "moments",
        vec![from_i64(&[2, 2], &[1, 2, 3, 4]), axes(&[0, 1])],
    );
    assert_eq!(shape, vec![3, 1, 1]);
    assert_eq!(m, vec![4.0, 2.5, 5.0]);
}

#[test]
fn matmul_blocks() {
    for (m, k, n) in [(1, 1, 1), (5, 7, 3), (130, 300, 9), (4, 260, 1030)] {
        let (a, av) = f64s(&[m, k], 20);
        let (b, bv) = f64s(&[k, n], 21);
        let (c, cv) = f64s(&[m, n], 22);
        let mut want = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                want[i * n + j] = (0..k).map(|p| av[i * k + p] * bv[p * n + j]).sum();
            }
        }
        let (shape, got) = run("matmul", vec![a.clone(), b.clone()]);
        assert_eq!(shape, vec![m, n]);
        close(&got, &want);
        let (_, got) = run("matmul_acc", vec![c, a, b]);
        close(
            &got,
            &want.iter().zip(&cv).map(|(w, c)| w + c).collect::<Vec<_>>(),
        );
    }
    let a = from_i64(&[2, 2], &[1, 2, 3, 4]);
    assert_eq!(
        run("matmul", vec![a.clone(), a]).1,
        vec![7.0, 10.0, 15.0, 22.0]
    );
    assert!(call("matmul", vec![f64s(&[2, 3], 0).0, f64s(&[2, 3], 0).0]).is_err());
}

#[test]
fn unknown_names_and_arity() {
    assert_eq!(
        call("nope", vec![]),
        Err(CallError::UnknownFunction("nope".into()))
    );
    assert!(
        matches!(call("add", vec![vec![]]), Err(CallError::InvalidInput(m)) if m == "add takes 2 arguments, got 1")
    );
    assert!(
        matches!(call("add", vec![vec![1], vec![2]]), Err(CallError::InvalidInput(m)) if m.contains("too short"))
    );
}
