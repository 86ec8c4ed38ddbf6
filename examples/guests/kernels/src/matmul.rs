//! Matrix products of 2-D blocks: `matmul(a, b)` and the accumulating `matmul_acc(c, a, b)`.
//!
//! float64 uses a packed, cache-blocked product (GotoBLAS/BLIS style) with a 4 x 4 register tile
//! of two-lane vectors (WebAssembly SIMD in the guest build), under up to a few Strassen-Winograd
//! steps for large blocks (seven half-size products instead of eight per step); float32 and
//! int64 use a plain row-times-row loop.

use crate::bail;
use crate::chunk::{DType, Meta, Result, parse, parse_spec};
use crate::elem::Elem;
use crate::with_dtype;

/// Two f64 lanes: a WebAssembly `v128` in the guest, a pair elsewhere. The pointer functions
/// read and write little-endian f64 at any alignment.
#[cfg(all(target_arch = "wasm32", not(feature = "scalar")))]
mod lanes {
    use core::arch::wasm32::{
        f64x2_add, f64x2_extract_lane, f64x2_mul, f64x2_splat, f64x2_sub, i64x2_shuffle, v128,
        v128_load, v128_store,
    };

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
    #[inline]
    #[target_feature(enable = "simd128")]
    pub fn add(a: V, b: V) -> V {
        f64x2_add(a, b)
    }
    #[inline]
    #[target_feature(enable = "simd128")]
    pub fn sub(a: V, b: V) -> V {
        f64x2_sub(a, b)
    }
    #[inline]
    #[target_feature(enable = "simd128")]
    pub fn mul(a: V, b: V) -> V {
        f64x2_mul(a, b)
    }
    /// `c + a * b`, a multiply then an add (two roundings). Not `f64x2.relaxed_madd`:
    /// Wasmtime lowers that to `vfmadd213pd`, which overwrites a factor rather than the
    /// accumulator, so every accumulator moves to another register at every step and the
    /// register allocator spills some of them (the micro-kernel ran ~1.4x slower with it).
    /// A multiply and an add keep the accumulators in place and use the separate add ports.
    #[inline]
    #[target_feature(enable = "simd128")]
    pub fn mul_add(a: V, b: V, c: V) -> V {
        f64x2_add(c, f64x2_mul(a, b))
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
    /// The first lanes of `a` and `b`.
    #[inline]
    #[target_feature(enable = "simd128")]
    pub fn lo(a: V, b: V) -> V {
        i64x2_shuffle::<0, 2>(a, b)
    }
    /// The second lanes of `a` and `b`.
    #[inline]
    #[target_feature(enable = "simd128")]
    pub fn hi(a: V, b: V) -> V {
        i64x2_shuffle::<1, 3>(a, b)
    }
    /// Lane `i` of `v` in both lanes.
    #[inline]
    #[target_feature(enable = "simd128")]
    pub fn dup(v: V, i: usize) -> V {
        if i == 0 {
            i64x2_shuffle::<0, 0>(v, v)
        } else {
            i64x2_shuffle::<1, 1>(v, v)
        }
    }
    /// The two values at `p`.
    ///
    /// # Safety
    ///
    /// `p` must be readable for 16 bytes.
    #[inline]
    #[target_feature(enable = "simd128")]
    pub unsafe fn load(p: *const u8) -> V {
        // SAFETY: as the caller guarantees; the load has no alignment requirement.
        unsafe { v128_load(p.cast()) }
    }
    /// Writes the two lanes at `p`.
    ///
    /// # Safety
    ///
    /// `p` must be writable for 16 bytes.
    #[inline]
    #[target_feature(enable = "simd128")]
    pub unsafe fn store(p: *mut u8, v: V) {
        // SAFETY: as the caller guarantees; the store has no alignment requirement.
        unsafe { v128_store(p.cast(), v) }
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
    pub fn add(a: V, b: V) -> V {
        [a[0] + b[0], a[1] + b[1]]
    }
    #[inline(always)]
    pub fn sub(a: V, b: V) -> V {
        [a[0] - b[0], a[1] - b[1]]
    }
    #[inline(always)]
    pub fn mul(a: V, b: V) -> V {
        [a[0] * b[0], a[1] * b[1]]
    }
    #[inline(always)]
    pub fn mul_add(a: V, b: V, c: V) -> V {
        [c[0] + a[0] * b[0], c[1] + a[1] * b[1]]
    }
    #[inline(always)]
    pub fn lane(v: V, i: usize) -> f64 {
        v[i]
    }
    #[inline(always)]
    pub fn lo(a: V, b: V) -> V {
        [a[0], b[0]]
    }
    #[inline(always)]
    pub fn hi(a: V, b: V) -> V {
        [a[1], b[1]]
    }
    #[inline(always)]
    pub fn dup(v: V, i: usize) -> V {
        [v[i], v[i]]
    }
    /// # Safety
    ///
    /// `p` must be readable for 16 bytes.
    #[inline(always)]
    pub unsafe fn load(p: *const u8) -> V {
        // SAFETY: as the caller guarantees.
        let bytes = unsafe { p.cast::<[[u8; 8]; 2]>().read_unaligned() };
        [f64::from_le_bytes(bytes[0]), f64::from_le_bytes(bytes[1])]
    }
    /// # Safety
    ///
    /// `p` must be writable for 16 bytes.
    #[inline(always)]
    pub unsafe fn store(p: *mut u8, v: V) {
        let bytes = [v[0].to_le_bytes(), v[1].to_le_bytes()];
        // SAFETY: as the caller guarantees.
        unsafe { p.cast::<[[u8; 8]; 2]>().write_unaligned(bytes) };
    }
}

use lanes::V;

// Block sizes, in elements. The register tile is `MR x NR` (4 x 4: eight accumulator vectors,
// four vectors of A and two of B per step, 14 of the 16 vector registers of x86-64, plus one
// for a product); a packed strip of A (`KC x MR` values, each duplicated into a vector) and
// one of B (`KC x NR`) are 16 KB and 8 KB, the packed block of A (`MC x KC`) 256 KB, within
// L2 (1 MB) next to the panel of B (`KC x NC`) of the Strassen-Winograd leaves (250 columns:
// 0.5 MB), and a panel of B at most 2 MB, which a 1000-column block fills. Measured on
// 1000^3 without Strassen-Winograd steps (docs/benchmarks-arrays.md): KC 128, 256 and 384 are
// alike; NC 256 or 512 (B panel 0.5-1 MB) is 10-15% slower, MC 64 or 256 5-15% slower than
// 128. With the steps (250^3 leaves) and the micro-kernel's sums in registers, MC 48 or 64
// is ~3% faster than 128 (a task's 8 products; `syrk_sum` alike), 256 ~4% slower.
const MR: usize = 4;
const NR: usize = 4;
const KC: usize = 256;
const MC: usize = 64;
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
    let mut scratch = Scratch::default();
    gemm(
        ma.dtype,
        &mut c[cat..],
        &a[aat..],
        &b[bat..],
        (m, k, n),
        &mut scratch,
    );
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
    let mut scratch = Scratch::default();
    gemm(
        ma.dtype,
        &mut c[cat..],
        &a[aat..],
        &b[bat..],
        (m, k, n),
        &mut scratch,
    );
    Ok(c)
}

/// The accumulator of a sum of products: `c` itself, or zeros of its shape when `c` is a spec
/// (a header without data).
fn accumulator(c: Vec<u8>) -> Result<Vec<u8>> {
    let spec = parse_spec(&c, "c")?;
    Ok(if c.len() == spec.header_len() {
        spec.zeroed()
    } else {
        c
    })
}

/// Refuses an empty or odd list of blocks for `name`, which takes pairs.
fn check_pairs(name: &str, pairs: &[Vec<u8>]) -> Result<()> {
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        bail!(
            "{name} takes c and pairs of blocks, got {} blocks after c",
            pairs.len()
        );
    }
    Ok(())
}

