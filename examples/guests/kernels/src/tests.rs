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
    // Every element is written, element `i` from the counter `i`; an empty block has none.
    assert!(
        r.iter()
            .enumerate()
            .all(|(i, &v)| v == uniform(42, i as u64))
    );
    let (_, odd) = run(
        "random",
        vec![spec(DType::F64, &[3, 5]), from_i64(&[], &[42])],
    );
    assert_eq!(odd, r[..15], "a length that is not a multiple of eight");
    let (shape, empty) = run(
        "random",
        vec![spec(DType::F64, &[0, 3]), from_i64(&[], &[42])],
    );
    assert_eq!((shape, empty), (vec![0, 3], vec![]));
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

/// `a . b` by the definition, for `m x k` and `k x n` row-major values.
fn naive_matmul(av: &[f64], bv: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut want = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            want[i * n + j] = (0..k).map(|p| av[i * k + p] * bv[p * n + j]).sum();
        }
    }
    want
}

#[test]
fn matmul_register_tile_sums_over_every_contraction_length() {
    // The micro-kernel sums up to 64 steps of k in registers, then adds them to the tile:
    // contractions around multiples of 64 (and of KC = 256), with full and partial tiles.
    // Exact binary fractions: every sum is exact, so the result is the naive product's.
    for k in [
        1, 2, 63, 64, 65, 127, 128, 129, 191, 255, 256, 257, 320, 513,
    ] {
        for (m, n) in [(4, 4), (5, 3), (9, 10)] {
            let (a, av) = f64s(&[m, k], 43);
            let (b, bv) = f64s(&[k, n], 44);
            let (c, cv) = f64s(&[m, n], 45);
            let want = naive_matmul(&av, &bv, m, k, n);
            assert_eq!(
                run("matmul", vec![a.clone(), b.clone()]).1,
                want,
                "{m} x {k} x {n}"
            );
            let plus: Vec<f64> = want.iter().zip(&cv).map(|(w, c)| w + c).collect();
            assert_eq!(
                run("matmul_acc", vec![c, a, b]).1,
                plus,
                "{m} x {k} x {n}, acc"
            );
        }
    }
}

#[test]
fn matmul_odd_shapes_and_block_edges() {
    // Edges of the 4 x 4 register tile (m, n not multiples of 4), k = 1, and sizes one below,
    // at and one above the block sizes of the packed product (KC = 256, MC = 64, NC = 1024).
    let shapes = [
        (1, 1, 1),
        (7, 13, 5),
        (13, 7, 1),
        (1, 300, 1),
        (5, 1, 7),
        (3, 1, 1000),
        (1000, 999, 3),
        (2, 999, 1000),
        (127, 255, 1025),
        (129, 257, 6),
        (63, 20, 9),
        (65, 33, 4),
        (128, 256, 1024),
        (130, 513, 9),
        (6, 768, 10),
    ];
    for (m, k, n) in shapes {
        let (a, av) = f64s(&[m, k], 40);
        let (b, bv) = f64s(&[k, n], 41);
        let (c, cv) = f64s(&[m, n], 42);
        let want = naive_matmul(&av, &bv, m, k, n);
        let (shape, got) = run("matmul", vec![a.clone(), b.clone()]);
        assert_eq!(shape, vec![m, n], "{m} x {k} x {n}");
        close(&got, &want);
        let plus: Vec<f64> = want.iter().zip(&cv).map(|(w, c)| w + c).collect();
        let (_, got) = run("matmul_acc", vec![c.clone(), a.clone(), b.clone()]);
        close(&got, &plus);
        // Two products into c, and from a spec (zeros).
        let twice: Vec<f64> = plus.iter().zip(&want).map(|(p, w)| p + w).collect();
        let (_, got) = run(
            "matmul_sum",
            vec![c, a.clone(), b.clone(), a.clone(), b.clone()],
        );
        close(&got, &twice);
        let (shape, got) = run("matmul_sum", vec![spec(DType::F64, &[m, n]), a, b]);
        assert_eq!(shape, vec![m, n]);
        close(&got, &want);
    }
    // Empty contraction: the product is zeros, and c is unchanged.
    let (shape, got) = run("matmul", vec![f64s(&[3, 0], 0).0, f64s(&[0, 5], 0).0]);
    assert_eq!((shape, got), (vec![3, 5], vec![0.0; 15]));
    let (c, cv) = f64s(&[3, 5], 43);
    let (_, got) = run(
        "matmul_acc",
        vec![c, f64s(&[3, 0], 0).0, f64s(&[0, 5], 0).0],
    );
    assert_eq!(got, cv);
}

