//! Blockwise fusion: a lazy elementwise expression over the blocks of materialised arrays.
//!
//! Elementwise operations on float64 arrays (with arrays, with numbers, unary ones, transposes
//! and broadcasts) do not add tasks; they build an [`Expr`]: the leaves (materialised arrays,
//! each with a map of its axes onto the expression's axes) and a postfix program over them.
//! The expression becomes tasks only when something needs its blocks: one `fused` kernel call
//! per output block (see `examples/guests/kernels/src/fused.rs`), or, under a reduction, one
//! call per block that evaluates the expression and emits only the block's partial result.

use std::sync::Arc;

use taskhost_array_format::fused;
use taskhost_client::{Handle, Raw};

use crate::array::{Arg, BinaryOp, UnaryOp};
use crate::chunk;

/// The most leaves one fused call reads (the kernel allows more; this keeps calls small).
pub(crate) const MAX_LEAVES: usize = 16;
/// The deepest stack a fused program may use (the kernel allows 12).
pub(crate) const MAX_DEPTH: usize = 10;

/// What a fused call does with the values: nothing (the block) or a reduction's first stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FusedReduce {
    None = fused::REDUCE_NONE as isize,
    Sum = fused::REDUCE_SUM as isize,
    Min = fused::REDUCE_MIN as isize,
    Max = fused::REDUCE_MAX as isize,
    Moments = fused::REDUCE_MOMENTS as isize,
}

/// One instruction of a fused program.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Op {
    Input(usize),
    Const(f64),
    Bin(BinaryOp),
    Un(UnaryOp),
}

/// A materialised array read by an expression.
#[derive(Clone)]
pub(crate) struct Leaf {
    /// The array's blocks, row-major over its block grid.
    pub blocks: Arc<Vec<Handle<Raw>>>,
    /// The array's chunks.
    pub chunks: Vec<Vec<usize>>,
    /// For each axis of the expression, the array's axis that runs along it (None: broadcast).
    pub map: Vec<Option<usize>>,
    /// The seed of a random array: the fused call recomputes its values instead of reading them.
    pub random: Option<u64>,
    /// Symmetric storage of a square 2-D array (the result of a symmetric product): only the
    /// blocks `(i, j)` with `i <= j` are computed, and `blocks` holds at `(j, i)` the handle of
    /// `(i, j)`, which a fused call reads transposed (a per-block map, see [`Leaf::map_at`]).
    pub symmetric: bool,
}

impl Leaf {
    fn same(&self, other: &Leaf) -> bool {
        self.map == other.map && self.same_data(other)
    }

    /// Whether both leaves read the same array (whatever their maps).
    pub fn same_data(&self, other: &Leaf) -> bool {
        self.random == other.random
            && self.symmetric == other.symmetric
            && self.chunks == other.chunks
            && (Arc::ptr_eq(&self.blocks, &other.blocks) || self.blocks == other.blocks)
    }

    /// Where the leaf's data for output block `out` of the expression is: the flat index of
    /// the stored block, its shape, and whether it is read transposed (a block below the
    /// diagonal of a symmetric leaf, stored as the block above).
    pub fn locate(&self, out: &[usize]) -> (usize, Vec<i64>, bool) {
        let mut index: Vec<usize> = self
            .chunks
            .iter()
            .enumerate()
            .map(
                |(axis, c)| match self.map.iter().position(|m| *m == Some(axis)) {
                    Some(o) if c.len() > 1 => out[o],
                    _ => 0,
                },
            )
            .collect();
        let flipped = self.symmetric && index[0] > index[1];
        if flipped {
            index.swap(0, 1);
        }
        let flat = index
            .iter()
            .zip(&self.chunks)
            .fold(0, |flat, (&i, c)| flat * c.len() + i);
        let shape = index
            .iter()
            .zip(&self.chunks)
            .map(|(&i, c)| c[i] as i64)
            .collect();
        (flat, shape, flipped)
    }

    /// The leaf's map for output block `out`: its map, with the two axes swapped where a
    /// symmetric leaf's block is read transposed.
    pub fn map_at(&self, out: &[usize]) -> Vec<Option<usize>> {
        let mut map = self.map.clone();
        if self.locate(out).2 {
            for m in &mut map {
                *m = m.map(|a| 1 - a);
            }
        }
        map
    }

