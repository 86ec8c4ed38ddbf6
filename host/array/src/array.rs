//! The chunked [`Array`] and the [`ArrayContext`] that creates arrays.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

use ndarray::{ArrayD, IxDyn, Slice};
use taskhost_client::{Args, Client, Graph, Handle, Module, Raw};

use crate::chunk::{self, DType};
use crate::error::ArrayError;
use crate::fuse::{Expr, FusedReduce};

/// The default fan-in of tree reductions: how many partial results one combine task folds.
pub const DEFAULT_FAN_IN: usize = 8;

/// The most input bytes one `matmul_sum` task of a blocked product reads (it folds as many
/// block products of a contraction as fit, at most [`MAX_MATMUL_GROUP`]); a task's memory cap
/// must hold them.
pub const MATMUL_TASK_BYTES: usize = 136 << 20;

/// The most block products one `matmul_sum` task of a blocked product folds.
pub const MAX_MATMUL_GROUP: usize = 8;

/// How an [`ArrayContext`] builds graphs ([`ArrayContext::with_config`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArrayConfig {
    /// How many partial results one combine task of a tree reduction folds (at least 2).
    pub fan_in: usize,
    /// Blockwise fusion: elementwise operations, transposes and broadcasts build a lazy
    /// expression evaluated by one `fused` call per block (off: every operation is a task).
    pub fusion: bool,
    /// Algebraic rewrites of matrix products, on the lazy expressions of fusion (so they need
    /// `fusion`), exact up to the order of floating-point sums:
    ///
    /// - **symmetric product**: `a.dot(a.t())` and `a.t().dot(a)` compute only the output
    ///   blocks `(i, j)` with `i <= j`; block `(j, i)` is read as the transpose of `(i, j)`
    ///   (by a fused consumer, for free; otherwise by a `transpose` task);
    /// - **scalar distributivity**: `a.dot(b ± c)` for a number `c` is
    ///   `a.dot(b) ± c * (row sums of a)` broadcast along the columns, and `(b ± c).dot(a)` is
    ///   `b.dot(a) ± c * (column sums of a)` broadcast along the rows (likewise `c ± b`); it
    ///   is applied when `b.dot(a)` or `a.dot(b)` then is a symmetric product.
    pub rewrites: bool,
}

impl Default for ArrayConfig {
    fn default() -> Self {
        ArrayConfig {
            fan_in: DEFAULT_FAN_IN,
            fusion: true,
            rewrites: true,
        }
    }
}

struct Inner {
    client: Client,
    module: Module,
    graph: Graph,
    config: ArrayConfig,
    /// The tasks added to the graph so far, per kernel.
    per_kernel: Mutex<HashMap<String, usize>>,
}

/// Creates arrays on one client: holds the client, the registered kernels module and the graph
/// the arrays' tasks are added to. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let client = taskhost_client::Client::local().await?;
/// let da = taskhost_array::ArrayContext::new(&client).await?;
/// let x = da.ones(&[15, 15], &[5, 5]);
/// let y = (&x + &x.t()).sum();
/// assert_eq!(y.compute_scalar().await?, 450.0);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ArrayContext {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ArrayContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArrayContext")
            .field("module", &self.inner.module.id())
            .field("config", &self.inner.config)
            .finish()
    }
}

impl ArrayContext {
    /// Registers the embedded kernels module with `client` (uploading it if the cluster lacks
    /// it) and returns a context with tree reductions of fan-in [`DEFAULT_FAN_IN`].
    pub async fn new(client: &Client) -> Result<Self, ArrayError> {
        Self::with_fan_in(client, DEFAULT_FAN_IN).await
    }

    /// Like [`new`](Self::new), with reductions folding `fan_in` (at least 2) partial results
    /// per combine task.
    pub async fn with_fan_in(client: &Client, fan_in: usize) -> Result<Self, ArrayError> {
        Self::with_options(client, fan_in, true).await
    }

    /// Like [`with_fan_in`](Self::with_fan_in); `fusion: false` turns blockwise fusion off, so
    /// that every elementwise operation and transpose is a task of its own (as before fusion
    /// existed; for comparisons).
    pub async fn with_options(
        client: &Client,
        fan_in: usize,
        fusion: bool,
    ) -> Result<Self, ArrayError> {
        Self::with_config(
            client,
            ArrayConfig {
                fan_in,
                fusion,
                ..ArrayConfig::default()
            },
        )
        .await
    }