#[test]
fn matmul_matches_rounded_reference() {
    // Values that are not exact binary fractions: the sums differ from a naive loop only by
    // rounding.
    let (m, k, n) = (37, 301, 41);
    let av: Vec<f64> = (0..m * k)
        .map(|i| ((i * 7919) % 1000) as f64 / 997.0 - 0.5)
        .collect();
    let bv: Vec<f64> = (0..k * n)
        .map(|i| ((i * 104729) % 1000) as f64 / 991.0 - 0.5)
        .collect();
    let a = from_f64(&[m, k], &av);
    let b = from_f64(&[k, n], &bv);
    let (_, got) = run("matmul", vec![a, b]);
    close(&got, &naive_matmul(&av, &bv, m, k, n));
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

#[test]
fn matmul_sum_accumulates_pairs() {
    let (m, k1, k2, n) = (13, 7, 300, 11);
    let (a1, a1v) = f64s(&[m, k1], 30);
    let (b1, b1v) = f64s(&[k1, n], 31);
    let (a2, a2v) = f64s(&[m, k2], 32);
    let (b2, b2v) = f64s(&[k2, n], 33);
    let mut want = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            want[i * n + j] = (0..k1)
                .map(|p| a1v[i * k1 + p] * b1v[p * n + j])
                .sum::<f64>()
                + (0..k2)
                    .map(|p| a2v[i * k2 + p] * b2v[p * n + j])
                    .sum::<f64>();
        }
    }
    let pairs = vec![a1.clone(), b1.clone(), a2, b2];
    let mut args = vec![spec(DType::F64, &[m, n])];
    args.extend(pairs.clone());
    let (shape, got) = run("matmul_sum", args);
    assert_eq!(shape, vec![m, n]);
    close(&got, &want);
    let (c, cv) = f64s(&[m, n], 34);
    let mut args = vec![c];
    args.extend(pairs);
    let (_, got) = run("matmul_sum", args);
    let plus: Vec<f64> = want.iter().zip(&cv).map(|(w, c)| w + c).collect();
    close(&got, &plus);
    assert!(
        call(
            "matmul_sum",
            vec![
                spec(DType::F64, &[m, n]),
                a1.clone(),
                b1.clone(),
                a1.clone()
            ]
        )
        .is_err()
    );
    assert!(call("matmul_sum", vec![spec(DType::F64, &[m, m]), a1, b1]).is_err());
}

/// A fused program: header, maps, then instructions.
fn program(ndim: usize, reduce: i64, mask: i64, maps: &[&[i64]], code: &[i64]) -> Vec<u8> {
    let mut words = vec![1, maps.len() as i64, ndim as i64, reduce, mask];
    for m in maps {
        words.extend_from_slice(m);
    }
    words.extend_from_slice(code);
    from_i64(&[words.len()], &words)
}