    /// The leaf's argument for output block `out` of the expression: its block, or for a
    /// random leaf the generator `[seed, shape...]` of that block.
    pub fn arg(&self, out: &[usize]) -> Arg<'_> {
        let (flat, shape, _) = self.locate(out);
        match self.random {
            None => Arg::Block(&self.blocks[flat]),
            Some(seed) => {
                let mut words = vec![chunk::block_seed(seed, flat as u64) as i64];
                words.extend(shape);
                Arg::Lit(chunk::i64s(&[words.len()], &words))
            }
        }
    }

    /// The stored block for output block `out` (not for random leaves, which store none that
    /// fused calls read).
    pub fn block(&self, out: &[usize]) -> &Handle<Raw> {
        &self.blocks[self.locate(out).0]
    }
}

/// A lazy elementwise expression: leaves and a postfix program over them.
#[derive(Clone)]
pub(crate) struct Expr {
    pub leaves: Vec<Leaf>,
    pub code: Vec<Op>,
}

impl Expr {
    /// The identity expression of a materialised array.
    pub fn leaf(blocks: Arc<Vec<Handle<Raw>>>, chunks: &[Vec<usize>], random: Option<u64>) -> Expr {
        Expr {
            leaves: vec![Leaf {
                blocks,
                chunks: chunks.to_vec(),
                map: (0..chunks.len()).map(Some).collect(),
                random,
                symmetric: false,
            }],
            code: vec![Op::Input(0)],
        }
    }

    /// The identity expression of a symmetric square 2-D array stored as its upper block
    /// triangle: `blocks` is the whole grid, its block `(j, i)` the handle of `(i, j)`.
    pub fn symmetric(blocks: Arc<Vec<Handle<Raw>>>, chunks: &[Vec<usize>]) -> Expr {
        debug_assert!(chunks.len() == 2 && chunks[0] == chunks[1]);
        Expr {
            leaves: vec![Leaf {
                blocks,
                chunks: chunks.to_vec(),
                map: vec![Some(0), Some(1)],
                random: None,
                symmetric: true,
            }],
            code: vec![Op::Input(0)],
        }
    }

    /// Whether `other` is this 2-D expression transposed, by construction: the same program
    /// over the same arrays, each read with its map's output axes reversed.
    pub fn is_transpose_of(&self, other: &Expr) -> bool {
        self.code == other.code
            && self.leaves.len() == other.leaves.len()
            && self.leaves.iter().zip(&other.leaves).all(|(a, b)| {
                a.same_data(b) && a.map.len() == 2 && a.map.iter().eq(b.map.iter().rev())
            })
    }

    /// The leaf the expression reads as it is (with its map), if it is just one leaf.
    pub fn view(&self) -> Option<&Leaf> {
        (self.code == [Op::Input(0)]).then(|| &self.leaves[0])
    }

    /// `e + c`, `e - c`, `c + e` or `c - e` for a number `c`: `(e, op, c, c on the left)`,
    /// with `e` keeping only the leaves it reads.
    pub fn split_scalar(&self) -> Option<(Expr, BinaryOp, f64, bool)> {
        let n = self.code.len();
        let op = match self.code.last()? {
            Op::Bin(op @ (BinaryOp::Add | BinaryOp::Sub)) => *op,
            _ => return None,
        };
        let (rest, value, left) = match (&self.code[..n - 1], self.code.first()) {
            ([rest @ .., Op::Const(c)], _) if !rest.is_empty() => (rest, *c, false),
            ([Op::Const(c), rest @ ..], _) if !rest.is_empty() => (rest, *c, true),
            _ => return None,
        };
        // `rest` must be one whole operand: a program that leaves exactly one value without
        // reaching below its own stack (for `c + e`, into the number).
        let mut depth = 0usize;
        for op in rest {
            let need = match op {
                Op::Input(_) | Op::Const(_) => 0,
                Op::Bin(_) => 2,
                Op::Un(_) => 1,
            };
            if depth < need {
                return None;
            }
            depth = match op {
                Op::Input(_) | Op::Const(_) => depth + 1,
                Op::Bin(_) => depth - 1,
                Op::Un(_) => depth,
            };
        }
        if depth != 1 || !rest.iter().any(|op| matches!(op, Op::Input(_))) {
            return None;
        }
        let mut renumber = vec![None; self.leaves.len()];
        let mut leaves = Vec::new();
        let code = rest
            .iter()
            .map(|op| match *op {
                Op::Input(i) => Op::Input(*renumber[i].get_or_insert_with(|| {
                    leaves.push(self.leaves[i].clone());
                    leaves.len() - 1
                })),
                other => other,
            })
            .collect();
        Some((Expr { leaves, code }, op, value, left))
    }

    /// The stack depth the program needs.
    pub fn depth(&self) -> usize {
        let (mut d, mut max) = (0usize, 0usize);
        for op in &self.code {
            match op {
                Op::Input(_) | Op::Const(_) => d += 1,
                Op::Bin(_) => d -= 1,
                Op::Un(_) => {}
            }
            max = max.max(d);
        }
        max
    }