    /// A context building graphs as `config` says (for instance with the algebraic rewrites
    /// of matrix products turned off, for comparisons).
    pub async fn with_config(client: &Client, config: ArrayConfig) -> Result<Self, ArrayError> {
        let module = client.module(crate::KERNELS_WASM.to_vec()).await?;
        Ok(ArrayContext {
            inner: Arc::new(Inner {
                client: client.clone(),
                module,
                graph: Graph::new(),
                config: ArrayConfig {
                    fan_in: config.fan_in.max(2),
                    ..config
                },
                per_kernel: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// How the context builds graphs.
    pub fn config(&self) -> ArrayConfig {
        self.inner.config
    }

    /// The client arrays are computed on.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The registered kernels module.
    pub fn module(&self) -> &Module {
        &self.inner.module
    }

    /// How many distinct kernel calls the context's graph holds: the tasks added so far (a
    /// fused expression adds its tasks only when its blocks or a reduction of it are needed).
    pub fn task_count(&self) -> usize {
        self.inner.graph.len()
    }

    /// How many distinct calls of kernel `function` (`"matmul_sum"`, `"fused"`, ...) the
    /// context's arrays added to the graph so far.
    pub fn task_count_of(&self, function: &str) -> usize {
        let counts = self
            .inner
            .per_kernel
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        counts.get(function).copied().unwrap_or(0)
    }

    fn call(&self, function: &str, args: &[Arg<'_>]) -> Handle<Raw> {
        let mut built = Args::new();
        for arg in args {
            built = match arg {
                Arg::Block(handle) => built.arg(*handle),
                Arg::Lit(bytes) => built.arg(Raw::from(bytes.as_slice())),
            };
        }
        // Held across the call, so that a call the graph already holds is not counted.
        let mut counts = self
            .inner
            .per_kernel
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let before = self.inner.graph.len();
        let handle = self
            .inner
            .graph
            .call::<Raw>(&self.inner.module, function, built)
            .unwrap_or_else(|err| panic!("adding a call of kernel `{function}` failed: {err}"));
        if self.inner.graph.len() > before {
            *counts.entry(function.to_owned()).or_default() += 1;
        }
        handle
    }

    fn creation(
        &self,
        shape: &[usize],
        chunks: &[usize],
        dtype: DType,
        make: impl Fn(&[usize], usize) -> Handle<Raw>,
    ) -> Array {
        let chunks = normalize_chunks(shape, chunks);
        let blocks = grid_indices(&chunks)
            .iter()
            .enumerate()
            .map(|(flat, index)| make(&block_shape(&chunks, index), flat))
            .collect();
        Array::ready(self.clone(), shape.to_vec(), chunks, dtype, blocks)
    }

    /// An array of `shape` filled with `value` (float64), in blocks of `chunks` (the last block
    /// along an axis may be smaller).
    ///
    /// # Panics
    /// If `chunks` has another length than `shape` or holds a zero.
    pub fn full(&self, shape: &[usize], chunks: &[usize], value: f64) -> Array {
        self.creation(shape, chunks, DType::F64, |block, _| {
            self.call(
                "full",
                &[
                    Arg::Lit(chunk::spec(DType::F64, block)),
                    Arg::Lit(chunk::scalar_f64(value)),
                ],
            )
        })
    }

    /// An array of ones (float64).
    ///
    /// # Panics
    /// As [`full`](Self::full).
    pub fn ones(&self, shape: &[usize], chunks: &[usize]) -> Array {
        self.creation(shape, chunks, DType::F64, |block, _| {
            self.call("ones", &[Arg::Lit(chunk::spec(DType::F64, block))])
        })
    }

    /// An array of zeros (float64).
    ///
    /// # Panics
    /// As [`full`](Self::full).
    pub fn zeros(&self, shape: &[usize], chunks: &[usize]) -> Array {
        self.creation(shape, chunks, DType::F64, |block, _| {
            self.call("zeros", &[Arg::Lit(chunk::spec(DType::F64, block))])
        })
    }

    /// Uniform random values in [0, 1) (float64). Block `b` (row-major block index) is the
    /// kernels' counter-based stream [`chunk::block_seed`]`(seed, b)`, so the array depends only
    /// on `seed`, its shape and its chunks, and [`chunk::random_value`] recomputes any element.
    ///
    /// # Panics
    /// As [`full`](Self::full).
    ///
    /// With fusion on, expressions and reductions over a random array recompute its values
    /// from the seeds inside their fused calls rather than read its blocks (which are then
    /// only computed if something needs them as they are, such as `dot`).
    pub fn random(&self, shape: &[usize], chunks: &[usize], seed: u64) -> Array {
        let mut array = self.creation(shape, chunks, DType::F64, |block, flat| {
            let s = chunk::block_seed(seed, flat as u64);
            self.call(
                "random",
                &[
                    Arg::Lit(chunk::spec(DType::F64, block)),
                    Arg::Lit(chunk::scalar_i64(s as i64)),
                ],
            )
        });
        array.random = Some(seed);
        array
    }

    /// `0, 1, ..., n - 1` as float64, in blocks of `chunk`.
    ///
    /// # Panics
    /// If `chunk` is zero.
    pub fn arange(&self, n: usize, chunk: usize) -> Array {
        let chunks = normalize_chunks(&[n], &[chunk]);
        let mut start = 0usize;
        let blocks = chunks[0]
            .iter()
            .map(|&len| {
                let h = self.call(
                    "arange",
                    &[
                        Arg::Lit(chunk::spec(DType::F64, &[len])),
                        Arg::Lit(chunk::scalar_f64(start as f64)),
                        Arg::Lit(chunk::scalar_f64(1.0)),
                    ],
                );
                start += len;
                h
            })
            .collect();
        Array::ready(self.clone(), vec![n], chunks, DType::F64, blocks)
    }

    /// An array holding `data`, split into blocks of `chunks` (each block becomes a literal of
    /// the graph).
    ///
    /// # Panics
    /// As [`full`](Self::full).
    pub fn from_ndarray(&self, data: &ArrayD<f64>, chunks: &[usize]) -> Array {
        let shape = data.shape().to_vec();
        let norm = normalize_chunks(&shape, chunks);
        let starts = chunk_starts(&norm);
        let blocks = grid_indices(&norm)
            .iter()
            .map(|index| {
                let view = data.slice_each_axis(|ax| {
                    let a = ax.axis.index();
                    let s = starts[a][index[a]];
                    Slice::from(s..s + norm[a][index[a]])
                });
                let bytes = chunk::encode_f64(&view.to_owned());
                // A literal cannot be a task's result by itself: `reshape` to its own shape
                // passes it through as a task output.
                self.call(
                    "reshape",
                    &[
                        Arg::Lit(bytes),
                        Arg::Lit(chunk::spec(DType::F64, view.shape())),
                    ],
                )
            })
            .collect();
        Array::ready(self.clone(), shape, norm, DType::F64, blocks)
    }
}

pub(crate) enum Arg<'a> {
    Block(&'a Handle<Raw>),
    Lit(Vec<u8>),
}

/// A chunked n-dimensional array: a shape, a grid of blocks, a dtype, and for each block the
/// handle of the task that computes it. Operations build tasks lazily; [`compute`](Self::compute)
/// runs them.
///
/// Operators (`+ - * /` between arrays, and with `f64` on either side) follow NumPy's
/// broadcasting; they panic on shapes that do not broadcast, as ndarray's do. The
/// `try_*` methods return the error instead.
#[derive(Clone)]
pub struct Array {
    ctx: ArrayContext,
    shape: Vec<usize>,
    chunks: Vec<Vec<usize>>,
    dtype: DType,
    /// The blocks' handles: set when the array is made, or on first use for a lazy array.
    blocks: Arc<OnceLock<Arc<Vec<Handle<Raw>>>>>,
    /// A lazy elementwise expression whose blocks are not tasks yet (blockwise fusion).
    expr: Option<Arc<Expr>>,
    /// The seed of an array made by `random` (its values can be recomputed anywhere).
    random: Option<u64>,
}

impl std::fmt::Debug for Array {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Array")
            .field("shape", &self.shape)
            .field("chunks", &self.chunks)
            .field("dtype", &self.dtype)
            .field(
                "blocks",
                &self.chunks.iter().map(Vec::len).product::<usize>(),
            )
            .field("lazy", &self.expr.is_some())
            .finish()
    }
}

/// The elementwise binary operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
    /// `a / b`
    Div,
    /// The elementwise minimum.
    Minimum,
    /// The elementwise maximum.
    Maximum,
    /// `a ** b`
    Pow,
}

impl BinaryOp {
    fn kernel(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Minimum => "minimum",
            BinaryOp::Maximum => "maximum",
            BinaryOp::Pow => "pow",
        }
    }
}

/// The elementwise unary operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    /// `-x`
    Neg,
    /// `|x|`
    Abs,
    /// `x * x`
    Square,
    /// The square root.
    Sqrt,
    /// `e^x`
    Exp,
    /// The natural logarithm.
    Log,
    /// The sine.
    Sin,
    /// The cosine.
    Cos,
}

impl UnaryOp {
    fn kernel(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Abs => "abs",
            UnaryOp::Square => "square",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sin => "sin",
            UnaryOp::Cos => "cos",
        }
    }
}

/// The reductions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reduction {
    /// The sum.
    Sum,
    /// The mean.
    Mean,
    /// The smallest element.
    Min,
    /// The largest element.
    Max,
    /// The variance with `ddof` delta degrees of freedom (0: population).
    Var(f64),
    /// The standard deviation with `ddof` delta degrees of freedom.
    Std(f64),
}

