//! The kernels module run through the sandboxed runtime, compared with ndarray.

use std::time::Instant;

use anyhow::Result;
use ndarray::{ArrayD, Axis, IxDyn};
use taskhost_array::chunk::{self, DType};
use taskhost_runtime::{Limits, ModuleId, Runtime, RuntimeConfig};

struct Kernels {
    _dir: tempfile::TempDir,
    runtime: Runtime,
    id: ModuleId,
    limits: Limits,
}

impl Kernels {
    fn new() -> Result<Self> {
        Self::with_fuel(false)
    }

    /// `fuel`: whether the calls set a fuel limit (of `u64::MAX`), which makes them run on
    /// code compiled with fuel metering; without one they run on code compiled without it.
    fn with_fuel(fuel: bool) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        // TASKHOST_KERNELS_DATA keeps the runtime's data (and the compiled `.cwasm` artifacts,
        // for reading the generated code with `objdump -d`) in that directory.
        let data = match std::env::var_os("TASKHOST_KERNELS_DATA") {
            Some(path) => std::path::PathBuf::from(path),
            None => dir.path().to_owned(),
        };
        let runtime = Runtime::new(RuntimeConfig::new(data))?;
        // TASKHOST_KERNELS_WASM swaps in another build (e.g. without SIMD) for the timings.
        let bytes = match std::env::var("TASKHOST_KERNELS_WASM") {
            Ok(path) => std::fs::read(path)?,
            Err(_) => taskhost_array::KERNELS_WASM.to_vec(),
        };
        let id = runtime.put(&bytes)?;
        let limits = Limits {
            fuel: fuel.then_some(u64::MAX),
            ..Limits::default()
        };
        Ok(Kernels {
            _dir: dir,
            runtime,
            id,
            limits,
        })
    }

    fn call(&self, name: &str, args: &[&[u8]]) -> Result<Vec<u8>> {
        Ok(self.runtime.execute(&self.id, name, args, &self.limits)?)
    }

    fn f64(&self, name: &str, args: &[&[u8]]) -> Result<ArrayD<f64>> {
        Ok(chunk::decode_f64(&self.call(name, args)?)?)
    }
}

fn random(k: &Kernels, shape: &[usize], seed: i64) -> Result<(Vec<u8>, ArrayD<f64>)> {
    let bytes = k.call(
        "random",
        &[&chunk::spec(DType::F64, shape), &chunk::scalar_i64(seed)],
    )?;
    let array = chunk::decode_f64(&bytes)?;
    Ok((bytes, array))
}

fn assert_close(got: &ArrayD<f64>, want: &ArrayD<f64>, tol: f64) {
    assert_eq!(got.shape(), want.shape());
    for (g, w) in got.iter().zip(want.iter()) {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{g} vs {w}");
    }
}