#[test]
fn fused_elementwise_transpose_and_broadcast() {
    // x + x.T - row, on square blocks of several sizes (tiles cut at the edges).
    for n in [1, 5, 13, 70, 130] {
        let (x, xv) = f64s(&[n, n], 40);
        let (row, rv) = f64s(&[1, n], 41);
        let prog = program(
            2,
            0,
            0,
            &[&[0, 1], &[1, 0], &[0, 1]],
            &[1, 0, 1, 1, 10, 1, 2, 11],
        );
        let (shape, got) = run(
            "fused",
            vec![
                prog,
                spec(DType::F64, &[n, n]),
                x.clone(),
                x.clone(),
                row.clone(),
            ],
        );
        assert_eq!(shape, vec![n, n]);
        let want: Vec<f64> = (0..n * n)
            .map(|e| {
                let (i, j) = (e / n, e % n);
                xv[i * n + j] + xv[j * n + i] - rv[j]
            })
            .collect();
        close(&got, &want);
        // The same, reduced: all axes, axis 0, axis 1; sum, min, max and moments.
        let all: f64 = want.iter().sum();
        for (reduce, mask, want_shape) in [
            (1, 3, vec![1, 1]),
            (1, 1, vec![1, n]),
            (1, 2, vec![n, 1]),
            (4, 3, vec![3, 1, 1]),
            (4, 1, vec![3, 1, n]),
            (4, 2, vec![3, n, 1]),
            (2, 3, vec![1, 1]),
            (3, 1, vec![1, n]),
        ] {
            let prog = program(
                2,
                reduce,
                mask,
                &[&[0, 1], &[1, 0], &[0, 1]],
                &[1, 0, 1, 1, 10, 1, 2, 11],
            );
            let (shape, got) = run(
                "fused",
                vec![
                    prog,
                    spec(DType::F64, &[n, n]),
                    x.clone(),
                    x.clone(),
                    row.clone(),
                ],
            );
            assert_eq!(shape, want_shape, "reduce {reduce} mask {mask}");
            // Reference: group the values by their kept index.
            let groups: Vec<Vec<f64>> = match mask {
                3 => vec![want.clone()],
                1 => (0..n)
                    .map(|j| (0..n).map(|i| want[i * n + j]).collect())
                    .collect(),
                _ => (0..n).map(|i| want[i * n..(i + 1) * n].to_vec()).collect(),
            };
            let expect: Vec<f64> = match reduce {
                1 => groups.iter().map(|g| g.iter().sum()).collect(),
                2 => groups
                    .iter()
                    .map(|g| g.iter().copied().fold(f64::INFINITY, f64::min))
                    .collect(),
                3 => groups
                    .iter()
                    .map(|g| g.iter().copied().fold(f64::NEG_INFINITY, f64::max))
                    .collect(),
                _ => {
                    let c: Vec<f64> = groups.iter().map(|g| g.len() as f64).collect();
                    let m: Vec<f64> = groups
                        .iter()
                        .map(|g| g.iter().sum::<f64>() / g.len() as f64)
                        .collect();
                    let q: Vec<f64> = groups
                        .iter()
                        .zip(&m)
                        .map(|(g, m)| g.iter().map(|v| (v - m) * (v - m)).sum())
                        .collect();
                    [c, m, q].concat()
                }
            };
            close(&got, &expect);
        }
        if n == 13 {
            let (_, got) = run(
                "fused",
                vec![
                    program(
                        2,
                        1,
                        3,
                        &[&[0, 1], &[1, 0], &[0, 1]],
                        &[1, 0, 1, 1, 10, 1, 2, 11],
                    ),
                    spec(DType::F64, &[n, n]),
                    x.clone(),
                    x.clone(),
                    row.clone(),
                ],
            );
            assert!((got[0] - all).abs() < 1e-9);
        }
    }
}

#[test]
fn fused_scalars_unary_and_outer_axes() {
    // 3-D: (2 + x) * column - sqrt(|y|), with a 0-d scalar input and a constant.
    let (x, xv) = f64s(&[3, 4, 5], 50);
    let (col, cv) = f64s(&[4, 1], 51);
    let (y, yv) = f64s(&[3, 4, 5], 52);
    let (s, sv) = f64s(&[], 53);
    let two = 2.0f64.to_bits() as i64;
    let prog = program(
        3,
        0,
        0,
        &[&[0, 1, 2], &[-1, 0, 1], &[0, 1, 2], &[-1, -1, -1]],
        &[2, two, 1, 0, 10, 1, 1, 12, 1, 2, 21, 23, 11, 1, 3, 13],
    );
    let (shape, got) = run(
        "fused",
        vec![prog, spec(DType::F64, &[3, 4, 5]), x, col, y, s],
    );
    assert_eq!(shape, vec![3, 4, 5]);
    let want: Vec<f64> = (0..60)
        .map(|e| {
            let j = (e / 5) % 4;
            ((2.0 + xv[e]) * cv[j] - yv[e].abs().sqrt()) / sv[0]
        })
        .collect();
    close(&got, &want);
    // 0-d and 1-d outputs.
    let (v, vv) = f64s(&[7], 54);
    let (_, got) = run(
        "fused",
        vec![
            program(1, 1, 1, &[&[0]], &[1, 0, 22]),
            spec(DType::F64, &[7]),
            v,
        ],
    );
    close(&got, &[vv.iter().map(|x| x * x).sum()]);
    let (_, got) = run(
        "fused",
        vec![
            program(0, 0, 0, &[&[]], &[1, 0, 20]),
            spec(DType::F64, &[]),
            from_f64(&[], &[2.0]),
        ],
    );
    assert_eq!(got, vec![-2.0]);
}

