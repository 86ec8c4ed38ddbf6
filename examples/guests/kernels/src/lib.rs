//! Array kernels for taskhost's chunked arrays.
//!
//! Every kernel is a raw task function: its arguments and its result are chunks in the format
//! of [`chunk`] (a small header, then little-endian elements in row-major order), and its
//! parameters are chunks too (a shape is a header without data, a scalar a 0-d chunk, a list of
//! axes an int64 chunk). `docs/arrays.md` in the repository describes the format and every
//! kernel's arguments.
//!
//! The math is plain Rust, unit-tested on the host; the WebAssembly build adds the exported
//! `tasks` interface ([`call`] dispatches by name) and compiles the hot loops with SIMD.
//!
//! The module implements the contract's `tasks` interface directly rather than through
//! `export_tasks!`, for two things that macro's raw functions cannot do: take the arguments by
//! value (elementwise kernels write their result into an input's buffer instead of allocating
//! and filling a new one) and take a variable number of them (the combine steps of tree
//! reductions fold any fan-in).

pub mod chunk;
pub mod elem;
pub mod fused;
pub mod matmul;
pub mod ops;
pub mod reduce;

use chunk::KernelError;
use ops::{BinOp, UnOp};
use reduce::{Moment, RedOp};

/// How many arguments a kernel takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    /// Exactly this many.
    Exact(usize),
    /// This many or more.
    AtLeast(usize),
}

/// One exported kernel: name, signature and description.
#[derive(Debug, Clone, Copy)]
pub struct KernelInfo {
    /// The name the kernel is called by.
    pub name: &'static str,
    /// Its arguments, for people.
    pub signature: &'static str,
    /// What it does.
    pub doc: &'static str,
    /// How many arguments it takes.
    pub arity: Arity,
}

macro_rules! kernels {
    ($($name:literal ($($sig:tt)*) $arity:expr, $doc:literal;)*) => {
        /// Every exported kernel.
        pub const KERNELS: &[KernelInfo] = &[$(KernelInfo {
            name: $name,
            signature: concat!($name, "(", stringify!($($sig)*), ") -> chunk"),
            doc: $doc,
            arity: $arity,
        }),*];
    };
}

use Arity::{AtLeast, Exact};