/// `matmul_sum(c, a1, b1, a2, b2, ...)`: `c + a1 . b1 + a2 . b2 + ...`, written into `c`'s
/// buffer; `c` may be a spec (a header without data): the sum then starts from zeros. One
/// task accumulates a whole row-times-column of blocks instead of a chain of `matmul_acc`.
pub fn matmul_sum(c: Vec<u8>, pairs: Vec<Vec<u8>>) -> Result<Vec<u8>> {
    check_pairs("matmul_sum", &pairs)?;
    let mut c = accumulator(c)?;
    let (mc, cat) = parse(&c, "c")?;
    let mut scratch = Scratch::default();
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
            (m, k, n),
            &mut scratch,
        );
    }
    Ok(c)
}

/// `syrk_sum(c, a1, a2, ...)`: `c + a1 . a1^T + a2 . a2^T + ...` for `m x k_i` blocks `a_i`,
/// an `m x m` symmetric block, written into `c`'s buffer; `c` may be a spec (the sum then
/// starts from zeros). Only the upper triangle is computed (in float64, the register tiles
/// that hold an element on or above the diagonal: about half of the work of `matmul_sum` with
/// the transposes) and the lower triangle is then its mirror image, so `c`'s lower triangle
/// is ignored: a symmetric `c`, such as the result of an earlier `syrk_sum`, is what makes
/// the result `c + sum`. The half product is the plain packed product (no Strassen-Winograd
/// step): below [`STRASSEN_MIN`] in some dimension the upper triangle is bitwise what
/// `matmul_sum` of the pairs `(a_i, a_i^T)` gives (the same products, summed in the same
/// order); from it on `matmul_sum` takes Strassen-Winograd steps, and the two agree to
/// rounding.
pub fn syrk_sum(c: Vec<u8>, blocks: Vec<Vec<u8>>) -> Result<Vec<u8>> {
    if blocks.is_empty() {
        bail!("syrk_sum takes c and at least one block");
    }
    let mut c = accumulator(c)?;
    let (mc, cat) = parse(&c, "c")?;
    let (mut pack_a, mut pack_b) = (Vec::new(), Vec::new());
    for block in &blocks {
        let block = operand(block, "a")?;
        let (ma, aat) = parse(&block, "a")?;
        if ma.ndim() != 2 {
            bail!("syrk_sum takes 2-D blocks, got shape {:?}", ma.shape);
        }
        let (m, k) = (ma.shape[0], ma.shape[1]);
        if mc.shape != [m, m] || mc.dtype != ma.dtype {
            bail!(
                "syrk_sum: c has shape {:?} ({}), a product {:?} ({})",
                mc.shape,
                mc.dtype.name(),
                [m, m],
                ma.dtype.name()
            );
        }
        let a = &block[aat..];
        match ma.dtype {
            DType::F64 => {
                let packs = &mut (&mut pack_a, &mut pack_b);
                let a_t = BSource::TransposeOf(a, k);
                gemm_f64::<true>(&mut c[cat..], m, a, k, a_t, (m, k, m), packs, false)
            }
            other => with_dtype!(other, T => {
                let at = transposed::<T>(a, m, k);
                gemm_plain::<T>(&mut c[cat..], a, &at, m, k, m)
            }),
        }
    }
    let m = mc.shape[0];
    with_dtype!(mc.dtype, T => mirror_upper::<T>(&mut c[cat..], m));
    Ok(c)
}

/// An operand of `matmul_nt_sum` or `syrk_sum`: the block itself, or, for an int64 chunk
/// `[seed, rows, cols]`, the float64 block that `random` makes from that seed (element `i`,
/// row-major, is `uniform(seed, i)`), generated here rather than stored and moved. A 2-D
/// block is never a 1-D int64 chunk, so the two cannot be confused.
fn operand<'a>(bytes: &'a [u8], what: &str) -> Result<std::borrow::Cow<'a, [u8]>> {
    let (meta, at) = parse(bytes, what)?;
    if meta.dtype != DType::I64 || meta.ndim() != 1 {
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }
    let words: Vec<i64> = bytes[at..]
        .chunks_exact(8)
        .map(|w| i64::from_le_bytes(w.try_into().expect("8 bytes")))
        .collect();
    let [seed, rows, cols] = words[..] else {
        bail!("{what}: a generated operand is [seed, rows, cols], got {words:?}");
    };
    if rows < 0 || cols < 0 {
        bail!("{what}: a generated operand is [seed, rows, cols], got {words:?}");
    }
    let spec = Meta::new(DType::F64, &[rows as usize, cols as usize]).header();
    let mut seed_chunk = Meta::new(DType::I64, &[]).header();
    seed_chunk.extend_from_slice(&seed.to_le_bytes());
    Ok(std::borrow::Cow::Owned(crate::ops::random(
        &spec,
        &seed_chunk,
    )?))
}

