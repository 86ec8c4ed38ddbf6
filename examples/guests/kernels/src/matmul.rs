//! Matrix products of 2-D blocks: `matmul(a, b)` and the accumulating `matmul_acc(c, a, b)`.
//!
//! float64 uses a packed, cache-blocked product with a 6 x 4 register tile of two-lane vectors
//! (WebAssembly SIMD in the guest build); float32 and int64 use a plain row-times-row loop.

use crate::bail;
use crate::chunk::{DType, Meta, Result, parse, parse_spec};
use crate::elem::Elem;
use crate::with_dtype;

/// Two f64 lanes: a WebAssembly `v128` in the guest, a pair elsewhere.
#[cfg(all(target_arch = "wasm32", not(feature = "scalar")))]
mod lanes {
    use core::arch::wasm32::{f64x2_extract_lane, f64x2_splat, v128};

    pub type V = v128;

    #[inline]
    #[target_feature(enable = "simd128")]
    pub fn splat(x: f64) -> V {
        f64x2_splat(x)
    }
    #[inline]
    #[target_feature(enable = "simd128")]
    pub fn pair(a: f64, b: f64) -> V {
        core::arch::wasm32::f64x2(a, b)
    }
    /// `a * b + c`, fused where the host has FMA (relaxed SIMD), so the last bit may differ
    /// between hosts.
    #[inline]
    #[target_feature(enable = "simd128,relaxed-simd")]
    pub fn mul_add(a: V, b: V, c: V) -> V {
        core::arch::wasm32::f64x2_relaxed_madd(a, b, c)
    }
    #[inline]
    #[target_feature(enable = "simd128")]
    pub fn lane(v: V, i: usize) -> f64 {
        if i == 0 {
            f64x2_extract_lane::<0>(v)
        } else {
            f64x2_extract_lane::<1>(v)
        }
    }
}

#[cfg(not(all(target_arch = "wasm32", not(feature = "scalar"))))]
mod lanes {
    pub type V = [f64; 2];

    #[inline(always)]
    pub fn splat(x: f64) -> V {
        [x, x]
    }
    #[inline(always)]
    pub fn pair(a: f64, b: f64) -> V {
        [a, b]
    }
    #[inline(always)]
    pub fn mul_add(a: V, b: V, c: V) -> V {
        [c[0] + a[0] * b[0], c[1] + a[1] * b[1]]
    }
    #[inline(always)]
    pub fn lane(v: V, i: usize) -> f64 {
        v[i]
    }
}

use lanes::V;

const MR: usize = 6;
const NR: usize = 4;
const KC: usize = 256;
const MC: usize = 120;
const NC: usize = 1024;

fn dims(a: &Meta, b: &Meta) -> Result<(usize, usize, usize)> {
    if a.ndim() != 2 || b.ndim() != 2 {
        bail!(
            "matmul takes 2-D blocks, got shapes {:?} and {:?}",
            a.shape,
            b.shape
        );
    }
    if a.shape[1] != b.shape[0] {
        bail!(
            "matmul: shapes {:?} and {:?} are not aligned",
            a.shape,
            b.shape
        );
    }
    if a.dtype != b.dtype {
        bail!(
            "matmul: dtypes {} and {} differ",
            a.dtype.name(),
            b.dtype.name()
        );
    }
    Ok((a.shape[0], a.shape[1], b.shape[1]))
}

/// `matmul(a, b)`: the product of an `m x k` and a `k x n` block.
pub fn matmul(a: &[u8], b: &[u8]) -> Result<Vec<u8>> {
    let (ma, aat) = parse(a, "a")?;
    let (mb, bat) = parse(b, "b")?;
    let (m, k, n) = dims(&ma, &mb)?;
    let out_meta = Meta::new(ma.dtype, &[m, n]);
    let mut c = out_meta.zeroed();
    let cat = out_meta.header_len();
    gemm(ma.dtype, &mut c[cat..], &a[aat..], &b[bat..], m, k, n);
    Ok(c)
}

/// `matmul_acc(c, a, b)`: `c + a . b`, written into `c`'s buffer.
pub fn matmul_acc(mut c: Vec<u8>, a: &[u8], b: &[u8]) -> Result<Vec<u8>> {
    let (ma, aat) = parse(a, "a")?;
    let (mb, bat) = parse(b, "b")?;
    let (mc, cat) = parse(&c, "c")?;
    let (m, k, n) = dims(&ma, &mb)?;
    if mc.shape != [m, n] || mc.dtype != ma.dtype {
        bail!(
            "matmul_acc: c has shape {:?} ({}), the product {:?} ({})",
            mc.shape,
            mc.dtype.name(),
            [m, n],
            ma.dtype.name()
        );
    }
    gemm(ma.dtype, &mut c[cat..], &a[aat..], &b[bat..], m, k, n);
    Ok(c)
}