impl Array {
    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of dimensions.
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the array has no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The block sizes along each axis (Dask's `chunks`).
    pub fn chunks(&self) -> &[Vec<usize>] {
        &self.chunks
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The handles of the blocks' tasks, in row-major block order. For an array that is a
    /// fused elementwise expression, this adds its tasks (one `fused` call per block) on first
    /// use.
    pub fn blocks(&self) -> &[Handle<Raw>] {
        self.shared_blocks()
    }

    fn shared_blocks(&self) -> &Arc<Vec<Handle<Raw>>> {
        self.blocks.get_or_init(|| {
            let expr = self.expr.as_ref().expect("an array without blocks is lazy");
            Arc::new(self.materialize(expr))
        })
    }

    /// Whether the array is a fused elementwise expression whose tasks are not added yet.
    pub fn is_lazy(&self) -> bool {
        self.expr.is_some() && self.blocks.get().is_none()
    }

    /// Whether operations on this array join a fused expression.
    fn fuses(&self) -> bool {
        self.ctx.inner.config.fusion && self.dtype == DType::F64
    }

    /// An array whose blocks are `blocks`.
    fn ready(
        ctx: ArrayContext,
        shape: Vec<usize>,
        chunks: Vec<Vec<usize>>,
        dtype: DType,
        blocks: Vec<Handle<Raw>>,
    ) -> Array {
        debug_assert_eq!(blocks.len(), chunks.iter().map(Vec::len).product::<usize>());
        Array {
            ctx,
            shape,
            chunks,
            dtype,
            blocks: Arc::new(OnceLock::from(Arc::new(blocks))),
            expr: None,
            random: None,
        }
    }

    /// A float64 array that is the lazy expression `expr`.
    fn lazy(&self, shape: Vec<usize>, chunks: Vec<Vec<usize>>, expr: Expr) -> Array {
        Array {
            ctx: self.ctx.clone(),
            shape,
            chunks,
            dtype: DType::F64,
            blocks: Arc::new(OnceLock::new()),
            expr: Some(Arc::new(expr)),
            random: None,
        }
    }

    /// The array as an expression: its own if it is lazy, else one leaf.
    fn as_expr(&self) -> Expr {
        match &self.expr {
            Some(e) => (**e).clone(),
            None => Expr::leaf(
                self.shared_blocks().clone(),
                &self.chunks,
                self.random.filter(|_| self.ctx.inner.config.fusion),
            ),
        }
    }

    /// The array as one leaf (materialising a lazy array).
    fn as_leaf(&self) -> Expr {
        Expr::leaf(self.shared_blocks().clone(), &self.chunks, None)
    }

    /// Adds the tasks of a lazy expression: one `fused` call per block (a plain `transpose`
    /// for a block that is the transpose of one stored 2-D block; none for a block read as it
    /// is).
    fn materialize(&self, expr: &Expr) -> Vec<Handle<Raw>> {
        let ndim = self.ndim();
        let plain = vec![false; ndim];
        grid_indices(&self.chunks)
            .iter()
            .map(|out| {
                if let Some(leaf) = expr.view() {
                    let map = leaf.map_at(out);
                    if map.len() == leaf.chunks.len()
                        && map.iter().enumerate().all(|(o, m)| *m == Some(o))
                    {
                        return leaf.block(out).clone();
                    }
                    if leaf.random.is_none() && map == [Some(1), Some(0)] {
                        return self.ctx.call("transpose", &[Arg::Block(leaf.block(out))]);
                    }
                }
                let mut args = vec![
                    Arg::Lit(expr.program(ndim, FusedReduce::None, &plain, out)),
                    Arg::Lit(chunk::spec(DType::F64, &block_shape(&self.chunks, out))),
                ];
                args.extend(expr.leaves.iter().map(|l| l.arg(out)));
                self.ctx.call("fused", &args)
            })
            .collect()
    }

    /// The context the array was made in.
    pub fn context(&self) -> &ArrayContext {
        &self.ctx
    }

    fn with(
        &self,
        shape: Vec<usize>,
        chunks: Vec<Vec<usize>>,
        dtype: DType,
        blocks: Vec<Handle<Raw>>,
    ) -> Array {
        Array::ready(self.ctx.clone(), shape, chunks, dtype, blocks)
    }

    fn map_blocks(&self, dtype: DType, f: impl Fn(&Handle<Raw>) -> Handle<Raw>) -> Array {
        self.with(
            self.shape.clone(),
            self.chunks.clone(),
            dtype,
            self.blocks().iter().map(f).collect(),
        )
    }

    /// The elements converted to `dtype`.
    pub fn astype(&self, dtype: DType) -> Array {
        if dtype == self.dtype {
            return self.clone();
        }
        let spec = chunk::spec(dtype, &[]);
        self.map_blocks(dtype, |b| {
            self.ctx
                .call("astype", &[Arg::Block(b), Arg::Lit(spec.clone())])
        })
    }

    /// `op(self, other)` elementwise with NumPy broadcasting. Along an axis where both arrays
    /// have the same length they must have the same chunks (rechunking is not implemented); an
    /// axis of length 1 (or a missing one) is stretched. Different dtypes are both converted to
    /// float64.
    pub fn try_binary(&self, op: BinaryOp, other: &Array) -> Result<Array, ArrayError> {
        if self.dtype != other.dtype {
            return self
                .astype(DType::F64)
                .try_binary(op, &other.astype(DType::F64));
        }
        let ndim = self.ndim().max(other.ndim());
        let (pa, pb) = (ndim - self.ndim(), ndim - other.ndim());
        let mut shape = Vec::with_capacity(ndim);
        let mut chunks = Vec::with_capacity(ndim);
        // Per output axis: whether a / b is stretched (always block 0) along it.
        let mut stretch_a = vec![true; ndim];
        let mut stretch_b = vec![true; ndim];
        for axis in 0..ndim {
            let a = (axis >= pa).then(|| (self.shape[axis - pa], &self.chunks[axis - pa]));
            let b = (axis >= pb).then(|| (other.shape[axis - pb], &other.chunks[axis - pb]));
            let (da, db) = (a.map_or(1, |a| a.0), b.map_or(1, |b| b.0));
            if da == db {
                if da != 1 {
                    let (ca, cb) = (a.expect("present").1, b.expect("present").1);
                    if ca != cb {
                        return Err(ArrayError::Shape(format!(
                            "axis {axis}: chunks {ca:?} and {cb:?} differ (rechunking is not supported)"
                        )));
                    }
                    stretch_a[axis] = false;
                    stretch_b[axis] = false;
                }
                shape.push(da);
                chunks.push(a.or(b).map_or(vec![1], |x| x.1.clone()));
            } else if da == 1 {
                shape.push(db);
                chunks.push(b.expect("present").1.clone());
                stretch_b[axis] = false;
            } else if db == 1 {
                shape.push(da);
                chunks.push(a.expect("present").1.clone());
                stretch_a[axis] = false;
            } else {
                return Err(ArrayError::Shape(format!(
                    "shapes {:?} and {:?} cannot be broadcast together",
                    self.shape, other.shape
                )));
            }
        }
        let index_in =
            |out: &[usize], stretch: &[bool], pad: usize, grid: &[Vec<usize>]| -> usize {
                let mut flat = 0;
                for (axis, c) in grid.iter().enumerate() {
                    let o = axis + pad;
                    let i = if stretch[o] { 0 } else { out[o] };
                    flat = flat * c.len() + i;
                }
                flat
            };
        if self.fuses() {
            // Fused: no task yet, the operation joins a lazy expression.
            let (a, b) = (self.as_expr().padded(pa), other.as_expr().padded(pb));
            let expr = Expr::binary(&a, &b, op).unwrap_or_else(|| {
                let (a, b) = (self.as_leaf().padded(pa), other.as_leaf().padded(pb));
                Expr::binary(&a, &b, op).expect("two leaves fit one call")
            });
            return Ok(self.lazy(shape, chunks, expr));
        }
        let name = op.kernel();
        let (a_blocks, b_blocks) = (self.blocks(), other.blocks());
        let blocks = grid_indices(&chunks)
            .iter()
            .map(|out| {
                let a = &a_blocks[index_in(out, &stretch_a, pa, &self.chunks)];
                let b = &b_blocks[index_in(out, &stretch_b, pb, &other.chunks)];
                self.ctx.call(name, &[Arg::Block(a), Arg::Block(b)])
            })
            .collect();
        Ok(self.with(shape, chunks, self.dtype, blocks))
    }

    /// `op(self, value)` elementwise, or `op(value, self)` when `scalar_left`.
    pub fn scalar(&self, op: BinaryOp, value: f64, scalar_left: bool) -> Array {
        if self.fuses() {
            let expr = self
                .as_expr()
                .scalar(op, value, scalar_left)
                .or_else(|| self.as_leaf().scalar(op, value, scalar_left))
                .expect("a leaf and a number fit one call");
            return self.lazy(self.shape.clone(), self.chunks.clone(), expr);
        }
        let lit = match self.dtype {
            DType::F64 => chunk::scalar_f64(value),
            DType::F32 => {
                let mut b = chunk::spec(DType::F32, &[]);
                b.extend_from_slice(&(value as f32).to_le_bytes());
                b
            }
            DType::I64 => chunk::scalar_i64(value as i64),
        };
        let name = op.kernel();
        self.map_blocks(self.dtype, |b| {
            if scalar_left {
                self.ctx.call(name, &[Arg::Lit(lit.clone()), Arg::Block(b)])
            } else {
                self.ctx.call(name, &[Arg::Block(b), Arg::Lit(lit.clone())])
            }
        })
    }

    /// `op(self)` elementwise.
    pub fn unary(&self, op: UnaryOp) -> Array {
        if self.fuses() {
            let expr = self.as_expr().unary(op);
            return self.lazy(self.shape.clone(), self.chunks.clone(), expr);
        }
        self.map_blocks(self.dtype, |b| self.ctx.call(op.kernel(), &[Arg::Block(b)]))
    }

    /// The elementwise minimum with `other`.
    ///
    /// # Panics
    /// If the shapes do not broadcast.
    pub fn minimum(&self, other: &Array) -> Array {
        self.try_binary(BinaryOp::Minimum, other)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The elementwise maximum with `other`.
    ///
    /// # Panics
    /// If the shapes do not broadcast.
    pub fn maximum(&self, other: &Array) -> Array {
        self.try_binary(BinaryOp::Maximum, other)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The square root of every element.
    pub fn sqrt(&self) -> Array {
        self.unary(UnaryOp::Sqrt)
    }

    /// The exponential of every element.
    pub fn exp(&self) -> Array {
        self.unary(UnaryOp::Exp)
    }

    /// The absolute value of every element.
    pub fn abs(&self) -> Array {
        self.unary(UnaryOp::Abs)
    }

    /// The transpose: axes reversed (NumPy's `x.T`).
    pub fn t(&self) -> Array {
        if self.ndim() < 2 {
            return self.clone();
        }
        let shape: Vec<usize> = self.shape.iter().rev().copied().collect();
        let chunks: Vec<Vec<usize>> = self.chunks.iter().rev().cloned().collect();
        if self.fuses() {
            // Fused: the transpose is a way of reading the blocks, not a task.
            return self.lazy(shape, chunks, self.as_expr().transposed());
        }
        let own = self.blocks();
        let blocks = grid_indices(&chunks)
            .iter()
            .map(|out| {
                let src: Vec<usize> = out.iter().rev().copied().collect();
                self.ctx.call(
                    "transpose",
                    &[Arg::Block(&own[flat_index(&self.chunks, &src)])],
                )
            })
            .collect();
        self.with(shape, chunks, self.dtype, blocks)
    }

    /// Same as [`t`](Self::t).
    pub fn transpose(&self) -> Array {
        self.t()
    }

    /// A reduction over `axes` (empty: all axes) as a tree of combine tasks of the context's
    /// fan-in. The reduced axes are dropped from the result; reducing every axis gives a 0-d
    /// array.
    pub fn try_reduce(&self, what: Reduction, axes: &[usize]) -> Result<Array, ArrayError> {
        let ndim = self.ndim();
        let mut mask = vec![axes.is_empty(); ndim];
        for &axis in axes {
            if axis >= ndim {
                return Err(ArrayError::Shape(format!(
                    "axis {axis} is out of range for {ndim} dimensions"
                )));
            }
            mask[axis] = true;
        }
        let src = match what {
            Reduction::Mean if self.dtype != DType::F64 => self.astype(DType::F64),
            _ => self.clone(),
        };
        let reduced: Vec<i64> = (0..ndim).filter(|&a| mask[a]).map(|a| a as i64).collect();
        let count: usize = (0..ndim)
            .filter(|&a| mask[a])
            .map(|a| self.shape[a])
            .product();
        let axes_lit = chunk::i64s(&[reduced.len()], &reduced);
        let (partial, combine) = match what {
            Reduction::Sum | Reduction::Mean => ("sum", "sum_combine"),
            Reduction::Min => ("min", "min_combine"),
            Reduction::Max => ("max", "max_combine"),
            Reduction::Var(_) | Reduction::Std(_) => ("moments", "moments_combine"),
        };
        let moments = matches!(what, Reduction::Var(_) | Reduction::Std(_));
        let out_dtype = if moments { DType::F64 } else { src.dtype };
        let keep: Vec<usize> = (0..ndim).filter(|&a| !mask[a]).collect();
        let shape: Vec<usize> = keep.iter().map(|&a| self.shape[a]).collect();
        let chunks: Vec<Vec<usize>> = keep.iter().map(|&a| self.chunks[a].clone()).collect();
        // Group the blocks' partial results by the output block they reduce into.
        let mut groups: Vec<Vec<Handle<Raw>>> =
            vec![Vec::new(); chunks.iter().map(Vec::len).product()];
        // A lazy expression, or a random array whose values the partials can recompute.
        let fused = if src.is_lazy() {
            src.expr.clone()
        } else if src.random.is_some() && src.fuses() {
            Some(Arc::new(src.as_expr()))
        } else {
            None
        };
        match fused {
            Some(expr) => {
                // Fused: each block's call evaluates the expression and emits only its partial.
                let kind = match what {
                    Reduction::Sum | Reduction::Mean => FusedReduce::Sum,
                    Reduction::Min => FusedReduce::Min,
                    Reduction::Max => FusedReduce::Max,
                    Reduction::Var(_) | Reduction::Std(_) => FusedReduce::Moments,
                };
                for index in grid_indices(&src.chunks) {
                    let out: Vec<usize> = keep.iter().map(|&a| index[a]).collect();
                    let mut args = vec![
                        Arg::Lit(expr.program(ndim, kind, &mask, &index)),
                        Arg::Lit(chunk::spec(DType::F64, &block_shape(&src.chunks, &index))),
                    ];
                    args.extend(expr.leaves.iter().map(|l| l.arg(&index)));
                    groups[flat_index(&chunks, &out)].push(self.ctx.call("fused", &args));
                }
            }
            None => {
                for (index, block) in grid_indices(&src.chunks).iter().zip(src.blocks()) {
                    let out: Vec<usize> = keep.iter().map(|&a| index[a]).collect();
                    let p = self
                        .ctx
                        .call(partial, &[Arg::Block(block), Arg::Lit(axes_lit.clone())]);
                    groups[flat_index(&chunks, &out)].push(p);
                }
            }
        }
        let fan_in = self.ctx.inner.config.fan_in;
        let blocks = grid_indices(&chunks)
            .iter()
            .zip(groups)
            .map(|(out, mut parts)| {
                let out_shape = block_shape(&chunks, out);
                // The shape of a partial result: reduced axes of length 1.
                let mut kept = Vec::with_capacity(ndim);
                let mut k = 0;
                for &reduced in &mask {
                    if reduced {
                        kept.push(1);
                    } else {
                        kept.push(out_shape[k]);
                        k += 1;
                    }
                }
                let inner_spec = chunk::spec(out_dtype, &kept);
                while parts.len() > fan_in {
                    parts = parts
                        .chunks(fan_in)
                        .map(|group| {
                            let mut args = vec![Arg::Lit(inner_spec.clone())];
                            args.extend(group.iter().map(Arg::Block));
                            self.ctx.call(combine, &args)
                        })
                        .collect();
                }
                let final_spec = chunk::spec(out_dtype, &out_shape);
                let mut args = vec![Arg::Lit(final_spec.clone())];
                args.extend(parts.iter().map(Arg::Block));
                let root = self.ctx.call(combine, &args);
                match what {
                    Reduction::Mean => self.ctx.call(
                        "div",
                        &[Arg::Block(&root), Arg::Lit(chunk::scalar_f64(count as f64))],
                    ),
                    Reduction::Var(ddof) | Reduction::Std(ddof) => {
                        let name = if matches!(what, Reduction::Var(_)) {
                            "var_finalize"
                        } else {
                            "std_finalize"
                        };
                        self.ctx.call(
                            name,
                            &[
                                Arg::Lit(final_spec),
                                Arg::Block(&root),
                                Arg::Lit(chunk::scalar_f64(ddof)),
                            ],
                        )
                    }
                    _ => root,
                }
            })
            .collect();
        Ok(self.with(shape, chunks, out_dtype, blocks))
    }

    fn reduce(&self, what: Reduction, axes: &[usize]) -> Array {
        self.try_reduce(what, axes)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The sum of all elements, a 0-d array.
    pub fn sum(&self) -> Array {
        self.reduce(Reduction::Sum, &[])
    }

    /// The sum along `axis`.
    ///
    /// # Panics
    /// If `axis` is out of range.
    pub fn sum_axis(&self, axis: usize) -> Array {
        self.reduce(Reduction::Sum, &[axis])
    }

    /// The mean of all elements.
    pub fn mean(&self) -> Array {
        self.reduce(Reduction::Mean, &[])
    }

    /// The mean along `axis`.
    ///
    /// # Panics
    /// If `axis` is out of range.
    pub fn mean_axis(&self, axis: usize) -> Array {
        self.reduce(Reduction::Mean, &[axis])
    }

    /// The smallest element.
    pub fn min(&self) -> Array {
        self.reduce(Reduction::Min, &[])
    }

    /// The smallest elements along `axis`.
    ///
    /// # Panics
    /// If `axis` is out of range.
    pub fn min_axis(&self, axis: usize) -> Array {
        self.reduce(Reduction::Min, &[axis])
    }

    /// The largest element.
    pub fn max(&self) -> Array {
        self.reduce(Reduction::Max, &[])
    }

    /// The largest elements along `axis`.
    ///
    /// # Panics
    /// If `axis` is out of range.
    pub fn max_axis(&self, axis: usize) -> Array {
        self.reduce(Reduction::Max, &[axis])
    }

    /// The population variance of all elements (NumPy's default `ddof=0`).
    pub fn var(&self) -> Array {
        self.reduce(Reduction::Var(0.0), &[])
    }

    /// The population variance along `axis`.
    ///
    /// # Panics
    /// If `axis` is out of range.
    pub fn var_axis(&self, axis: usize) -> Array {
        self.reduce(Reduction::Var(0.0), &[axis])
    }

    /// The population standard deviation of all elements.
    pub fn std(&self) -> Array {
        self.reduce(Reduction::Std(0.0), &[])
    }

    /// The population standard deviation along `axis`.
    ///
    /// # Panics
    /// If `axis` is out of range.
    pub fn std_axis(&self, axis: usize) -> Array {
        self.reduce(Reduction::Std(0.0), &[axis])
    }

    /// The matrix product of two 2-D arrays. The chunks of `self`'s columns must equal those
    /// of `other`'s rows. Output block `(i, j)` is `sum_p A[i,p] . B[p,j]`, computed by
    /// `matmul_sum` tasks that each fold up to [`MAX_MATMUL_GROUP`] block products (as many as
    /// fit in [`MATMUL_TASK_BYTES`]), chained when the contraction has more blocks.
    ///
    /// With the context's rewrites on ([`ArrayConfig::rewrites`], the default), the product of
    /// an array and its own transpose computes only the upper block triangle, and a number
    /// added to or subtracted from an operand is moved out of the product when that makes it
    /// such a symmetric product (`x.dot(x.T + 1)` is `x.dot(x.T) + x.sum(axis=1)[:, None]`).
    pub fn try_dot(&self, other: &Array) -> Result<Array, ArrayError> {
        if self.ndim() != 2 || other.ndim() != 2 {
            return Err(ArrayError::Shape(format!(
                "dot takes 2-D arrays, got shapes {:?} and {:?}",
                self.shape, other.shape
            )));
        }
        if self.shape[1] != other.shape[0] {
            return Err(ArrayError::Shape(format!(
                "shapes {:?} and {:?} are not aligned",
                self.shape, other.shape
            )));
        }
        if self.chunks[1] != other.chunks[0] {
            return Err(ArrayError::Shape(format!(
                "the contraction axis is chunked {:?} and {:?} (rechunking is not supported)",
                self.chunks[1], other.chunks[0]
            )));
        }
        if self.dtype != other.dtype {
            return self.astype(DType::F64).try_dot(&other.astype(DType::F64));
        }
        if let Some(rewritten) = self.rewritten_dot(other) {
            return Ok(rewritten);
        }
        let (mi, nj) = (self.chunks[0].len(), other.chunks[1].len());
        let (a_blocks, b_blocks) = (self.blocks(), other.blocks());
        let mut blocks = Vec::with_capacity(mi * nj);
        for i in 0..mi {
            for j in 0..nj {
                blocks.push(self.product_block(other, a_blocks, b_blocks, i, j));
            }
        }
        let shape = vec![self.shape[0], other.shape[1]];
        let chunks = vec![self.chunks[0].clone(), other.chunks[1].clone()];
        Ok(self.with(shape, chunks, self.dtype, blocks))
    }

    /// Output block `(i, j)` of `self . other` (aligned, same dtype) from the operands' blocks:
    /// `sum_p A[i,p] . B[p,j]` in `matmul_sum` tasks of up to [`MAX_MATMUL_GROUP`] products.
    fn product_block(
        &self,
        other: &Array,
        a_blocks: &[Handle<Raw>],
        b_blocks: &[Handle<Raw>],
        i: usize,
        j: usize,
    ) -> Handle<Raw> {
        let (kk, nj) = (self.chunks[1].len(), other.chunks[1].len());
        let first = |c: &[Vec<usize>], axis: usize| c[axis].first().copied().unwrap_or(1).max(1);
        let pair_bytes = (first(&self.chunks, 0) * first(&self.chunks, 1)
            + first(&other.chunks, 0) * first(&other.chunks, 1))
            * self.dtype.size();
        let group = (MATMUL_TASK_BYTES / pair_bytes.max(1)).clamp(1, MAX_MATMUL_GROUP);
        let out = [self.chunks[0][i], other.chunks[1][j]];
        self.contraction("matmul_sum", out, kk, group, |p| {
            vec![
                Arg::Block(&a_blocks[i * kk + p]),
                Arg::Block(&b_blocks[p * nj + j]),
            ]
        })
    }

    /// A chain of `kernel` tasks over the contraction index `0..kk`, `group` terms per task:
    /// the first starts from an empty block of `out` rows and columns, each next one adds its
    /// terms to the previous partial; `term(p)` gives term `p`'s operands.
    fn contraction<'a>(
        &self,
        kernel: &str,
        out: [usize; 2],
        kk: usize,
        group: usize,
        term: impl Fn(usize) -> Vec<Arg<'a>>,
    ) -> Handle<Raw> {
        let spec = chunk::spec(self.dtype, &out);
        let mut c: Option<Handle<Raw>> = None;
        for start in (0..kk).step_by(group) {
            let mut args = vec![match &c {
                Some(c) => Arg::Block(c),
                None => Arg::Lit(spec.clone()),
            }];
            for p in start..(start + group).min(kk) {
                args.extend(term(p));
            }
            c = Some(self.ctx.call(kernel, &args));
        }
        c.expect("at least one contraction block")
    }

    /// Whether `other` is this 2-D array's transpose by construction: the same stored arrays
    /// (and the same elementwise expression over them, if lazy) read with the axes reversed.
    /// Structural identity, not values.
    fn is_transpose_of(&self, other: &Array) -> bool {
        self.ndim() == 2 && other.ndim() == 2 && self.as_expr().is_transpose_of(&other.as_expr())
    }

    /// `e op c` (or `c op e` when the flag is set) for `self` a lazy `e + c`, `e - c`, `c + e`
    /// or `c - e` with a number `c`: `(e, op, c, flag)`.
    fn split_scalar(&self) -> Option<(Array, BinaryOp, f64, bool)> {
        let (e, op, c, left) = self.expr.as_ref()?.split_scalar()?;
        Some((
            self.lazy(self.shape.clone(), self.chunks.clone(), e),
            op,
            c,
            left,
        ))
    }

    /// A 1-D array as a column `(n, 1)`, broadcast along the columns of what it meets.
    fn column(&self) -> Array {
        let mut expr = self.as_expr();
        for leaf in &mut expr.leaves {
            leaf.map.push(None);
        }
        self.lazy(
            vec![self.shape[0], 1],
            vec![self.chunks[0].clone(), vec![1]],
            expr,
        )
    }

    /// The algebraic rewrites of `self . other` ([`ArrayConfig::rewrites`]), when they apply.
    fn rewritten_dot(&self, other: &Array) -> Option<Array> {
        if !self.ctx.inner.config.rewrites || !self.fuses() || !other.fuses() {
            return None;
        }
        if self.is_transpose_of(other) {
            return Some(self.symmetric_dot());
        }
        let combine = |product: Array, sums: Array, op: BinaryOp, left: bool| {
            let (a, b) = if left {
                (&sums, &product)
            } else {
                (&product, &sums)
            };
            a.try_binary(op, b)
                .unwrap_or_else(|e| panic!("a product and its sums broadcast: {e}"))
        };
        // a . (b ± c) = a . b ± c * rowsum(a)[:, None]: (a . c1)_ij = c * sum_p a_ip.
        if let Some((b, op, c, left)) = other.split_scalar()
            && self.is_transpose_of(&b)
        {
            let sums = self.sum_axis(1).column() * c;
            return Some(combine(self.symmetric_dot(), sums, op, left));
        }
        // (b ± c) . a = b . a ± c * colsum(a)[None, :]: (c1 . a)_ij = c * sum_p a_pj.
        if let Some((b, op, c, left)) = self.split_scalar()
            && b.is_transpose_of(other)
        {
            let sums = other.sum_axis(0) * c;
            return Some(combine(b.symmetric_dot(), sums, op, left));
        }
        None
    }

    /// Block `(i, p)` of `self` as an operand of `matmul_nt_sum` or `syrk_sum`: for an array
    /// made by `random` (with fusion on, as its fused consumers do), the generator
    /// `[seed, rows, cols]` from which the kernel makes the block itself (no `random` task, no
    /// 8 MB block stored and moved to the task); else the stored block.
    fn operand<'a>(&self, a_blocks: &'a [Handle<Raw>], i: usize, p: usize) -> Arg<'a> {
        let kk = self.chunks[1].len();
        match self.random.filter(|_| self.expr.is_none() && self.fuses()) {
            Some(seed) => {
                let words = [
                    chunk::block_seed(seed, (i * kk + p) as u64) as i64,
                    self.chunks[0][i] as i64,
                    self.chunks[1][p] as i64,
                ];
                Arg::Lit(chunk::i64s(&[3], &words))
            }
            None => Arg::Block(&a_blocks[i * kk + p]),
        }
    }

    /// Diagonal block `(i, i)` of `self . self^T` from `self`'s blocks: `sum_p A[i,p] .
    /// A[i,p]^T` in `syrk_sum` tasks of up to [`MAX_MATMUL_GROUP`] blocks, which compute the
    /// upper triangle of each product and mirror it (half the work of `matmul_sum`, and no
    /// transposed operand to read).
    fn syrk_block(&self, a_blocks: &[Handle<Raw>], i: usize) -> Handle<Raw> {
        let kk = self.chunks[1].len();
        let first = |axis: usize| self.chunks[axis].first().copied().unwrap_or(1).max(1);
        let block_bytes = first(0) * first(1) * self.dtype.size();
        // Grouped as `matmul_sum` groups the pairs of the other blocks, so that a chained
        // partial holds the same products.
        let group = (MATMUL_TASK_BYTES / (2 * block_bytes).max(1)).clamp(1, MAX_MATMUL_GROUP);
        let out = [self.chunks[0][i], self.chunks[0][i]];
        self.contraction("syrk_sum", out, kk, group, |p| {
            vec![self.operand(a_blocks, i, p)]
        })
    }

    /// Block `(i, j)` of `self . self^T` from `self`'s blocks: `sum_p A[i,p] . A[j,p]^T` in
    /// `matmul_nt_sum` tasks of up to [`MAX_MATMUL_GROUP`] products, which read `A[j,p]`
    /// transposed (no transposed block is made).
    fn nt_block(&self, a_blocks: &[Handle<Raw>], i: usize, j: usize) -> Handle<Raw> {
        let kk = self.chunks[1].len();
        let first = |axis: usize| self.chunks[axis].first().copied().unwrap_or(1).max(1);
        let pair_bytes = 2 * first(0) * first(1) * self.dtype.size();
        let group = (MATMUL_TASK_BYTES / pair_bytes.max(1)).clamp(1, MAX_MATMUL_GROUP);
        let out = [self.chunks[0][i], self.chunks[0][j]];
        self.contraction("matmul_nt_sum", out, kk, group, |p| {
            vec![self.operand(a_blocks, i, p), self.operand(a_blocks, j, p)]
        })
    }

    /// `self . self^T` (float64): only the output blocks `(i, j)` with `i <= j` are products,
    /// the diagonal ones by `syrk_sum` (half products), the others by `matmul_nt_sum`, all
    /// from `self`'s blocks (the transpose is never materialised); the result is a lazy
    /// symmetric expression that reads block `(j, i)` as the transpose of `(i, j)`.
    fn symmetric_dot(&self) -> Array {
        let n = self.chunks[0].len();
        let a_blocks = self.blocks();
        let mut blocks: Vec<Handle<Raw>> = Vec::with_capacity(n * n);
        for i in 0..n {
            for j in 0..n {
                let block = if i == j {
                    self.syrk_block(a_blocks, i)
                } else if i < j {
                    self.nt_block(a_blocks, i, j)
                } else {
                    blocks[j * n + i].clone()
                };
                blocks.push(block);
            }
        }
        let chunks = vec![self.chunks[0].clone(), self.chunks[0].clone()];
        let expr = Expr::symmetric(Arc::new(blocks), &chunks);
        self.lazy(vec![self.shape[0]; 2], chunks, expr)
    }

    /// The matrix product (see [`try_dot`](Self::try_dot)).
    ///
    /// # Panics
    /// If the arrays are not 2-D, not aligned, or chunked differently along the contraction.
    pub fn dot(&self, other: &Array) -> Array {
        self.try_dot(other).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Same as [`dot`](Self::dot).
    pub fn matmul(&self, other: &Array) -> Array {
        self.dot(other)
    }

    /// The elements in `ranges` (one per leading axis; missing ones take the whole axis).
    /// Blocks wholly inside the selection are reused as they are; blocks cut by it are sliced
    /// by a task each.
    pub fn try_slice(&self, ranges: &[Range<usize>]) -> Result<Array, ArrayError> {
        let ndim = self.ndim();
        if ranges.len() > ndim {
            return Err(ArrayError::Shape(format!(
                "{} ranges for {ndim} dimensions",
                ranges.len()
            )));
        }
        let starts = chunk_starts(&self.chunks);
        // Per axis: (source block, start within it, length) of each output block.
        let mut pieces: Vec<Vec<(usize, usize, usize)>> = Vec::with_capacity(ndim);
        for (axis, axis_starts) in starts.iter().enumerate() {
            let r = ranges.get(axis).cloned().unwrap_or(0..self.shape[axis]);
            if r.start > r.end || r.end > self.shape[axis] {
                return Err(ArrayError::Shape(format!(
                    "range {r:?} out of bounds for axis {axis} of length {}",
                    self.shape[axis]
                )));
            }
            let mut list = Vec::new();
            for (b, (&s, &len)) in axis_starts.iter().zip(&self.chunks[axis]).enumerate() {
                let lo = r.start.max(s);
                let hi = r.end.min(s + len);
                if lo < hi {
                    list.push((b, lo - s, hi - lo));
                }
            }
            if list.is_empty() {
                list.push((0, 0, 0));
            }
            pieces.push(list);
        }
        let chunks: Vec<Vec<usize>> = pieces
            .iter()
            .map(|p| p.iter().map(|x| x.2).collect())
            .collect();
        let shape: Vec<usize> = chunks.iter().map(|c| c.iter().sum()).collect();
        let own = self.blocks();
        let blocks = grid_indices(&chunks)
            .iter()
            .map(|out| {
                let src: Vec<usize> = out
                    .iter()
                    .enumerate()
                    .map(|(a, &o)| pieces[a][o].0)
                    .collect();
                let block = &own[flat_index(&self.chunks, &src)];
                let whole = out.iter().enumerate().all(|(a, &o)| {
                    let (b, s, len) = pieces[a][o];
                    s == 0 && len == self.chunks[a][b]
                });
                if whole {
                    return block.clone();
                }
                let bounds: Vec<i64> = out
                    .iter()
                    .enumerate()
                    .flat_map(|(a, &o)| {
                        let (_, s, len) = pieces[a][o];
                        [s as i64, (s + len) as i64, 1]
                    })
                    .collect();
                self.ctx.call(
                    "slice",
                    &[
                        Arg::Block(block),
                        Arg::Lit(chunk::i64s(&[ndim, 3], &bounds)),
                    ],
                )
            })
            .collect();
        Ok(self.with(shape, chunks, self.dtype, blocks))
    }

    /// The elements in `ranges` (see [`try_slice`](Self::try_slice)).
    ///
    /// # Panics
    /// If a range is out of bounds.
    pub fn slice(&self, ranges: &[Range<usize>]) -> Array {
        self.try_slice(ranges).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The blocks in `ranges` of block indices per leading axis (Dask's `x.blocks[...]`).
    ///
    /// # Panics
    /// If a range is out of bounds of the block grid.
    pub fn block_slice(&self, ranges: &[Range<usize>]) -> Array {
        let starts = chunk_starts(&self.chunks);
        let elements: Vec<Range<usize>> = ranges
            .iter()
            .enumerate()
            .map(|(a, r)| {
                let n = self.chunks[a].len();
                assert!(
                    r.start <= r.end && r.end <= n,
                    "block range {r:?} out of bounds for {n} blocks"
                );
                let lo = starts[a].get(r.start).copied().unwrap_or(self.shape[a]);
                let hi = starts[a].get(r.end).copied().unwrap_or(self.shape[a]);
                lo..hi
            })
            .collect();
        self.slice(&elements)
    }

    /// Runs the array's tasks and assembles the result as a float64 ndarray.
    pub async fn compute(&self) -> Result<ArrayD<f64>, ArrayError> {
        let parts = self.ctx.inner.client.compute_all(self.blocks()).await?;
        if let ([part], []) = (parts.as_slice(), self.shape.as_slice()) {
            return chunk::decode_f64(part);
        }
        let mut out = ArrayD::<f64>::zeros(IxDyn(&self.shape));
        let starts = chunk_starts(&self.chunks);
        for (index, part) in grid_indices(&self.chunks).iter().zip(&parts) {
            let block = chunk::decode_f64(part)?;
            let mut view = out.slice_each_axis_mut(|ax| {
                let a = ax.axis.index();
                let s = starts[a][index[a]];
                Slice::from(s..s + self.chunks[a][index[a]])
            });
            if view.shape() != block.shape() {
                return Err(ArrayError::BadChunk(format!(
                    "block {index:?} has shape {:?}, expected {:?}",
                    block.shape(),
                    view.shape()
                )));
            }
            view.assign(&block);
        }
        Ok(out)
    }

    /// Same as [`compute`](Self::compute).
    pub async fn to_ndarray(&self) -> Result<ArrayD<f64>, ArrayError> {
        self.compute().await
    }

    /// Computes a 0-d (or one-element) array and returns its value.
    pub async fn compute_scalar(&self) -> Result<f64, ArrayError> {
        let out = self.compute().await?;
        if out.len() != 1 {
            return Err(ArrayError::Shape(format!(
                "an array of shape {:?} is not a scalar",
                self.shape
            )));
        }
        Ok(out.iter().next().copied().unwrap_or_default())
    }
}

/// Block sizes along each axis for blocks of `block` elements (the last one may be smaller).
///
/// # Panics
/// If `block` and `shape` differ in length or `block` holds a zero.
pub fn normalize_chunks(shape: &[usize], block: &[usize]) -> Vec<Vec<usize>> {
    assert_eq!(
        shape.len(),
        block.len(),
        "chunks {block:?} do not match shape {shape:?}"
    );
    shape
        .iter()
        .zip(block)
        .map(|(&n, &b)| {
            assert!(b > 0, "chunk sizes must be positive, got {block:?}");
            if n == 0 {
                return vec![0];
            }
            let mut sizes = vec![b; n / b];
            if n % b != 0 {
                sizes.push(n % b);
            }
            sizes
        })
        .collect()
}

fn chunk_starts(chunks: &[Vec<usize>]) -> Vec<Vec<usize>> {
    chunks
        .iter()
        .map(|sizes| {
            let mut at = 0;
            sizes
                .iter()
                .map(|s| {
                    let start = at;
                    at += s;
                    start
                })
                .collect()
        })
        .collect()
}

fn block_shape(chunks: &[Vec<usize>], index: &[usize]) -> Vec<usize> {
    index
        .iter()
        .enumerate()
        .map(|(a, &i)| chunks[a][i])
        .collect()
}

fn flat_index(chunks: &[Vec<usize>], index: &[usize]) -> usize {
    chunks
        .iter()
        .zip(index)
        .fold(0, |flat, (c, &i)| flat * c.len() + i)
}

/// Every block index of the grid, row-major.
fn grid_indices(chunks: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let total: usize = chunks.iter().map(Vec::len).product();
    let mut out = Vec::with_capacity(total);
    let mut index = vec![0usize; chunks.len()];
    for _ in 0..total {
        out.push(index.clone());
        for axis in (0..chunks.len()).rev() {
            index[axis] += 1;
            if index[axis] < chunks[axis].len() {
                break;
            }
            index[axis] = 0;
        }
    }
    out
}