/// `matmul_nt_sum(c, a1, b1, a2, b2, ...)`: `c + a1 . b1^T + a2 . b2^T + ...` for `m x k_i`
/// blocks `a_i` and `n x k_i` blocks `b_i`, written into `c`'s buffer; `c` may be a spec (the
/// sum then starts from zeros). `matmul_sum` with the second block of each pair transposed,
/// without a transposed block to make first: the product reads B's rows as its columns when
/// it packs them. Bitwise what `matmul_sum` of `(a_i, b_i^T)` gives: both take the same
/// Strassen-Winograd steps, whose sums of B's quadrants, formed here from the stored block, are
/// the transposes of the same sums.
pub fn matmul_nt_sum(c: Vec<u8>, pairs: Vec<Vec<u8>>) -> Result<Vec<u8>> {
    check_pairs("matmul_nt_sum", &pairs)?;
    let mut c = accumulator(c)?;
    let (mc, cat) = parse(&c, "c")?;
    let mut scratch = Scratch::default();
    for pair in pairs.chunks_exact(2) {
        let (a_block, b_block) = (operand(&pair[0], "a")?, operand(&pair[1], "b")?);
        let (ma, aat) = parse(&a_block, "a")?;
        let (mb, bat) = parse(&b_block, "b")?;
        if ma.ndim() != 2 || mb.ndim() != 2 || ma.shape[1] != mb.shape[1] || ma.dtype != mb.dtype {
            bail!(
                "matmul_nt_sum: blocks {:?} ({}) and {:?} ({}) are not an m x k and an n x k block",
                ma.shape,
                ma.dtype.name(),
                mb.shape,
                mb.dtype.name()
            );
        }
        let (m, k, n) = (ma.shape[0], ma.shape[1], mb.shape[0]);
        if mc.shape != [m, n] || mc.dtype != ma.dtype {
            bail!(
                "matmul_nt_sum: c has shape {:?} ({}), a product {:?} ({})",
                mc.shape,
                mc.dtype.name(),
                [m, n],
                ma.dtype.name()
            );
        }
        let (a, b) = (&a_block[aat..], &b_block[bat..]);
        match ma.dtype {
            DType::F64 => {
                let b_t = BSource::TransposeOf(b, k);
                gemm_f64_fast(&mut c[cat..], n, a, k, b_t, (m, k, n), &mut scratch)
            }
            other => with_dtype!(other, T => {
                let bt = transposed::<T>(b, n, k);
                gemm_plain::<T>(&mut c[cat..], a, &bt, m, k, n)
            }),
        }
    }
    Ok(c)
}

/// The `k x m` transpose of a row-major `m x k` block of `T` (little-endian bytes).
fn transposed<T: Elem>(a: &[u8], m: usize, k: usize) -> Vec<u8> {
    let s = T::SIZE;
    let mut out = vec![0u8; m * k * s];
    for i in 0..m {
        for p in 0..k {
            out[(p * m + i) * s..(p * m + i + 1) * s]
                .copy_from_slice(&a[(i * k + p) * s..(i * k + p + 1) * s]);
        }
    }
    out
}

/// Copies the upper triangle of the row-major `m x m` block `c` of `T` onto its lower one
/// (`c[j][i] = c[i][j]` for `i < j`), in tiles of 32 x 32 elements so that the strided
/// writes stay in cache.
fn mirror_upper<T: Elem>(c: &mut [u8], m: usize) {
    const TILE: usize = 32;
    let s = T::SIZE;
    for i0 in (0..m).step_by(TILE) {
        for j0 in (i0..m).step_by(TILE) {
            for i in i0..(i0 + TILE).min(m) {
                for j in j0.max(i + 1)..(j0 + TILE).min(m) {
                    c.copy_within((i * m + j) * s..(i * m + j + 1) * s, (j * m + i) * s);
                }
            }
        }
    }
}

fn gemm(
    dtype: DType,
    c: &mut [u8],
    a: &[u8],
    b: &[u8],
    (m, k, n): (usize, usize, usize),
    scratch: &mut Scratch,
) {
    match dtype {
        DType::F64 => gemm_f64_fast(c, n, a, k, BSource::Plain(b, n), (m, k, n), scratch),
        other => with_dtype!(other, T => gemm_plain::<T>(c, a, b, m, k, n)),
    }
}

