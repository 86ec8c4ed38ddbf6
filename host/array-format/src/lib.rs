//! The chunk format of taskhost's arrays, in one place for both sides: the client
//! (`taskhost-array`) that writes and reads chunks, and the kernels guest that computes on them.
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
//!
//! ```
//! use taskhost_array_format::{DType, write_header, read_header};
//! let mut chunk = Vec::new();
//! write_header(&mut chunk, DType::F64, &[2, 3]);
//! chunk.extend_from_slice(&[0u8; 48]);
//! let header = read_header(&chunk).unwrap();
//! assert_eq!((header.dtype, header.shape.as_slice(), header.data_at), (DType::F64, &[2, 3][..], 24));
//! ```

use std::fmt;

/// The four bytes every chunk starts with.
pub const MAGIC: [u8; 4] = *b"THA\x01";
/// The most dimensions a chunk may have.
pub const MAX_NDIM: usize = 8;

/// The element type of a chunk.
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

/// Appends the header of a chunk of `dtype` and `shape` to `out`. A shape of more than
/// [`MAX_NDIM`] axes is written as given; [`read_header`] refuses it.
pub fn write_header(out: &mut Vec<u8>, dtype: DType, shape: &[usize]) {
    out.extend_from_slice(&MAGIC);
    out.push(dtype.code());
    out.push(shape.len() as u8);
    out.extend_from_slice(&[0, 0]);
    for &dim in shape {
        out.extend_from_slice(&(dim as u64).to_le_bytes());
    }
}

/// A chunk's header as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The element type.
    pub dtype: DType,
    /// The extent of each axis.
    pub shape: Vec<usize>,
    /// Where the data starts (the header's length).
    pub data_at: usize,
    /// How many data bytes the shape needs (`None` if that overflows).
    pub data_len: Option<usize>,
}

/// Why bytes are not a chunk header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// Fewer than 8 bytes.
    TooShort(usize),
    /// The first 4 bytes are not [`MAGIC`].
    BadMagic([u8; 4]),
    /// An unknown dtype code.
    UnknownDType(u8),
    /// More than [`MAX_NDIM`] axes.
    TooManyAxes(usize),
    /// The shape is cut short.
    CutShort {
        /// Axes announced.
        ndim: usize,
        /// Bytes present.
        len: usize,
    },
    /// An axis too long for this machine's `usize`.
    AxisTooLong {
        /// The axis.
        axis: usize,
        /// Its length.
        len: u64,
    },
    /// The product of the shape overflows.
    ShapeOverflows,
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::TooShort(len) => {
                write!(f, "{len} bytes is too short for a chunk header")
            }
            FormatError::BadMagic(magic) => write!(f, "not a chunk (magic {magic:02x?})"),
            FormatError::UnknownDType(code) => write!(f, "unknown dtype code {code}"),
            FormatError::TooManyAxes(ndim) => {
                write!(f, "{ndim} dimensions, at most {MAX_NDIM} are supported")
            }
            FormatError::CutShort { ndim, len } => {
                write!(f, "header of {ndim} dimensions cut short at {len} bytes")
            }
            FormatError::AxisTooLong { axis, len } => {
                write!(f, "axis {axis} of length {len} is too long")
            }
            FormatError::ShapeOverflows => f.write_str("shape overflows"),
        }
    }
}

impl std::error::Error for FormatError {}