    /// The expression seen with `extra` new leading axes (NumPy's broadcasting pads on the left).
    pub fn padded(mut self, extra: usize) -> Expr {
        for leaf in &mut self.leaves {
            let mut map = vec![None; extra];
            map.extend_from_slice(&leaf.map);
            leaf.map = map;
        }
        self
    }

    /// The expression with its axes reversed.
    pub fn transposed(mut self) -> Expr {
        for leaf in &mut self.leaves {
            leaf.map.reverse();
        }
        self
    }

    /// `op(a, b)`, or None when the result would exceed the limits of one call.
    pub fn binary(a: &Expr, b: &Expr, op: BinaryOp) -> Option<Expr> {
        if a.depth().max(b.depth() + 1) > MAX_DEPTH {
            return None;
        }
        let mut leaves = a.leaves.clone();
        let mut code = a.code.clone();
        let renumber: Vec<usize> = b
            .leaves
            .iter()
            .map(|leaf| match leaves.iter().position(|l| l.same(leaf)) {
                Some(i) => i,
                None => {
                    leaves.push(leaf.clone());
                    leaves.len() - 1
                }
            })
            .collect();
        if leaves.len() > MAX_LEAVES {
            return None;
        }
        code.extend(b.code.iter().map(|op| match *op {
            Op::Input(i) => Op::Input(renumber[i]),
            other => other,
        }));
        code.push(Op::Bin(op));
        Some(Expr { leaves, code })
    }

    /// `op(self, value)`, or `op(value, self)` when `scalar_left`; None past the limits.
    pub fn scalar(&self, op: BinaryOp, value: f64, scalar_left: bool) -> Option<Expr> {
        if self.depth() + 1 > MAX_DEPTH {
            return None;
        }
        let mut code = Vec::with_capacity(self.code.len() + 2);
        if scalar_left {
            code.push(Op::Const(value));
            code.extend_from_slice(&self.code);
        } else {
            code.extend_from_slice(&self.code);
            code.push(Op::Const(value));
        }
        code.push(Op::Bin(op));
        Some(Expr {
            leaves: self.leaves.clone(),
            code,
        })
    }

    /// `op(self)`.
    pub fn unary(&self, op: UnaryOp) -> Expr {
        let mut e = self.clone();
        e.code.push(Op::Un(op));
        e
    }

    /// The program of the `fused` kernel for output block `out` of this expression over
    /// `ndim` axes (the same for every block unless a symmetric leaf is read transposed).
    pub fn program(
        &self,
        ndim: usize,
        reduce: FusedReduce,
        reduced: &[bool],
        out: &[usize],
    ) -> Vec<u8> {
        let mask = reduced
            .iter()
            .enumerate()
            .filter(|(_, r)| **r)
            .fold(0i64, |m, (o, _)| m | 1 << o);
        let mut words: Vec<i64> = vec![
            fused::VERSION,
            self.leaves.len() as i64,
            ndim as i64,
            reduce as i64,
            mask,
        ];
        for leaf in &self.leaves {
            words.extend(leaf.map_at(out).iter().map(|m| m.map_or(-1, |a| a as i64)));
        }
        words.extend(self.leaves.iter().map(|l| {
            if l.random.is_some() {
                fused::INPUT_RANDOM
            } else {
                fused::INPUT_DATA
            }
        }));
        for op in &self.code {
            match *op {
                Op::Input(i) => words.extend([fused::INPUT, i as i64]),
                Op::Const(v) => words.extend([fused::CONST, v.to_bits() as i64]),
                Op::Bin(b) => words.push(i64::from(bin_code(b))),
                Op::Un(u) => words.push(i64::from(un_code(u))),
            }
        }
        chunk::i64s(&[words.len()], &words)
    }
}

fn bin_code(op: BinaryOp) -> u8 {
    match op {
        BinaryOp::Add => fused::ADD,
        BinaryOp::Sub => fused::SUB,
        BinaryOp::Mul => fused::MUL,
        BinaryOp::Div => fused::DIV,
        BinaryOp::Minimum => fused::MINIMUM,
        BinaryOp::Maximum => fused::MAXIMUM,
        BinaryOp::Pow => fused::POW,
    }
}

fn un_code(op: UnaryOp) -> u8 {
    match op {
        UnaryOp::Neg => fused::NEG,
        UnaryOp::Abs => fused::ABS,
        UnaryOp::Square => fused::SQUARE,
        UnaryOp::Sqrt => fused::SQRT,
        UnaryOp::Exp => fused::EXP,
        UnaryOp::Log => fused::LOG,
        UnaryOp::Sin => fused::SIN,
        UnaryOp::Cos => fused::COS,
    }
}