/// The B operand of [`gemm_f64`] (`k x n`), with its row stride in values.
#[derive(Clone, Copy)]
enum BSource<'a> {
    /// B itself, row-major: element `(p, j)` at `p * ld + j`.
    Plain(&'a [u8], usize),
    /// The row-major `n x k` block whose transpose B is: element `(p, j)` of B at `j * ld + p`.
    TransposeOf(&'a [u8], usize),
}

impl<'a> BSource<'a> {
    /// The part of B from row `p` and column `j` on (the same stride).
    fn at(self, p: usize, j: usize) -> BSource<'a> {
        match self {
            BSource::Plain(b, ld) => BSource::Plain(&b[(p * ld + j) * 8..], ld),
            BSource::TransposeOf(bt, ld) => BSource::TransposeOf(&bt[(j * ld + p) * 8..], ld),
        }
    }

    /// The stored bytes, from the first element on.
    fn data(self) -> &'a [u8] {
        match self {
            BSource::Plain(b, _) | BSource::TransposeOf(b, _) => b,
        }
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

/// The smallest dimension of a float64 product that [`gemm_f64_fast`] splits into seven
/// half-size products (a Strassen-Winograd step): a 1000^3 product is split twice, into 49
/// products of 250^3 instead of 64 (measured in docs/benchmarks-arrays.md, "Strassen-Winograd
/// products").
pub const STRASSEN_MIN: usize = 500;

/// The buffers of the float64 products of one kernel call, reused by all of its products: the
/// packed blocks of [`gemm_f64`] and, per Strassen-Winograd level, the operand sums and the two
/// product temporaries of [`strassen`].
#[derive(Default)]
pub(crate) struct Scratch {
    pack_a: Vec<V>,
    pack_b: Vec<V>,
    levels: Vec<Vec<u8>>,
}

/// Whether [`strassen`] splits an `m x k x n` product: all three dimensions at least `min`
/// (and at least 2).
fn splits(m: usize, k: usize, n: usize, min: usize) -> bool {
    m.min(k).min(n) >= min.max(2)
}

/// `c += a . b` in float64 for a row-major `m x k` A (row stride `lda` values) and `m x n` C
/// (row stride `ldc`): [`strassen`] with [`STRASSEN_MIN`].
fn gemm_f64_fast(
    c: &mut [u8],
    ldc: usize,
    a: &[u8],
    lda: usize,
    b: BSource<'_>,
    dims: (usize, usize, usize),
    scratch: &mut Scratch,
) {
    gemm_f64_min(c, ldc, a, lda, b, dims, STRASSEN_MIN, scratch);
}

/// [`gemm_f64_fast`] with the smallest dimension that is split given (tests take small ones).
#[allow(clippy::too_many_arguments)]
fn gemm_f64_min(
    c: &mut [u8],
    ldc: usize,
    a: &[u8],
    lda: usize,
    b: BSource<'_>,
    (m, k, n): (usize, usize, usize),
    min: usize,
    scratch: &mut Scratch,
) {
    // One buffer per level, sized for the (floor) halves of that level's dimensions: four
    // sums of A's quadrants, four of B's, and the two product temporaries.
    let (mut mm, mut kk, mut nn) = (m, k, n);
    let mut depth = 0;
    while splits(mm, kk, nn, min) {
        (mm, kk, nn) = (mm / 2, kk / 2, nn / 2);
        let len = (4 * mm * kk + 4 * kk * nn + 2 * mm * nn) * 8;
        if scratch.levels.len() <= depth {
            scratch.levels.push(Vec::new());
        }
        if scratch.levels[depth].len() < len {
            scratch.levels[depth].resize(len, 0);
        }
        depth += 1;
    }
    let Scratch {
        pack_a,
        pack_b,
        levels,
    } = scratch;
    let mut packs = (pack_a, pack_b);
    strassen(
        c,
        ldc,
        a,
        lda,
        b,
        (m, k, n),
        &mut packs,
        &mut levels[..depth],
        false,
    );
}

/// `c += a . b` for contiguous row-major float64 `m x k` A and `m x n` C, with B given as
/// itself (`k x n`) or, with `transposed`, as its transpose (`n x k`): [`strassen`] splitting
/// while every dimension is at least `min`, for the tests.
#[cfg(test)]
pub(crate) fn strassen_product(
    c: &mut [u8],
    a: &[u8],
    b: &[u8],
    transposed: bool,
    (m, k, n): (usize, usize, usize),
    min: usize,
) {
    let b = if transposed {
        BSource::TransposeOf(b, k)
    } else {
        BSource::Plain(b, n)
    };
    gemm_f64_min(c, n, a, k, b, (m, k, n), min, &mut Scratch::default());
}

/// How many Strassen-Winograd levels an `m x k x n` product takes when every dimension at
/// least `min` is split, for the tests.
#[cfg(test)]
pub(crate) fn strassen_levels(m: usize, k: usize, n: usize, min: usize) -> usize {
    let (mut mm, mut kk, mut nn, mut depth) = (m, k, n, 0);
    while splits(mm, kk, nn, min) {
        (mm, kk, nn, depth) = (mm / 2, kk / 2, nn / 2, depth + 1);
    }
    depth
}

/// `c += a . b` by Strassen-Winograd steps, one per buffer of `levels` (the caller sizes them
/// for the dimensions; none left: [`gemm_f64`]). An odd dimension is peeled first: its last
/// column of A (odd k, a rank-one update of all of C), its last row of C (odd m) or last
/// column of C (odd n) is a [`gemm_f64`] of its own. The even part is split in quadrants,
/// `A = [A11 A12; A21 A22]` and likewise B and C, and takes seven half-size products:
///
/// ```text
/// S1 = A21 + A22   S2 = S1 - A11   S3 = A11 - A21   S4 = A12 - S2
/// T1 = B12 - B11   T2 = B22 - T1   T3 = B22 - B12   T4 = T2 - B21
/// P1 = A11 B11  P2 = A12 B21  P3 = S4 B22  P4 = A22 T4  P5 = S1 T1  P6 = S2 T2  P7 = S3 T3
/// C11 += P1 + P2             C12 += P1 + P6 + P5 + P3
/// C21 += P1 + P6 + P7 - P4   C22 += P1 + P6 + P7 + P5
/// ```
///
/// The sums are formed in one pass over A's quadrants and one over B's (for a transposed B,
/// over the quadrants of the stored block, giving the sums' transposes, so that the products
/// read them transposed too; `-T4` is formed, so that every product adds). Products go to two
/// temporaries X and Y or straight into C's quadrants, which each product adds to: `X = P1`,
/// `C11 += X`, `C11 += P2`, `X += P6`, `Y = P5`, `C12 += X + Y`, `C12 += P3`, `X += P7`,
/// `C22 += X + Y`, `C21 += X`, `C21 += A22 (-T4)`: four passes over C besides the products.
/// `X = P1` and `Y = P5` overwrite the temporaries (`overwrite`: the leaves' register tiles
/// are stored rather than added, and a step's passes over C become copies), so they are
/// never cleared.
#[allow(clippy::too_many_arguments)]
fn strassen(
    c: &mut [u8],
    ldc: usize,
    a: &[u8],
    lda: usize,
    b: BSource<'_>,
    (m, k, n): (usize, usize, usize),
    packs: &mut (&mut Vec<V>, &mut Vec<V>),
    levels: &mut [Vec<u8>],
    mut overwrite: bool,
) {
    let Some((mine, deeper)) = levels.split_first_mut() else {
        gemm_f64::<false>(c, ldc, a, lda, b, (m, k, n), packs, overwrite);
        return;
    };
    let (m2, k2, n2) = (m / 2, k / 2, n / 2);
    let (me, ke, ne) = (2 * m2, 2 * k2, 2 * n2);
    if overwrite && (me, ke, ne) != (m, k, n) {
        // The peeled parts add to C: start from zeros.
        for row in 0..m {
            c[row * ldc * 8..(row * ldc + n) * 8].fill(0);
        }
        overwrite = false;
    }
    if ke < k {
        gemm_f64::<false>(
            c,
            ldc,
            &a[ke * 8..],
            lda,
            b.at(ke, 0),
            (m, 1, n),
            packs,
            false,
        );
    }
    if me < m {
        let (row_c, row_a) = (&mut c[me * ldc * 8..], &a[me * lda * 8..]);
        gemm_f64::<false>(row_c, ldc, row_a, lda, b, (1, ke, n), packs, false);
    }
    if ne < n {
        gemm_f64::<false>(
            &mut c[ne * 8..],
            ldc,
            a,
            lda,
            b.at(0, ne),
            (me, ke, 1),
            packs,
            false,
        );
    }

    let (sums_a, rest) = mine.split_at_mut(4 * m2 * k2 * 8);
    let (sums_b, rest) = rest.split_at_mut(4 * k2 * n2 * 8);
    let (x, rest) = rest.split_at_mut(m2 * n2 * 8);
    let y = &mut rest[..m2 * n2 * 8];
    let quadrants_a = [
        a,
        &a[k2 * 8..],
        &a[m2 * lda * 8..],
        &a[(m2 * lda + k2) * 8..],
    ];
    sums::<false>(quadrants_a, lda, (m2, k2), sums_a);
    let quadrants_b = [b, b.at(0, n2), b.at(k2, 0), b.at(k2, n2)];
    // For a transposed B, the quadrants of the stored block (rows n, columns k) give the
    // transposes of the sums; the products read them transposed.
    let (ld_b, shape_b, transposed) = match b {
        BSource::Plain(_, ld) => (ld, (k2, n2), false),
        BSource::TransposeOf(_, ld) => (ld, (n2, k2), true),
    };
    sums::<true>(quadrants_b.map(BSource::data), ld_b, shape_b, sums_b);
    let (sums_a, sums_b) = (&*sums_a, &*sums_b);
    let s = |i: usize| &sums_a[i * m2 * k2 * 8..(i + 1) * m2 * k2 * 8];
    let t = |i: usize| {
        let t = &sums_b[i * k2 * n2 * 8..(i + 1) * k2 * n2 * 8];
        if transposed {
            BSource::TransposeOf(t, k2)
        } else {
            BSource::Plain(t, n2)
        }
    };
    let (a11, a12, a22) = (quadrants_a[0], quadrants_a[1], quadrants_a[3]);
    let (b11, b21, b22) = (quadrants_b[0], quadrants_b[2], quadrants_b[3]);
    let half = (m2, k2, n2);
    let (c12, c21, c22) = (n2 * 8, m2 * ldc * 8, (m2 * ldc + n2) * 8);

    // With `overwrite`, the passes over C replace its quadrants (`C11 = X`, ...) and the
    // products then add to them.
    let o = overwrite;
    strassen(x, n2, a11, lda, b11, half, packs, deeper, true); // X = P1
    add_into(c, ldc, x, None, (m2, n2), o);
    strassen(c, ldc, a12, lda, b21, half, packs, deeper, false); // C11 += P1 + P2
    strassen(x, n2, s(1), k2, t(1), half, packs, deeper, false); // X = P1 + P6
    strassen(y, n2, s(0), k2, t(0), half, packs, deeper, true); // Y = P5
    add_into(&mut c[c12..], ldc, x, Some(y), (m2, n2), o);
    strassen(
        &mut c[c12..],
        ldc,
        s(3),
        k2,
        b22,
        half,
        packs,
        deeper,
        false,
    ); // C12 += P3
    strassen(x, n2, s(2), k2, t(2), half, packs, deeper, false); // X = P1 + P6 + P7
    add_into(&mut c[c22..], ldc, x, Some(y), (m2, n2), o);
    add_into(&mut c[c21..], ldc, x, None, (m2, n2), o);
    strassen(
        &mut c[c21..],
        ldc,
        a22,
        lda,
        t(3),
        half,
        packs,
        deeper,
        false,
    ); // C21 -= P4
}

/// The four sums of a Strassen-Winograd step (see [`strassen`]) from the quadrants `q`
/// (`[q11, q12, q21, q22]`, each given from its first element, row stride `ld` values) of
/// `rows x cols` values each, written as four contiguous `rows x cols` matrices into `out`:
/// with `B_SIDE` false `S1 = q21 + q22`, `S2 = S1 - q11`, `S3 = q11 - q21`, `S4 = q12 - S2`;
/// with `B_SIDE` true `T1 = q12 - q11`, `T2 = q22 - T1`, `T3 = q22 - q12`, `-T4 = q21 - T2`.
/// Elementwise, so the sums of transposed quadrants are the transposes of the sums.
#[cfg_attr(
    all(target_arch = "wasm32", not(feature = "scalar")),
    target_feature(enable = "simd128")
)]
fn sums<const B_SIDE: bool>(
    q: [&[u8]; 4],
    ld: usize,
    (rows, cols): (usize, usize),
    out: &mut [u8],
) {
    if rows == 0 || cols == 0 {
        return;
    }
    let size = rows * cols;
    assert!(out.len() >= 4 * size * 8 && q.iter().all(|q| q.len() >= ((rows - 1) * ld + cols) * 8));
    let q = q.map(|q| q.as_ptr());
    let o = out.as_mut_ptr();
    for r in 0..rows {
        let mut j = 0;
        // SAFETY: `(r, j)` and `(r, j + 1)` are inside every quadrant and every output matrix
        // (asserted above).
        unsafe {
            while j + 2 <= cols {
                let at = (r * ld + j) * 8;
                let v = combine::<B_SIDE>([
                    lanes::load(q[0].add(at)),
                    lanes::load(q[1].add(at)),
                    lanes::load(q[2].add(at)),
                    lanes::load(q[3].add(at)),
                ]);
                for (i, v) in v.into_iter().enumerate() {
                    lanes::store(o.add((i * size + r * cols + j) * 8), v);
                }
                j += 2;
            }
            if j < cols {
                let at = (r * ld + j) * 8;
                let x = |p: *const u8| {
                    lanes::splat(f64::from_le_bytes(p.add(at).cast::<[u8; 8]>().read()))
                };
                let v = combine::<B_SIDE>([x(q[0]), x(q[1]), x(q[2]), x(q[3])]);
                for (i, v) in v.into_iter().enumerate() {
                    let to = o.add((i * size + r * cols + j) * 8).cast::<[u8; 8]>();
                    to.write(lanes::lane(v, 0).to_le_bytes());
                }
            }
        }
    }
}