kernels! {
    "full" (spec, value) Exact(2), "A chunk of the spec's dtype and shape filled with the 0-d chunk value.";
    "ones" (spec) Exact(1), "A chunk of the spec's dtype and shape filled with ones.";
    "zeros" (spec) Exact(1), "A chunk of the spec's dtype and shape filled with zeros.";
    "random" (spec, seed) Exact(2), "Uniform values in [0, 1): element i is SplitMix64(seed + (i + 1) * gamma) >> 11 scaled by 2^-53.";
    "arange" (spec, start, step) Exact(3), "Element i (row-major) is start + i * step.";
    "add" (a, b) Exact(2), "a + b with broadcasting.";
    "sub" (a, b) Exact(2), "a - b with broadcasting.";
    "mul" (a, b) Exact(2), "a * b with broadcasting.";
    "div" (a, b) Exact(2), "a / b with broadcasting (integer division by zero gives 0).";
    "minimum" (a, b) Exact(2), "The elementwise smaller of a and b, with broadcasting.";
    "maximum" (a, b) Exact(2), "The elementwise larger of a and b, with broadcasting.";
    "pow" (a, b) Exact(2), "a ** b with broadcasting (floating-point chunks).";
    "neg" (a) Exact(1), "-a.";
    "abs" (a) Exact(1), "|a|.";
    "square" (a) Exact(1), "a * a.";
    "sqrt" (a) Exact(1), "The square root of a.";
    "exp" (a) Exact(1), "e to the power a.";
    "log" (a) Exact(1), "The natural logarithm of a.";
    "sin" (a) Exact(1), "The sine of a.";
    "cos" (a) Exact(1), "The cosine of a.";
    "astype" (a, spec) Exact(2), "a converted to the spec's dtype.";
    "reshape" (a, spec) Exact(2), "a's elements under the spec's shape.";
    "transpose" (a) Exact(1), "a with its axes reversed.";
    "slice" (a, bounds) Exact(2), "a[start:stop:step, ...] with bounds an int64 chunk of shape (ndim, 3).";
    "sum" (a, axes) Exact(2), "The sum over axes (an int64 list), keeping them with length 1.";
    "min" (a, axes) Exact(2), "The minimum over axes, keeping them with length 1.";
    "max" (a, axes) Exact(2), "The maximum over axes, keeping them with length 1.";
    "sum_combine" (spec, parts...) AtLeast(2), "The elementwise sum of partial sums, shaped as the spec.";
    "min_combine" (spec, parts...) AtLeast(2), "The elementwise minimum of partial minima, shaped as the spec.";
    "max_combine" (spec, parts...) AtLeast(2), "The elementwise maximum of partial maxima, shaped as the spec.";
    "moments" (a, axes) Exact(2), "Count, mean and M2 over axes as a float64 chunk of shape [3] + kept shape.";
    "moments_combine" (spec, parts...) AtLeast(2), "Partial moments merged exactly (Chan's formula), shape [3] + spec.";
    "mean_finalize" (spec, moments, ddof) Exact(3), "The mean from moments, shaped as the spec.";
    "var_finalize" (spec, moments, ddof) Exact(3), "M2 / (count - ddof) from moments, shaped as the spec.";
    "std_finalize" (spec, moments, ddof) Exact(3), "The square root of the variance from moments, shaped as the spec.";
    "matmul" (a, b) Exact(2), "The product of 2-D blocks a (m x k) and b (k x n).";
    "matmul_acc" (c, a, b) Exact(3), "c + a . b for 2-D blocks.";
    "matmul_sum" (c_or_spec, a1, b1, a2, b2...) AtLeast(3), "c + a1 . b1 + a2 . b2 + ... for 2-D blocks (a spec for c: start from zeros).";
    "matmul_nt_sum" (c_or_spec, a1, b1, a2, b2...) AtLeast(3), "c + a1 . b1^T + a2 . b2^T + ... for 2-D blocks (b_i given untransposed, n x k; a spec for c: start from zeros).";
    "syrk_sum" (c_or_spec, a1, a2...) AtLeast(2), "c + a1 . a1^T + a2 . a2^T + ... for 2-D blocks, symmetric: the upper triangle computed, the lower mirrored (a spec for c: start from zeros).";
    "fused" (program, spec, inputs...) AtLeast(2), "An elementwise expression over inputs (transposed, broadcast) and optionally a reduction of it, in one pass (see fused.rs).";
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No kernel has this name.
    UnknownFunction(String),
    /// The arguments were of the wrong number or not valid chunks for the kernel.
    InvalidInput(String),
}

impl From<KernelError> for CallError {
    fn from(err: KernelError) -> Self {
        CallError::InvalidInput(err.0)
    }
}