#[test]
fn kernels_match_ndarray_through_the_runtime() -> Result<()> {
    let k = Kernels::new()?;
    let names: Vec<String> = k
        .runtime
        .describe(&k.id)?
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert!(names.iter().any(|n| n == "matmul_acc"), "{names:?}");

    let (xb, x) = random(&k, &[37, 53], 7)?;
    // Every element is bitwise the client's `uniform`, also for a negative seed (counters
    // that wrap around).
    for (i, v) in x.iter().enumerate() {
        assert_eq!(
            v.to_bits(),
            chunk::uniform(7, i as u64).to_bits(),
            "element {i}"
        );
    }
    let (_, wrapped) = random(&k, &[3, 5], -3)?;
    for (i, v) in wrapped.iter().enumerate() {
        assert_eq!(
            v.to_bits(),
            chunk::uniform(-3i64 as u64, i as u64).to_bits()
        );
    }
    let (yb, y) = random(&k, &[53, 37], 8)?;
    let tol = 1e-12;

    // Elementwise with a transposed block, a row vector and a scalar.
    let yt = k.call("transpose", &[&yb])?;
    assert_close(&chunk::decode_f64(&yt)?, &y.t().to_owned(), 0.0);
    assert_close(&k.f64("add", &[&xb, &yt])?, &(&x + &y.t()), tol);
    let row = chunk::encode_f64(&x.index_axis(Axis(0), 0).to_owned());
    assert_close(
        &k.f64("sub", &[&xb, &row])?,
        &(&x - &x.index_axis(Axis(0), 0)),
        tol,
    );
    assert_close(
        &k.f64("div", &[&chunk::scalar_f64(2.0), &xb])?,
        &x.mapv(|v| 2.0 / v),
        tol,
    );

    // Reductions.
    let sum0 = k.f64("sum", &[&xb, &chunk::i64s(&[1], &[0])])?;
    assert_close(&sum0, &x.sum_axis(Axis(0)).insert_axis(Axis(0)), 1e-12);
    let all = k.f64("sum", &[&xb, &chunk::i64s(&[2], &[0, 1])])?;
    assert!((all[[0, 0]] - x.sum()).abs() < 1e-9);
    let max = k.f64("max", &[&xb, &chunk::i64s(&[1], &[1])])?;
    let want = x
        .map_axis(Axis(1), |r| r.fold(f64::MIN, |a, &b| a.max(b)))
        .insert_axis(Axis(1));
    assert_close(&max, &want, 0.0);
    let m1 = k.call("moments", &[&xb, &chunk::i64s(&[2], &[0, 1])])?;
    let m2 = k.call("moments", &[&yb, &chunk::i64s(&[2], &[0, 1])])?;
    let both = k.call(
        "moments_combine",
        &[&chunk::spec(DType::F64, &[]), &m1, &m2],
    )?;
    let std = k.f64(
        "std_finalize",
        &[
            &chunk::spec(DType::F64, &[]),
            &both,
            &chunk::scalar_f64(0.0),
        ],
    )?;
    let all_values: Vec<f64> = x.iter().chain(y.iter()).copied().collect();
    let n = all_values.len() as f64;
    let mean = all_values.iter().sum::<f64>() / n;
    let want_std = (all_values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    assert!(
        (std[[]] - want_std).abs() < 1e-12,
        "{} vs {want_std}",
        std[[]]
    );

    // Matrix products.
    let x2 = x.clone().into_dimensionality::<ndarray::Ix2>()?;
    let y2 = y.clone().into_dimensionality::<ndarray::Ix2>()?;
    let want = x2.dot(&y2).into_dyn();
    assert_close(&k.f64("matmul", &[&xb, &yb])?, &want, 1e-12);
    let c = k.call("matmul", &[&xb, &yb])?;
    assert_close(
        &k.f64("matmul_acc", &[&c, &xb, &yb])?,
        &(&want * 2.0),
        1e-12,
    );
    // x . y with y given as its transpose.
    let nt = k.f64(
        "matmul_nt_sum",
        &[&chunk::spec(DType::F64, &[37, 37]), &xb, &yt],
    )?;
    assert_close(&nt, &want, 1e-12);
    // The symmetric product x . x^T + y^T . y (upper triangle computed, lower mirrored).
    let gram = (x2.dot(&x2.t()) + y2.t().dot(&y2)).into_dyn();
    let m = x2.nrows();
    let syrk = k.f64("syrk_sum", &[&chunk::spec(DType::F64, &[m, m]), &xb, &yt])?;
    assert_close(&syrk, &gram, 1e-12);
    assert_eq!(syrk, syrk.t(), "syrk_sum is not symmetric");

    // Slicing and creation.
    let sliced = k.f64(
        "slice",
        &[&xb, &chunk::i64s(&[2, 3], &[3, 10, 1, 0, 53, 2])],
    )?;
    assert_close(
        &sliced,
        &x.slice(ndarray::s![3..10, 0..53;2]).to_owned().into_dyn(),
        0.0,
    );
    let full = k.f64(
        "full",
        &[&chunk::spec(DType::F64, &[2, 2]), &chunk::scalar_f64(3.5)],
    )?;
    assert_close(&full, &ArrayD::from_elem(IxDyn(&[2, 2]), 3.5), 0.0);
    let bad = k.call("add", &[&xb, &yb]).unwrap_err().to_string();
    assert!(bad.contains("broadcast"), "{bad}");
    Ok(())
}

/// The CPU time this thread has run, in milliseconds (Linux: `/proc/thread-self/schedstat`),
/// which other processes on a shared machine inflate far less than wall time.
fn thread_cpu_ms() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e6)
}

