//! Reductions along axes, the combine steps of tree reductions, and partial moments.
//!
//! A chunk-level reduction keeps the reduced axes with length 1 (NumPy's `keepdims=True`), so
//! that partial results of neighbouring chunks have equal shapes; a combine step folds any
//! number of partials elementwise and gives the result the shape of its spec argument, which
//! is how the last step of a tree drops the reduced axes.

use crate::bail;
use crate::chunk::{self, DType, Meta, Result, parse, parse_spec, strides};
use crate::elem::Elem;
use crate::ops::{self, BinOp};
use crate::with_dtype;

macro_rules! simd_fn {
    ($(#[$meta:meta])* fn $($rest:tt)*) => {
        $(#[$meta])*
        #[cfg_attr(all(target_arch = "wasm32", not(feature = "scalar")), target_feature(enable = "simd128"))]
        fn $($rest)*
    };
}

/// The reductions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedOp {
    /// The sum.
    Sum,
    /// The smallest element.
    Min,
    /// The largest element.
    Max,
}

impl RedOp {
    fn binop(self) -> BinOp {
        match self {
            RedOp::Sum => BinOp::Add,
            RedOp::Min => BinOp::Minimum,
            RedOp::Max => BinOp::Maximum,
        }
    }
}

/// Reads the list of axes to reduce (an int64 chunk, negative axes count from the end) into a
/// mask; the kept shape has length 1 on reduced axes.
fn reduced_axes(axes: &[u8], ndim: usize) -> Result<Vec<bool>> {
    let list = chunk::to_i64_list(axes, "axes")?;
    let mut mask = vec![false; ndim];
    for axis in list {
        let a = if axis < 0 { axis + ndim as i64 } else { axis };
        if a < 0 || a >= ndim as i64 {
            bail!("axis {axis} is out of range for {ndim} dimensions");
        }
        mask[a as usize] = true;
    }
    Ok(mask)
}

fn kept_shape(shape: &[usize], mask: &[bool]) -> Vec<usize> {
    shape
        .iter()
        .zip(mask)
        .map(|(&d, &r)| if r { 1 } else { d })
        .collect()
}

/// Calls `f(row, out_offset)` for each row (run along the last axis) of an array of `shape`,
/// with the offset of the row's first element in the kept-dims output.
fn walk_rows(shape: &[usize], mask: &[bool], mut f: impl FnMut(usize, usize)) {
    let ndim = shape.len();
    if ndim == 0 {
        f(0, 0);
        return;
    }
    let row = shape[ndim - 1];
    if row == 0 || shape.contains(&0) {
        return;
    }
    let kept = kept_shape(shape, mask);
    let kstr = strides(&kept);
    let ostr: Vec<usize> = (0..ndim)
        .map(|i| if mask[i] { 0 } else { kstr[i] })
        .collect();
    let rows = shape.iter().product::<usize>() / row;
    let mut index = vec![0usize; ndim - 1];
    let mut off = 0usize;
    for r in 0..rows {
        f(r, off);
        for axis in (0..ndim - 1).rev() {
            index[axis] += 1;
            off += ostr[axis];
            if index[axis] < shape[axis] {
                break;
            }
            off -= ostr[axis] * index[axis];
            index[axis] = 0;
        }
    }
}

/// `sum/min/max(a, axes)`: the reduction over `axes`, keeping them with length 1. Sums keep
/// eight running partial sums per row, which vectorises and loses less precision than one.
pub fn reduce(op: RedOp, a: Vec<u8>, axes: &[u8]) -> Result<Vec<u8>> {
    let (meta, at) = parse(&a, "operand")?;
    let mask = reduced_axes(axes, meta.ndim())?;
    if !mask.iter().any(|&r| r) {
        return Ok(a);
    }
    let out_meta = Meta::new(meta.dtype, &kept_shape(&meta.shape, &mask));
    let mut out = out_meta.zeroed();
    let oat = out_meta.header_len();
    with_dtype!(meta.dtype, T => {
        let (id, f): (T, fn(T, T) -> T) = match op {
            RedOp::Sum => (T::zero(), <T as Elem>::add),
            RedOp::Min => (T::HIGHEST, <T as Elem>::min),
            RedOp::Max => (T::LOWEST, <T as Elem>::max),
        };
        reduce_into::<T>(&a[at..], &meta.shape, &mask, &mut out[oat..], id, f);
    });
    Ok(out)
}

fn reduce_into<T: Elem>(
    data: &[u8],
    shape: &[usize],
    mask: &[bool],
    out: &mut [u8],
    id: T,
    f: fn(T, T) -> T,
) {
    for slot in out.chunks_exact_mut(T::SIZE) {
        id.store(slot);
    }
    let row = shape.last().copied().unwrap_or(1);
    let last_reduced = mask.last().copied().unwrap_or(true);
    let s = T::SIZE;
    walk_rows(shape, mask, |r, off| {
        let src = &data[r * row * s..(r + 1) * row * s];
        if last_reduced {
            let v = fold_row(src, id, f);
            let slot = &mut out[off * s..(off + 1) * s];
            f(T::load(slot), v).store(slot);
        } else {
            fold_into(&mut out[off * s..(off + row) * s], src, f);
        }
    });
}

simd_fn! {
    fn fold_row<T: Elem>(row: &[u8], id: T, f: fn(T, T) -> T) -> T {
        let mut acc = [id; 8];
        let chunks = row.chunks_exact(8 * T::SIZE);
        let rest = chunks.remainder();
        for c in chunks {
            for (l, a) in acc.iter_mut().enumerate() {
                *a = f(*a, T::load(&c[l * T::SIZE..(l + 1) * T::SIZE]));
            }
        }
        let mut tail = id;
        for x in rest.chunks_exact(T::SIZE) {
            tail = f(tail, T::load(x));
        }
        let a = f(f(acc[0], acc[1]), f(acc[2], acc[3]));
        let b = f(f(acc[4], acc[5]), f(acc[6], acc[7]));
        f(f(a, b), tail)
    }
}

simd_fn! {
    fn fold_into<T: Elem>(dst: &mut [u8], src: &[u8], f: fn(T, T) -> T) {
        for (d, x) in dst.chunks_exact_mut(T::SIZE).zip(src.chunks_exact(T::SIZE)) {
            f(T::load(d), T::load(x)).store(d);
        }
    }
}

/// `sum/min/max_combine(spec, p1, ..., pn)`: folds partial results of equal length
/// elementwise; the result has the spec's shape.
pub fn combine(op: RedOp, spec: &[u8], parts: Vec<Vec<u8>>) -> Result<Vec<u8>> {
    let target = parse_spec(spec, "spec")?;
    let mut parts = parts.into_iter();
    let Some(mut acc) = parts.next() else {
        bail!("combine needs at least one partial result");
    };
    let (first, _) = parse(&acc, "partial 0")?;
    for (i, part) in parts.enumerate() {
        let (meta, _) = parse(&part, "partial")?;
        if meta.len() != first.len() || meta.dtype != first.dtype {
            bail!(
                "partial {} has shape {:?} ({}), partial 0 {:?} ({})",
                i + 1,
                meta.shape,
                meta.dtype.name(),
                first.shape,
                first.dtype.name()
            );
        }
        let part = if meta.shape == first.shape {
            part
        } else {
            ops::reshape(part, &first.header())?
        };
        acc = ops::binary(op.binop(), acc, part)?;
    }
    ops::reshape(acc, &target.header())
}

/// `moments(a, axes)`: the partial moments of `a` over `axes` as a float64 chunk of shape
/// `[3] + kept`: the planes are the count, the mean and M2 (the sum of squared deviations from
/// the mean), computed in two passes.
pub fn moments(a: Vec<u8>, axes: &[u8]) -> Result<Vec<u8>> {
    let (meta, _) = parse(&a, "operand")?;
    let a = if meta.dtype == DType::F64 {
        a
    } else {
        ops::astype(a, &Meta::new(DType::F64, &[]).header())?
    };
    let (meta, at) = parse(&a, "operand")?;
    let mask = reduced_axes(axes, meta.ndim())?;
    let kept = kept_shape(&meta.shape, &mask);
    let k = kept.iter().product::<usize>();
    let count: usize = meta
        .shape
        .iter()
        .zip(&mask)
        .filter(|(_, r)| **r)
        .map(|(d, _)| d)
        .product();
    let mut out_shape = vec![3];
    out_shape.extend_from_slice(&kept);
    let out_meta = Meta::new(DType::F64, &out_shape);
    let mut out = out_meta.zeroed();
    let oat = out_meta.header_len();
    let data = &a[at..];
    let (counts, rest) = out[oat..].split_at_mut(8 * k);
    let (means, m2s) = rest.split_at_mut(8 * k);
    for slot in counts.chunks_exact_mut(8) {
        (count as f64).store(slot);
    }
    reduce_into::<f64>(data, &meta.shape, &mask, means, 0.0, f64::add);
    let inv = if count == 0 { 0.0 } else { 1.0 / count as f64 };
    for slot in means.chunks_exact_mut(8) {
        (f64::load(slot) * inv).store(slot);
    }
    let row = meta.shape.last().copied().unwrap_or(1);
    let last_reduced = mask.last().copied().unwrap_or(true);
    walk_rows(&meta.shape, &mask, |r, off| {
        let src = &data[r * row * 8..(r + 1) * row * 8];
        if last_reduced {
            let m = f64::load(&means[off * 8..off * 8 + 8]);
            let v = sq_dev_sum(src, m);
            let slot = &mut m2s[off * 8..off * 8 + 8];
            (f64::load(slot) + v).store(slot);
        } else {
            sq_dev_into(
                &mut m2s[off * 8..(off + row) * 8],
                src,
                &means[off * 8..(off + row) * 8],
            );
        }
    });
    Ok(out)
}

simd_fn! {
    fn sq_dev_sum(row: &[u8], m: f64) -> f64 {
        let mut acc = [0.0f64; 8];
        let chunks = row.chunks_exact(64);
        let rest = chunks.remainder();
        for c in chunks {
            for (l, a) in acc.iter_mut().enumerate() {
                let d = f64::load(&c[l * 8..l * 8 + 8]) - m;
                *a += d * d;
            }
        }
        let mut tail = 0.0;
        for x in rest.chunks_exact(8) {
            let d = f64::load(x) - m;
            tail += d * d;
        }
        acc.iter().sum::<f64>() + tail
    }
}

simd_fn! {
    fn sq_dev_into(dst: &mut [u8], src: &[u8], means: &[u8]) {
        for ((d, x), m) in dst.chunks_exact_mut(8).zip(src.chunks_exact(8)).zip(means.chunks_exact(8)) {
            let dev = f64::load(x) - f64::load(m);
            (f64::load(d) + dev * dev).store(d);
        }
    }
}

/// `moments_combine(spec, p1, ..., pn)`: merges partial moments exactly with Chan et al.'s
/// parallel formula; the result has shape `[3] + spec`.
pub fn moments_combine(spec: &[u8], parts: Vec<Vec<u8>>) -> Result<Vec<u8>> {
    let target = parse_spec(spec, "spec")?;
    let mut parts = parts.into_iter();
    let Some(mut acc) = parts.next() else {
        bail!("moments_combine needs at least one partial result");
    };
    let (first, at) = parse(&acc, "partial 0")?;
    if first.dtype != DType::F64 || first.shape.first() != Some(&3) {
        bail!("partial 0 is not a moments chunk (shape {:?})", first.shape);
    }
    let k = first.len() / 3;
    for (i, part) in parts.enumerate() {
        let (meta, pat) = parse(&part, "partial")?;
        if meta.dtype != DType::F64 || meta.len() != first.len() {
            bail!(
                "partial {} (shape {:?}) does not match partial 0 (shape {:?})",
                i + 1,
                meta.shape,
                first.shape
            );
        }
        chan(&mut acc[at..], &part[pat..], k);
    }
    let mut shape = vec![3];
    shape.extend_from_slice(&target.shape);
    if target.len() != k {
        bail!("spec {:?} does not hold {k} moments", target.shape);
    }
    ops::reshape(acc, &Meta::new(DType::F64, &shape).header())
}

simd_fn! {
    fn chan(acc: &mut [u8], part: &[u8], k: usize) {
        let (na, rest) = acc.split_at_mut(8 * k);
        let (ma, m2a) = rest.split_at_mut(8 * k);
        let (nb, rest) = part.split_at(8 * k);
        let (mb, m2b) = rest.split_at(8 * k);
        for i in 0..k {
            let s = i * 8..i * 8 + 8;
            let (n1, n2) = (f64::load(&na[s.clone()]), f64::load(&nb[s.clone()]));
            let n = n1 + n2;
            if n2 == 0.0 {
                continue;
            }
            let (m1, m2) = (f64::load(&ma[s.clone()]), f64::load(&mb[s.clone()]));
            let delta = m2 - m1;
            let mean = m1 + delta * (n2 / n);
            let q = f64::load(&m2a[s.clone()]) + f64::load(&m2b[s.clone()]) + delta * delta * (n1 * n2 / n);
            n.store(&mut na[s.clone()]);
            mean.store(&mut ma[s.clone()]);
            q.store(&mut m2a[s]);
        }
    }
}

/// What [`moments_finalize`] extracts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// The mean.
    Mean,
    /// The variance `M2 / (n - ddof)`.
    Var,
    /// The standard deviation, the square root of the variance.
    Std,
}