/// Reads the header at the start of `bytes` (what follows it is not checked: see
/// [`Header::data_len`]).
pub fn read_header(bytes: &[u8]) -> Result<Header, FormatError> {
    if bytes.len() < 8 {
        return Err(FormatError::TooShort(bytes.len()));
    }
    let magic: [u8; 4] = bytes[..4].try_into().expect("4 bytes");
    if magic != MAGIC {
        return Err(FormatError::BadMagic(magic));
    }
    let dtype = DType::from_code(bytes[4]).ok_or(FormatError::UnknownDType(bytes[4]))?;
    let ndim = bytes[5] as usize;
    if ndim > MAX_NDIM {
        return Err(FormatError::TooManyAxes(ndim));
    }
    let data_at = 8 + 8 * ndim;
    if bytes.len() < data_at {
        return Err(FormatError::CutShort {
            ndim,
            len: bytes.len(),
        });
    }
    let mut shape = Vec::with_capacity(ndim);
    let mut count: usize = 1;
    for axis in 0..ndim {
        let at = 8 + 8 * axis;
        let len = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let dim = usize::try_from(len).map_err(|_| FormatError::AxisTooLong { axis, len })?;
        count = count.checked_mul(dim).ok_or(FormatError::ShapeOverflows)?;
        shape.push(dim);
    }
    Ok(Header {
        dtype,
        shape,
        data_at,
        data_len: count.checked_mul(dtype.size()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_bad_ones_say_why() {
        let mut bytes = Vec::new();
        write_header(&mut bytes, DType::I64, &[]);
        let h = read_header(&bytes).unwrap();
        assert_eq!(
            (h.dtype, h.shape.len(), h.data_at, h.data_len),
            (DType::I64, 0, 8, Some(8))
        );
        assert_eq!(read_header(&bytes[..5]), Err(FormatError::TooShort(5)));
        assert_eq!(
            read_header(b"NOPE\x00\x00\x00\x00"),
            Err(FormatError::BadMagic(*b"NOPE"))
        );
        let mut bad = bytes.clone();
        bad[4] = 9;
        assert_eq!(read_header(&bad), Err(FormatError::UnknownDType(9)));
        bad[4] = 0;
        bad[5] = 9;
        assert_eq!(read_header(&bad), Err(FormatError::TooManyAxes(9)));
        bad[5] = 2;
        assert_eq!(
            read_header(&bad),
            Err(FormatError::CutShort { ndim: 2, len: 8 })
        );
        let mut huge = Vec::new();
        write_header(&mut huge, DType::F64, &[usize::MAX, 3]);
        assert_eq!(read_header(&huge), Err(FormatError::ShapeOverflows));
        for dtype in [DType::F64, DType::F32, DType::I64] {
            assert_eq!(DType::from_code(dtype.code()), Some(dtype));
        }
    }
}

/// The program of the kernels' `fused` call, as the client writes it and the kernel reads it:
/// an int64 chunk of words, `[VERSION, inputs, ndim, reduce, reduced-axes mask, per input its
/// axis map (ndim words, -1 for a broadcast axis), per input its kind, then the postfix code]`.
/// In the code, [`INPUT`](fused::INPUT) and [`CONST`](fused::CONST) take one more word (the
/// input's index, the constant's f64 bits); the operators stand alone.
pub mod fused {
    /// The program format this client writes (the kernel also reads version 1: no input kinds).
    pub const VERSION: i64 = 2;

    /// Input kind: a data chunk.
    pub const INPUT_DATA: i64 = 0;
    /// Input kind: a random generator (the input is its spec and seed; the values are recomputed).
    pub const INPUT_RANDOM: i64 = 1;

    /// Reduction: none, the call returns the evaluated block.
    pub const REDUCE_NONE: i64 = 0;
    /// Reduction: partial sums.
    pub const REDUCE_SUM: i64 = 1;
    /// Reduction: partial minima.
    pub const REDUCE_MIN: i64 = 2;
    /// Reduction: partial maxima.
    pub const REDUCE_MAX: i64 = 3;
    /// Reduction: partial moments (count, mean, M2) for the variance.
    pub const REDUCE_MOMENTS: i64 = 4;

    /// Push input `i` (the next word).
    pub const INPUT: i64 = 1;
    /// Push a constant (the next word: its f64 bits).
    pub const CONST: i64 = 2;

    /// `a + b`.
    pub const ADD: u8 = 10;
    /// `a - b`.
    pub const SUB: u8 = 11;
    /// `a * b`.
    pub const MUL: u8 = 12;
    /// `a / b`.
    pub const DIV: u8 = 13;
    /// `minimum(a, b)`.
    pub const MINIMUM: u8 = 14;
    /// `maximum(a, b)`.
    pub const MAXIMUM: u8 = 15;
    /// `a ** b`.
    pub const POW: u8 = 16;

    /// `-x`.
    pub const NEG: u8 = 20;
    /// `|x|`.
    pub const ABS: u8 = 21;
    /// `x * x`.
    pub const SQUARE: u8 = 22;
    /// `sqrt(x)`.
    pub const SQRT: u8 = 23;
    /// `e^x`.
    pub const EXP: u8 = 24;
    /// `ln(x)`.
    pub const LOG: u8 = 25;
    /// `sin(x)`.
    pub const SIN: u8 = 26;
    /// `cos(x)`.
    pub const COS: u8 = 27;

    /// Whether a code word is a binary operator.
    pub fn is_binary(word: i64) -> bool {
        (i64::from(ADD)..=i64::from(POW)).contains(&word)
    }

    /// Whether a code word is a unary operator.
    pub fn is_unary(word: i64) -> bool {
        (i64::from(NEG)..=i64::from(COS)).contains(&word)
    }
}
