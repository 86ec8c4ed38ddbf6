//! The chunk format: a small header, then the elements in row-major order, little-endian.
//!
//! ```text
//! offset 0   4 bytes  magic "THA" followed by the format version 1: 54 48 41 01
//! offset 4   1 byte   dtype: 0 = f64, 1 = f32, 2 = i64
//! offset 5   1 byte   ndim, 0..=8 (0 is a scalar holding one element)
//! offset 6   2 bytes  reserved, zero
//! offset 8   ndim x u64 little-endian: the shape
//! then       product(shape) elements, row-major (C order), little-endian
//! ```
//!
//! The header is `8 + 8 * ndim` bytes, so the data starts 8-byte aligned relative to the chunk.
//! A header with no data after it (a "spec") describes a dtype and shape as a kernel parameter.

use std::fmt;

/// The four bytes every chunk starts with.
pub const MAGIC: [u8; 4] = *b"THA\x01";
/// The most dimensions a chunk may have.
pub const MAX_NDIM: usize = 8;

/// The element type of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// 64-bit IEEE 754 floats.
    F64,
    /// 32-bit IEEE 754 floats.
    F32,
    /// 64-bit signed integers.
    I64,
}

impl DType {
    /// The code stored in the header.
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

    /// The name of the dtype, as NumPy spells it.
    pub fn name(self) -> &'static str {
        match self {
            DType::F64 => "float64",
            DType::F32 => "float32",
            DType::I64 => "int64",
        }
    }
}

/// Why a kernel refused its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError(pub String);

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KernelError {}

/// Returns early with a [`KernelError`] built from a format string.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::chunk::KernelError(format!($($arg)*)))
    };
}

/// The result of a kernel.
pub type Result<T, E = KernelError> = std::result::Result<T, E>;

/// A decoded header: dtype and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// The element type.
    pub dtype: DType,
    /// The extent of each axis.
    pub shape: Vec<usize>,
}

impl Meta {
    /// A header for `dtype` and `shape`.
    pub fn new(dtype: DType, shape: &[usize]) -> Self {
        Meta {
            dtype,
            shape: shape.to_vec(),
        }
    }

    /// How many elements the shape holds.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the shape holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of dimensions.
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// Bytes of the header.
    pub fn header_len(&self) -> usize {
        8 + 8 * self.shape.len()
    }

    /// Bytes of the data.
    pub fn data_len(&self) -> usize {
        self.len() * self.dtype.size()
    }

    /// Appends the header's bytes to `out`.
    pub fn write_header(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.push(self.dtype.code());
        out.push(self.shape.len() as u8);
        out.extend_from_slice(&[0, 0]);
        for &dim in &self.shape {
            out.extend_from_slice(&(dim as u64).to_le_bytes());
        }
    }

    /// The header alone, as bytes (a spec).
    pub fn header(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.header_len());
        self.write_header(&mut out);
        out
    }

    /// A chunk of this shape with zeroed data.
    pub fn zeroed(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.header_len() + self.data_len());
        self.write_header(&mut out);
        out.resize(self.header_len() + self.data_len(), 0);
        out
    }
}

/// Reads the header of `bytes`, checking that the data that follows has the right length
/// (`expect_data`: `Some(true)` data required, `Some(false)` none allowed, `None` either).
pub fn parse_meta(bytes: &[u8], what: &str, expect_data: Option<bool>) -> Result<Meta> {
    if bytes.len() < 8 {
        bail!(
            "{what}: {} bytes is too short for a chunk header",
            bytes.len()
        );
    }
    if bytes[..4] != MAGIC {
        bail!("{what}: not a chunk (magic {:02x?})", &bytes[..4]);
    }
    let Some(dtype) = DType::from_code(bytes[4]) else {
        bail!("{what}: unknown dtype code {}", bytes[4]);
    };
    let ndim = bytes[5] as usize;
    if ndim > MAX_NDIM {
        bail!("{what}: {ndim} dimensions, at most {MAX_NDIM} are supported");
    }
    let header_len = 8 + 8 * ndim;
    if bytes.len() < header_len {
        bail!(
            "{what}: header of {ndim} dimensions cut short at {} bytes",
            bytes.len()
        );
    }
    let mut shape = Vec::with_capacity(ndim);
    let mut count: usize = 1;
    for axis in 0..ndim {
        let at = 8 + 8 * axis;
        let dim = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let Ok(dim) = usize::try_from(dim) else {
            bail!("{what}: axis {axis} of length {dim} is too long");
        };
        count = match count.checked_mul(dim) {
            Some(count) => count,
            None => bail!("{what}: shape overflows"),
        };
        shape.push(dim);
    }
    let meta = Meta { dtype, shape };
    let data = bytes.len() - header_len;
    let want = count.checked_mul(dtype.size());
    match expect_data {
        Some(false) if data != 0 => {
            bail!("{what}: a spec (header only) was expected, found {data} data bytes")
        }
        Some(false) => {}
        _ if data == 0 && expect_data.is_none() => {}
        _ if Some(data) != want => bail!(
            "{what}: shape {:?} of {} needs {} data bytes, found {data}",
            meta.shape,
            dtype.name(),
            want.unwrap_or(usize::MAX)
        ),
        _ => {}
    }
    Ok(meta)
}