/// `matmul_sum(c, a1, b1, a2, b2, ...)`: `c + a1 . b1 + a2 . b2 + ...`, written into `c`'s
/// buffer; `c` may be a spec (a header without data): the sum then starts from zeros. One
/// task accumulates a whole row-times-column of blocks instead of a chain of `matmul_acc`.
pub fn matmul_sum(c: Vec<u8>, pairs: Vec<Vec<u8>>) -> Result<Vec<u8>> {
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        bail!(
            "matmul_sum takes c and pairs of blocks, got {} blocks after c",
            pairs.len()
        );
    }
    let spec = parse_spec(&c, "c")?;
    let mut c = if c.len() == spec.header_len() {
        spec.zeroed()
    } else {
        c
    };
    let (mc, cat) = parse(&c, "c")?;
    for pair in pairs.chunks_exact(2) {
        let (ma, aat) = parse(&pair[0], "a")?;
        let (mb, bat) = parse(&pair[1], "b")?;
        let (m, k, n) = dims(&ma, &mb)?;
        if mc.shape != [m, n] || mc.dtype != ma.dtype {
            bail!(
                "matmul_sum: c has shape {:?} ({}), a product {:?} ({})",
                mc.shape,
                mc.dtype.name(),
                [m, n],
                ma.dtype.name()
            );
        }
        gemm(
            ma.dtype,
            &mut c[cat..],
            &pair[0][aat..],
            &pair[1][bat..],
            m,
            k,
            n,
        );
    }
    Ok(c)
}

fn gemm(dtype: DType, c: &mut [u8], a: &[u8], b: &[u8], m: usize, k: usize, n: usize) {
    match dtype {
        DType::F64 => gemm_f64(c, a, b, m, k, n),
        other => with_dtype!(other, T => gemm_plain::<T>(c, a, b, m, k, n)),
    }
}

/// `c += a . b` for any element type, one output row at a time.
fn gemm_plain<T: Elem>(c: &mut [u8], a: &[u8], b: &[u8], m: usize, k: usize, n: usize) {
    let s = T::SIZE;
    let mut row = vec![T::zero(); n];
    for i in 0..m {
        for (j, v) in row.iter_mut().enumerate() {
            *v = T::load(&c[(i * n + j) * s..(i * n + j + 1) * s]);
        }
        for p in 0..k {
            let x = T::load(&a[(i * k + p) * s..(i * k + p + 1) * s]);
            let brow = &b[p * n * s..(p + 1) * n * s];
            for (v, y) in row.iter_mut().zip(brow.chunks_exact(s)) {
                *v = v.add(x.mul(T::load(y)));
            }
        }
        for (j, v) in row.iter().enumerate() {
            v.store(&mut c[(i * n + j) * s..(i * n + j + 1) * s]);
        }
    }
}

