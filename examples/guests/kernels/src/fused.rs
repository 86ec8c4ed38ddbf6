//! Blockwise fusion: one kernel evaluates a chain of elementwise operations over several input
//! blocks (each transposed and/or broadcast as the expression needs) and, optionally, the first
//! stage of a reduction of the result, without materialising any intermediate block.
//!
//! `fused(program, spec, in_0, ..., in_{n-1})`: `spec` gives the shape the expression is
//! evaluated over (float64); `program` is an int64 list:
//!
//! ```text
//! [2 (version), n_inputs, ndim, reduce, reduce_mask,
//!  map of input 0: ndim entries, map of input 1, ...,
//!  kind of input 0, kind of input 1, ...,            (version 2; version 1 has none: all 0)
//!  instructions...]
//! ```
//!
//! - An input of kind 0 is a float64 chunk. An input of kind 1 is a random block that is never
//!   materialised: the argument is an int64 list `[seed, shape...]` and element `i` (row-major
//!   within that shape) is what the `random` kernel would put there, `uniform(seed, i)`; so an
//!   expression over a random array recomputes its values instead of moving 8 MB blocks.
//! - `map[o]` is the axis of the input that runs along output axis `o`, or -1: the input is
//!   broadcast along `o`. Every input axis appears at most once; axes not mapped must have
//!   length 1, and a mapped axis has the output's length or 1 (stretched). A transposed 2-D
//!   block has the map `[1, 0]`, a row vector of a 2-D result `[-1, 0]`.
//! - `reduce`: 0 none (the result has the spec's shape), 1 sum, 2 min, 3 max, 4 moments, over
//!   the output axes whose bit is set in `reduce_mask` (bit `o` for axis `o`), with the same
//!   result shapes as the `sum`/`min`/`max`/`moments` kernels (reduced axes kept with length 1;
//!   moments `[3] + kept`).
//! - Instructions, a stack machine over whole tiles: `1 i` pushes input `i`; `2 bits` pushes
//!   the float64 whose bit pattern is `bits`; `10..=16` pop b, pop a, push `a op b` for add,
//!   sub, mul, div, minimum, maximum, pow; `20..=27` replace the top with neg, abs, square,
//!   sqrt, exp, log, sin, cos of it. The program must leave exactly one value.
//!
//! The output is walked in tiles of `TR x TC` elements over its last two axes, small enough
//! that the whole stack of tiles stays in the L1 cache.

use crate::bail;
use crate::chunk::{self, DType, Meta, Result, parse, parse_spec, strides};
use crate::elem::Elem;
use taskhost_array_format::fused;

macro_rules! simd_fn {
    ($(#[$meta:meta])* fn $($rest:tt)*) => {
        $(#[$meta])*
        #[cfg_attr(all(target_arch = "wasm32", not(feature = "scalar")), target_feature(enable = "simd128"))]
        fn $($rest)*
    };
}

/// Rows of a tile.
const TR: usize = 8;
/// Columns of a tile.
const TC: usize = 64;
/// Elements of a tile.
const TILE: usize = TR * TC;
/// The deepest stack a program may use.
pub const MAX_STACK: usize = 12;
/// The most inputs a program may read.
pub const MAX_INPUTS: usize = 64;

/// An instruction of a fused program.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ins {
    Input(usize),
    Const(f64),
    Bin(u8),
    Un(u8),
}

/// What a fused kernel does with the evaluated values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reduce {
    None,
    Sum,
    Min,
    Max,
    Moments,
}

struct Program {
    maps: Vec<Vec<i64>>,
    /// Per input: 0 a data chunk, 1 a random generator (see the module documentation).
    kinds: Vec<i64>,
    code: Vec<Ins>,
    reduce: Reduce,
    mask: Vec<bool>,
}