/// `mean/var/std_finalize(spec, moments, ddof)`: turns (combined) partial moments into the
/// statistic, a float64 chunk of the spec's shape; `ddof` is a 0-d chunk.
pub fn moments_finalize(what: Moment, spec: &[u8], m: &[u8], ddof: &[u8]) -> Result<Vec<u8>> {
    let target = parse_spec(spec, "spec")?;
    let (meta, at) = parse(m, "moments")?;
    if meta.dtype != DType::F64 || meta.shape.first() != Some(&3) {
        bail!("not a moments chunk (shape {:?})", meta.shape);
    }
    let ddof = chunk::to_f64(ddof)?.1;
    let [ddof] = ddof[..] else {
        bail!("ddof must be a single value");
    };
    let k = meta.len() / 3;
    if target.len() != k {
        bail!("spec {:?} does not hold {k} values", target.shape);
    }
    let out_meta = Meta::new(DType::F64, &target.shape);
    let mut out = out_meta.zeroed();
    let oat = out_meta.header_len();
    let d = &m[at..];
    for (i, slot) in out[oat..].chunks_exact_mut(8).enumerate() {
        let n = f64::load(&d[i * 8..i * 8 + 8]);
        let mean = f64::load(&d[(k + i) * 8..(k + i) * 8 + 8]);
        let m2 = f64::load(&d[(2 * k + i) * 8..(2 * k + i) * 8 + 8]);
        let v = match what {
            Moment::Mean => mean,
            Moment::Var => m2 / (n - ddof),
            Moment::Std => (m2 / (n - ddof)).sqrt(),
        };
        v.store(slot);
    }
    Ok(out)
}
