//! The chunk format the kernels read and write (see `docs/arrays.md`): an 8-byte header
//! (`"THA"`, version 1, dtype code, ndim, two zero bytes), the shape as `ndim` little-endian
//! u64s, then the elements in row-major order, little-endian.

use ndarray::{ArrayD, IxDyn};

use crate::error::ArrayError;

pub use taskhost_array_format::{DType, MAGIC};

/// The header of a chunk of `dtype` and `shape`, with no data: a "spec" parameter.
pub fn spec(dtype: DType, shape: &[usize]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 8 * shape.len());
    taskhost_array_format::write_header(&mut out, dtype, shape);
    out
}

/// A 0-d float64 chunk holding `value`.
pub fn scalar_f64(value: f64) -> Vec<u8> {
    let mut out = spec(DType::F64, &[]);
    out.extend_from_slice(&value.to_le_bytes());
    out
}

/// An int64 chunk of shape `shape` holding `values`.
pub fn i64s(shape: &[usize], values: &[i64]) -> Vec<u8> {
    let mut out = spec(DType::I64, shape);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// A 0-d int64 chunk holding `value`.
pub fn scalar_i64(value: i64) -> Vec<u8> {
    i64s(&[], &[value])
}

/// Encodes an ndarray as a float64 chunk.
pub fn encode_f64(array: &ArrayD<f64>) -> Vec<u8> {
    let mut out = spec(DType::F64, array.shape());
    out.reserve(array.len() * 8);
    for v in array.iter() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Reads a chunk's dtype and shape, checking its length; returns them and where the data starts.
pub fn parse(bytes: &[u8]) -> Result<(DType, Vec<usize>, usize), ArrayError> {
    let header = taskhost_array_format::read_header(bytes)
        .map_err(|e| ArrayError::BadChunk(e.to_string()))?;
    let found = bytes.len() - header.data_at;
    if header.data_len != Some(found) {
        return Err(ArrayError::BadChunk(format!(
            "shape {:?} needs {} data bytes, found {found}",
            header.shape,
            header.data_len.unwrap_or(usize::MAX)
        )));
    }
    Ok((header.dtype, header.shape, header.data_at))
}

/// Decodes a chunk of any dtype into a float64 ndarray.
pub fn decode_f64(bytes: &[u8]) -> Result<ArrayD<f64>, ArrayError> {
    let (dtype, shape, at) = parse(bytes)?;
    let data = &bytes[at..];
    let values: Vec<f64> = match dtype {
        DType::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8")))
            .collect(),
        DType::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4")) as f64)
            .collect(),
        DType::I64 => data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8")) as f64)
            .collect(),
    };
    ArrayD::from_shape_vec(IxDyn(&shape), values).map_err(|e| ArrayError::BadChunk(e.to_string()))
}

/// The SplitMix64 output function the kernels' `random` uses.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The `index`-th value in [0, 1) of the kernels' random stream `seed`: what element `index`
/// (row-major, within its chunk) of a float64 `random` chunk of that seed holds.
pub fn uniform(seed: u64, index: u64) -> f64 {
    let z = mix64(seed.wrapping_add(index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// The seed of block `block` (row-major block index) of a random array of seed `seed`.
pub fn block_seed(seed: u64, block: u64) -> u64 {
    mix64(seed ^ mix64(block.wrapping_add(1)))
}

/// Element `index` (row-major, within its block) of block `block` of a random array of seed
/// `seed`: what [`ArrayContext::random`](crate::ArrayContext::random) computes there.
pub fn random_value(seed: u64, block: u64, index: u64) -> f64 {
    uniform(block_seed(seed, block), index)
}