fn parse_program(bytes: &[u8]) -> Result<Program> {
    let words = chunk::to_i64_list(bytes, "fused: program")?;
    let get = |i: usize| -> Result<i64> {
        match words.get(i) {
            Some(&w) => Ok(w),
            None => bail!("fused: program cut short at word {i}"),
        }
    };
    let version = get(0)?;
    if version != 1 && version != fused::VERSION {
        bail!(
            "fused: program version {version} (1 or {} expected)",
            fused::VERSION
        );
    }
    let n_inputs = get(1)?;
    let ndim = get(2)?;
    if !(0..=MAX_INPUTS as i64).contains(&n_inputs) || !(0..=chunk::MAX_NDIM as i64).contains(&ndim)
    {
        bail!("fused: {n_inputs} inputs of {ndim} dimensions are out of range");
    }
    let (n_inputs, ndim) = (n_inputs as usize, ndim as usize);
    let reduce = match get(3)? {
        fused::REDUCE_NONE => Reduce::None,
        fused::REDUCE_SUM => Reduce::Sum,
        fused::REDUCE_MIN => Reduce::Min,
        fused::REDUCE_MAX => Reduce::Max,
        fused::REDUCE_MOMENTS => Reduce::Moments,
        other => bail!("fused: unknown reduction {other}"),
    };
    let bits = get(4)?;
    let mask: Vec<bool> = (0..ndim).map(|o| bits >> o & 1 == 1).collect();
    let mut at = 5;
    let mut maps = Vec::with_capacity(n_inputs);
    for _ in 0..n_inputs {
        let mut map = Vec::with_capacity(ndim);
        for _ in 0..ndim {
            map.push(get(at)?);
            at += 1;
        }
        maps.push(map);
    }
    let mut kinds = vec![0; n_inputs];
    if version >= 2 {
        for kind in &mut kinds {
            *kind = get(at)?;
            at += 1;
            if *kind != fused::INPUT_DATA && *kind != fused::INPUT_RANDOM {
                bail!("fused: unknown input kind {kind}");
            }
        }
    }
    let mut code = Vec::new();
    let mut depth = 0usize;
    let mut max_depth = 0usize;
    while at < words.len() {
        let op = words[at];
        at += 1;
        let ins = match op {
            fused::INPUT => {
                let i = get(at)?;
                at += 1;
                if i < 0 || i as usize >= n_inputs {
                    bail!("fused: input {i} of {n_inputs}");
                }
                Ins::Input(i as usize)
            }
            fused::CONST => {
                let v = get(at)?;
                at += 1;
                Ins::Const(f64::from_bits(v as u64))
            }
            op if fused::is_binary(op) => Ins::Bin(op as u8),
            op if fused::is_unary(op) => Ins::Un(op as u8),
            other => bail!("fused: unknown instruction {other}"),
        };
        match ins {
            Ins::Input(_) | Ins::Const(_) => depth += 1,
            Ins::Bin(_) => {
                if depth < 2 {
                    bail!("fused: stack underflow");
                }
                depth -= 1;
            }
            Ins::Un(_) => {
                if depth < 1 {
                    bail!("fused: stack underflow");
                }
            }
        }
        max_depth = max_depth.max(depth);
        if max_depth > MAX_STACK {
            bail!("fused: the program needs more than {MAX_STACK} stack slots");
        }
        code.push(ins);
    }
    if depth != 1 {
        bail!("fused: the program leaves {depth} values (1 expected)");
    }
    Ok(Program {
        maps,
        kinds,
        code,
        reduce,
        mask,
    })
}

/// One input: its data (or random generator) and its strides along the output's axes (0
/// where broadcast).
struct Input<'a> {
    data: &'a [u8],
    /// The seed of a random input, whose element `i` (row-major) is `uniform(seed, i)`.
    seed: Option<u64>,
    strides: Vec<usize>,
}