/// The four sums of [`sums`] for one vector of each quadrant.
#[inline]
#[cfg_attr(
    all(target_arch = "wasm32", not(feature = "scalar")),
    target_feature(enable = "simd128")
)]
fn combine<const B_SIDE: bool>([q11, q12, q21, q22]: [V; 4]) -> [V; 4] {
    if B_SIDE {
        let t1 = lanes::sub(q12, q11);
        let t2 = lanes::sub(q22, t1);
        [t1, t2, lanes::sub(q22, q12), lanes::sub(q21, t2)]
    } else {
        let s1 = lanes::add(q21, q22);
        let s2 = lanes::sub(s1, q11);
        [s1, s2, lanes::sub(q11, q21), lanes::sub(q12, s2)]
    }
}

/// `c += x` (or `c += x + y`) for a `rows x cols` part of C (row stride `ldc` values) and
/// contiguous `rows x cols` matrices `x` and `y`; with `overwrite`, `c = x` (or `c = x + y`).
#[cfg_attr(
    all(target_arch = "wasm32", not(feature = "scalar")),
    target_feature(enable = "simd128")
)]
fn add_into(
    c: &mut [u8],
    ldc: usize,
    x: &[u8],
    y: Option<&[u8]>,
    (rows, cols): (usize, usize),
    overwrite: bool,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    let size = rows * cols * 8;
    assert!(c.len() >= ((rows - 1) * ldc + cols) * 8 && x.len() >= size);
    assert!(y.is_none_or(|y| y.len() >= size));
    let (cp, xp) = (c.as_mut_ptr(), x.as_ptr());
    let yp = y.map(|y| y.as_ptr());
    for r in 0..rows {
        let mut j = 0;
        // SAFETY: `(r, j)` and `(r, j + 1)` are inside C, X and Y (asserted above).
        unsafe {
            let (cr, xr) = (cp.add(r * ldc * 8), xp.add(r * cols * 8));
            let yr = yp.map(|yp| yp.add(r * cols * 8));
            // One loop per case, so that each is a plain vector loop.
            match (yr, overwrite) {
                (Some(yr), false) => {
                    while j + 2 <= cols {
                        let xy = lanes::add(lanes::load(xr.add(8 * j)), lanes::load(yr.add(8 * j)));
                        lanes::store(cr.add(8 * j), lanes::add(lanes::load(cr.add(8 * j)), xy));
                        j += 2;
                    }
                }
                (Some(yr), true) => {
                    while j + 2 <= cols {
                        let xy = lanes::add(lanes::load(xr.add(8 * j)), lanes::load(yr.add(8 * j)));
                        lanes::store(cr.add(8 * j), xy);
                        j += 2;
                    }
                }
                (None, false) => {
                    while j + 2 <= cols {
                        let v = lanes::add(lanes::load(cr.add(8 * j)), lanes::load(xr.add(8 * j)));
                        lanes::store(cr.add(8 * j), v);
                        j += 2;
                    }
                }
                (None, true) => {
                    core::ptr::copy_nonoverlapping(xr, cr, cols / 2 * 16);
                    j = cols / 2 * 2;
                }
            }
            if j < cols {
                let read = |p: *const u8| f64::from_le_bytes(p.add(8 * j).cast::<[u8; 8]>().read());
                let mut v = match yr {
                    Some(yr) => read(xr) + read(yr),
                    None => read(xr),
                };
                if !overwrite {
                    v += read(cr);
                }
                cr.add(8 * j).cast::<[u8; 8]>().write(v.to_le_bytes());
            }
        }
    }
}