#[test]
fn fused_refuses_bad_programs() {
    let (x, _) = f64s(&[2, 3], 60);
    let sp = spec(DType::F64, &[2, 3]);
    let bad = [
        program(2, 0, 0, &[&[0, 1]], &[1, 0, 10]),   // underflow
        program(2, 0, 0, &[&[0, 1]], &[1, 0, 1, 0]), // two values left
        program(2, 0, 0, &[&[0, 1]], &[1, 1]),       // no such input
        program(2, 0, 0, &[&[1, 0]], &[1, 0]),       // shape (2, 3) read as (3, 2)
        program(2, 0, 0, &[&[0, 0]], &[1, 0]),       // an axis twice
        program(2, 0, 0, &[&[0, -1]], &[1, 0]),      // axis 1 unmapped
        program(2, 9, 0, &[&[0, 1]], &[1, 0]),       // unknown reduction
        program(2, 0, 0, &[&[0, 1]], &[1, 0, 99]),   // unknown instruction
        program(3, 0, 0, &[&[0, 1, -1]], &[1, 0]),   // dimensions differ from the spec
    ];
    for prog in bad {
        assert!(call("fused", vec![prog, sp.clone(), x.clone()]).is_err());
    }
    let deep: Vec<i64> = (0..13)
        .flat_map(|_| [1, 0])
        .chain((0..12).map(|_| 10))
        .collect();
    assert!(
        call(
            "fused",
            vec![program(2, 0, 0, &[&[0, 1]], &deep), sp.clone(), x.clone()]
        )
        .is_err()
    );
    let ints = from_i64(&[2, 3], &[1, 2, 3, 4, 5, 6]);
    assert!(
        call(
            "fused",
            vec![program(2, 0, 0, &[&[0, 1]], &[1, 0]), sp, ints]
        )
        .is_err()
    );
}

#[test]
fn fused_random_inputs_match_the_random_kernel() {
    let (n, m) = (13usize, 70usize);
    let seed = 0x1234_5678_9abc_def0u64;
    let x = call(
        "random",
        vec![spec(DType::F64, &[n, m]), from_i64(&[], &[seed as i64])],
    )
    .unwrap();
    let xv = to_f64(&x).unwrap().1;
    let gen_x = from_i64(&[3], &[seed as i64, n as i64, m as i64]);
    // x.T * 2 over (m, n), from the generator and from the block: equal bit for bit.
    let two = 2.0f64.to_bits() as i64;
    let mut words = vec![2, 1, 2, 0, 0, 1, 0, 1];
    words.extend_from_slice(&[1, 0, 2, two, 12]);
    let prog = from_i64(&[words.len()], &words);
    let (shape, got) = run(
        "fused",
        vec![prog, spec(DType::F64, &[m, n]), gen_x.clone()],
    );
    assert_eq!(shape, vec![m, n]);
    let want: Vec<f64> = (0..m * n).map(|e| xv[(e % n) * m + e / n] * 2.0).collect();
    assert_eq!(got, want);
    // Mixed with a data input, and a sum along axis 0.
    let mut words = vec![2, 2, 2, 1, 1, 0, 1, 0, 1, 1, 0];
    words.extend_from_slice(&[1, 0, 1, 1, 11]);
    let prog = from_i64(&[words.len()], &words);
    let (shape, got) = run(
        "fused",
        vec![prog, spec(DType::F64, &[n, m]), gen_x.clone(), x.clone()],
    );
    assert_eq!(shape, vec![1, m]);
    assert!(got.iter().all(|&v| v == 0.0));
    let bad = from_i64(&[words.len()], &words);
    assert!(
        call(
            "fused",
            vec![bad, spec(DType::F64, &[n, m]), x.clone(), gen_x]
        )
        .is_err()
    );
}

