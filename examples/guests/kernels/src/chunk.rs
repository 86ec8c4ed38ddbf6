//! Chunks as the kernels see them. The format itself (header, dtype codes, shape) is the
//! `taskhost-array-format` crate, shared with the client; this module adds the kernels'
//! errors, a decoded [`Meta`] and the data-length checks.

use std::fmt;

pub use taskhost_array_format::{DType, MAGIC, MAX_NDIM};

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
        taskhost_array_format::write_header(out, self.dtype, &self.shape);
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
    let header = match taskhost_array_format::read_header(bytes) {
        Ok(header) => header,
        Err(e) => bail!("{what}: {e}"),
    };
    let meta = Meta {
        dtype: header.dtype,
        shape: header.shape,
    };
    let data = bytes.len() - header.data_at;
    let want = header.data_len;
    match expect_data {
        Some(false) if data != 0 => {
            bail!("{what}: a spec (header only) was expected, found {data} data bytes")
        }
        Some(false) => {}
        _ if data == 0 && expect_data.is_none() => {}
        _ if Some(data) != want => bail!(
            "{what}: shape {:?} of {} needs {} data bytes, found {data}",
            meta.shape,
            meta.dtype.name(),
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
