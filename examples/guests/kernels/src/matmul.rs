//! Matrix products of 2-D blocks: `matmul(a, b)` and the accumulating `matmul_acc(c, a, b)`.
//!
//! float64 uses a packed, cache-blocked product (GotoBLAS/BLIS style) with a 4 x 4 register tile
//! of two-lane vectors (WebAssembly SIMD in the guest build); float32 and int64 use a plain
//! row-times-row loop.

use crate::bail;
use crate::chunk::{DType, Meta, Result, parse, parse_spec};
use crate::elem::Elem;
use crate::with_dtype;

/// Two f64 lanes: a WebAssembly `v128` in the guest, a pair elsewhere. The pointer functions
/// read and write little-endian f64 at any alignment.
#[cfg(all(target_arch = "wasm32", not(feature = "scalar")))]
mod lanes {
    use core::arch::wasm32::{
        f64x2_add, f64x2_extract_lane, f64x2_mul, f64x2_splat, i64x2_shuffle, v128, v128_load,
        v128_store,
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
// one of B (`KC x NR`) are 16 KB and 8 KB, the packed block of A (`MC x KC`) 512 KB, within
// L2, and a panel of B (`KC x NC`) at most 2 MB, which a 1000-column block fills. Measured on
// 1000^3 (docs/benchmarks-arrays.md): KC 128, 256 and 384 are alike; NC 256 or 512 (B panel
// 0.5-1 MB) is 10-15% slower, MC 64 or 256 5-15% slower.
const MR: usize = 4;
const NR: usize = 4;
const KC: usize = 256;
const MC: usize = 128;
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

/// `syrk_sum(c, a1, a2, ...)`: `c + a1 . a1^T + a2 . a2^T + ...` for `m x k_i` blocks `a_i`,
/// an `m x m` symmetric block, written into `c`'s buffer; `c` may be a spec (the sum then
/// starts from zeros). Only the upper triangle is computed (in float64, the register tiles
/// that hold an element on or above the diagonal: about half of the work of `matmul_sum` with
/// the transposes) and the lower triangle is then its mirror image, so `c`'s lower triangle
/// is ignored: a symmetric `c`, such as the result of an earlier `syrk_sum`, is what makes
/// the result `c + sum`. The upper triangle is bitwise what `matmul_sum` of the pairs
/// `(a_i, a_i^T)` gives, and so is the lower one (the same products, summed in the same order).
pub fn syrk_sum(c: Vec<u8>, blocks: Vec<Vec<u8>>) -> Result<Vec<u8>> {
    if blocks.is_empty() {
        bail!("syrk_sum takes c and at least one block");
    }
    let spec = parse_spec(&c, "c")?;
    let mut c = if c.len() == spec.header_len() {
        spec.zeroed()
    } else {
        c
    };
    let (mc, cat) = parse(&c, "c")?;
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
            DType::F64 => gemm_f64::<true>(&mut c[cat..], a, BSource::TransposeOf(a), m, k, m),
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
/// it packs them. Bitwise what `matmul_sum` of `(a_i, b_i^T)` gives.
pub fn matmul_nt_sum(c: Vec<u8>, pairs: Vec<Vec<u8>>) -> Result<Vec<u8>> {
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        bail!(
            "matmul_nt_sum takes c and pairs of blocks, got {} blocks after c",
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
            DType::F64 => gemm_f64::<false>(&mut c[cat..], a, BSource::TransposeOf(b), m, k, n),
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

fn gemm(dtype: DType, c: &mut [u8], a: &[u8], b: &[u8], m: usize, k: usize, n: usize) {
    match dtype {
        DType::F64 => gemm_f64::<false>(c, a, BSource::Plain(b), m, k, n),
        other => with_dtype!(other, T => gemm_plain::<T>(c, a, b, m, k, n)),
    }
}

/// The B operand of [`gemm_f64`] (`k x n`).
#[derive(Clone, Copy)]
enum BSource<'a> {
    /// B itself, row-major.
    Plain(&'a [u8]),
    /// The row-major `n x k` block whose transpose B is.
    TransposeOf(&'a [u8]),
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

/// `c += a . b` in float64, in the style of GotoBLAS/BLIS: B is packed in panels of `KC x NC`
/// as strips of `NR` columns (`NR / 2` vectors per row of a strip), A in blocks of `MC x KC` as
/// strips of `MR` rows (each value duplicated into a vector, so that the kernel needs no
/// broadcast: in Wasmtime a `v128.load64_splat` whose result is used twice becomes a scalar
/// load, a move and a shuffle), and an `MR x NR` tile of C is accumulated in vector registers
/// by [`micro`], which reads the packed buffers without bounds checks. Two buffers are
/// allocated per call: at most 2 MB for B and 512 KB for A.
///
/// With `UPPER` (for a product whose result is symmetric, `m == n`), only the tiles that hold
/// an element on or above the diagonal are computed; the others are left as they were.
fn gemm_f64<const UPPER: bool>(
    c: &mut [u8],
    a: &[u8],
    b: BSource<'_>,
    m: usize,
    k: usize,
    n: usize,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    // What makes the raw reads and writes below stay inside the buffers.
    let b_len = match b {
        BSource::Plain(b) | BSource::TransposeOf(b) => b.len(),
    };
    assert!(a.len() >= m * k * 8 && b_len >= k * n * 8 && c.len() >= m * n * 8);
    let kc_max = KC.min(k);
    let mut bpack = vec![lanes::splat(0.0); kc_max * NC.min(n.next_multiple_of(NR)) / 2];
    let mut apack = vec![lanes::splat(0.0); kc_max * MC.min(m.next_multiple_of(MR))];
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            match b {
                BSource::Plain(b) => pack_b(&mut bpack, b, n, pc, kc, jc, nc),
                BSource::TransposeOf(bt) => pack_bt(&mut bpack, bt, k, pc, kc, jc, nc),
            }
            for ic in (0..m).step_by(MC) {
                if UPPER && ic >= jc + nc {
                    // Every row of this block is below the panel's last column.
                    break;
                }
                let mc = MC.min(m - ic);
                pack_a(&mut apack, a, k, ic, mc, pc, kc);
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
                        let at = ((ic + ir) * n + jc + jr) * 8;
                        // SAFETY: the strips hold `kc` steps of `MR` and `NR / 2` vectors; the tile of C at `at` has `rows` rows of `cols` values
                        // inside `c` (`ic + ir + rows <= m`, `jc + jr + cols <= n`, asserted
                        // length above).
                        unsafe {
                            micro(
                                kc,
                                strip_a.as_ptr(),
                                strip_b.as_ptr(),
                                c.as_mut_ptr().add(at),
                                n,
                                rows,
                                cols,
                            )
                        };
                    }
                }
            }
        }
    }
}

/// Packs rows `pc..pc + kc`, columns `jc..jc + nc` of B (`k x n`) into `out` as strips of `NR`
/// columns, each `kc` steps of `NR / 2` vectors; columns past the edge are zeros.
fn pack_b(out: &mut [V], b: &[u8], n: usize, pc: usize, kc: usize, jc: usize, nc: usize) {
    let strips = nc.div_ceil(NR);
    assert!(out.len() >= strips * kc * (NR / 2) && b.len() >= (pc + kc) * n * 8 && jc + nc <= n);
    let out = out.as_mut_ptr();
    for s in 0..strips {
        let j = jc + s * NR;
        let cols = NR.min(jc + nc - j);
        for p in 0..kc {
            // SAFETY: row `pc + p` of B has columns `j..j + cols` (asserted above), and the
            // strip `s` of `out` has `kc * NR / 2` vectors.
            unsafe {
                let from = b.as_ptr().add(((pc + p) * n + j) * 8);
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

/// [`pack_b`] for B the transpose of `bt` (row-major `n x k`): rows `pc..pc + kc`, columns
/// `jc..jc + nc` of B are columns `pc..pc + kc`, rows `jc..jc + nc` of `bt`.
fn pack_bt(out: &mut [V], bt: &[u8], k: usize, pc: usize, kc: usize, jc: usize, nc: usize) {
    let strips = nc.div_ceil(NR);
    assert!(out.len() >= strips * kc * (NR / 2) && bt.len() >= (jc + nc) * k * 8 && pc + kc <= k);
    let out = out.as_mut_ptr();
    for s in 0..strips {
        let j = jc + s * NR;
        let cols = NR.min(jc + nc - j);
        // SAFETY: rows `j..j + cols` of `bt` have columns `pc..pc + kc` (asserted above), and
        // the strip `s` of `out` has `kc * NR / 2` vectors.
        unsafe {
            let x = |col: usize, p: usize| -> f64 {
                if col < cols {
                    let at = ((j + col) * k + pc + p) * 8;
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
                    core::array::from_fn(|r| bt.as_ptr().add(((j + r) * k + pc) * 8));
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

/// Packs rows `ic..ic + mc`, columns `pc..pc + kc` of A (`m x k`) into `out` as strips of `MR`
/// rows, each `kc` steps of `MR` vectors that hold the value in both lanes; rows past the edge
/// are zeros.
fn pack_a(out: &mut [V], a: &[u8], k: usize, ic: usize, mc: usize, pc: usize, kc: usize) {
    let strips = mc.div_ceil(MR);
    assert!(out.len() >= strips * kc * MR && a.len() >= (ic + mc) * k * 8 && pc + kc <= k);
    let out = out.as_mut_ptr();
    let zero = lanes::splat(0.0);
    for s in 0..strips {
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
                let from = a.as_ptr().add(((ic + i) * k + pc) * 8);
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

/// `C[..rows, ..cols] += A . B` for one tile: `a` holds `kc` steps of `MR` vectors of A (each
/// value in both lanes), `b`
/// `kc` steps of `NR / 2` vectors of B, `c` points at the tile's first element in a row-major
/// C of `ldc` columns (little-endian f64, any alignment).
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
    rows: usize,
    cols: usize,
) {
    const NB: usize = NR / 2;
    if kc == 0 {
        return;
    }
    let z = lanes::splat(0.0);
    let mut tile = [[z; NB]; MR];
    // The accumulators live in `tile` between loop iterations: values carried around the loop
    // would cross the engine's interruption check (a call on its slow path), which makes the
    // register allocator keep them in stack slots, adding a store-to-load round trip to
    // every step's dependency chain. Through memory it costs one round trip per iteration.
    let t = core::hint::black_box(&raw mut tile);
    let (mut a, mut b) = (a, b);
    // SAFETY: `kc` steps of `MR` values and `NB` vectors, as the caller guarantees; `t` points
    // at `tile`.
    unsafe {
        let mut left = kc;
        // One step of k. The exit test after each step also makes each step its own block,
        // so that the engine computes a step's products before it loads the next step's
        // operands: Cranelift keeps a block's loads in order but places the arithmetic just
        // before its first use, here the block's end, so sixteen steps in one block would
        // load ~100 vectors before the first multiply and spill most of them.
        macro_rules! step {
            ($acc:ident) => {{
                let bv: [V; NB] = core::array::from_fn(|j| *b.add(j));
                for (r, row) in $acc.iter_mut().enumerate() {
                    let x = *a.add(r);
                    for (cv, bj) in row.iter_mut().zip(bv) {
                        *cv = lanes::mul_add(x, bj, *cv);
                    }
                }
                a = a.add(MR);
                b = b.add(NB);
                left -= 1;
                if left == 0 {
                    t.write($acc);
                    break;
                }
            }};
        }
        loop {
            // Opaque to LLVM: otherwise its strength reduction turns the constant offsets from
            // `a` and `b` below into separate additions instead of load offsets.
            a = core::hint::black_box(a);
            b = core::hint::black_box(b);
            let mut acc = t.read();
            // Sixteen steps per iteration: the accumulators' trip through `tile` (and the
            // engine's interruption check) once per sixteen steps.
            step!(acc);
            step!(acc);
            step!(acc);
            step!(acc);
            step!(acc);
            step!(acc);
            step!(acc);
            step!(acc);
            step!(acc);
            step!(acc);
            step!(acc);
            step!(acc);
            step!(acc);
            step!(acc);
            step!(acc);
            step!(acc);
            t.write(acc);
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
                    lanes::store(p, lanes::add(lanes::load(p), *v));
                }
            }
        }
    } else {
        for (r, row) in acc.iter().enumerate().take(rows) {
            for col in 0..cols {
                // SAFETY: inside the partial tile.
                unsafe {
                    let p = c.add((r * ldc + col) * 8).cast::<[u8; 8]>();
                    let v = f64::from_le_bytes(p.read()) + lanes::lane(row[col / 2], col % 2);
                    p.write(v.to_le_bytes());
                }
            }
        }
    }
}
