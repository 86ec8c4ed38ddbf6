//! The static order of a submitted graph: depth-first from the outputs, critical path first,
//! so that the inputs of one result are computed together and their chunks are freed soon.

use taskhost_proto::TaskKey;

use crate::core::Core;
use crate::ids::Tid;
use crate::state::Arg;

impl Core {
    /// Orders the tasks `new` (just created by one submission, in submission order, each with
    /// `priority.generation == generation`) by setting `priority.order`. Fails with a key on a
    /// cycle. O(n + e) plus sorting the sinks and each task's arguments.
    pub(crate) fn static_order(&mut self, new: &[Tid], generation: u32) -> Result<(), TaskKey> {
        let n = new.len();
        // Local index of every new task, kept in `order` until the real order is known.
        for (i, &t) in new.iter().enumerate() {
            self.tasks[t as usize].priority.order = i as u32;
        }
        let local = |core: &Core, d: Tid| -> Option<usize> {
            let p = core.tasks[d as usize].priority;
            (p.generation == generation)
                .then_some(p.order as usize)
                .filter(|&i| i < n && new[i] == d)
        };
        // Reverse edges (dependency -> dependents) among new tasks, as compressed rows.
        let mut indegree = vec![0u32; n];
        let mut out_count = vec![0u32; n + 1];
        for (i, &t) in new.iter().enumerate() {
            for a in self.tasks[t as usize].args.iter() {
                if let Arg::Dep(d) = *a
                    && let Some(j) = local(self, d)
                {
                    indegree[i] += 1;
                    out_count[j + 1] += 1;
                }
            }
        }
        for i in 0..n {
            out_count[i + 1] += out_count[i];
        }
        let offsets = out_count;
        let mut fill = offsets.clone();
        let mut edges = vec![0u32; offsets[n] as usize];
        for (i, &t) in new.iter().enumerate() {
            for a in self.tasks[t as usize].args.iter() {
                if let Arg::Dep(d) = *a
                    && let Some(j) = local(self, d)
                {
                    edges[fill[j] as usize] = i as u32;
                    fill[j] += 1;
                }
            }
        }
        drop(fill);
        // Kahn's algorithm: topological order, cycle check, and height (longest path from a
        // root, in tasks) of every task.
        let mut height = vec![1u32; n];
        let mut ready: Vec<u32> = (0..n as u32)
            .filter(|&i| indegree[i as usize] == 0)
            .collect();
        let mut seen = 0usize;
        while let Some(i) = ready.pop() {
            seen += 1;
            let h = height[i as usize];
            for &j in &edges[offsets[i as usize] as usize..offsets[i as usize + 1] as usize] {
                let j = j as usize;
                height[j] = height[j].max(h + 1);
                indegree[j] -= 1;
                if indegree[j] == 0 {
                    ready.push(j as u32);
                }
            }
        }
        if seen < n {
            let i = indegree.iter().position(|&d| d > 0).unwrap_or(0);
            return Err(self.tasks[new[i] as usize].key);
        }
        drop(indegree);
        // Sinks: new tasks no new task depends on; the longest chains first.
        let mut sinks: Vec<u32> = (0..n as u32)
            .filter(|&i| offsets[i as usize] == offsets[i as usize + 1])
            .collect();
        sinks.sort_by_key(|&i| std::cmp::Reverse(height[i as usize]));
        drop(edges);
        // Iterative post-order depth-first search from each sink.
        let mut order = vec![u32::MAX; n];
        let mut visited = vec![false; n];
        let mut next = 0u32;
        let mut kids: Vec<u32> = Vec::new();
        // Frame: (node, cursor into kids, end of its kids).
        let mut stack: Vec<(u32, usize, usize)> = Vec::new();
        for s in sinks {
            if visited[s as usize] {
                continue;
            }
            visited[s as usize] = true;
            let (a, b) = self.push_kids(new, s, &mut kids, &height, &visited, &local);
            stack.push((s, a, b));
            while let Some(top) = stack.last_mut() {
                if top.1 < top.2 {
                    let c = kids[top.1];
                    top.1 += 1;
                    if visited[c as usize] {
                        continue;
                    }
                    visited[c as usize] = true;
                    let (a, b) = self.push_kids(new, c, &mut kids, &height, &visited, &local);
                    stack.push((c, a, b));
                } else {
                    let (node, start, _) = *top;
                    stack.pop();
                    kids.truncate(start);
                    order[node as usize] = next;
                    next += 1;
                }
            }
        }
        for (i, &t) in new.iter().enumerate() {
            self.tasks[t as usize].priority.order = order[i];
        }
        Ok(())
    }

    /// Appends the unvisited new dependencies of local task `i` to `kids`, tallest first.
    fn push_kids(
        &self,
        new: &[Tid],
        i: u32,
        kids: &mut Vec<u32>,
        height: &[u32],
        visited: &[bool],
        local: &impl Fn(&Core, Tid) -> Option<usize>,
    ) -> (usize, usize) {
        let start = kids.len();
        for a in self.tasks[new[i as usize] as usize].args.iter() {
            if let Arg::Dep(d) = *a
                && let Some(j) = local(self, d)
                && !visited[j]
            {
                kids.push(j as u32);
            }
        }
        kids[start..].sort_by_key(|&j| std::cmp::Reverse(height[j as usize]));
        (start, kids.len())
    }
}