/// A fused program (see `examples/guests/kernels/src/fused.rs`): version, inputs, ndim,
/// reduction, mask, one map per input, instructions.
fn program(ndim: usize, reduce: i64, mask: i64, maps: &[&[i64]], code: &[i64]) -> Vec<u8> {
    let mut words = vec![1, maps.len() as i64, ndim as i64, reduce, mask];
    for m in maps {
        words.extend_from_slice(m);
    }
    words.extend_from_slice(code);
    chunk::i64s(&[words.len()], &words)
}

/// Prints the time of each kernel on 1000 x 1000 float64 blocks (the best of several runs, as
/// the machine is shared) and the mean CPU time of this thread, for calls with a fuel limit
/// (code compiled with fuel metering) and without (as array tasks run: no metering):
/// `cargo test -p taskhost-array --release --test kernels_runtime -- --ignored --nocapture`.
#[test]
#[ignore]
fn kernel_timings() -> Result<()> {
    let fuel = Kernels::with_fuel(true)?;
    let nofuel = Kernels::with_fuel(false)?;
    let k = &fuel;
    // TASKHOST_KERNEL_N: another block size (n x n blocks).
    let n = std::env::var("TASKHOST_KERNEL_N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let (xb, _) = random(k, &[n, n], 1)?;
    let (yb, _) = random(k, &[n, n], 2)?;
    let row = k.call("sum", &[&xb, &chunk::i64s(&[1], &[0])])?;
    let spec = chunk::spec(DType::F64, &[n, n]);
    let seed = chunk::scalar_i64(3);
    let axes0 = chunk::i64s(&[1], &[0]);
    let axes_all = chunk::i64s(&[2], &[0, 1]);
    let one = chunk::scalar_f64(1.0);
    // x + x.T - row, and its sum: the seed's first expression, per block.
    let maps: &[&[i64]] = &[&[0, 1], &[1, 0], &[-1, 0]];
    let code = [1, 0, 1, 1, 10, 1, 2, 11];
    let row1 = chunk::encode_f64(&chunk::decode_f64(&row)?.into_shape_with_order(IxDyn(&[n]))?);
    let fused_map = program(2, 0, 0, maps, &code);
    let fused_sum = program(2, 1, 3, maps, &code);
    // The same with x recomputed from its seed (program version 2: inputs 0 and 1 random).
    let gen_sum = {
        let mut w: Vec<i64> = vec![2, 3, 2, 1, 3];
        for m in maps {
            w.extend_from_slice(m);
        }
        w.extend_from_slice(&[1, 1, 0]);
        w.extend_from_slice(&code);
        chunk::i64s(&[w.len()], &w)
    };
    let gen_x = chunk::i64s(&[3], &[1, n as i64, n as i64]);
    // x.T + 1 (the matmul's B operand) and moments(x - m).
    let plus = program(2, 0, 0, &[&[1, 0]], &[2, 1f64.to_bits() as i64, 1, 0, 10]);
    let centred = program(2, 4, 3, &[&[0, 1], &[-1, -1]], &[1, 0, 1, 1, 11]);
    let pairs: Vec<&[u8]> = vec![&spec, &xb, &yb, &yb, &xb];
    let (xt, yt) = (k.call("transpose", &[&xb])?, k.call("transpose", &[&yb])?);
    let sym_pairs: Vec<&[u8]> = vec![&spec, &xb, &xt, &yb, &yt];
    let mut nt8: Vec<&[u8]> = vec![&spec];
    for _ in 0..8 {
        nt8.extend([&xb[..], &yb[..]]);
    }
    let cases: Vec<(&str, &str, Vec<&[u8]>)> = vec![
        ("echo-sized noop: ones", "ones", vec![&spec]),
        ("random", "random", vec![&spec, &seed]),
        ("transpose", "transpose", vec![&xb]),
        ("add", "add", vec![&xb, &yb]),
        ("add scalar", "add", vec![&xb, &one]),
        ("sub row vector", "sub", vec![&xb, &row]),
        ("sum all", "sum", vec![&xb, &axes_all]),
        ("sum axis 0", "sum", vec![&xb, &axes0]),
        ("moments all", "moments", vec![&xb, &axes_all]),
        (
            "fused x+x.T-r",
            "fused",
            vec![&fused_map, &spec, &xb, &xb, &row1],
        ),
        (
            "fused sum(x+x.T-r)",
            "fused",
            vec![&fused_sum, &spec, &xb, &xb, &row1],
        ),
        (
            "fused sum from seeds",
            "fused",
            vec![&gen_sum, &spec, &gen_x, &gen_x, &row1],
        ),
        ("fused x.T+1", "fused", vec![&plus, &spec, &xb]),
        (
            "fused moments(x-m)",
            "fused",
            vec![&centred, &spec, &xb, &one],
        ),
        ("matmul", "matmul", vec![&xb, &yb]),
        ("matmul_sum 2 pairs", "matmul_sum", pairs),
        ("matmul_sum x.x^T + y.y^T", "matmul_sum", sym_pairs),
        (
            "matmul_nt_sum x.x^T + y.y^T",
            "matmul_nt_sum",
            vec![&spec, &xb, &xb, &yb, &yb],
        ),
        ("syrk_sum x.x^T + y.y^T", "syrk_sum", vec![&spec, &xb, &yb]),
        // A task's worth: 8 products (x . y^T each), as expression 2's tasks fold.
        ("matmul_nt_sum 8 x.y^T", "matmul_nt_sum", nt8),
    ];
    // Whether the engine lowers `f64x2.relaxed_madd` to a fused multiply-add: the product
    // (1 + 2^-30)(1 - 2^-30) = 1 - 2^-60, added to -1 by the micro-kernel's second step, is
    // -2^-60 when fused and 0 when the product is rounded first.
    let e = 2f64.powi(-30);
    let a = chunk::encode_f64(&ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![1.0, 1.0 + e])?);
    let b = chunk::encode_f64(&ArrayD::from_shape_vec(
        IxDyn(&[2, 1]),
        vec![-1.0, 1.0 - e],
    )?);
    let fma = k.f64("matmul", &[&a, &b])?[[0, 0]];
    println!(
        "relaxed_madd lowered to a fused multiply-add: {}",
        fma != 0.0
    );
    println!(
        "{:>24}  {:>11}  {:>11}  {:>11}",
        "kernel", "wall", "CPU", "CPU no fuel"
    );
    // TASKHOST_KERNEL_TIMINGS=matmul times only the kernels whose name contains that.
    let only = std::env::var("TASKHOST_KERNEL_TIMINGS").unwrap_or_default();
    for (label, name, args) in cases {
        if !name.contains(only.as_str()) {
            continue;
        }
        let runs = if name.contains("mm") || name.contains("syrk") {
            3
        } else {
            7
        };
        let mut best = Vec::new();
        for k in [&fuel, &nofuel] {
            let (mut wall, mut cpu, mut n) = (None::<f64>, Some(0.0), 0.0);
            for _ in 0..runs {
                let (start, start_cpu) = (Instant::now(), thread_cpu_ms());
                // A kernel an older build (TASKHOST_KERNELS_WASM) lacks is skipped.
                if k.call(name, &args).is_err() {
                    break;
                }
                let w = start.elapsed().as_secs_f64() * 1e3;
                wall = Some(wall.map_or(w, |b| b.min(w)));
                // CPU time is counted in scheduler ticks: the mean over the runs.
                cpu = match (cpu, start_cpu, thread_cpu_ms()) {
                    (Some(c), Some(a), Some(b)) => Some(c + b - a),
                    _ => None,
                };
                n += 1.0;
            }
            best.push((wall, cpu.filter(|_| n > 0.0).map(|c| c / n)));
        }
        let show = |t: Option<f64>| t.map_or("      -    ".to_owned(), |t| format!("{t:8.2} ms"));
        println!(
            "{label:>24}: {}  {}  {}",
            show(best[0].0),
            show(best[0].1),
            show(best[1].1)
        );
    }
    Ok(())
}
