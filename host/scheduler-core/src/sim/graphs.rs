//! Graph shapes for tests, quality comparisons and benchmarks.

use crate::sim::{SimGraph, SimRng, SimTask};
use crate::{ArgSpec, LiteralHandle, Micros, ModuleId, TaskKey, TaskSpec};

/// Builds graphs task by task with unique keys.
#[derive(Debug)]
pub struct GraphBuilder {
    module: ModuleId,
    next: u64,
    /// The graph so far.
    pub graph: SimGraph,
}

impl GraphBuilder {
    /// A builder whose tasks belong to a module named by `seed` (different seeds give
    /// different keys).
    pub fn new(seed: u64) -> Self {
        GraphBuilder {
            module: ModuleId::of(&seed.to_le_bytes()),
            next: 0,
            graph: SimGraph::default(),
        }
    }

    /// Adds a task calling `function` on `deps` (plus a unique literal), costing `duration`
    /// and producing `nbytes`.
    pub fn task(
        &mut self,
        function: &str,
        deps: &[TaskKey],
        duration: Micros,
        nbytes: u64,
    ) -> TaskKey {
        let mut args: Vec<ArgSpec> = deps.iter().map(|k| ArgSpec::Task(*k)).collect();
        args.push(ArgSpec::Literal(LiteralHandle(self.next)));
        self.next += 1;
        let spec = TaskSpec::derived(self.module, function, args);
        let key = spec.key;
        self.graph.tasks.push(SimTask {
            spec,
            duration,
            nbytes,
            fails: false,
        });
        key
    }

    /// Marks keys as wanted.
    pub fn want(&mut self, keys: &[TaskKey]) {
        self.graph.wants.extend_from_slice(keys);
    }

    /// The graph.
    pub fn finish(self) -> SimGraph {
        self.graph
    }

    /// Reduces `keys` pairwise (`fan_in` at a time) to one key.
    pub fn reduce(
        &mut self,
        mut keys: Vec<TaskKey>,
        fan_in: usize,
        duration: Micros,
        nbytes: u64,
    ) -> TaskKey {
        let fan_in = fan_in.max(2);
        let mut bound = keys.len() + 1;
        while keys.len() > 1 && bound > 0 {
            bound -= 1;
            keys = keys
                .chunks(fan_in)
                .map(|c| self.task("combine", c, duration, nbytes))
                .collect();
        }
        keys.first()
            .copied()
            .unwrap_or_else(|| self.task("empty", &[], duration, nbytes))
    }
}

/// A tree reduction over `leaves` leaves.
pub fn tree_reduction(leaves: usize, fan_in: usize, duration: Micros, nbytes: u64) -> SimGraph {
    let mut b = GraphBuilder::new(1);
    let ks: Vec<_> = (0..leaves)
        .map(|_| b.task("leaf", &[], duration, nbytes))
        .collect();
    let root = b.reduce(ks, fan_in, duration, nbytes);
    b.want(&[root]);
    b.finish()
}

/// `n` independent tasks whose results are summed by a tree reduction (fan-in 8).
pub fn independent_plus_reduction(n: usize, duration: Micros, nbytes: u64) -> SimGraph {
    let mut b = GraphBuilder::new(2);
    let ks: Vec<_> = (0..n)
        .map(|_| b.task("map", &[], duration, nbytes))
        .collect();
    let root = b.reduce(ks, 8, duration, nbytes);
    b.want(&[root]);
    b.finish()
}

/// Map `n` chunks (large), reduce each group of `group` mapped chunks to a small partial, sum.
pub fn map_reduce(n: usize, group: usize, duration: Micros, nbytes: u64) -> SimGraph {
    let mut b = GraphBuilder::new(3);
    let loads: Vec<_> = (0..n)
        .map(|_| b.task("load", &[], duration, nbytes))
        .collect();
    let maps: Vec<_> = loads
        .iter()
        .map(|k| b.task("map", &[*k], duration, nbytes))
        .collect();
    let partials: Vec<_> = maps
        .chunks(group.max(1))
        .map(|c| b.task("partial", c, duration, 64))
        .collect();
    let root = b.reduce(partials, 4, duration, 64);
    b.want(&[root]);
    b.finish()
}

/// A 1-D stencil: `width` cells over `steps` steps, each cell reading its neighbours.
pub fn stencil(width: usize, steps: usize, duration: Micros, nbytes: u64) -> SimGraph {
    let mut b = GraphBuilder::new(4);
    let mut row: Vec<_> = (0..width)
        .map(|_| b.task("init", &[], duration, nbytes))
        .collect();
    for _ in 0..steps {
        row = (0..width)
            .map(|j| {
                let lo = j.saturating_sub(1);
                let hi = (j + 1).min(width - 1);
                let deps: Vec<_> = (lo..=hi).map(|k| row[k]).collect();
                b.task("step", &deps, duration, nbytes)
            })
            .collect();
    }
    let root = b.reduce(row, 8, duration, 64);
    b.want(&[root]);
    b.finish()
}

/// `(x + x.T).sum()` over an `n x n` grid of chunks.
#[allow(clippy::needless_range_loop)]
pub fn transpose_sum(n: usize, duration: Micros, nbytes: u64) -> SimGraph {
    let mut b = GraphBuilder::new(5);
    let x: Vec<Vec<_>> = (0..n)
        .map(|_| {
            (0..n)
                .map(|_| b.task("ones", &[], duration, nbytes))
                .collect()
        })
        .collect();
    let mut sums = Vec::new();
    for i in 0..n {
        for j in 0..n {
            let y = b.task("add", &[x[i][j], x[j][i]], duration, nbytes);
            sums.push(b.task("sum", &[y], duration, 64));
        }
    }
    let root = b.reduce(sums, 8, duration, 64);
    b.want(&[root]);
    b.finish()
}

/// `roots` tasks with large outputs, each read by `fan_out` tasks, all summed.
pub fn fan_out_fan_in(roots: usize, fan_out: usize, duration: Micros, nbytes: u64) -> SimGraph {
    let mut b = GraphBuilder::new(6);
    let mut outs = Vec::new();
    for _ in 0..roots {
        let r = b.task("big", &[], duration, nbytes);
        for _ in 0..fan_out {
            outs.push(b.task("use", &[r], duration, 64));
        }
    }
    let root = b.reduce(outs, 8, duration, 64);
    b.want(&[root]);
    b.finish()
}

/// A random DAG of `n` tasks: each depends on up to `max_deps` earlier tasks; random
/// durations and sizes; a random tenth of the tasks (and every sink) wanted.
pub fn random_dag(rng: &mut SimRng, n: usize, max_deps: usize, fail_rate: f64) -> SimGraph {
    let mut b = GraphBuilder::new(rng.next_u64());
    let mut keys = Vec::with_capacity(n);
    let mut used = vec![false; n];
    for i in 0..n {
        let k = rng.below(max_deps as u64 + 1) as usize;
        let mut deps = Vec::new();
        for _ in 0..k.min(i) {
            let d = rng.below(i as u64) as usize;
            used[d] = true;
            deps.push(keys[d]);
        }
        let duration = Micros(1 + rng.below(1000));
        let nbytes = 1 + rng.below(100_000);
        keys.push(b.task("f", &deps, duration, nbytes));
        if rng.chance(fail_rate)
            && let Some(t) = b.graph.tasks.last_mut()
        {
            t.fails = true;
        }
    }
    let wants: Vec<_> = (0..n)
        .filter(|&i| !used[i] || rng.chance(0.1))
        .map(|i| keys[i])
        .collect();
    b.want(&wants);
    b.finish()
}