/// Reads a random generator input: an int64 list `[seed, shape...]`.
fn generator(bytes: &[u8], k: usize) -> Result<(Meta, u64)> {
    let words = chunk::to_i64_list(bytes, "fused: random input")?;
    let Some((&seed, dims)) = words.split_first() else {
        bail!("fused: random input {k} is empty");
    };
    if dims.len() > chunk::MAX_NDIM || dims.iter().any(|&d| d < 0) {
        bail!("fused: random input {k} has a bad shape {dims:?}");
    }
    let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
    Ok((Meta::new(DType::F64, &shape), seed as u64))
}

/// `fused(program, spec, inputs...)`: see the module documentation.
pub fn fused(program: &[u8], spec: &[u8], inputs: Vec<Vec<u8>>) -> Result<Vec<u8>> {
    let prog = parse_program(program)?;
    let out = parse_spec(spec, "fused: spec")?;
    let ndim = out.ndim();
    if ndim != prog.mask.len() {
        bail!(
            "fused: the program is for {} dimensions, the spec has {ndim}",
            prog.mask.len()
        );
    }
    if inputs.len() != prog.maps.len() {
        bail!(
            "fused: the program reads {} inputs, {} were given",
            prog.maps.len(),
            inputs.len()
        );
    }
    let mut ins = Vec::with_capacity(inputs.len());
    for (k, (bytes, map)) in inputs.iter().zip(&prog.maps).enumerate() {
        let (meta, at, seed) = if prog.kinds[k] == fused::INPUT_RANDOM {
            let (meta, seed) = generator(bytes, k)?;
            (meta, bytes.len(), Some(seed))
        } else {
            let (meta, at) = parse(bytes, "fused: input")?;
            (meta, at, None)
        };
        if meta.dtype != DType::F64 {
            bail!(
                "fused: input {k} is {}, float64 expected",
                meta.dtype.name()
            );
        }
        let own = strides(&meta.shape);
        let mut used = vec![false; meta.ndim()];
        let mut st = vec![0usize; ndim];
        for (o, &a) in map.iter().enumerate() {
            if a < 0 {
                continue;
            }
            let a = a as usize;
            if a >= meta.ndim() || used[a] {
                bail!(
                    "fused: input {k}: map {map:?} does not fit shape {:?}",
                    meta.shape
                );
            }
            used[a] = true;
            let len = meta.shape[a];
            if len != 1 && len != out.shape[o] {
                bail!(
                    "fused: input {k} of shape {:?} does not broadcast to {:?} (map {map:?})",
                    meta.shape,
                    out.shape
                );
            }
            st[o] = if len == 1 { 0 } else { own[a] };
        }
        for (a, &u) in used.iter().enumerate() {
            if !u && meta.shape[a] != 1 {
                bail!(
                    "fused: input {k}: axis {a} of length {} is not mapped",
                    meta.shape[a]
                );
            }
        }
        ins.push(Input {
            data: &bytes[at..],
            seed,
            strides: st,
        });
    }
    eval(&prog, &out, &ins)
}

/// The result chunk and its accumulators.
struct Sink {
    reduce: Reduce,
    /// Strides of the kept (reduced axes of length 1) shape, 0 along reduced axes.
    kstr: Vec<usize>,
    /// The values (no reduction), or sums/minima/maxima, or the means of moments.
    acc: Vec<f64>,
    /// Moments: counts and M2.
    count: Vec<f64>,
    m2: Vec<f64>,
}