/// `c += a . b` in float64: B is packed in panels of `KC x NC` as strips of `NR` columns (two
/// vectors per row of a strip), A in blocks of `MC x KC` as strips of `MR` rows, and a 6 x 4
/// tile of C is accumulated in twelve vector registers.
#[cfg_attr(
    all(target_arch = "wasm32", not(feature = "scalar")),
    target_feature(enable = "simd128")
)]
fn gemm_f64(c: &mut [u8], a: &[u8], b: &[u8], m: usize, k: usize, n: usize) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let mut bpack: Vec<V> = Vec::new();
    let mut apack: Vec<f64> = Vec::new();
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            pack_b(&mut bpack, b, n, pc, kc, jc, nc);
            for ic in (0..m).step_by(MC) {
                let mc = MC.min(m - ic);
                pack_a(&mut apack, a, k, ic, mc, pc, kc);
                for jr in (0..nc).step_by(NR) {
                    let strip_b = &bpack[(jr / NR) * kc * 2..(jr / NR + 1) * kc * 2];
                    let cols = NR.min(nc - jr);
                    for ir in (0..mc).step_by(MR) {
                        let strip_a = &apack[(ir / MR) * kc * MR..(ir / MR + 1) * kc * MR];
                        let rows = MR.min(mc - ir);
                        let tile = micro(strip_a, strip_b, kc);
                        for (r, tile_row) in tile.iter().enumerate().take(rows) {
                            let at = ((ic + ir + r) * n + jc + jr) * 8;
                            for (col, slot) in c[at..at + cols * 8].chunks_exact_mut(8).enumerate()
                            {
                                let v = lanes::lane(tile_row[col / 2], col % 2);
                                (f64::load(slot) + v).store(slot);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg_attr(
    all(target_arch = "wasm32", not(feature = "scalar")),
    target_feature(enable = "simd128")
)]
fn pack_b(out: &mut Vec<V>, b: &[u8], n: usize, pc: usize, kc: usize, jc: usize, nc: usize) {
    out.clear();
    let load = |p: usize, j: usize| -> f64 {
        if j < jc + nc {
            f64::load(&b[(p * n + j) * 8..(p * n + j) * 8 + 8])
        } else {
            0.0
        }
    };
    for jr in (0..nc).step_by(NR) {
        let j = jc + jr;
        for p in pc..pc + kc {
            out.push(lanes::pair(load(p, j), load(p, j + 1)));
            out.push(lanes::pair(load(p, j + 2), load(p, j + 3)));
        }
    }
}

#[cfg_attr(
    all(target_arch = "wasm32", not(feature = "scalar")),
    target_feature(enable = "simd128")
)]
fn pack_a(out: &mut Vec<f64>, a: &[u8], k: usize, ic: usize, mc: usize, pc: usize, kc: usize) {
    out.clear();
    for ir in (0..mc).step_by(MR) {
        for p in pc..pc + kc {
            for r in 0..MR {
                let i = ic + ir + r;
                out.push(if ir + r < mc {
                    f64::load(&a[(i * k + p) * 8..(i * k + p) * 8 + 8])
                } else {
                    0.0
                });
            }
        }
    }
}

#[cfg_attr(
    all(target_arch = "wasm32", not(feature = "scalar")),
    target_feature(enable = "simd128,relaxed-simd")
)]
fn micro(a: &[f64], b: &[V], kc: usize) -> [[V; 2]; MR] {
    // Twelve accumulators, two B vectors and one broadcast A value: 15 of the 16 vector
    // registers of x86-64 (what Cranelift allocates from).
    let z = lanes::splat(0.0);
    let (mut c00, mut c01, mut c10, mut c11) = (z, z, z, z);
    let (mut c20, mut c21, mut c30, mut c31) = (z, z, z, z);
    let (mut c40, mut c41, mut c50, mut c51) = (z, z, z, z);
    // Two steps of k per iteration: half the loop overhead (and the engine's per-iteration
    // interruption checks).
    let b = &b[..2 * kc];
    let a = &a[..MR * kc];
    let (b2, b_rest) = b.split_at(kc / 2 * 4);
    let (a2, a_rest) = a.split_at(kc / 2 * 2 * MR);
    macro_rules! step {
        ($b0:expr, $b1:expr, $ap:expr) => {{
            let (b0, b1) = ($b0, $b1);
            let x = lanes::splat($ap[0]);
            c00 = lanes::mul_add(x, b0, c00);
            c01 = lanes::mul_add(x, b1, c01);
            let x = lanes::splat($ap[1]);
            c10 = lanes::mul_add(x, b0, c10);
            c11 = lanes::mul_add(x, b1, c11);
            let x = lanes::splat($ap[2]);
            c20 = lanes::mul_add(x, b0, c20);
            c21 = lanes::mul_add(x, b1, c21);
            let x = lanes::splat($ap[3]);
            c30 = lanes::mul_add(x, b0, c30);
            c31 = lanes::mul_add(x, b1, c31);
            let x = lanes::splat($ap[4]);
            c40 = lanes::mul_add(x, b0, c40);
            c41 = lanes::mul_add(x, b1, c41);
            let x = lanes::splat($ap[5]);
            c50 = lanes::mul_add(x, b0, c50);
            c51 = lanes::mul_add(x, b1, c51);
        }};
    }
    for (bp, ap) in b2.chunks_exact(4).zip(a2.chunks_exact(2 * MR)) {
        step!(bp[0], bp[1], &ap[..MR]);
        step!(bp[2], bp[3], &ap[MR..]);
    }
    for (bp, ap) in b_rest.chunks_exact(2).zip(a_rest.chunks_exact(MR)) {
        step!(bp[0], bp[1], ap);
    }
    [
        [c00, c01],
        [c10, c11],
        [c20, c21],
        [c30, c31],
        [c40, c41],
        [c50, c51],
    ]
}