/// `c += a . b` in float64, in the style of GotoBLAS/BLIS, for a row-major `m x k` A (row
/// stride `lda` values) and `m x n` C (row stride `ldc`): B is packed in panels of `KC x NC`
/// as strips of `NR` columns (`NR / 2` vectors per row of a strip), A in blocks of `MC x KC` as
/// strips of `MR` rows (each value duplicated into a vector, so that the kernel needs no
/// broadcast: in Wasmtime a `v128.load64_splat` whose result is used twice becomes a scalar
/// load, a move and a shuffle), and an `MR x NR` tile of C is accumulated in vector registers
/// by [`micro`], which reads the packed buffers without bounds checks. The packed blocks go
/// to `packs` (A's, B's), grown when too small: at most 512 KB for A and 2 MB for B.
///
/// With `UPPER` (for a product whose result is symmetric, `m == n`), only the tiles that hold
/// an element on or above the diagonal are computed; the others are left as they were. With
/// `overwrite` (not with `UPPER`), C's values are replaced rather than added to: `c = a . b`.
#[allow(clippy::too_many_arguments)]
fn gemm_f64<const UPPER: bool>(
    c: &mut [u8],
    ldc: usize,
    a: &[u8],
    lda: usize,
    b: BSource<'_>,
    (m, k, n): (usize, usize, usize),
    packs: &mut (&mut Vec<V>, &mut Vec<V>),
    overwrite: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if overwrite {
            for row in 0..m {
                c[row * ldc * 8..(row * ldc + n) * 8].fill(0);
            }
        }
        return;
    }
    // What makes the raw reads and writes below stay inside the buffers.
    let b_fits = match b {
        BSource::Plain(b, ld) => ld >= n && b.len() >= ((k - 1) * ld + n) * 8,
        BSource::TransposeOf(bt, ld) => ld >= k && bt.len() >= ((n - 1) * ld + k) * 8,
    };
    assert!(b_fits && lda >= k && ldc >= n);
    assert!(a.len() >= ((m - 1) * lda + k) * 8 && c.len() >= ((m - 1) * ldc + n) * 8);
    let kc_max = KC.min(k);
    let (b_len, a_len) = (
        kc_max * NC.min(n.next_multiple_of(NR)) / 2,
        kc_max * MC.min(m.next_multiple_of(MR)),
    );
    let (apack, bpack) = packs;
    // The packing writes every vector it reads (zeros past the edges): no clearing needed.
    if apack.len() < a_len {
        apack.resize(a_len, lanes::splat(0.0));
    }
    if bpack.len() < b_len {
        bpack.resize(b_len, lanes::splat(0.0));
    }
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            match b {
                BSource::Plain(b, ld) => pack_b(bpack, b, ld, pc, kc, jc, nc),
                BSource::TransposeOf(bt, ld) => pack_bt(bpack, bt, ld, pc, kc, jc, nc),
            }
            for ic in (0..m).step_by(MC) {
                if UPPER && ic >= jc + nc {
                    // Every row of this block is below the panel's last column.
                    break;
                }
                let mc = MC.min(m - ic);
                pack_a(apack, a, lda, ic, mc, pc, kc);
                for jr in (0..nc).step_by(NR) {
                    let strip_b = &bpack[jr / 2 * kc..(jr / 2 + NR / 2) * kc];
                    let cols = NR.min(nc - jr);
                    for ir in (0..mc).step_by(MR) {
                        if UPPER && ic + ir >= jc + jr + cols {
                            // This tile and the ones below it lie under the diagonal.
                            break;
                        }
                        let strip_a = &apack[ir * kc..(ir + MR) * kc];
                        let rows = MR.min(mc - ir);
                        let at = ((ic + ir) * ldc + jc + jr) * 8;
                        // SAFETY: the strips hold `kc` steps of `MR` and `NR / 2` vectors; the
                        // tile of C at `at` has `rows` rows of `cols` values inside `c`
                        // (`ic + ir + rows <= m`, `jc + jr + cols <= n`, asserted length above).
                        unsafe {
                            micro(
                                kc,
                                strip_a.as_ptr(),
                                strip_b.as_ptr(),
                                c.as_mut_ptr().add(at),
                                ldc,
                                (rows, cols),
                                overwrite && pc == 0,
                            )
                        };
                    }
                }
            }
        }
    }
}

