//! The chunk format the kernels read and write (see `docs/arrays.md`): an 8-byte header
//! (`"THA"`, version 1, dtype code, ndim, two zero bytes), the shape as `ndim` little-endian
//! u64s, then the elements in row-major order, little-endian.

use ndarray::{ArrayD, IxDyn};

use crate::error::ArrayError;

/// The four bytes every chunk starts with.
pub const MAGIC: [u8; 4] = *b"THA\x01";

/// The element type of an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// 64-bit IEEE 754 floats.
    F64,
    /// 32-bit IEEE 754 floats.
    F32,
    /// 64-bit signed integers.
    I64,
}

impl DType {
    /// The code stored in a chunk header.
    pub fn code(self) -> u8 {
        match self {
            DType::F64 => 0,
            DType::F32 => 1,
            DType::I64 => 2,
        }
    }

    /// The dtype of a header code.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(DType::F64),
            1 => Some(DType::F32),
            2 => Some(DType::I64),
            _ => None,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 => 4,
        }
    }
}

/// The header of a chunk of `dtype` and `shape`, with no data: a "spec" parameter.
pub fn spec(dtype: DType, shape: &[usize]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 8 * shape.len());
    out.extend_from_slice(&MAGIC);
    out.push(dtype.code());
    out.push(shape.len() as u8);
    out.extend_from_slice(&[0, 0]);
    for &dim in shape {
        out.extend_from_slice(&(dim as u64).to_le_bytes());
    }
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
    let bad = |why: String| ArrayError::BadChunk(why);
    if bytes.len() < 8 || bytes[..4] != MAGIC {
        return Err(bad(format!(
            "{} bytes without the chunk magic",
            bytes.len()
        )));
    }
    let dtype = DType::from_code(bytes[4])
        .ok_or_else(|| bad(format!("unknown dtype code {}", bytes[4])))?;
    let ndim = bytes[5] as usize;
    let at = 8 + 8 * ndim;
    if bytes.len() < at {
        return Err(bad(format!("header of {ndim} dimensions cut short")));
    }
    let shape: Vec<usize> = (0..ndim)
        .map(|i| {
            u64::from_le_bytes(bytes[8 + 8 * i..16 + 8 * i].try_into().expect("8 bytes")) as usize
        })
        .collect();
    let want = shape.iter().product::<usize>() * dtype.size();
    if bytes.len() - at != want {
        return Err(bad(format!(
            "shape {shape:?} needs {want} data bytes, found {}",
            bytes.len() - at
        )));
    }
    Ok((dtype, shape, at))
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
