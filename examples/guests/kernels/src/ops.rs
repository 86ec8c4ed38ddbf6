//! The kernels: each takes its arguments as owned chunk bytes and returns the result chunk.
//!
//! Owning the inputs lets elementwise kernels write their result into an input's buffer instead
//! of allocating a new one. Parameters are chunks too: a shape is a spec (a header without
//! data), a scalar is a 0-d chunk, a list of axes or slice bounds is a small int64 chunk.

use crate::bail;
use crate::chunk::{self, DType, Meta, Result, parse, parse_spec, strides};
use crate::elem::Elem;
use crate::with_dtype;

/// Applies `$attr` (SIMD code generation) to hot loops in the WebAssembly build.
macro_rules! simd_fn {
    ($(#[$meta:meta])* fn $($rest:tt)*) => {
        $(#[$meta])*
        #[cfg_attr(all(target_arch = "wasm32", not(feature = "scalar")), target_feature(enable = "simd128"))]
        fn $($rest)*
    };
}

// ---------------------------------------------------------------------------------------------
// Creation

/// `full(spec, value)`: a chunk of the spec's dtype and shape, every element `value` (a 0-d
/// chunk of any dtype, converted).
pub fn full(spec: &[u8], value: &[u8]) -> Result<Vec<u8>> {
    let meta = parse_spec(spec, "full: spec")?;
    let value = scalar_f64_or_i64(value, "full: value")?;
    with_dtype!(meta.dtype, T => {
        let v: T = match value { Scalar::F(f) => T::from_f64(f), Scalar::I(i) => T::from_i64(i) };
        Ok(fill(&meta, v))
    })
}

/// `ones(spec)`.
pub fn ones(spec: &[u8]) -> Result<Vec<u8>> {
    let meta = parse_spec(spec, "ones: spec")?;
    Ok(with_dtype!(meta.dtype, T => fill(&meta, T::one())))
}

/// `zeros(spec)`.
pub fn zeros(spec: &[u8]) -> Result<Vec<u8>> {
    let meta = parse_spec(spec, "zeros: spec")?;
    Ok(meta.zeroed())
}

simd_fn! {
    fn fill<T: Elem>(meta: &Meta, value: T) -> Vec<u8> {
        let mut out = meta.zeroed();
        let at = meta.header_len();
        for slot in out[at..].chunks_exact_mut(T::SIZE) {
            value.store(slot);
        }
        out
    }
}

/// The increment of the SplitMix64 generator (the golden ratio in 64 bits).
pub const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function: a bijective mix of a 64-bit counter.
#[inline(always)]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The `index`-th uniform value in [0, 1) of the stream `seed`, as [`random`] computes it.
#[inline(always)]
pub fn uniform(seed: u64, index: u64) -> f64 {
    let z = mix64(seed.wrapping_add(index.wrapping_add(1).wrapping_mul(GAMMA)));
    (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// `random(spec, seed)`: uniform values in [0, 1), float64 or float32. Element `i` (row-major
/// index within the chunk) is `uniform(seed, i)` (counter-based SplitMix64), so a chunk depends
/// only on its seed and shape. `seed` is a 0-d int64 chunk (its bits are the u64 seed).
pub fn random(spec: &[u8], seed: &[u8]) -> Result<Vec<u8>> {
    let meta = parse_spec(spec, "random: spec")?;
    let seed = match scalar_f64_or_i64(seed, "random: seed")? {
        Scalar::I(i) => i as u64,
        Scalar::F(_) => bail!("random: the seed must be an int64 scalar"),
    };
    match meta.dtype {
        DType::F64 => Ok(random_f64(&meta, seed)),
        DType::F32 => {
            let mut out = meta.zeroed();
            let at = meta.header_len();
            for (i, slot) in out[at..].chunks_exact_mut(4).enumerate() {
                (uniform(seed, i as u64) as f32)
                    .min(f32::from_bits(0x3F7F_FFFF))
                    .store(slot);
            }
            Ok(out)
        }
        DType::I64 => bail!("random: int64 is not supported, use float64 or float32"),
    }
}

simd_fn! {
    /// The float64 chunk of `random`, its values written once into the uninitialised data
    /// (not into zeros first: a `memory.fill` of the whole block, ~1% of the matrix products
    /// that generate their operands).
    fn random_f64(meta: &Meta, seed: u64) -> Vec<u8> {
        let len = meta.data_len();
        let mut out = Vec::with_capacity(meta.header_len() + len);
        meta.write_header(&mut out);
        let data = out.spare_capacity_mut()[..len].as_mut_ptr().cast::<[u8; 8]>();
        let n = len / 8;
        // SAFETY: called below with `i < n` only, and `data` has room for `n` values of 8
        // bytes.
        let put = |i: usize| unsafe {
            data.add(i).write_unaligned(uniform(seed, i as u64).to_le_bytes())
        };
        // Eight values per iteration: LLVM vectorizes the generator into pairs, whose
        // constants the engine spills and reloads at every iteration (its interruption check
        // is a call on the slow path), so fewer iterations load them fewer times.
        let mut i = 0;
        while i + 8 <= n {
            for j in i..i + 8 {
                put(j);
            }
            i += 8;
        }
        for j in i..n {
            put(j);
        }
        // SAFETY: the `len` bytes after the header were all written above.
        unsafe { out.set_len(out.len() + len) };
        out
    }
}

/// `arange(spec, start, step)`: element `i` (row-major index) is `start + i * step`; `start`
/// and `step` are 0-d chunks, computed in int64 for an int64 spec and in float64 otherwise.
pub fn arange(spec: &[u8], start: &[u8], step: &[u8]) -> Result<Vec<u8>> {
    let meta = parse_spec(spec, "arange: spec")?;
    let start = scalar_f64_or_i64(start, "arange: start")?;
    let step = scalar_f64_or_i64(step, "arange: step")?;
    let mut out = meta.zeroed();
    let at = meta.header_len();
    if meta.dtype == DType::I64 {
        let (start, step) = (start.as_i64(), step.as_i64());
        for (i, slot) in out[at..].chunks_exact_mut(8).enumerate() {
            start
                .wrapping_add((i as i64).wrapping_mul(step))
                .store(slot);
        }
    } else {
        let (start, step) = (start.as_f64(), step.as_f64());
        with_dtype!(meta.dtype, T => {
            for (i, slot) in out[at..].chunks_exact_mut(T::SIZE).enumerate() {
                T::from_f64(start + i as f64 * step).store(slot);
            }
        });
    }
    Ok(out)
}

#[derive(Clone, Copy)]
enum Scalar {
    F(f64),
    I(i64),
}

impl Scalar {
    fn as_f64(self) -> f64 {
        match self {
            Scalar::F(f) => f,
            Scalar::I(i) => i as f64,
        }
    }
    fn as_i64(self) -> i64 {
        match self {
            Scalar::F(f) => f as i64,
            Scalar::I(i) => i,
        }
    }
}

fn scalar_f64_or_i64(bytes: &[u8], what: &str) -> Result<Scalar> {
    let (meta, at) = parse(bytes, what)?;
    if meta.len() != 1 {
        bail!(
            "{what}: a single value was expected, found shape {:?}",
            meta.shape
        );
    }
    let data = &bytes[at..];
    Ok(match meta.dtype {
        DType::F64 => Scalar::F(f64::load(data)),
        DType::F32 => Scalar::F(f32::load(data) as f64),
        DType::I64 => Scalar::I(i64::load(data)),
    })
}

// ---------------------------------------------------------------------------------------------
// Elementwise

/// The binary elementwise operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
    /// `a / b`
    Div,
    /// `minimum(a, b)`
    Minimum,
    /// `maximum(a, b)`
    Maximum,
    /// `a ** b` (floats only)
    Pow,
}

/// The output shape of broadcasting `a` against `b` (NumPy's rules: align on the right, an axis
/// of length 1 stretches).
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let ndim = a.len().max(b.len());
    let mut out = vec![0; ndim];
    for i in 0..ndim {
        let da = if i + a.len() >= ndim {
            a[i + a.len() - ndim]
        } else {
            1
        };
        let db = if i + b.len() >= ndim {
            b[i + b.len() - ndim]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => bail!("shapes {a:?} and {b:?} cannot be broadcast together"),
        };
    }
    Ok(out)
}

/// `op(a, b)` with broadcasting; both chunks must have the same dtype. The result is written
/// into the buffer of an input whose shape is the output's when there is one.
pub fn binary(op: BinOp, a: Vec<u8>, b: Vec<u8>) -> Result<Vec<u8>> {
    let (ma, _) = parse(&a, "left operand")?;
    let (mb, _) = parse(&b, "right operand")?;
    if ma.dtype != mb.dtype {
        bail!(
            "operands of different dtypes ({} and {}); convert one with astype",
            ma.dtype.name(),
            mb.dtype.name()
        );
    }
    let shape = broadcast_shape(&ma.shape, &mb.shape)?;
    with_dtype!(ma.dtype, T => {
        let f = binop_fn::<T>(op)?;
        if ma.shape == shape {
            let mut a = a;
            inplace(&mut a, &ma, &b, &mb, true, f);
            Ok(a)
        } else if mb.shape == shape {
            let mut b = b;
            inplace(&mut b, &mb, &a, &ma, false, f);
            Ok(b)
        } else {
            // Neither input has the output's shape (an outer operation): stretch `a` first.
            let out_meta = Meta::new(ma.dtype, &shape);
            let mut out = out_meta.zeroed();
            inplace(&mut out, &out_meta, &a, &ma, false, |x: T, _: T| x);
            inplace(&mut out, &out_meta, &b, &mb, true, f);
            Ok(out)
        }
    })
}

fn binop_fn<T: Elem>(op: BinOp) -> Result<fn(T, T) -> T> {
    Ok(match op {
        BinOp::Add => T::add,
        BinOp::Sub => T::sub,
        BinOp::Mul => T::mul,
        BinOp::Div => T::div,
        BinOp::Minimum => T::min,
        BinOp::Maximum => T::max,
        BinOp::Pow => match T::DTYPE {
            DType::F64 | DType::F32 => |a: T, b: T| T::from_f64(a.to_f64().powf(b.to_f64())),
            DType::I64 => bail!("pow is only defined for floating-point chunks"),
        },
    })
}

/// `dst = op(dst, other)` (or `op(other, dst)` when `dst_left` is false), `other` broadcast to
/// `dst`'s shape (the caller checked that it can be).
fn inplace<T: Elem>(
    dst: &mut [u8],
    dm: &Meta,
    other: &[u8],
    om: &Meta,
    dst_left: bool,
    f: impl Fn(T, T) -> T + Copy,
) {
    let dd = &mut dst[dm.header_len()..];
    let od = &other[om.header_len()..];
    if om.len() == 1 {
        let s = T::load(&od[..T::SIZE]);
        if dst_left {
            map_scalar(dd, s, f)
        } else {
            map_scalar(dd, s, move |x, s| f(s, x))
        }
        return;
    }
    if om.shape == dm.shape {
        if dst_left {
            map_vec(dd, od, f)
        } else {
            map_vec(dd, od, move |x, y| f(y, x))
        }
        return;
    }
    // General broadcasting: walk `dst` row by row (its last axis), tracking `other`'s offset.
    let ndim = dm.ndim();
    let pad = ndim - om.ndim();
    let ostrides_own = strides(&om.shape);
    let ostr: Vec<usize> = (0..ndim)
        .map(|i| {
            if i < pad || om.shape[i - pad] == 1 {
                0
            } else {
                ostrides_own[i - pad]
            }
        })
        .collect();
    let row = dm.shape[ndim - 1];
    if row == 0 {
        return;
    }
    let inner = ostr[ndim - 1];
    let rows = dm.len() / row;
    let mut index = vec![0usize; ndim - 1];
    let mut ooff = 0usize;
    for r in 0..rows {
        let drow = &mut dd[r * row * T::SIZE..(r + 1) * row * T::SIZE];
        if inner == 0 {
            let s = T::load(&od[ooff * T::SIZE..(ooff + 1) * T::SIZE]);
            if dst_left {
                map_scalar(drow, s, f)
            } else {
                map_scalar(drow, s, move |x, s| f(s, x))
            }
        } else {
            let orow = &od[ooff * T::SIZE..(ooff + row) * T::SIZE];
            if dst_left {
                map_vec(drow, orow, f)
            } else {
                map_vec(drow, orow, move |x, y| f(y, x))
            }
        }
        // Advance the multi-index over the outer axes.
        for axis in (0..ndim - 1).rev() {
            index[axis] += 1;
            ooff += ostr[axis];
            if index[axis] < dm.shape[axis] {
                break;
            }
            ooff -= ostr[axis] * index[axis];
            index[axis] = 0;
        }
    }
}

simd_fn! {
    fn map_vec<T: Elem>(dst: &mut [u8], src: &[u8], f: impl Fn(T, T) -> T) {
        for (d, s) in dst.chunks_exact_mut(T::SIZE).zip(src.chunks_exact(T::SIZE)) {
            f(T::load(d), T::load(s)).store(d);
        }
    }
}

simd_fn! {
    fn map_scalar<T: Elem>(dst: &mut [u8], s: T, f: impl Fn(T, T) -> T) {
        for d in dst.chunks_exact_mut(T::SIZE) {
            f(T::load(d), s).store(d);
        }
    }
}

simd_fn! {
    fn map_unary<T: Elem>(dst: &mut [u8], f: impl Fn(T) -> T) {
        for d in dst.chunks_exact_mut(T::SIZE) {
            f(T::load(d)).store(d);
        }
    }
}

/// The unary elementwise operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnOp {
    /// `-x`
    Neg,
    /// `|x|`
    Abs,
    /// `x * x`
    Square,
    /// `sqrt(x)` (floats)
    Sqrt,
    /// `e^x` (floats)
    Exp,
    /// `ln(x)` (floats)
    Log,
    /// `sin(x)` (floats)
    Sin,
    /// `cos(x)` (floats)
    Cos,
}

/// `op(a)` elementwise, in place.
pub fn unary(op: UnOp, mut a: Vec<u8>) -> Result<Vec<u8>> {
    let (meta, at) = parse(&a, "operand")?;
    let data = &mut a[at..];
    match meta.dtype {
        DType::I64 => match op {
            UnOp::Neg => map_unary(data, |x: i64| x.wrapping_neg()),
            UnOp::Abs => map_unary(data, |x: i64| x.wrapping_abs()),
            UnOp::Square => map_unary(data, |x: i64| x.wrapping_mul(x)),
            _ => bail!("{op:?} is only defined for floating-point chunks"),
        },
        DType::F64 => unary_float::<f64>(op, data, |x| x, |x| x),
        DType::F32 => unary_float::<f32>(op, data, |x| x as f64, |x| x as f32),
    }
    Ok(a)
}

fn unary_float<T: Elem + std::ops::Neg<Output = T>>(
    op: UnOp,
    data: &mut [u8],
    up: fn(T) -> f64,
    down: fn(f64) -> T,
) {
    match op {
        UnOp::Neg => map_unary(data, |x: T| -x),
        UnOp::Abs => map_unary(data, move |x: T| down(up(x).abs())),
        UnOp::Square => map_unary(data, |x: T| x.mul(x)),
        UnOp::Sqrt => map_unary(data, move |x: T| down(up(x).sqrt())),
        UnOp::Exp => map_unary(data, move |x: T| down(up(x).exp())),
        UnOp::Log => map_unary(data, move |x: T| down(up(x).ln())),
        UnOp::Sin => map_unary(data, move |x: T| down(up(x).sin())),
        UnOp::Cos => map_unary(data, move |x: T| down(up(x).cos())),
    }
}

/// `astype(a, spec)`: `a`'s values converted to the spec's dtype (the spec's shape is ignored).
pub fn astype(a: Vec<u8>, spec: &[u8]) -> Result<Vec<u8>> {
    let (meta, at) = parse(&a, "operand")?;
    let target = parse_spec(spec, "astype: spec")?.dtype;
    if target == meta.dtype {
        return Ok(a);
    }
    let out_meta = Meta::new(target, &meta.shape);
    let mut out = out_meta.zeroed();
    let oat = out_meta.header_len();
    with_dtype!(meta.dtype, S => {
        with_dtype!(target, D => {
            for (o, i) in out[oat..].chunks_exact_mut(D::SIZE).zip(a[at..].chunks_exact(S::SIZE)) {
                let v = S::load(i);
                let d = if D::DTYPE == DType::I64 && S::DTYPE == DType::I64 {
                    D::from_i64(i64::load(i))
                } else {
                    D::from_f64(v.to_f64())
                };
                d.store(o);
            }
        })
    });
    Ok(out)
}

/// `reshape(a, spec)`: the same elements under the spec's shape (same count; dtype kept).
pub fn reshape(mut a: Vec<u8>, spec: &[u8]) -> Result<Vec<u8>> {
    let (meta, at) = parse(&a, "operand")?;
    let target = parse_spec(spec, "reshape: spec")?;
    if target.len() != meta.len() {
        bail!("cannot reshape {:?} into {:?}", meta.shape, target.shape);
    }
    let header = Meta::new(meta.dtype, &target.shape).header();
    a.splice(..at, header);
    Ok(a)
}

// ---------------------------------------------------------------------------------------------
// Transpose and slicing

/// `transpose(a)`: the axes reversed (NumPy's `.T`); a 2-D block is transposed in tiles.
pub fn transpose(a: Vec<u8>) -> Result<Vec<u8>> {
    let (meta, at) = parse(&a, "operand")?;
    if meta.ndim() < 2 {
        return Ok(a);
    }
    let out_shape: Vec<usize> = meta.shape.iter().rev().copied().collect();
    let out_meta = Meta::new(meta.dtype, &out_shape);
    let mut out = out_meta.zeroed();
    let oat = out_meta.header_len();
    let size = meta.dtype.size();
    if meta.ndim() == 2 {
        let (m, n) = (meta.shape[0], meta.shape[1]);
        if size == 8 {
            transpose2::<8>(&a[at..], &mut out[oat..], m, n);
        } else {
            transpose2::<4>(&a[at..], &mut out[oat..], m, n);
        }
        return Ok(out);
    }
    // n-D: walk the input in order, scattering to the reversed-axes position.
    let ostr = strides(&out_shape);
    let ndim = meta.ndim();
    let mut index = vec![0usize; ndim];
    for i in 0..meta.len() {
        let mut o = 0;
        for axis in 0..ndim {
            o += index[axis] * ostr[ndim - 1 - axis];
        }
        out[oat + o * size..oat + (o + 1) * size]
            .copy_from_slice(&a[at + i * size..at + (i + 1) * size]);
        for axis in (0..ndim).rev() {
            index[axis] += 1;
            if index[axis] < meta.shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    Ok(out)
}

simd_fn! {
    fn transpose2<const S: usize>(src: &[u8], dst: &mut [u8], m: usize, n: usize) {
        const TILE: usize = 32;
        let src: &[[u8; S]] = src.as_chunks::<S>().0;
        let dst: &mut [[u8; S]] = dst.as_chunks_mut::<S>().0;
        for i0 in (0..m).step_by(TILE) {
            let i1 = (i0 + TILE).min(m);
            for j0 in (0..n).step_by(TILE) {
                let j1 = (j0 + TILE).min(n);
                for i in i0..i1 {
                    let row = &src[i * n + j0..i * n + j1];
                    for (j, v) in (j0..j1).zip(row) {
                        dst[j * m + i] = *v;
                    }
                }
            }
        }
    }
}

/// `slice(a, bounds)`: `bounds` is an int64 chunk of shape `(ndim, 3)` holding `start, stop,
/// step` per axis (0 <= start <= stop <= len, step >= 1), as Python's `a[start:stop:step, ...]`.
pub fn slice(a: Vec<u8>, bounds: &[u8]) -> Result<Vec<u8>> {
    let (meta, at) = parse(&a, "operand")?;
    let b = chunk::to_i64_list(bounds, "slice: bounds")?;
    let ndim = meta.ndim();
    if b.len() != 3 * ndim {
        bail!(
            "slice: {} bounds for {ndim} axes, 3 per axis expected",
            b.len()
        );
    }
    let mut start = vec![0usize; ndim];
    let mut step = vec![1usize; ndim];
    let mut out_shape = vec![0usize; ndim];
    for axis in 0..ndim {
        let (s, e, st) = (b[3 * axis], b[3 * axis + 1], b[3 * axis + 2]);
        if s < 0 || e < s || e as usize > meta.shape[axis] || st < 1 {
            bail!(
                "slice: axis {axis} bounds {s}:{e}:{st} out of range for length {}",
                meta.shape[axis]
            );
        }
        start[axis] = s as usize;
        step[axis] = st as usize;
        out_shape[axis] = ((e - s) as usize).div_ceil(st as usize);
    }
    let out_meta = Meta::new(meta.dtype, &out_shape);
    if out_shape == meta.shape {
        return Ok(a);
    }
    let mut out = out_meta.zeroed();
    let oat = out_meta.header_len();
    if ndim == 0 || out_meta.is_empty() {
        return Ok(out);
    }
    let size = meta.dtype.size();
    let istr = strides(&meta.shape);
    let row = out_shape[ndim - 1];
    let rows = out_meta.len() / row;
    let mut index = vec![0usize; ndim - 1];
    for r in 0..rows {
        let mut src = start[ndim - 1] * istr[ndim - 1];
        for axis in 0..ndim - 1 {
            src += (start[axis] + index[axis] * step[axis]) * istr[axis];
        }
        let dst = &mut out[oat + r * row * size..oat + (r + 1) * row * size];
        let last_step = step[ndim - 1];
        if last_step == 1 {
            dst.copy_from_slice(&a[at + src * size..at + (src + row) * size]);
        } else {
            for (k, d) in dst.chunks_exact_mut(size).enumerate() {
                let s = at + (src + k * last_step) * size;
                d.copy_from_slice(&a[s..s + size]);
            }
        }
        for axis in (0..ndim - 1).rev() {
            index[axis] += 1;
            if index[axis] < out_shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    Ok(out)
}