#[test]
fn syrk_sum_is_the_symmetric_product() {
    // Edges of the register tile and of the packed blocks (KC = 256, MC = 64), and a
    // contraction of one.
    let shapes = [
        (1, 1),
        (2, 3),
        (5, 1),
        (7, 13),
        (13, 300),
        (63, 70),
        (65, 17),
        (127, 255),
        (129, 257),
        (130, 6),
        (257, 40),
    ];
    for (m, k) in shapes {
        let (a1, a1v) = f64s(&[m, k], 50);
        let (a2, a2v) = f64s(&[m, k + 3], 51);
        let a1t = call("transpose", vec![a1.clone()]).unwrap();
        let a2t = call("transpose", vec![a2.clone()]).unwrap();
        let a1tv = to_f64(&a1t).unwrap().1;
        let a2tv = to_f64(&a2t).unwrap().1;
        // One block from a spec: the full product a . a^T, bitwise what matmul_sum gives
        // (these sizes are below STRASSEN_MIN, where matmul_sum takes no Strassen step).
        let (shape, got) = run("syrk_sum", vec![spec(DType::F64, &[m, m]), a1.clone()]);
        assert_eq!(shape, vec![m, m], "{m} x {k}");
        close(&got, &naive_matmul(&a1v, &a1tv, m, k, m));
        let full = run(
            "matmul_sum",
            vec![spec(DType::F64, &[m, m]), a1.clone(), a1t.clone()],
        )
        .1;
        assert_eq!(got, full, "{m} x {k}: syrk_sum and matmul_sum differ");
        // Two blocks added to a symmetric c (the previous result): c + a1 a1^T + a2 a2^T.
        let c = from_f64(&[m, m], &got);
        let second = naive_matmul(&a2v, &a2tv, m, k + 3, m);
        let want: Vec<f64> = got
            .iter()
            .zip(naive_matmul(&a1v, &a1tv, m, k, m))
            .zip(&second)
            .map(|((c, p), q)| c + p + q)
            .collect();
        let (_, got2) = run("syrk_sum", vec![c, a1.clone(), a2.clone()]);
        close(&got2, &want);
        for i in 0..m {
            for j in 0..m {
                assert_eq!(
                    got2[i * m + j],
                    got2[j * m + i],
                    "not symmetric at {i}, {j}"
                );
            }
        }
    }
    // From STRASSEN_MIN on, matmul_sum takes Strassen-Winograd steps and syrk_sum does not:
    // they agree to rounding (values in [0, 1), relative to the sums of the non-negative
    // products).
    let (m, k) = (
        crate::matmul::STRASSEN_MIN + 6,
        crate::matmul::STRASSEN_MIN + 2,
    );
    let av: Vec<f64> = (0..m * k).map(|i| uniform(52, i as u64)).collect();
    let a = from_f64(&[m, k], &av);
    let at = call("transpose", vec![a.clone()]).unwrap();
    let got = run("syrk_sum", vec![spec(DType::F64, &[m, m]), a.clone()]).1;
    let full = run("matmul_sum", vec![spec(DType::F64, &[m, m]), a, at]).1;
    for (i, (g, f)) in got.iter().zip(&full).enumerate() {
        assert!((g - f).abs() <= 1e-12 * f, "element {i}: {g} vs {f}");
    }
    // Other dtypes take the plain loop, and the lower triangle of c is ignored.
    let a = from_i64(&[2, 3], &[1, 2, 3, 4, 5, 6]);
    let c = from_i64(&[2, 2], &[10, 20, 99, 30]);
    let out = call("syrk_sum", vec![c, a]).unwrap();
    assert_eq!(
        to_f64(&out).unwrap(),
        (vec![2, 2], vec![24.0, 52.0, 52.0, 107.0])
    );
    // Errors: no block, a non-square c, a 1-D block.
    assert!(call("syrk_sum", vec![spec(DType::F64, &[2, 2])]).is_err());
    assert!(
        call(
            "syrk_sum",
            vec![spec(DType::F64, &[2, 3]), f64s(&[2, 3], 0).0]
        )
        .is_err()
    );
    assert!(call("syrk_sum", vec![spec(DType::F64, &[2, 2]), f64s(&[2], 0).0]).is_err());
}

