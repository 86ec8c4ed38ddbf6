//! Operator overloading: `+ - * /` between arrays (by value or reference) and with `f64` on
//! either side, and unary `-`.

use std::ops::{Add, Div, Mul, Neg, Sub};

use crate::array::{Array, BinaryOp, UnaryOp};

macro_rules! binary_ops {
    ($($trait:ident $method:ident $op:expr;)*) => {$(
        impl $trait<&Array> for &Array {
            type Output = Array;
            /// # Panics
            /// If the shapes do not broadcast (or are chunked differently along an axis).
            fn $method(self, rhs: &Array) -> Array {
                self.try_binary($op, rhs).unwrap_or_else(|e| panic!("{e}"))
            }
        }
        impl $trait<Array> for Array {
            type Output = Array;
            fn $method(self, rhs: Array) -> Array {
                (&self).$method(&rhs)
            }
        }
        impl $trait<&Array> for Array {
            type Output = Array;
            fn $method(self, rhs: &Array) -> Array {
                (&self).$method(rhs)
            }
        }
        impl $trait<Array> for &Array {
            type Output = Array;
            fn $method(self, rhs: Array) -> Array {
                self.$method(&rhs)
            }
        }
        impl $trait<f64> for &Array {
            type Output = Array;
            fn $method(self, rhs: f64) -> Array {
                self.scalar($op, rhs, false)
            }
        }
        impl $trait<f64> for Array {
            type Output = Array;
            fn $method(self, rhs: f64) -> Array {
                self.scalar($op, rhs, false)
            }
        }
        impl $trait<&Array> for f64 {
            type Output = Array;
            fn $method(self, rhs: &Array) -> Array {
                rhs.scalar($op, self, true)
            }
        }
        impl $trait<Array> for f64 {
            type Output = Array;
            fn $method(self, rhs: Array) -> Array {
                rhs.scalar($op, self, true)
            }
        }
    )*};
}

binary_ops! {
    Add add BinaryOp::Add;
    Sub sub BinaryOp::Sub;
    Mul mul BinaryOp::Mul;
    Div div BinaryOp::Div;
}

impl Neg for &Array {
    type Output = Array;
    fn neg(self) -> Array {
        self.unary(UnaryOp::Neg)
    }
}

impl Neg for Array {
    type Output = Array;
    fn neg(self) -> Array {
        self.unary(UnaryOp::Neg)
    }
}