/// Packs rows `pc..pc + kc`, columns `jc..jc + nc` of B (row stride `ld` values) into `out` as
/// strips of `NR` columns, each `kc` steps of `NR / 2` vectors; columns past the edge are
/// zeros.
#[cfg_attr(
    all(target_arch = "wasm32", not(feature = "scalar")),
    target_feature(enable = "simd128")
)]
fn pack_b(out: &mut [V], b: &[u8], ld: usize, pc: usize, kc: usize, jc: usize, nc: usize) {
    let strips = nc.div_ceil(NR);
    assert!(out.len() >= strips * kc * (NR / 2) && b.len() >= ((pc + kc - 1) * ld + jc + nc) * 8);
    let out = out.as_mut_ptr();
    for s in 0..strips {
        let j = jc + s * NR;
        let cols = NR.min(jc + nc - j);
        for p in 0..kc {
            // SAFETY: row `pc + p` of B has columns `j..j + cols` (asserted above), and the
            // strip `s` of `out` has `kc * NR / 2` vectors.
            unsafe {
                let from = b.as_ptr().add(((pc + p) * ld + j) * 8);
                let to = out.add((s * kc + p) * (NR / 2));
                if cols == NR {
                    for h in 0..NR / 2 {
                        *to.add(h) = lanes::load(from.add(16 * h));
                    }
                } else {
                    let x = |col: usize| -> f64 {
                        if col < cols {
                            f64::from_le_bytes(from.add(8 * col).cast::<[u8; 8]>().read())
                        } else {
                            0.0
                        }
                    };
                    for h in 0..NR / 2 {
                        *to.add(h) = lanes::pair(x(2 * h), x(2 * h + 1));
                    }
                }
            }
        }
    }
}

/// [`pack_b`] for B the transpose of `bt` (row-major `n x k`, row stride `ld` values): rows
/// `pc..pc + kc`, columns `jc..jc + nc` of B are columns `pc..pc + kc`, rows `jc..jc + nc` of
/// `bt`.
#[cfg_attr(
    all(target_arch = "wasm32", not(feature = "scalar")),
    target_feature(enable = "simd128")
)]
fn pack_bt(out: &mut [V], bt: &[u8], ld: usize, pc: usize, kc: usize, jc: usize, nc: usize) {
    let strips = nc.div_ceil(NR);
    assert!(out.len() >= strips * kc * (NR / 2) && bt.len() >= ((jc + nc - 1) * ld + pc + kc) * 8);
    let out = out.as_mut_ptr();
    for s in 0..strips {
        let j = jc + s * NR;
        let cols = NR.min(jc + nc - j);
        // SAFETY: rows `j..j + cols` of `bt` have columns `pc..pc + kc` (asserted above), and
        // the strip `s` of `out` has `kc * NR / 2` vectors.
        unsafe {
            let x = |col: usize, p: usize| -> f64 {
                if col < cols {
                    let at = ((j + col) * ld + pc + p) * 8;
                    f64::from_le_bytes(bt.as_ptr().add(at).cast::<[u8; 8]>().read())
                } else {
                    0.0
                }
            };
            let mut p = 0;
            if cols == NR {
                // Two steps at a time: a vector from each of the strip's rows, transposed in
                // pairs of rows.
                let rows: [*const u8; NR] =
                    core::array::from_fn(|r| bt.as_ptr().add(((j + r) * ld + pc) * 8));
                while p + 2 <= kc {
                    let v: [V; NR] = core::array::from_fn(|r| lanes::load(rows[r].add(8 * p)));
                    let to = out.add((s * kc + p) * (NR / 2));
                    for h in 0..NR / 2 {
                        *to.add(h) = lanes::lo(v[2 * h], v[2 * h + 1]);
                        *to.add(NR / 2 + h) = lanes::hi(v[2 * h], v[2 * h + 1]);
                    }
                    p += 2;
                }
            }
            for p in p..kc {
                let to = out.add((s * kc + p) * (NR / 2));
                for h in 0..NR / 2 {
                    *to.add(h) = lanes::pair(x(2 * h, p), x(2 * h + 1, p));
                }
            }
        }
    }
}

/// Packs rows `ic..ic + mc`, columns `pc..pc + kc` of A (row stride `ld` values) into `out` as
/// strips of `MR` rows, each `kc` steps of `MR` vectors that hold the value in both lanes; rows
/// past the edge are zeros. A full strip is packed two steps at a time, a vector from each of
/// its rows giving eight consecutive vectors of `out` (row by row, a loop iteration per two
/// values, with the engine's interruption check and reloads of spilled pointers, made the
/// packing ~5% of a product).
#[cfg_attr(
    all(target_arch = "wasm32", not(feature = "scalar")),
    target_feature(enable = "simd128")
)]
fn pack_a(out: &mut [V], a: &[u8], ld: usize, ic: usize, mc: usize, pc: usize, kc: usize) {
    let strips = mc.div_ceil(MR);
    assert!(out.len() >= strips * kc * MR && a.len() >= ((ic + mc - 1) * ld + pc + kc) * 8);
    let out = out.as_mut_ptr();
    let zero = lanes::splat(0.0);
    for s in 0..strips {
        if (s + 1) * MR <= mc {
            // SAFETY: the strip `s` of `out` has `kc * MR` vectors; rows `ic + s * MR..` of
            // A, `MR` of them, have columns `pc..pc + kc` (asserted above).
            unsafe {
                let to = out.add(s * kc * MR);
                let rows: [*const u8; MR] =
                    core::array::from_fn(|r| a.as_ptr().add(((ic + s * MR + r) * ld + pc) * 8));
                let mut p = 0;
                while p + 2 <= kc {
                    let v: [V; MR] = core::array::from_fn(|r| lanes::load(rows[r].add(8 * p)));
                    for (r, v) in v.iter().enumerate() {
                        *to.add(p * MR + r) = lanes::dup(*v, 0);
                    }
                    for (r, v) in v.iter().enumerate() {
                        *to.add((p + 1) * MR + r) = lanes::dup(*v, 1);
                    }
                    p += 2;
                }
                if p < kc {
                    for (r, row) in rows.iter().enumerate() {
                        let x = f64::from_le_bytes(row.add(8 * p).cast::<[u8; 8]>().read());
                        *to.add(p * MR + r) = lanes::splat(x);
                    }
                }
            }
            continue;
        }
        for r in 0..MR {
            let i = s * MR + r;
            // SAFETY: the strip `s` of `out` has `kc * MR` vectors; row `ic + i` of A (when
            // `i < mc`) has columns `pc..pc + kc` (asserted above).
            unsafe {
                let to = out.add(s * kc * MR + r);
                if i >= mc {
                    for p in 0..kc {
                        *to.add(p * MR) = zero;
                    }
                    continue;
                }
                let from = a.as_ptr().add(((ic + i) * ld + pc) * 8);
                let mut p = 0;
                while p + 2 <= kc {
                    let v = lanes::load(from.add(8 * p));
                    *to.add(p * MR) = lanes::dup(v, 0);
                    *to.add((p + 1) * MR) = lanes::dup(v, 1);
                    p += 2;
                }
                if p < kc {
                    let x = f64::from_le_bytes(from.add(8 * p).cast::<[u8; 8]>().read());
                    *to.add(p * MR) = lanes::splat(x);
                }
            }
        }
    }
}