#[test]
fn matmul_nt_sum_takes_the_second_blocks_transposed() {
    // Edges of the register tile and of the packed blocks, odd contractions (the packing reads
    // two steps at a time), and full and partial strips of B.
    let shapes = [
        (1, 1, 1),
        (3, 1, 5),
        (7, 13, 5),
        (5, 257, 9),
        (129, 255, 130),
        (64, 300, 1025),
    ];
    for (m, k, n) in shapes {
        let (a1, a1v) = f64s(&[m, k], 60);
        let (b1, _) = f64s(&[n, k], 61);
        let (a2, a2v) = f64s(&[m, k + 1], 62);
        let (b2, _) = f64s(&[n, k + 1], 63);
        let b1t = call("transpose", vec![b1.clone()]).unwrap();
        let b2t = call("transpose", vec![b2.clone()]).unwrap();
        let (b1tv, b2tv) = (to_f64(&b1t).unwrap().1, to_f64(&b2t).unwrap().1);
        let (c, cv) = f64s(&[m, n], 64);
        let want: Vec<f64> = naive_matmul(&a1v, &b1tv, m, k, n)
            .iter()
            .zip(naive_matmul(&a2v, &b2tv, m, k + 1, n))
            .zip(&cv)
            .map(|((p, q), c)| c + p + q)
            .collect();
        let (shape, got) = run(
            "matmul_nt_sum",
            vec![c.clone(), a1.clone(), b1.clone(), a2.clone(), b2.clone()],
        );
        assert_eq!(shape, vec![m, n], "{m} x {k} x {n}");
        close(&got, &want);
        let reference = run("matmul_sum", vec![c, a1.clone(), b1t, a2, b2t]).1;
        assert_eq!(
            got, reference,
            "{m} x {k} x {n}: matmul_nt_sum and matmul_sum differ"
        );
        let (shape, _) = run("matmul_nt_sum", vec![spec(DType::F64, &[m, n]), a1, b1]);
        assert_eq!(shape, vec![m, n]);
    }
    let a = from_i64(&[2, 3], &[1, 2, 3, 4, 5, 6]);
    let b = from_i64(&[1, 3], &[1, 0, 2]);
    let out = call("matmul_nt_sum", vec![spec(DType::I64, &[2, 1]), a, b]).unwrap();
    assert_eq!(to_f64(&out).unwrap(), (vec![2, 1], vec![7.0, 16.0]));
    // The contractions must agree, and c must have the product's shape.
    let (a, b) = (f64s(&[2, 3], 0).0, f64s(&[4, 2], 0).0);
    assert!(
        call(
            "matmul_nt_sum",
            vec![spec(DType::F64, &[2, 4]), a.clone(), b]
        )
        .is_err()
    );
    let b = f64s(&[4, 3], 0).0;
    assert!(call("matmul_nt_sum", vec![spec(DType::F64, &[4, 2]), a, b]).is_err());
}