/// Calls the kernel `name` on `args`.
pub fn call(name: &str, args: Vec<Vec<u8>>) -> Result<Vec<u8>, CallError> {
    let Some(info) = KERNELS.iter().find(|k| k.name == name) else {
        return Err(CallError::UnknownFunction(name.to_owned()));
    };
    let ok = match info.arity {
        Exact(n) => args.len() == n,
        AtLeast(n) => args.len() >= n,
    };
    if !ok {
        return Err(CallError::InvalidInput(format!(
            "{name} takes {} arguments, got {}",
            match info.arity {
                Exact(n) => n.to_string(),
                AtLeast(n) => format!("{n} or more"),
            },
            args.len()
        )));
    }
    let mut it = args.into_iter();
    let mut next = || it.next().expect("arity checked");
    let out = match name {
        "full" => ops::full(&next(), &next()),
        "ones" => ops::ones(&next()),
        "zeros" => ops::zeros(&next()),
        "random" => ops::random(&next(), &next()),
        "arange" => ops::arange(&next(), &next(), &next()),
        "add" => ops::binary(BinOp::Add, next(), next()),
        "sub" => ops::binary(BinOp::Sub, next(), next()),
        "mul" => ops::binary(BinOp::Mul, next(), next()),
        "div" => ops::binary(BinOp::Div, next(), next()),
        "minimum" => ops::binary(BinOp::Minimum, next(), next()),
        "maximum" => ops::binary(BinOp::Maximum, next(), next()),
        "pow" => ops::binary(BinOp::Pow, next(), next()),
        "neg" => ops::unary(UnOp::Neg, next()),
        "abs" => ops::unary(UnOp::Abs, next()),
        "square" => ops::unary(UnOp::Square, next()),
        "sqrt" => ops::unary(UnOp::Sqrt, next()),
        "exp" => ops::unary(UnOp::Exp, next()),
        "log" => ops::unary(UnOp::Log, next()),
        "sin" => ops::unary(UnOp::Sin, next()),
        "cos" => ops::unary(UnOp::Cos, next()),
        "astype" => ops::astype(next(), &next()),
        "reshape" => ops::reshape(next(), &next()),
        "transpose" => ops::transpose(next()),
        "slice" => ops::slice(next(), &next()),
        "sum" => reduce::reduce(RedOp::Sum, next(), &next()),
        "min" => reduce::reduce(RedOp::Min, next(), &next()),
        "max" => reduce::reduce(RedOp::Max, next(), &next()),
        "sum_combine" | "min_combine" | "max_combine" => {
            let op = match name {
                "sum_combine" => RedOp::Sum,
                "min_combine" => RedOp::Min,
                _ => RedOp::Max,
            };
            let spec = next();
            reduce::combine(op, &spec, it.collect())
        }
        "moments" => reduce::moments(next(), &next()),
        "moments_combine" => {
            let spec = next();
            reduce::moments_combine(&spec, it.collect())
        }
        "mean_finalize" => reduce::moments_finalize(Moment::Mean, &next(), &next(), &next()),
        "var_finalize" => reduce::moments_finalize(Moment::Var, &next(), &next(), &next()),
        "std_finalize" => reduce::moments_finalize(Moment::Std, &next(), &next(), &next()),
        "matmul" => matmul::matmul(&next(), &next()),
        "matmul_acc" => matmul::matmul_acc(next(), &next(), &next()),
        "matmul_sum" => {
            let c = next();
            matmul::matmul_sum(c, it.collect())
        }
        "matmul_nt_sum" => {
            let c = next();
            matmul::matmul_nt_sum(c, it.collect())
        }
        "syrk_sum" => {
            let c = next();
            matmul::syrk_sum(c, it.collect())
        }
        "fused" => {
            let (program, spec) = (next(), next());
            fused::fused(&program, &spec, it.collect())
        }
        other => unreachable!("kernel {other} is listed but not dispatched"),
    };
    Ok(out?)
}

#[cfg(target_arch = "wasm32")]
mod export {
    use taskhost_guest::bindings::exports::taskhost::task::tasks::{
        FunctionInfo, Guest, TaskError,
    };

    struct Kernels;

    impl Guest for Kernels {
        fn functions() -> Vec<FunctionInfo> {
            crate::KERNELS
                .iter()
                .map(|k| FunctionInfo {
                    name: k.name.to_owned(),
                    doc: k.doc.to_owned(),
                    signature: k.signature.to_owned(),
                })
                .collect()
        }

        fn call(name: String, args: Vec<Vec<u8>>) -> Result<Vec<u8>, TaskError> {
            crate::call(&name, args).map_err(|err| match err {
                crate::CallError::UnknownFunction(name) => TaskError::UnknownFunction(name),
                crate::CallError::InvalidInput(message) => TaskError::InvalidInput(message),
            })
        }
    }

    taskhost_guest::bindings::__export_task_module!(Kernels with_types_in taskhost_guest::bindings);
}

#[cfg(test)]
mod tests;
