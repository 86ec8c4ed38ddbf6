//! The element types a chunk may hold, behind one trait so that every kernel is written once.

use crate::chunk::DType;

/// An element type: how it is stored and the arithmetic the kernels need.
pub trait Elem: Copy + PartialOrd + Default + Send + Sync + 'static {
    /// The dtype tag of the header.
    const DTYPE: DType;
    /// Bytes per element.
    const SIZE: usize;
    /// The identity of `min`.
    const HIGHEST: Self;
    /// The identity of `max`.
    const LOWEST: Self;
    /// Reads one element from exactly `SIZE` little-endian bytes.
    fn load(bytes: &[u8]) -> Self;
    /// Writes one element to exactly `SIZE` bytes.
    fn store(self, bytes: &mut [u8]);
    /// Converts from f64 (rounding, saturating for integers).
    fn from_f64(value: f64) -> Self;
    /// Converts to f64.
    fn to_f64(self) -> f64;
    /// Converts from i64.
    fn from_i64(value: i64) -> Self;
    /// Zero.
    fn zero() -> Self;
    /// One.
    fn one() -> Self;
    /// `a + b` (wrapping for integers).
    fn add(self, other: Self) -> Self;
    /// `a - b` (wrapping for integers).
    fn sub(self, other: Self) -> Self;
    /// `a * b` (wrapping for integers).
    fn mul(self, other: Self) -> Self;
    /// `a / b`; integers use floor division (NumPy's `//`) and division by zero gives zero, as a
    /// guest must not trap on data.
    fn div(self, other: Self) -> Self;
    /// The smaller of the two (NaN wins, as in NumPy's `minimum`).
    fn min(self, other: Self) -> Self;
    /// The larger of the two (NaN wins).
    fn max(self, other: Self) -> Self;
}

macro_rules! float_elem {
    ($t:ty, $dtype:expr, $size:expr) => {
        impl Elem for $t {
            const DTYPE: DType = $dtype;
            const SIZE: usize = $size;
            const HIGHEST: Self = <$t>::INFINITY;
            const LOWEST: Self = <$t>::NEG_INFINITY;
            #[inline(always)]
            fn load(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(bytes.try_into().expect("element size"))
            }
            #[inline(always)]
            fn store(self, bytes: &mut [u8]) {
                bytes.copy_from_slice(&self.to_le_bytes())
            }
            #[inline(always)]
            fn from_f64(value: f64) -> Self {
                value as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn from_i64(value: i64) -> Self {
                value as $t
            }
            #[inline(always)]
            fn zero() -> Self {
                0.0
            }
            #[inline(always)]
            fn one() -> Self {
                1.0
            }
            #[inline(always)]
            fn add(self, other: Self) -> Self {
                self + other
            }
            #[inline(always)]
            fn sub(self, other: Self) -> Self {
                self - other
            }
            #[inline(always)]
            fn mul(self, other: Self) -> Self {
                self * other
            }
            #[inline(always)]
            fn div(self, other: Self) -> Self {
                self / other
            }
            #[inline(always)]
            fn min(self, other: Self) -> Self {
                if self.is_nan() || self < other {
                    self
                } else {
                    other
                }
            }
            #[inline(always)]
            fn max(self, other: Self) -> Self {
                if self.is_nan() || self > other {
                    self
                } else {
                    other
                }
            }
        }
    };
}

float_elem!(f64, DType::F64, 8);
float_elem!(f32, DType::F32, 4);

impl Elem for i64 {
    const DTYPE: DType = DType::I64;
    const SIZE: usize = 8;
    const HIGHEST: Self = i64::MAX;
    const LOWEST: Self = i64::MIN;
    #[inline(always)]
    fn load(bytes: &[u8]) -> Self {
        i64::from_le_bytes(bytes.try_into().expect("element size"))
    }
    #[inline(always)]
    fn store(self, bytes: &mut [u8]) {
        bytes.copy_from_slice(&self.to_le_bytes())
    }
    #[inline(always)]
    fn from_f64(value: f64) -> Self {
        value as i64
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn from_i64(value: i64) -> Self {
        value
    }
    #[inline(always)]
    fn zero() -> Self {
        0
    }
    #[inline(always)]
    fn one() -> Self {
        1
    }
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        self.wrapping_add(other)
    }
    #[inline(always)]
    fn sub(self, other: Self) -> Self {
        self.wrapping_sub(other)
    }
    #[inline(always)]
    fn mul(self, other: Self) -> Self {
        self.wrapping_mul(other)
    }
    #[inline(always)]
    fn div(self, other: Self) -> Self {
        // Floor division, as NumPy's `//`.
        match (self.checked_div(other), self.checked_rem(other)) {
            (Some(q), Some(r)) if r != 0 && ((r < 0) != (other < 0)) => q - 1,
            (Some(q), _) => q,
            (None, _) => 0,
        }
    }
    #[inline(always)]
    fn min(self, other: Self) -> Self {
        Ord::min(self, other)
    }
    #[inline(always)]
    fn max(self, other: Self) -> Self {
        Ord::max(self, other)
    }
}

/// Calls `$body` with `$t` bound to the Rust type of `$dtype`.
#[macro_export]
macro_rules! with_dtype {
    ($dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            $crate::chunk::DType::F64 => {
                type $t = f64;
                $body
            }
            $crate::chunk::DType::F32 => {
                type $t = f32;
                $body
            }
            $crate::chunk::DType::I64 => {
                type $t = i64;
                $body
            }
        }
    };
}