fn eval(prog: &Program, out: &Meta, ins: &[Input<'_>]) -> Result<Vec<u8>> {
    let ndim = out.ndim();
    let shape = &out.shape;
    let reduce = prog.reduce;
    let mask: Vec<bool> = if reduce == Reduce::None {
        vec![false; ndim]
    } else {
        prog.mask.clone()
    };
    let kept: Vec<usize> = shape
        .iter()
        .zip(&mask)
        .map(|(&d, &r)| if r { 1 } else { d })
        .collect();
    let kown = strides(&kept);
    let kstr: Vec<usize> = (0..ndim)
        .map(|o| if mask[o] { 0 } else { kown[o] })
        .collect();
    let klen: usize = kept.iter().product();
    let init = match reduce {
        Reduce::Min => f64::INFINITY,
        Reduce::Max => f64::NEG_INFINITY,
        _ => 0.0,
    };
    let moments = reduce == Reduce::Moments;
    let mut sink = Sink {
        reduce,
        kstr,
        acc: vec![init; klen],
        count: if moments { vec![0.0; klen] } else { Vec::new() },
        m2: if moments { vec![0.0; klen] } else { Vec::new() },
    };
    if !out.is_empty() {
        walk(prog, shape, ins, &mut sink);
    }
    // Assemble the result chunk.
    let meta = if moments {
        let mut s = vec![3];
        s.extend_from_slice(&kept);
        Meta::new(DType::F64, &s)
    } else {
        Meta::new(DType::F64, &kept)
    };
    let mut bytes = Vec::with_capacity(meta.header_len() + meta.data_len());
    meta.write_header(&mut bytes);
    if moments {
        extend_f64(&mut bytes, &sink.count);
    }
    extend_f64(&mut bytes, &sink.acc);
    if moments {
        extend_f64(&mut bytes, &sink.m2);
    }
    Ok(bytes)
}

simd_fn! {
    fn extend_f64(out: &mut Vec<u8>, values: &[f64]) {
        let at = out.len();
        out.resize(at + values.len() * 8, 0);
        for (d, v) in out[at..].chunks_exact_mut(8).zip(values) {
            v.store(d);
        }
    }
}

/// Walks the output in tiles over its last two axes (the outer axes one index at a time).
fn walk(prog: &Program, shape: &[usize], ins: &[Input<'_>], sink: &mut Sink) {
    let ndim = shape.len();
    let (rows, cols) = match ndim {
        0 => (1, 1),
        1 => (1, shape[0]),
        _ => (shape[ndim - 2], shape[ndim - 1]),
    };
    let outer_axes = ndim.saturating_sub(2);
    let outer: usize = shape[..outer_axes].iter().product();
    // Strides along the tiled axes: (row, col) for each input and for the sink.
    let rc = |st: &[usize]| -> (usize, usize) {
        match ndim {
            0 => (0, 0),
            1 => (0, st[0]),
            _ => (st[ndim - 2], st[ndim - 1]),
        }
    };
    let in_rc: Vec<(usize, usize)> = ins.iter().map(|i| rc(&i.strides)).collect();
    let k_rc = rc(&sink.kstr);
    let mut stack = vec![0.0f64; MAX_STACK * TILE];
    let mut index = vec![0usize; outer_axes];
    let mut bases = vec![0usize; ins.len()];
    let mut kbase = 0usize;
    for _ in 0..outer {
        for i0 in (0..rows).step_by(TR) {
            let tr = TR.min(rows - i0);
            for j0 in (0..cols).step_by(TC) {
                let tc = TC.min(cols - j0);
                run_tile(prog, ins, &bases, &in_rc, i0, j0, tr, tc, &mut stack);
                sink.take(&stack[..TILE], kbase, k_rc, i0, j0, tr, tc);
            }
        }
        // The next outer index.
        for axis in (0..outer_axes).rev() {
            index[axis] += 1;
            for (b, i) in bases.iter_mut().zip(ins) {
                *b += i.strides[axis];
            }
            kbase += sink.kstr[axis];
            if index[axis] < shape[axis] {
                break;
            }
            for (b, i) in bases.iter_mut().zip(ins) {
                *b -= i.strides[axis] * index[axis];
            }
            kbase -= sink.kstr[axis] * index[axis];
            index[axis] = 0;
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run_tile(
    prog: &Program,
    ins: &[Input<'_>],
    bases: &[usize],
    in_rc: &[(usize, usize)],
    i0: usize,
    j0: usize,
    tr: usize,
    tc: usize,
    stack: &mut [f64],
) {
    let mut sp = 0usize;
    for ins_ in &prog.code {
        match *ins_ {
            Ins::Input(k) => {
                let slot = &mut stack[sp * TILE..(sp + 1) * TILE];
                let (rs, cs) = in_rc[k];
                let base = bases[k] + i0 * rs + j0 * cs;
                match ins[k].seed {
                    None => load_tile(slot, ins[k].data, base, rs, cs, tr, tc),
                    Some(seed) => random_tile(slot, seed, base, rs, cs, tr, tc),
                }
                sp += 1;
            }
            Ins::Const(v) => {
                stack[sp * TILE..(sp + 1) * TILE].fill(v);
                sp += 1;
            }
            Ins::Bin(op) => {
                let (lo, hi) = stack.split_at_mut((sp - 1) * TILE);
                let a = &mut lo[(sp - 2) * TILE..];
                let b = &hi[..TILE];
                binary(op, a, b);
                sp -= 1;
            }
            Ins::Un(op) => unary(op, &mut stack[(sp - 1) * TILE..sp * TILE]),
        }
    }
}

simd_fn! {
    /// Copies a `tr x tc` window of an input into a tile (row stride `TC`).
    fn load_tile(slot: &mut [f64], data: &[u8], base: usize, rs: usize, cs: usize, tr: usize, tc: usize) {
        for r in 0..tr {
            let row = &mut slot[r * TC..r * TC + tc];
            let at = base + r * rs;
            match cs {
                1 => {
                    for (d, s) in row.iter_mut().zip(data[at * 8..(at + tc) * 8].chunks_exact(8)) {
                        *d = f64::load(s);
                    }
                }
                0 => row.fill(f64::load(&data[at * 8..at * 8 + 8])),
                _ => {
                    for (c, d) in row.iter_mut().enumerate() {
                        let p = (at + c * cs) * 8;
                        *d = f64::load(&data[p..p + 8]);
                    }
                }
            }
        }
    }
}

simd_fn! {
    /// Generates a `tr x tc` window of a random input: element offset `o` of the source block
    /// is `uniform(seed, o)`, as the `random` kernel makes it.
    fn random_tile(slot: &mut [f64], seed: u64, base: usize, rs: usize, cs: usize, tr: usize, tc: usize) {
        for r in 0..tr {
            let at = base + r * rs;
            for (c, d) in slot[r * TC..r * TC + tc].iter_mut().enumerate() {
                *d = crate::ops::uniform(seed, (at + c * cs) as u64);
            }
        }
    }
}

simd_fn! {
    fn binary(op: u8, a: &mut [f64], b: &[f64]) {
        let a = &mut a[..TILE];
        let b = &b[..TILE];
        match op {
            fused::ADD => a.iter_mut().zip(b).for_each(|(x, y)| *x += *y),
            fused::SUB => a.iter_mut().zip(b).for_each(|(x, y)| *x -= *y),
            fused::MUL => a.iter_mut().zip(b).for_each(|(x, y)| *x *= *y),
            fused::DIV => a.iter_mut().zip(b).for_each(|(x, y)| *x /= *y),
            fused::MINIMUM => a.iter_mut().zip(b).for_each(|(x, y)| *x = Elem::min(*x, *y)),
            fused::MAXIMUM => a.iter_mut().zip(b).for_each(|(x, y)| *x = Elem::max(*x, *y)),
            _ => a.iter_mut().zip(b).for_each(|(x, y)| *x = x.powf(*y)),
        }
    }
}

simd_fn! {
    fn unary(op: u8, a: &mut [f64]) {
        match op {
            fused::NEG => a.iter_mut().for_each(|x| *x = -*x),
            fused::ABS => a.iter_mut().for_each(|x| *x = x.abs()),
            fused::SQUARE => a.iter_mut().for_each(|x| *x *= *x),
            fused::SQRT => a.iter_mut().for_each(|x| *x = x.sqrt()),
            fused::EXP => a.iter_mut().for_each(|x| *x = x.exp()),
            fused::LOG => a.iter_mut().for_each(|x| *x = x.ln()),
            fused::SIN => a.iter_mut().for_each(|x| *x = x.sin()),
            _ => a.iter_mut().for_each(|x| *x = x.cos()),
        }
    }
}

impl Sink {
    /// Folds a computed tile into the result.
    #[allow(clippy::too_many_arguments)]
    fn take(
        &mut self,
        tile: &[f64],
        kbase: usize,
        (krs, kcs): (usize, usize),
        i0: usize,
        j0: usize,
        tr: usize,
        tc: usize,
    ) {
        for r in 0..tr {
            let row = &tile[r * TC..r * TC + tc];
            let at = kbase + (i0 + r) * krs + j0 * kcs;
            match (self.reduce, kcs) {
                (Reduce::None, _) => self.acc[at..at + tc].copy_from_slice(row),
                (Reduce::Sum, 0) => self.acc[at] += sum_row(row),
                (Reduce::Sum, _) => add_into(&mut self.acc[at..at + tc], row),
                (Reduce::Min, 0) => {
                    self.acc[at] = Elem::min(self.acc[at], fold_row(row, f64::INFINITY, Elem::min))
                }
                (Reduce::Max, 0) => {
                    self.acc[at] =
                        Elem::max(self.acc[at], fold_row(row, f64::NEG_INFINITY, Elem::max))
                }
                (Reduce::Min, _) => zip_into(&mut self.acc[at..at + tc], row, Elem::min),
                (Reduce::Max, _) => zip_into(&mut self.acc[at..at + tc], row, Elem::max),
                (Reduce::Moments, 0) => {
                    let n = tc as f64;
                    let mean = sum_row(row) / n;
                    let q = sq_dev(row, mean);
                    let (na, ma) = (self.count[at], self.acc[at]);
                    let total = na + n;
                    let d = mean - ma;
                    self.acc[at] = ma + d * (n / total);
                    self.m2[at] += q + d * d * (na * n / total);
                    self.count[at] = total;
                }
                (Reduce::Moments, _) => welford(
                    &mut self.count[at..at + tc],
                    &mut self.acc[at..at + tc],
                    &mut self.m2[at..at + tc],
                    row,
                ),
            }
        }
    }
}

simd_fn! {
    fn sum_row(row: &[f64]) -> f64 {
        let mut acc = [0.0f64; 8];
        let chunks = row.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            for (a, x) in acc.iter_mut().zip(c) {
                *a += *x;
            }
        }
        let tail: f64 = rest.iter().sum();
        ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail
    }
}

simd_fn! {
    fn sq_dev(row: &[f64], mean: f64) -> f64 {
        let mut acc = [0.0f64; 8];
        let chunks = row.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            for (a, x) in acc.iter_mut().zip(c) {
                let d = *x - mean;
                *a += d * d;
            }
        }
        let tail: f64 = rest.iter().map(|x| (x - mean) * (x - mean)).sum();
        acc.iter().sum::<f64>() + tail
    }
}

fn fold_row(row: &[f64], id: f64, f: fn(f64, f64) -> f64) -> f64 {
    row.iter().fold(id, |a, &x| f(a, x))
}

simd_fn! {
    fn add_into(acc: &mut [f64], row: &[f64]) {
        acc.iter_mut().zip(row).for_each(|(a, x)| *a += *x);
    }
}

fn zip_into(acc: &mut [f64], row: &[f64], f: fn(f64, f64) -> f64) {
    acc.iter_mut().zip(row).for_each(|(a, &x)| *a = f(*a, x));
}

simd_fn! {
    /// Adds one observation per column to running (count, mean, M2).
    fn welford(count: &mut [f64], mean: &mut [f64], m2: &mut [f64], row: &[f64]) {
        for (((n, m), q), &x) in count.iter_mut().zip(mean.iter_mut()).zip(m2.iter_mut()).zip(row) {
            let total = *n + 1.0;
            let d = x - *m;
            *m += d / total;
            *q += d * (x - *m);
            *n = total;
        }
    }
}