/// Reads a chunk: its header and its data bytes.
pub fn parse(bytes: &[u8], what: &str) -> Result<(Meta, usize)> {
    let meta = parse_meta(bytes, what, Some(true))?;
    let at = meta.header_len();
    Ok((meta, at))
}

/// Reads a spec (a header without data, or a chunk whose data is ignored).
pub fn parse_spec(bytes: &[u8], what: &str) -> Result<Meta> {
    parse_meta(bytes, what, None)
}

/// Strides, in elements, of a row-major array of `shape`.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut step = 1;
    for axis in (0..shape.len()).rev() {
        strides[axis] = step;
        step *= shape[axis];
    }
    strides
}

/// Builds an f64 chunk from its shape and values (a helper for tests and parameters).
pub fn from_f64(shape: &[usize], values: &[f64]) -> Vec<u8> {
    build(
        DType::F64,
        shape,
        values.iter().flat_map(|v| v.to_le_bytes()),
    )
}

/// Builds an f32 chunk.
pub fn from_f32(shape: &[usize], values: &[f32]) -> Vec<u8> {
    build(
        DType::F32,
        shape,
        values.iter().flat_map(|v| v.to_le_bytes()),
    )
}

/// Builds an i64 chunk.
pub fn from_i64(shape: &[usize], values: &[i64]) -> Vec<u8> {
    build(
        DType::I64,
        shape,
        values.iter().flat_map(|v| v.to_le_bytes()),
    )
}

fn build(dtype: DType, shape: &[usize], data: impl Iterator<Item = u8>) -> Vec<u8> {
    let meta = Meta::new(dtype, shape);
    let mut out = meta.header();
    out.extend(data);
    assert_eq!(
        out.len(),
        meta.header_len() + meta.data_len(),
        "values do not fill the shape"
    );
    out
}

/// Reads an f64 chunk's values (converting f32 and i64), for tests and small parameters.
pub fn to_f64(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f64>)> {
    let (meta, at) = parse(bytes, "chunk")?;
    let data = &bytes[at..];
    let values = match meta.dtype {
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
    Ok((meta.shape, values))
}

/// Reads a parameter given as a small i64 chunk (any shape), as a flat list.
pub fn to_i64_list(bytes: &[u8], what: &str) -> Result<Vec<i64>> {
    let (meta, at) = parse(bytes, what)?;
    if meta.dtype != DType::I64 {
        bail!(
            "{what}: an int64 chunk was expected, found {}",
            meta.dtype.name()
        );
    }
    Ok(bytes[at..]
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("8")))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let bytes = from_f64(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(&bytes[..8], &[0x54, 0x48, 0x41, 0x01, 0, 2, 0, 0]);
        assert_eq!(bytes.len(), 8 + 16 + 48);
        let (meta, at) = parse(&bytes, "x").unwrap();
        assert_eq!(meta, Meta::new(DType::F64, &[2, 3]));
        assert_eq!(at, 24);
        assert_eq!(
            to_f64(&bytes).unwrap().1,
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        );
        let scalar = from_i64(&[], &[-7]);
        assert_eq!(scalar.len(), 16);
        assert_eq!(to_i64_list(&scalar, "s").unwrap(), vec![-7]);
    }

    #[test]
    fn bad_chunks_are_refused() {
        assert!(parse(b"nope", "x").is_err());
        let mut bytes = from_f64(&[2], &[1.0, 2.0]);
        bytes.pop();
        assert!(
            parse(&bytes, "x")
                .unwrap_err()
                .0
                .contains("needs 16 data bytes")
        );
        let mut bytes = from_f64(&[1], &[1.0]);
        bytes[4] = 9;
        assert!(parse(&bytes, "x").unwrap_err().0.contains("unknown dtype"));
        let spec = Meta::new(DType::F64, &[4]).header();
        assert!(parse(&spec, "x").is_err());
        assert_eq!(parse_spec(&spec, "x").unwrap().shape, vec![4]);
    }
}