#[test]
fn products_generate_random_operands_from_their_seeds() {
    // [seed, rows, cols] stands for the block `random` makes from that seed.
    let seeded =
        |seed: i64, rows: usize, cols: usize| from_i64(&[3], &[seed, rows as i64, cols as i64]);
    let block = |seed: i64, rows: usize, cols: usize| {
        call(
            "random",
            vec![spec(DType::F64, &[rows, cols]), from_i64(&[], &[seed])],
        )
        .unwrap()
    };
    let (m, k, n) = (9, 300, 7);
    let stored = run(
        "matmul_nt_sum",
        vec![spec(DType::F64, &[m, n]), block(3, m, k), block(4, n, k)],
    );
    let generated = run(
        "matmul_nt_sum",
        vec![spec(DType::F64, &[m, n]), seeded(3, m, k), seeded(4, n, k)],
    );
    assert_eq!(stored, generated);
    let mixed = run(
        "matmul_nt_sum",
        vec![spec(DType::F64, &[m, n]), block(3, m, k), seeded(4, n, k)],
    );
    assert_eq!(stored, mixed);
    let stored = run(
        "syrk_sum",
        vec![spec(DType::F64, &[m, m]), block(5, m, k), block(6, m, 2)],
    );
    let generated = run(
        "syrk_sum",
        vec![spec(DType::F64, &[m, m]), seeded(5, m, k), seeded(6, m, 2)],
    );
    assert_eq!(stored, generated);
    // A generator is three int64 words, not negative sizes.
    assert!(
        call(
            "syrk_sum",
            vec![spec(DType::F64, &[2, 2]), from_i64(&[2], &[1, 2])]
        )
        .is_err()
    );
    assert!(
        call(
            "syrk_sum",
            vec![spec(DType::F64, &[2, 2]), from_i64(&[3], &[1, -2, 2])]
        )
        .is_err()
    );
}

/// Raw little-endian bytes of float64 values (the data of a chunk, without its header).
fn f64_bytes(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn from_f64_bytes(bytes: &[u8]) -> Vec<f64> {
    bytes
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[test]
fn strassen_products_match_the_plain_product() {
    use crate::matmul::{strassen_levels, strassen_product};
    // (m, k, n, smallest dimension split, levels): no split, one, two and three levels, odd
    // dimensions peeled at the top or below it, and every dimension odd.
    let cases = [
        (12, 10, 14, 100, 0),
        (12, 10, 14, 8, 1),
        (48, 64, 40, 24, 1),
        (48, 64, 40, 16, 2),
        (64, 64, 64, 16, 3),
        (37, 29, 41, 8, 2),
        (33, 50, 19, 4, 3),
        (50, 33, 19, 4, 3),
        (21, 22, 67, 5, 3),
        (130, 129, 131, 64, 2),
        (9, 9, 9, 2, 3),
    ];
    for (m, k, n, min, levels) in cases {
        assert_eq!(strassen_levels(m, k, n, min), levels, "{m} x {k} x {n}");
        let what = format!("{m} x {k} x {n}, {levels} levels");
        // Exact binary fractions (every sum exact): the same values as the plain product,
        // to the bit, so the algebra is checked exactly. Then values in [0, 1) against the
        // naive product in a relative 1e-12 of the sum of the products' magnitudes.
        for exact in [true, false] {
            let values = |len: usize, seed: u64| -> Vec<f64> {
                if exact {
                    f64s(&[len], seed).1
                } else {
                    (0..len).map(|i| uniform(seed, i as u64)).collect()
                }
            };
            let (av, bv, cv) = (values(m * k, 70), values(k * n, 71), values(m * n, 72));
            let btv: Vec<f64> = (0..n * k).map(|i| bv[(i % k) * n + i / k]).collect();
            let mut want = f64_bytes(&cv);
            strassen_product(
                &mut want,
                &f64_bytes(&av),
                &f64_bytes(&bv),
                false,
                (m, k, n),
                usize::MAX,
            );
            let want = from_f64_bytes(&want);
            for transposed in [false, true] {
                let mut got = f64_bytes(&cv);
                let b = if transposed {
                    f64_bytes(&btv)
                } else {
                    f64_bytes(&bv)
                };
                strassen_product(&mut got, &f64_bytes(&av), &b, transposed, (m, k, n), min);
                let got = from_f64_bytes(&got);
                if exact {
                    assert_eq!(got, want, "{what}, exact values, transposed {transposed}");
                } else {
                    let naive = naive_matmul(&av, &bv, m, k, n);
                    for (i, (g, (w, c))) in got.iter().zip(naive.iter().zip(&cv)).enumerate() {
                        // The products are non-negative: their sum bounds the error's scale.
                        let scale = c.abs() + w.abs();
                        assert!(
                            (g - (c + w)).abs() <= 1e-12 * scale,
                            "{what}, transposed {transposed}, element {i}: {g} vs {}",
                            c + w
                        );
                    }
                }
            }
        }
    }
}