/// `C[..rows, ..cols] += A . B` (with `store`, `= A . B`) for one tile: `a` holds `kc` steps of
/// `MR` vectors of A (each value in both lanes), `b` `kc` steps of `NR / 2` vectors of B, `c`
/// points at the tile's first element in a row-major C of `ldc` columns (little-endian f64,
/// any alignment).
///
/// # Safety
///
/// `a` and `b` must be readable for `kc * MR` and `kc * NR / 2` vectors, and `c` valid
/// for reads and writes of `rows` rows of `cols` values with a row stride of `ldc` values.
#[inline]
#[cfg_attr(
    all(target_arch = "wasm32", not(feature = "scalar")),
    target_feature(enable = "simd128")
)]
unsafe fn micro(
    kc: usize,
    a: *const V,
    b: *const V,
    c: *mut u8,
    ldc: usize,
    (rows, cols): (usize, usize),
    store: bool,
) {
    const NB: usize = NR / 2;
    if kc == 0 {
        return;
    }
    let z = lanes::splat(0.0);
    let mut tile = core::mem::MaybeUninit::<[[V; NB]; MR]>::uninit();
    // The sums live in `tile` between loop iterations: values carried around the loop would
    // cross the engine's interruption check (a call on its slow path), which makes the
    // register allocator keep them in stack slots. Each iteration instead sums its own steps
    // in registers, starting from its first step's products, and adds that partial sum to
    // `tile` at its end (the first iteration stores it: no zeroed tile, which LLVM would
    // clear with a `memory.fill`, a call into the engine): the only dependency between
    // iterations is that short load, add and store, not every step's add (adding each
    // iteration's steps onto the tile's values made the loop ~20% slower than the steps
    // alone, natively as in the guest).
    let t = core::hint::black_box(tile.as_mut_ptr());
    let (mut a, mut b) = (a, b);
    // SAFETY: `kc` steps of `MR` values and `NB` vectors, as the caller guarantees; `t` points
    // at `tile`, which is read only after the first write.
    unsafe {
        let mut left = kc;
        let mut started = false;
        // Adds the partial sum `acc` to `tile`, or stores it there first.
        let mut fold = |acc: [[V; NB]; MR]| {
            let mut sum = acc;
            if started {
                for (row, old) in sum.iter_mut().zip(t.read()) {
                    for (v, o) in row.iter_mut().zip(old) {
                        *v = lanes::add(o, *v);
                    }
                }
            }
            t.write(sum);
            started = true;
        };
        // One step of k: `$first` starts the partial sum with its products, the others add
        // theirs; after the last step the partial sum leaves block `$exit`. The exit test
        // after each step also makes each step its own block, so that the engine computes a
        // step's products before it loads the next step's operands: Cranelift keeps a block's
        // loads in order but places the arithmetic just before its first use, here the
        // block's end, so many steps in one block would load ~100 vectors before the first
        // multiply and spill most of them.
        macro_rules! step {
            ($exit:lifetime, $acc:ident, $first:expr) => {{
                let bv: [V; NB] = core::array::from_fn(|j| *b.add(j));
                for (r, row) in $acc.iter_mut().enumerate() {
                    let x = *a.add(r);
                    for (cv, bj) in row.iter_mut().zip(bv) {
                        *cv = if $first {
                            lanes::mul(x, bj)
                        } else {
                            lanes::mul_add(x, bj, *cv)
                        };
                    }
                }
                a = a.add(MR);
                b = b.add(NB);
                left -= 1;
                if left == 0 {
                    break $exit $acc;
                }
            }};
        }
        // Eight more steps.
        macro_rules! eight {
            ($exit:lifetime, $acc:ident) => {{
                step!($exit, $acc, false);
                step!($exit, $acc, false);
                step!($exit, $acc, false);
                step!($exit, $acc, false);
                step!($exit, $acc, false);
                step!($exit, $acc, false);
                step!($exit, $acc, false);
                step!($exit, $acc, false);
            }};
        }
        'k: loop {
            // Opaque to LLVM: otherwise its strength reduction turns the constant offsets from
            // `a` and `b` below into separate additions instead of load offsets.
            a = core::hint::black_box(a);
            b = core::hint::black_box(b);
            // Up to 64 steps per iteration, leaving the labelled block early after the
            // last step: the partial sum's trip through `tile` (and the engine's interruption
            // check) once per 64 steps. The single exit matters: with an exit of its own
            // per step (a `fold` and `break` in each), LLVM gave each exit its own copy of the
            // arithmetic (in 32 steps), and the engine then loaded every step's operands and
            // spilled them.
            let last = 'body: {
                let mut acc = [[z; NB]; MR];
                step!('body, acc, true);
                step!('body, acc, false);
                step!('body, acc, false);
                step!('body, acc, false);
                step!('body, acc, false);
                step!('body, acc, false);
                step!('body, acc, false);
                step!('body, acc, false);
                eight!('body, acc);
                eight!('body, acc);
                eight!('body, acc);
                eight!('body, acc);
                eight!('body, acc);
                eight!('body, acc);
                eight!('body, acc);
                fold(acc);
                continue 'k;
            };
            fold(last);
            break;
        }
    }
    // SAFETY: `t` points at `tile`.
    let acc = unsafe { t.read() };
    if rows == MR && cols == NR {
        for (r, row) in acc.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                // SAFETY: inside the full tile.
                unsafe {
                    let p = c.add((r * ldc + 2 * j) * 8);
                    let v = if store {
                        *v
                    } else {
                        lanes::add(lanes::load(p), *v)
                    };
                    lanes::store(p, v);
                }
            }
        }
    } else {
        for (r, row) in acc.iter().enumerate().take(rows) {
            for col in 0..cols {
                // SAFETY: inside the partial tile.
                unsafe {
                    let p = c.add((r * ldc + col) * 8).cast::<[u8; 8]>();
                    let mut v = lanes::lane(row[col / 2], col % 2);
                    if !store {
                        v += f64::from_le_bytes(p.read());
                    }
                    p.write(v.to_le_bytes());
                }
            }
        }
    }
}
